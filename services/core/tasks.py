"""Background work inside a service: interruptible sleeps, a lifespan that runs a task until
shutdown, and a call retried while what it needs is busy."""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from anyio import to_thread

T = TypeVar("T")


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


async def while_busy(
    call: Callable[[], T],
    busy: type[Exception],
    *,
    wait: float,
    pause: float,
    most: float | None = None,
) -> T:
    """`call()` in a worker thread, tried again while it raises `busy` (another request holds
    what it needs), for up to `wait` seconds, then that `busy` is raised. Between tries it
    sleeps `pause` on the event loop, holding no thread, doubling up to `most` (None: `pause`
    each time)."""
    deadline = time.monotonic() + wait
    most = pause if most is None else most
    while True:
        try:
            return await to_thread.run_sync(call)
        except busy:
            if time.monotonic() + pause > deadline:
                raise
        await asyncio.sleep(pause)
        pause = min(pause * 2, most)
