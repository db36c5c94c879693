"""FastAPI dependencies shared by every service, as `Annotated` aliases."""

from collections.abc import AsyncIterator
from functools import lru_cache, partial
from pathlib import Path
from typing import Annotated

import anyio
from anyio import CapacityLimiter
from anyio.lowlevel import RunVar
from fastapi import Depends
from sqlalchemy.orm import Session
from starlette.requests import HTTPConnection

from services.core.cors import settings_of
from services.core.db import REQUEST_SESSIONS, new_session
from services.core.settings import Settings
from services.core.storage import Storage
from services.core.storage.factory import store_of, uses_object_storage
from services.core.storage.interface import Store


async def current_settings(request: HTTPConnection) -> Settings:
    """The app's settings (`settings_of`: a test's `dependency_overrides[get_settings]` holds),
    as a coroutine: FastAPI runs a plain function dependency in a worker thread, and the hops
    of the settings and storage dependencies were 0.2-0.3 ms of CPU of every request (a 64 KiB
    upload chunk: 3.45-3.72 against 3.72-3.79 ms in alternating runs)."""
    return settings_of(request.scope)


async def _session(
    settings: Annotated[Settings, Depends(current_settings)],
) -> AsyncIterator[Session]:
    """A session in one transaction for the (plain function) endpoint, as `session_scope`
    gives one: committed once the endpoint returns, rolled back if it raises.

    At most `REQUEST_SESSIONS` requests of a process hold one at once; the others wait here,
    on the event loop, holding no thread. Without that bound, a burst of requests (200 at
    once) put every worker thread in an endpoint waiting for a database connection, while
    the requests holding the connections waited for a thread to finish in (FastAPI checks
    the response model in one): the service answered nothing for minutes.

    Opened here on the event loop (a Session connects only at its first query, which the
    endpoint makes in its worker thread); only the commit or rollback, which waits on the
    database, takes a worker thread. As a plain generator FastAPI ran both its start and its
    end in worker threads: one hop more per request."""
    async with _request_sessions():
        session = new_session(settings)
        try:
            yield session
        except BaseException:
            with anyio.CancelScope(shield=True):  # a cancelled request gives its connection back
                await _ending(session, commit=False)
            raise
        await _ending(session, commit=True)


_SESSIONS: RunVar[anyio.Semaphore] = RunVar("request_sessions")


def _request_sessions() -> anyio.Semaphore:
    """This event loop's permits for request sessions (made on first use)."""
    try:
        return _SESSIONS.get()
    except LookupError:
        permits = anyio.Semaphore(REQUEST_SESSIONS)
        _SESSIONS.set(permits)
        return permits


async def _ending(session: Session, *, commit: bool) -> None:
    """`_end` in a worker thread outside the shared pool's limit (as FastAPI runs a plain
    generator's end): a session that holds a database connection must always get a thread
    to give it back. Within the limit, requests whose endpoints all wait for a connection
    could take every thread, and the connections' holders could then never end."""
    await anyio.to_thread.run_sync(
        partial(_end, session, commit=commit), limiter=CapacityLimiter(1)
    )


def _end(session: Session, *, commit: bool) -> None:
    """Commit (when asked) and close: closing rolls back what was not committed and gives the
    connection back to the pool."""
    with session:
        if commit:
            session.commit()


async def _storage(settings: Annotated[Settings, Depends(current_settings)]) -> Storage:
    return _storage_at(settings.storage_dir)


@lru_cache(maxsize=16)
def _storage_at(folder: Path) -> Storage:
    """The Storage of `folder`, made once: making one resolves the folder's path, a system
    call for each of its parts, on every request that asked for it."""
    return Storage(folder)


def _objects(settings: Annotated[Settings, Depends(current_settings)]) -> Store | None:
    # In a worker thread: the first call opens the bucket's client (boto3, costly to make).
    # None on the local folder, whose files keep being served as files (sendfile, pathsend).
    return store_of(settings) if uses_object_storage(settings) else None


SettingsDep = Annotated[Settings, Depends(current_settings)]
# scope="function": the transaction commits before the response is sent, so a client that is
# told "done" can rely on it (the next request sees the row), and a failed commit is an error
# response rather than a write silently lost after a 200.
SessionDep = Annotated[Session, Depends(_session, scope="function")]
StorageDep = Annotated[Storage, Depends(_storage)]
# The bucket (STORAGE_URL=s3://...) media are read from, or None on the local folder.
ObjectsDep = Annotated[Store | None, Depends(_objects)]
