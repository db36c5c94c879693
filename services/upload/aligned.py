"""Upload bytes moved past the page cache (`O_DIRECT`): written from, and read back into,
page-aligned buffers that are used again and again.

A buffered write copies every byte into the page cache, and on a virtual machine whose free
pages go back to the host that copy is the upload service's dearest step: 1 GiB of 8 MiB
`pwrite`s cost 0.3 to 2.9 CPU-s here, depending on whether the pages had just been freed,
against 0.03 to 0.06 CPU-s for the same writes with `O_DIRECT` (`scripts/bench.py ingest`
measures the service). Direct I/O needs the file offset, the length and the buffer's address
aligned (`ALIGN`: a memory page, 4 KiB here), so:

- `StagedWrite` copies a chunk's pieces into an aligned buffer and writes it out whole; the
  bytes before the chunk's first aligned offset and after its last one (shared with the
  neighbouring chunks' blocks, or the end of the file) go through the page cache, as before.
  Direct and buffered writes never touch the same block.
- `read_range` reads a range the same way: the aligned middle direct, the edges buffered.

Where the filesystem refuses `O_DIRECT` (`EINVAL`: tmpfs on older kernels, some network and
FUSE filesystems) both fall back to the page cache, and `DIRECT_IO=false` turns it off.
"""

import errno
import mmap
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

Buffer = bytes | bytearray | memoryview

# Direct writes cover whole memory pages only, never one that a buffered write (a chunk's
# edge, shared with its neighbour) may also dirty: written back later, such a page would put
# its stale copy of the direct bytes over them. 4096 also suits 512-byte and 4 KiB sectors.
ALIGN = max(4096, mmap.PAGESIZE)
STAGE_BYTES = 1024 * 1024  # a multiple of ALIGN (pages are at most 64 KiB)
# Read back in larger pieces: each piece is one read and one hash update, and the thread
# that hashes takes the GIL back after each (both release it). In 1 MiB pieces, with the event
# loop and the writers holding the GIL most of the time, the whole file's hash fell behind a
# fast upload, and `complete` waited for it (hashing.py).
READ_BYTES = 8 * 1024 * 1024
# Buffers kept for reuse, by size: about one per chunk in flight; one per reading thread.
POOL_MAX = {STAGE_BYTES: 32, READ_BYTES: 2}
O_DIRECT: int = getattr(os, "O_DIRECT", 0)

_pools: dict[int, list[mmap.mmap]] = {size: [] for size in POOL_MAX}
_pool_lock = threading.Lock()


def take_buffer(size: int = STAGE_BYTES) -> mmap.mmap:
    """A page-aligned buffer of `size` (STAGE_BYTES or READ_BYTES): one used before when there
    is one (new memory is faulted in page by page, which is what this module avoids)."""
    with _pool_lock:
        if _pools[size]:
            return _pools[size].pop()
    return mmap.mmap(-1, size)


def give_buffer(buffer: mmap.mmap) -> None:
    """Hand a buffer back for the next chunk (or unmap it, past its POOL_MAX)."""
    with _pool_lock:
        pool = _pools[len(buffer)]
        if len(pool) < POOL_MAX[len(buffer)]:
            pool.append(buffer)
            return
    buffer.close()


def open_direct(path: Path, flags: int) -> int | None:
    """`path` opened with O_DIRECT added to `flags`, or None where that is not possible
    (EINVAL from a filesystem that refuses it, or any other failure: the caller's own
    descriptor, through the page cache, then does the work and meets any real error itself)."""
    if not O_DIRECT:
        return None
    try:
        return os.open(path, flags | O_DIRECT)
    except OSError:
        return None


def write_at(fd: int, data: Buffer, offset: int) -> None:
    """pwrite all of `data` at `offset`, finishing short writes."""
    view = memoryview(data)
    while view:
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done


