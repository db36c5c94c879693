"""Upload service: chunked uploads and tus 1.0 uploads (/files/) written in place, then
registered for transcoding; direct upload URLs (one upload each, no other token needed);
files dropped into the watch folder (incoming/) are taken in the same way; a periodic sweep
removes uploads abandoned half-way."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI

from services.core.app import create_app
from services.core.db import init_db
from services.core.memory import keep_freed_memory
from services.core.settings import get_settings
from services.core.tasks import in_background
from services.upload.direct_routes import DirectUploadCors
from services.upload.direct_routes import router as direct_router
from services.upload.routes import router
from services.upload.sweep import sweep_forever
from services.upload.tus_routes import router as tus_router
from services.upload.watch import watch_forever


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    init_db(settings)
    keep_freed_memory()
    async with (
        in_background(partial(sweep_forever, settings), grace=5),
        in_background(partial(watch_forever, settings), grace=5),
    ):
        yield


# Direct uploads first: /upload/direct is theirs, not an upload id's.
app = create_app(
    "upload", [direct_router, router, tus_router], lifespan=lifespan, description=__doc__ or ""
)
# Outermost: a direct upload URL answers the CORS of the origin it was made for.
app.add_middleware(DirectUploadCors)
