"""Background work inside a service: interruptible sleeps and a lifespan that runs a task
until shutdown."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any


async def sleep_unless(event: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, waking early when `event` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)


@asynccontextmanager
async def in_background(
    work: Callable[[asyncio.Event], Coroutine[Any, Any, None]], *, grace: float
) -> AsyncIterator[None]:
    """Run `work(shutdown)` while the block runs; set `shutdown` and wait `grace` s at the end."""
    shutdown = asyncio.Event()
    task = asyncio.create_task(work(shutdown))
    try:
        yield
    finally:
        shutdown.set()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, timeout=grace)
