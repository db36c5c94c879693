"""The skeleton every service shares: error catalogue, `/health`, logging, OpenAPI docs."""

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from pydantic import BaseModel

from services.core.db import init_db
from services.core.errors import ERROR_RESPONSES, install_error_handlers
from services.core.settings import get_settings

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[Any]] | None


class Health(BaseModel):
    service: str
    status: str = "ok"


def configure_logging() -> None:
    """One line per record, level from LOG_LEVEL."""
    logging.basicConfig(
        level=get_settings().log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )


@asynccontextmanager
async def database_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Default lifespan: make sure the storage layout and the tables exist."""
    init_db()
    yield


def _allow_cross_origin(app: FastAPI) -> None:
    """CORS for the configured origins; `*` is never combined with credentials."""
    origins = get_settings().allowed_origins()
    app.add_middleware(
        CORSMiddleware,
        allow_origins=origins,
        allow_credentials="*" not in origins,
        allow_methods=["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "Range"],
        # A player on another origin reads these to seek and to revalidate.
        expose_headers=["Content-Length", "Content-Range", "Accept-Ranges", "ETag"],
        max_age=600,
    )


def create_app(
    name: str, routers: Sequence[APIRouter], *, lifespan: Lifespan = None, description: str = ""
) -> FastAPI:
    """Build a service's FastAPI app: its routers, `/health` and the error catalogue."""
    configure_logging()
    app = FastAPI(
        title=f"{name} service",
        description=description,
        lifespan=lifespan or database_lifespan,
        responses=ERROR_RESPONSES,
        # An API has no use for slash redirects; behind the gateway their Location would even
        # name the internal address.
        redirect_slashes=False,
    )
    install_error_handlers(app)
    _allow_cross_origin(app)

    @app.get("/health", response_model=Health, tags=["health"])
    async def health() -> Health:
        return Health(service=name)

    for router in routers:
        app.include_router(router)
    return app
