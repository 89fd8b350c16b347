"""`lenet serve`'s web app: the page, `POST /api/predict`, health and model metadata, on FastAPI.

fastapi, starlette, anyio and uvicorn are imported inside the functions: this package is
loaded only by `lenet serve`, and `lenet --help` must not pay for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lenet_cli import __version__
from lenet_cli.serve.classify import (
    DEFAULT_WORKERS,
    ServeConfig,
    ServedModel,
    served_model,
)
from lenet_cli.serve.limits import BodyGuard
from lenet_cli.serve.routes import (
    add_error_handlers,
    add_info_routes,
    add_page_routes,
    add_predict_route,
)

if TYPE_CHECKING:  # pragma: no cover
    from fastapi import FastAPI

__all__ = ["DEFAULT_WORKERS", "ServeConfig", "ServedModel", "create_app", "served_model"]


def create_app(model: ServedModel, cfg: ServeConfig = ServeConfig()) -> "FastAPI":
    """The ASGI app: `GET /` (the page), `/static/<file>`, `POST /api/predict`, `GET /api/health`,
    `GET /api/model`, and FastAPI's `/docs` and `/openapi.json`. No CORS headers: only pages
    served by this app (same origin) can read its answers from a browser."""
    from fastapi import FastAPI

    app = FastAPI(title="lenet serve", version=__version__,
                  description="LeNet-5 on MNIST: draw or upload a digit at `/`, or POST an image to `/api/predict`.")
    app.add_middleware(BodyGuard, limits=cfg.limits)
    add_error_handlers(app)
    add_page_routes(app)
    add_info_routes(app, model)
    add_predict_route(app, model, cfg)
    return app
