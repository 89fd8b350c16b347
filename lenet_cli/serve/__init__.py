"""`lenet serve`: the web page and the HTTP API, in one or several serving processes.

* classify.py: the served model, its limits and one upload's prediction row.
* limits.py: every limit in one dataclass, and ASGI middleware for bodies (413, 408, a memory budget).
* protocol.py: uvicorn's h11 protocol with a header deadline, connection caps and the lingering close.
* routes.py: the page, `POST /api/predict`, health, model metadata and error answers.
* app.py: `create_app`, the FastAPI app put together.
* server.py: the listening socket and uvicorn, until Ctrl-C or SIGTERM.
* workers.py: `--workers N`, N serving processes on one pre-bound socket, supervised.
* static/: the page's HTML, script and style.

May import: inference/, data/, export/ (a safetensors model is exported at start), utils/, the
top-level modules; fastapi, starlette, anyio and uvicorn only inside functions.
"""
