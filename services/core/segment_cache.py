"""Hot segments kept in memory, so the server sends them without reading their file again.

granian sends a file (ASGI pathsend) by reading it into its own buffers on every request,
which costs about twice the CPU per byte of nginx's sendfile; bytes handed over from memory
cost less than either. Every file this caches is immutable: a segment, a caption file and the
like are renamed into place whole, and a new encode writes new files. Each entry is keyed by
the file's version (path, inode, size, mtime), read by a stat on every request before the
cache is asked, so a file that changed or vanished is never answered from here.

- A version asked for a second time while it is remembered (`SEEN` versions) is read once, in
  a thread, off the event loop; the requests meanwhile are sent by pathsend. One-off requests
  (a lone viewer seeking through a long video) never displace the segments many watch.
- The kept bytes stay within the capacity (SEGMENT_CACHE_MB per process), least recently used
  out first; a file larger than an eighth of it is never kept.
- The read checks that the file is still the version the request saw; otherwise nothing is
  kept.
- Reads run on two threads of their own (not the loop's default executor, which name lookups
  share), and at most `FILLING` wait at once: past that, a second ask is let go, and the file
  is kept on a later one.

Only the event loop's thread touches the cache (the read's result is stored by a task back on
the loop), so it needs no lock.
"""

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cachetools import LRUCache

log = logging.getLogger(__name__)

Key = tuple[Path, int, int, int]
SEEN = 4096
# No single file may take more than this share of the capacity.
LARGEST_SHARE = 8
FILLING = 16
_READERS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="segment-cache")


def version_key(path: Path, stat: os.stat_result) -> Key:
    """What identifies one version of a file."""
    return (path, stat.st_ino, stat.st_size, stat.st_mtime_ns)


def read_version(key: Key) -> bytes | None:
    """The file's bytes if it is still the version `key` names (files here are replaced
    whole, by a rename: a new inode), else None."""
    path, _, size, _ = key
    try:
        with path.open("rb") as file:
            now = os.fstat(file.fileno())
            body = file.read()
    except OSError:
        return None
    same = version_key(path, now) == key
    return body if same and len(body) == size else None


class SegmentCache:
    """Bytes of immutable files asked for more than once, within `capacity` bytes."""

    def __init__(self, capacity: int, *, gauge: Any = None) -> None:
        self.capacity = max(0, capacity)
        # A Prometheus gauge (child) set to the bytes kept whenever they change, if given.
        self._gauge = gauge
        if gauge is not None:
            gauge.set(0)
        self._kept: LRUCache[Key, bytes] = LRUCache(maxsize=max(1, self.capacity), getsizeof=len)
        self._seen: LRUCache[Key, bool] = LRUCache(maxsize=SEEN)
        self._filling: dict[Key, asyncio.Task[None]] = {}

    @property
    def kept_bytes(self) -> int:
        return int(self._kept.currsize)

    def get(self, key: Key) -> bytes | None:
        """The kept bytes of this version, if any (it becomes the most recently used)."""
        return self._kept.get(key)

    def missed(self, key: Key) -> None:
        """This version was asked for and is not kept: remember it, or, asked for before, start
        reading it (in a thread) so later requests find it."""
        if not self.capacity or key[2] > self.capacity // LARGEST_SHARE:
            return
        if key in self._filling or len(self._filling) >= FILLING:
            return
        if self._seen.pop(key, None) is None:
            self._seen[key] = True
            return
        self._filling[key] = asyncio.get_running_loop().create_task(self._fill(key))

    async def settled(self) -> None:
        """Wait for the reads in progress (for tests)."""
        while self._filling:
            await asyncio.gather(*self._filling.values(), return_exceptions=True)

    async def _fill(self, key: Key) -> None:
        try:
            loop = asyncio.get_running_loop()
            body = await loop.run_in_executor(_READERS, read_version, key)
        except Exception:  # the cache is only ever a shortcut: the file is still served
            log.exception("reading a segment into the cache failed")
            body = None
        finally:
            self._filling.pop(key, None)
        if body is not None:
            self._kept[key] = body
            if self._gauge is not None:
                self._gauge.set(self.kept_bytes)
