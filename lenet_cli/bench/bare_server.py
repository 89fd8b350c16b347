"""The bare upload endpoint `lenet bench --serve` compares `lenet serve` with: `python -m lenet_cli.bench.bare_server PORT`.

FastAPI on uvicorn with `lenet serve`'s uvicorn settings (log level, no access log, no
connection-count limit), one process. `POST /api/predict` reads the whole upload and answers a small
JSON object; `GET /api/health` answers {"ok": true}. Nothing is decoded or classified: it is the
cost of the HTTP stack alone, the ceiling a server that does real work can approach.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint's `Request` annotation at run time,
# and it is imported inside create_app, where a string annotation could not be resolved.
import sys


def create_app():
    """The bare app: an upload endpoint that reads the body and answers JSON, and a health check."""
    from fastapi import FastAPI, Request

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.post("/api/predict")
    async def predict(request: Request) -> dict:
        body = await request.body()
        return {"bytes": len(body), "prediction": None}

    @app.get("/api/health")
    async def health() -> dict:
        return {"ok": True}

    return app


def main(argv: list[str]) -> int:
    """Serve on 127.0.0.1:PORT until killed."""
    import uvicorn

    uvicorn.run(create_app(), host="127.0.0.1", port=int(argv[0]), log_level="warning", access_log=False,
                lifespan="off")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
