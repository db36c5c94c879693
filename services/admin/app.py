"""Admin service: the operator's view of the platform and control over every job; it also sends
the webhooks."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI

from services.admin.routes import router
from services.admin.webhooks import deliver_forever
from services.core.app import create_app
from services.core.db import init_db
from services.core.settings import get_settings
from services.core.tasks import in_background


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    init_db(settings)
    # A delivery cut short by shutdown keeps its lease and is sent again after it expires.
    async with in_background(partial(deliver_forever, settings), grace=5):
        yield


app = create_app("admin", [router], lifespan=lifespan, description=__doc__ or "", job_metrics=True)
