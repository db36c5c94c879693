"""The doorbell: new work wakes the idle workers at once, on this machine and on others.

Workers find work by asking the database every POLL_SECONDS; that stays the rule for work
that becomes due with time alone (a retry's delay, a dead worker's lease). Whoever makes work
claimable (an upload's completion, a start-over, a resume, a job's plan stored, a unit
released) marks its transaction (QUEUED), and once that transaction commits, the idle
workers ask the database right away instead of at their next poll: a new upload's opening
chunk starts encoding, and its audio beside it, without waiting up to a poll interval.

- On one machine each worker listens on a Unix datagram socket of its own, in a folder named
  after the database, and the committer sends each socket there one byte after the commit.
- On PostgreSQL, across machines, the marked transaction also sends NOTIFY on CHANNEL, which
  PostgreSQL delivers when (and only if) it commits, and each worker LISTENs on a connection
  of its own (a lost connection is made again, RECONNECT_SECONDS apart, while it polls).

A ring carries nothing but "look now": a lost or stray one costs at most one early look.
The folder is the machine's own (under the temporary directory), made by this user and
readable by no other; a folder that is not exactly that is not used, and workers poll.
"""

import asyncio
import contextlib
import errno
import hashlib
import itertools
import logging
import os
import socket
import stat
import tempfile
import time
from pathlib import Path

import psycopg
from sqlalchemy import Engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

# Set in a session's info by whatever queues work; the commit then rings.
QUEUED = "doorbell.queued"
_names = itertools.count()
# PostgreSQL's channel for rings across machines (a NOTIFY reaches its own database only).
CHANNEL = "platform_work"
# How long a worker whose LISTEN connection failed polls before it connects again.
RECONNECT_SECONDS = 10.0


def key_of(bind: Engine) -> str:
    """What names an engine's doorbell: its database URL, as the queuer and workers see it."""
    return bind.url.render_as_string(hide_password=False)


def folder_for(database_url: str) -> Path | None:
    """This machine's doorbell folder for the database at `database_url`, created if needed;
    None when it cannot be made this user's own (workers then poll only)."""
    digest = hashlib.sha256(database_url.encode()).hexdigest()[:16]
    folder = Path(tempfile.gettempdir()) / f"vp-doorbell-{digest}"
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700)
    try:
        info = os.lstat(folder)
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        log.warning("doorbell folder %s is not this user's own: workers poll only", folder)
        return None
    return folder


class Doorbell:
    """One worker's bell: `wait` returns when it rings, on shutdown, or after a timeout."""

    def __init__(self, database_url: str) -> None:
        self._sock: socket.socket | None = None
        self._path: Path | None = None
        url = make_url(database_url)
        self._remote = Listener(url) if url.get_backend_name() == "postgresql" else None
        folder = folder_for(database_url)
        if folder is None:
            return
        path = folder / f"{os.getpid()}-{next(_names)}.sock"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # left by a process that had this pid and was killed
            sock.bind(str(path))
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            log.warning("doorbell socket %s: %s: this worker polls only", path, exc)
            return
        self._sock, self._path = sock, path

    async def wait(self, shutdown: asyncio.Event, timeout: float) -> bool:
        """Until a ring, `shutdown` or `timeout` seconds; True when it rang."""
        readers = [self._sock.fileno()] if self._sock is not None else []
        if self._remote is not None and (remote := await self._remote.fileno()) is not None:
            readers.append(remote)
        if not readers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(shutdown.wait(), timeout)
            return False
        loop = asyncio.get_running_loop()
        rang = asyncio.Event()
        for reader in readers:
            loop.add_reader(reader, rang.set)
        waiters = [asyncio.ensure_future(rang.wait()), asyncio.ensure_future(shutdown.wait())]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for reader in readers:
                loop.remove_reader(reader)
            for waiter in waiters:
                waiter.cancel()
        self._drain()
        return rang.is_set()

    def _drain(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(BlockingIOError, InterruptedError):
                while True:
                    self._sock.recv(16)
        if self._remote is not None:
            self._remote.drain()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._path is not None:
            with contextlib.suppress(FileNotFoundError):
                self._path.unlink()
            self._path = None
        if self._remote is not None:
            self._remote.close()


class Listener:
    """LISTEN on CHANNEL over a connection of its own: the rings from every machine."""

    def __init__(self, database: URL) -> None:
        url = database.set(drivername="postgresql")
        self._conninfo = url.render_as_string(hide_password=False)
        self._name = url.render_as_string(hide_password=True)
        self._conn: psycopg.Connection | None = None
        self._retry_at = 0.0

    async def fileno(self) -> int | None:
        """The connection's socket, to wait on; connected first when it has none (in a
        worker thread, and not again within RECONNECT_SECONDS of a failure): None then."""
        if self._conn is None and time.monotonic() >= self._retry_at:
            try:
                self._conn = await asyncio.to_thread(self._connect)
            except psycopg.Error as exc:
                self._failed(exc)
        return self._conn.fileno() if self._conn is not None else None

    def _connect(self) -> psycopg.Connection:
        conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5)
        try:
            conn.execute(f"LISTEN {CHANNEL}")
        except psycopg.Error:
            conn.close()
            raise
        return conn

    def drain(self) -> None:
        """Read the notifications that have arrived (without waiting for more)."""
        if self._conn is None:
            return
        try:
            for _ in self._conn.notifies(timeout=0):
                pass
        except psycopg.Error as exc:
            self._failed(exc)

    def _failed(self, exc: psycopg.Error) -> None:
        log.warning(
            "doorbell: listening on %s failed (%s): polling, connecting again in %g s",
            self._name,
            str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
            RECONNECT_SECONDS,
        )
        self.close()
        self._retry_at = time.monotonic() + RECONNECT_SECONDS

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None


def ring(database_url: str) -> int:
    """Wake every worker listening for the database at `database_url` on this machine;
    returns how many sockets took the ring. Never raises: a ring is only a hint."""
    folder = folder_for(database_url)
    if folder is None:
        return 0
    woken = 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        try:
            paths = [p for p in folder.iterdir() if p.suffix == ".sock"]
        except OSError:
            return 0
        for path in paths:
            try:
                sock.sendto(b"!", str(path))
                woken += 1
            except BlockingIOError:
                woken += 1  # its queue is full of rings it has not read yet: it will look
            except OSError as exc:
                if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                    # Its worker is gone (killed before it could remove it).
                    with contextlib.suppress(OSError):
                        path.unlink()
    return woken


@event.listens_for(Session, "before_commit")
def _notify_in_the_commit(session: Session) -> None:
    """On PostgreSQL, a transaction that queued work sends NOTIFY too: delivered to every
    listening worker, on any machine, as it commits (and never if it rolls back)."""
    if session.info.get(QUEUED) and session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})


@event.listens_for(Session, "after_commit")
def _ring_after_commit(session: Session) -> None:
    """Ring once the transaction that queued work is committed (not before: a worker that
    looked sooner would not see the work yet)."""
    if session.info.pop(QUEUED, False):
        ring(key_of(session.get_bind().engine))


@event.listens_for(Session, "after_rollback")
def _forget_on_rollback(session: Session) -> None:
    session.info.pop(QUEUED, None)
