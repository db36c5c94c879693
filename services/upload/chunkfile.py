"""One chunk's bytes on disk: who may write them (`ChunkLock`) and the writing itself
(`ChunkWriter`: at the chunk's offset, hashed as it goes, fsynced before it counts).

Nothing here knows HTTP or the database; `uploads.py` decides where a chunk goes and whether
it may be written at all.
"""

import errno
import fcntl
import hashlib
import os
import struct
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from services.upload import aligned, digests

Buffer = bytes | bytearray | memoryview
Digest = Any  # hashlib's sha256 object has no public type
MAX_PIECES = 512  # pwritev takes at most IOV_MAX (1024 on Linux) buffers

# Linux >= 3.15: record locks owned by an open file, not by the process, so two threads of one
# process exclude each other as two processes do, and closing another descriptor of the same
# file does not drop them (as it would a POSIX lock).
OFD_SETLK: int | None = getattr(fcntl, "F_OFD_SETLK", None)
_LOCAL_HELD: set[tuple[str, int]] = set()
_LOCAL_GUARD = threading.Lock()

# Writes into one file take turns here. The kernel serialises them anyway (ext4 and most
# filesystems hold the file's inode lock across a buffered write), but a writer waiting for
# that lock spins on a CPU while the holder copies: four chunks of one upload written at once
# cost 3-5x the CPU of the same writes in turn. Waiting on a Python lock sleeps instead.
# Striped by inode: a fixed set of locks, nothing to clean up; two files sharing a stripe only
# take turns they did not need to.
_WRITE_TURNS = tuple(threading.Lock() for _ in range(64))


def write_turn(fd: int) -> threading.Lock:
    """The lock that writes into the file open as `fd` take turns on."""
    stat = os.fstat(fd)
    return _WRITE_TURNS[hash((stat.st_dev, stat.st_ino)) % len(_WRITE_TURNS)]


class ChunkLock:
    """The exclusive right to store chunk `index` of the upload whose file is `path`.

    Two copies of one chunk (a client retrying while its first attempt is still being
    written, or another upload service process) must not write the same place at once: the
    holder checks whether the chunk is already recorded, writes it and records it, and only
    then lets the next one look. The lock is on byte `index` of the file (an advisory lock,
    so any byte works as a name); elsewhere than Linux it holds within this process only.
    """

    def __init__(self, path: Path, index: int) -> None:
        self.path = path
        self.index = index
        self.fd: int | None = None
        self._local = False

    def acquire(self) -> bool:
        """Take the lock without waiting; False when another request holds it.

        Raises FileNotFoundError when the upload's file is gone (swept).
        """
        fd = os.open(self.path, os.O_WRONLY)
        try:
            held = self._lock_file(fd) if OFD_SETLK is not None else self._lock_local()
        except BaseException:
            os.close(fd)
            raise
        if not held:
            os.close(fd)
            return False
        self.fd = fd
        return True

    def release(self) -> None:
        """Give the lock up (closing the descriptor drops the file lock)."""
        if self.fd is None:
            return
        os.close(self.fd)
        self.fd = None
        if self._local:
            with _LOCAL_GUARD:
                _LOCAL_HELD.discard((str(self.path), self.index))
            self._local = False

    def _lock_file(self, fd: int) -> bool:
        assert OFD_SETLK is not None
        # struct flock {short l_type; short l_whence; off_t l_start; off_t l_len; pid_t l_pid}
        # with native alignment; l_pid must be 0 for an open-file lock.
        request = struct.pack("hhqqi", fcntl.F_WRLCK, os.SEEK_SET, self.index, 1, 0)
        try:
            fcntl.fcntl(fd, OFD_SETLK, request)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return False
            raise
        return True

    def _lock_local(self) -> bool:
        key = (str(self.path), self.index)
        with _LOCAL_GUARD:
            if key in _LOCAL_HELD:
                return False
            _LOCAL_HELD.add(key)
        self._local = True
        return True


class ChunkWriter:
    """A chunk's bytes written at `offset` of the file open as `fd` (or, with fd None, only
    hashed: a resent chunk is compared, never written again).

    Every byte is hashed with `algorithm` (the chunk row's digest, digests.py), and with
    sha256 as well when `sha256` is asked for (a client sent the chunk's sha256 to check).
    Every byte also goes into `fed` when given: the whole file's digest, when this chunk
    continues the hashed prefix (see hashing.py).

    With `path` (the file `fd` is open on), the bytes go to disk past the page cache where
    the filesystem allows it (aligned.py), staged in a buffer that `sync` writes out. Always
    `close` a writer.
    """

    def __init__(
        self,
        fd: int | None,
        offset: int,
        fed: Digest | None = None,
        path: Path | None = None,
        *,
        algorithm: str = digests.FAST,
        sha256: bool = False,
    ) -> None:
        self.fd = fd
        self.offset = offset
        self.fed = fed
        self.size = 0
        self.algorithm = algorithm
        self._hasher = digests.new(algorithm)
        self._sha256 = hashlib.sha256() if sha256 else None
        self._turn = write_turn(fd) if fd is not None else None
        self._staged: aligned.StagedWrite | None = None
        if fd is not None and path is not None:
            self._staged = aligned.StagedWrite.open(fd, path, offset)

    def feed(self, pieces: Sequence[Buffer]) -> None:
        """Write (and hash) the next pieces of the chunk, in order."""
        if self.fd is not None:
            assert self._turn is not None
            with self._turn:
                if self._staged is not None:
                    self._staged.write(pieces)
                else:
                    write_all(self.fd, pieces, self.offset + self.size)
        for piece in pieces:
            self._hasher.update(piece)
            if self._sha256 is not None:
                self._sha256.update(piece)
            if self.fed is not None:
                self.fed.update(piece)
            self.size += len(piece)

    def sync(self) -> None:
        """Make the written bytes durable: the chunk may be counted only after this."""
        if self.fd is not None:
            self._unstage()
            os.fdatasync(self.fd)

    def close(self) -> None:
        """Let go of the direct descriptor and the staging buffer. Bytes still staged are
        dropped: a chunk that was not synced is not counted, so its place holds nothing yet."""
        if self._staged is not None:
            self._staged.discard()
            self._staged = None

    def _unstage(self) -> None:
        if self._staged is not None:
            staged, self._staged = self._staged, None
            assert self._turn is not None
            with self._turn:
                staged.close()

    @property
    def digest(self) -> str:
        """The bytes' digest as a chunk row keeps it (`algorithm:hex`)."""
        return digests.stored(self.algorithm, self._hasher.hexdigest())

    @property
    def sha256(self) -> str | None:
        """The bytes' sha256 (hex), when it was asked for."""
        return None if self._sha256 is None else str(self._sha256.hexdigest())


def write_all(fd: int, pieces: Sequence[Buffer], offset: int) -> None:
    """pwritev every piece at `offset`, finishing a short write (rare on a regular file)."""
    if len(pieces) > MAX_PIECES:
        pieces = [b"".join(pieces)]
    total = sum(len(p) for p in pieces)
    done = os.pwritev(fd, pieces, offset) if pieces else 0
    if done < total:
        aligned.write_at(fd, memoryview(b"".join(pieces))[done:], offset + done)