class StagedWrite:
    """Bytes written in order from `offset` of one file: through its own O_DIRECT descriptor
    in whole aligned blocks staged in a pooled buffer, through `fd` (the page cache) up to the
    first aligned offset and for an unaligned rest.

    Made by `open` (None where the file cannot be opened O_DIRECT). `drain` writes what is
    staged (before an fsync); more bytes may follow it. `close` drains, then discards;
    `discard` drops what is staged (bytes that will not count) and lets go of the buffer and
    the direct descriptor. Always `close` or `discard` it, once or more.
    """

    def __init__(self, fd: int, direct_fd: int, offset: int) -> None:
        self.fd = fd
        self.direct_fd: int | None = direct_fd  # owned: closed by discard, or on a refusal
        self.position = offset  # where the next byte given goes
        self.filled = 0  # staged bytes: [position - filled, position), starting aligned
        self.buffer: mmap.mmap | None = None

    @classmethod
    def open(cls, fd: int, path: Path, offset: int) -> "StagedWrite | None":
        """Writes from `offset` of `path` (open as `fd`), or None where O_DIRECT is refused."""
        direct_fd = open_direct(path, os.O_WRONLY)
        return None if direct_fd is None else cls(fd, direct_fd, offset)

    def write(self, pieces: Sequence[Buffer]) -> None:
        for piece in pieces:
            view = memoryview(piece).cast("B")
            while view:
                if not self.filled and self.position % ALIGN:
                    # Up to the next block boundary through the page cache: that block is
                    # shared with whatever comes before.
                    part = view[: -self.position % ALIGN]
                    write_at(self.fd, part, self.position)
                else:
                    if self.buffer is None:
                        self.buffer = take_buffer()
                    part = view[: STAGE_BYTES - self.filled]
                    self.buffer[self.filled : self.filled + len(part)] = part
                    self.filled += len(part)
                self.position += len(part)
                view = view[len(part) :]
                if self.filled == STAGE_BYTES:
                    self._flush(STAGE_BYTES)

    def drain(self) -> None:
        """Write everything staged: the whole blocks direct, an unaligned rest buffered."""
        self._flush(self.filled - self.filled % ALIGN)
        if self.filled:
            assert self.buffer is not None
            write_at(self.fd, memoryview(self.buffer)[: self.filled], self.position - self.filled)
            self.filled = 0

    def close(self) -> None:
        """`drain`, then hand the buffer back."""
        try:
            self.drain()
        finally:
            self.discard()

    def discard(self) -> None:
        """Drop what is staged; hand the buffer back and close the direct descriptor."""
        self.filled = 0
        if self.buffer is not None:
            give_buffer(self.buffer)
            self.buffer = None
        self._close_direct()

    def _close_direct(self) -> None:
        if self.direct_fd is not None:
            os.close(self.direct_fd)
            self.direct_fd = None

    def _flush(self, size: int) -> None:
        """Write the buffer's first `size` bytes (a multiple of ALIGN) at their place, keep
        the rest at the buffer's front."""
        if not size:
            return
        assert self.buffer is not None
        start = self.position - self.filled
        data = memoryview(self.buffer)[:size]
        done = 0
        try:
            if self.direct_fd is not None:
                try:
                    done = os.pwrite(self.direct_fd, data, start)
                except OSError as exc:
                    if exc.errno != errno.EINVAL:
                        raise
                    self._close_direct()  # this filesystem will not: the page cache from now
            if done < size:  # refused, or short (a full disk says so on the buffered retry)
                write_at(self.fd, data[done:], start + done)
        finally:
            data.release()
        rest = self.filled - size
        if rest:
            self.buffer.move(0, size, rest)
        self.filled = rest


def read_range(path: Path, start: int, end: int, consume: Callable[[memoryview], None]) -> None:
    """Pass bytes [start, end) of `path` to `consume` in order (they must all be there): the
    aligned middle read with O_DIRECT into a pooled buffer, the edges through the page cache.
    Each view is only valid during its call."""
    fd = os.open(path, os.O_RDONLY)
    direct_fd = open_direct(path, os.O_RDONLY)
    buffer = take_buffer(READ_BYTES)
    try:
        middle = (start + ALIGN - 1) // ALIGN * ALIGN, end // ALIGN * ALIGN
        if direct_fd is None or middle[0] >= middle[1]:
            _read(fd, buffer, start, end, consume, path)
            return
        _read(fd, buffer, start, middle[0], consume, path)
        position = _read(direct_fd, buffer, middle[0], middle[1], consume, path, direct=True)
        _read(fd, buffer, position, end, consume, path)
    finally:
        give_buffer(buffer)
        os.close(fd)
        if direct_fd is not None:
            os.close(direct_fd)


def _read(
    fd: int,
    buffer: mmap.mmap,
    start: int,
    end: int,
    consume: Callable[[memoryview], None],
    path: Path,
    *,
    direct: bool = False,
) -> int:
    """Read [start, end) from `fd` through `buffer` into `consume`; where it stopped (short
    of `end` only when a direct read was refused: the caller reads the rest buffered)."""
    view = memoryview(buffer)
    position = start
    try:
        while position < end:
            try:
                got = os.preadv(fd, [view[: min(end - position, len(view))]], position)
            except OSError as exc:
                if direct and exc.errno == errno.EINVAL:
                    return position
                raise
            if not got:
                raise OSError(f"{path.name} ends at {position}, before {end}")
            consume(view[:got])
            position += got
            if direct and got % ALIGN:
                return position  # a short direct read: the rest is not aligned any more
    finally:
        view.release()
    return position
