"""`lenet serve`: the web page and the HTTP API on one shared onnxruntime session.

* classify.py: the served model, its limits and one upload's prediction row.
* limits.py: ASGI middleware that refuses oversized bodies early.
* routes.py: the page, `POST /api/predict`, health, model metadata and error answers.
* app.py: `create_app`, the FastAPI app put together.
* server.py: the listening socket and uvicorn, until Ctrl-C or SIGTERM.
* static/: the page's HTML, script and style.

May import: inference/, data/, export/ (a safetensors model is exported at start), utils/, the
top-level modules; fastapi, starlette, anyio and uvicorn only inside functions.
"""
