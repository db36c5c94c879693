"""A service's app tells sniffio, on the event loop's thread and for as long as the app runs,
that asyncio runs there (anyio asks on every thread hop), and puts the name back after."""

import threading

import anyio
import sniffio
from fastapi import FastAPI

from services.core.app import create_app


async def test_the_loop_thread_is_named_asyncio_while_the_app_runs():
    seen: dict[str, object] = {}
    app: FastAPI = create_app("probe", [])

    async with app.router.lifespan_context(app):
        seen["loop"] = sniffio.thread_local.name
        # A worker thread is not the loop's: sniffio still finds out there as before.
        seen["worker"] = await anyio.to_thread.run_sync(lambda: sniffio.thread_local.name)
        seen["hop"] = await anyio.to_thread.run_sync(threading.get_ident)
    seen["after"] = sniffio.thread_local.name

    assert seen["loop"] == "asyncio"
    assert seen["worker"] is None
    assert seen["hop"] != threading.get_ident()
    assert seen["after"] is None
