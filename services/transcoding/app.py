"""Transcoding service: job status and control over HTTP, plus in-process workers."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI

from services.core.app import create_app
from services.core.db import init_db
from services.core.settings import get_settings
from services.core.tasks import in_background
from services.transcoding.routes import router
from services.transcoding.worker import run_workers


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    init_db(settings)
    audio = settings.audio_workers if settings.workers > 0 else 0
    workers = partial(run_workers, settings, settings.workers, audio=audio)
    # Workers release their chunks on shutdown; ffmpeg gets its stop grace to end.
    async with in_background(lambda shutdown: workers(shutdown), grace=10):
        yield


app = create_app(
    "transcoding", [router], lifespan=lifespan, description=__doc__ or "", job_metrics=True
)
