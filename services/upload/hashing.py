"""The whole file's sha256, advanced while the chunks arrive, so `complete` only hashes what
is left instead of the whole upload.

Each upload service process keeps one `PrefixHasher` per upload in progress (`HASHERS`). It
has hashed bytes `[0, position)` of the upload's file, and only ever bytes of chunks that this
process wrote, fsynced and recorded: a recorded chunk is never written again (a resend is only
compared), so those bytes are the file's for good.

- The writer of the chunk that starts at `position` feeds a copy of the digest as it writes
  (`begin`), and the copy becomes the digest once the chunk is recorded (`commit`).
- A chunk recorded out of order waits in `pending` and is read back from the file by a
  background thread once the prefix reaches it (read past the page cache, as it was written).
- `finish` hashes the rest from the file. A process that missed chunks (a restart, another
  process took them, the hasher was evicted) just has a shorter prefix, so the digest is
  always the file's; only the time `complete` takes depends on what this process saw.
"""

import hashlib
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from services.upload import aligned

MAX_HASHERS = 256
IDLE_SECONDS = 3600.0

# One thread hashes read-back chunks for every upload: at about 1.5 GB/s it keeps up with
# any network, and it keeps that work off the request threads that answer the client.
_DRAINER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="upload-hash")

Digest = Any  # hashlib's sha256 object has no public type


def hash_range(path: Path, digest: Digest, start: int, end: int) -> None:
    """Feed bytes [start, end) of `path` into `digest` (they must all be there). Read past the
    page cache where the filesystem allows it: the chunks were written that way (aligned.py),
    so the cache does not hold them, and a read into the cache would copy every byte twice."""
    aligned.read_range(path, start, end, digest.update)


class PrefixHasher:
    """sha256 of the contiguous prefix of one upload's file that this process has seen.

    `_lock` guards `digest`, `position`, `pending` and `_scheduled`; `_drain_lock` makes one
    thread at a time read chunks back, so the digest is never fed two ranges at once.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.digest: Digest = hashlib.sha256()
        self.position = 0
        self.pending: dict[int, int] = {}  # offset -> size of recorded chunks past the prefix
        self._lock = threading.Lock()
        self._drain_lock = threading.Lock()
        self._scheduled = False
        # Set when bytes it has not hashed left this machine (uploads into a bucket, remote.py):
        # it then reads nothing more, and its digest is never used.
        self.lost = False

    def begin(self, offset: int) -> Digest | None:
        """A digest to feed the chunk starting at `offset` into, if the prefix ends there."""
        with self._lock:
            return self.digest.copy() if self.position == offset else None

    def commit(self, offset: int, size: int, fed: Digest | None) -> None:
        """Chunk [offset, offset+size) is recorded; `fed` is begin()'s digest fed its bytes."""
        with self._lock:
            if fed is not None and self.position == offset:
                self.digest, self.position = fed, offset + size
            elif offset >= self.position and not self.lost:
                self.pending[offset] = size
            if self.position not in self.pending or self._scheduled:
                return
            self._scheduled = True
        _DRAINER.submit(self._drain_in_background)

    def lose(self) -> None:
        """Give up: bytes this hasher still needs are no longer in the file."""
        with self._lock:
            self.lost = True
            self.pending.clear()

    def catch_up(self) -> int:
        """Hash the recorded chunks that continue the prefix now; where the prefix ends."""
        with self._drain_lock:
            self._drain()
            with self._lock:
                return self.position

    def finish(self, size: int) -> str:
        """The sha256 of the file's first `size` bytes: the prefix plus what is left."""
        with self._drain_lock:
            self._drain()
            with self._lock:
                start, digest = self.position, self.digest.copy()
        if start > size:
            # Never expected (recorded chunks lie inside the file); hash it all to be sure.
            start, digest = 0, hashlib.sha256()
        hash_range(self.path, digest, start, size)
        return str(digest.hexdigest())

    def _drain_in_background(self) -> None:
        with self._drain_lock:
            self._drain()
        with self._lock:
            again = self._scheduled = self.position in self.pending
        if again:  # a chunk was committed between the drain's last look and now
            _DRAINER.submit(self._drain_in_background)

    def _drain(self) -> None:
        """Read back recorded chunks that continue the prefix (caller holds `_drain_lock`)."""
        while True:
            with self._lock:
                size = None if self.lost else self.pending.pop(self.position, None)
                if size is None:
                    return
                start, digest = self.position, self.digest.copy()
            try:
                hash_range(self.path, digest, start, start + size)
            except OSError:
                # Swept or deleted meanwhile: stop here; finish() reads whatever is left.
                with self._lock:
                    self.pending.clear()
                return
            with self._lock:
                self.digest, self.position = digest, start + size


class HasherRegistry:
    """The hashers of the uploads in progress, bounded: least recently used and idle ones go.

    Dropping a hasher only costs time: `complete` then hashes the file from the start.
    """

    def __init__(self, limit: int = MAX_HASHERS, idle_seconds: float = IDLE_SECONDS) -> None:
        self.limit = limit
        self.idle_seconds = idle_seconds
        self._hashers: OrderedDict[str, tuple[PrefixHasher, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, upload_id: str, path: Path) -> PrefixHasher:
        """The hasher of `upload_id` (whose file is `path`), made on first use."""
        now = time.monotonic()
        with self._lock:
            hasher = self._hashers.pop(upload_id, (PrefixHasher(path), now))[0]
            self._hashers[upload_id] = (hasher, now)
            self._evict(now)
            return hasher

    def discard(self, upload_id: str) -> None:
        """Forget an upload (completed or removed)."""
        with self._lock:
            self._hashers.pop(upload_id, None)

    def __len__(self) -> int:
        return len(self._hashers)

    def _evict(self, now: float) -> None:
        while self._hashers:
            oldest, (_, used) = next(iter(self._hashers.items()))
            if len(self._hashers) <= self.limit and now - used <= self.idle_seconds:
                return
            del self._hashers[oldest]


HASHERS = HasherRegistry()
