"""The doorbell: a new job wakes the idle workers on the same machine at once.

Workers find work by asking the database every POLL_SECONDS; that stays the rule, and the
only way across machines. On one machine a worker also listens on a Unix datagram socket of
its own, in a folder named after the database, and whoever queues work (an upload's
completion, a start-over, a resume) sends each socket there one byte once its transaction
has committed. The worker then asks the database right away instead of at its next poll:
a new upload's opening chunk starts encoding without waiting up to a poll interval.

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
from pathlib import Path

from sqlalchemy import Engine, event
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

# Set in a session's info by whatever queues work; the commit then rings.
QUEUED = "doorbell.queued"
_names = itertools.count()


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
    """One worker's socket: `wait` returns when it rings, on shutdown, or after a timeout."""

    def __init__(self, database_url: str) -> None:
        self._sock: socket.socket | None = None
        self._path: Path | None = None
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
        if self._sock is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(shutdown.wait(), timeout)
            return False
        loop = asyncio.get_running_loop()
        rang = asyncio.Event()
        loop.add_reader(self._sock.fileno(), rang.set)
        waiters = [asyncio.ensure_future(rang.wait()), asyncio.ensure_future(shutdown.wait())]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            loop.remove_reader(self._sock.fileno())
            for waiter in waiters:
                waiter.cancel()
        self._drain()
        return rang.is_set()

    def _drain(self) -> None:
        assert self._sock is not None
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while True:
                self._sock.recv(16)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._path is not None:
            with contextlib.suppress(FileNotFoundError):
                self._path.unlink()
            self._path = None


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


@event.listens_for(Session, "after_commit")
def _ring_after_commit(session: Session) -> None:
    """Ring once the transaction that queued work is committed (not before: a worker that
    looked sooner would not see the work yet)."""
    if session.info.pop(QUEUED, False):
        ring(key_of(session.get_bind().engine))


@event.listens_for(Session, "after_rollback")
def _forget_on_rollback(session: Session) -> None:
    session.info.pop(QUEUED, None)
