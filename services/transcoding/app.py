"""Transcoding service: job status and control over HTTP, plus in-process workers."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.core.app import create_app
from services.core.db import init_db
from services.core.settings import get_settings
from services.transcoding.routes import router
from services.transcoding.worker import run_workers


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    init_db(settings)
    shutdown = asyncio.Event()
    audio = settings.audio_workers if settings.workers > 0 else 0
    task = asyncio.create_task(run_workers(settings, settings.workers, shutdown, audio=audio))
    try:
        yield
    finally:
        shutdown.set()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, timeout=10)


app = create_app("transcoding", [router], lifespan=lifespan, description=__doc__ or "")
