"""Chunk bytes written and read back past the page cache (services/upload/aligned.py): every
byte lands in its place whatever the offset, length and piece sizes; only whole aligned blocks
go through O_DIRECT, and they really skip the cache; a filesystem that refuses O_DIRECT gets
the page cache instead."""

import errno
import fcntl
import hashlib
import os
import random
import subprocess
from pathlib import Path

import pytest
import xxhash

from services.upload import aligned
from services.upload.aligned import ALIGN, READ_BYTES, STAGE_BYTES, StagedWrite, read_range
from services.upload.chunkfile import ChunkWriter

FILL = 0xA5


def _pieces(data: bytes, seed: int) -> list[bytes]:
    """`data` cut into pieces of random sizes, as a socket hands them out."""
    rng, pieces, at = random.Random(seed), [], 0
    while at < len(data):
        size = rng.choice([1, 7, 4095, 4096, 65536, 125_203, 300_001])
        pieces.append(data[at : at + size])
        at += size
    return pieces


def _prefilled(path: Path, size: int) -> None:
    """`path` holding `size` FILL bytes, on disk and out of the page cache."""
    path.write_bytes(bytes([FILL]) * size)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _write(path: Path, offset: int, data: bytes, seed: int = 1) -> None:
    fd = os.open(path, os.O_WRONLY)
    staged = StagedWrite.open(fd, path, offset)
    assert staged is not None, "this filesystem refuses O_DIRECT: the test needs one that takes it"
    try:
        pieces = _pieces(data, seed)
        for start in range(0, len(pieces), 5):  # batches, as the request hands them over
            staged.write(pieces[start : start + 5])
        staged.close()
        os.fdatasync(fd)
    finally:
        staged.discard()  # after close: nothing left to let go of
        os.close(fd)


CASES = [
    (0, 1),
    (0, ALIGN),
    (0, STAGE_BYTES),
    (0, 2 * STAGE_BYTES + ALIGN + 3),
    (1, ALIGN),
    (ALIGN - 1, 2),
    (ALIGN + 17, STAGE_BYTES + 1),
    (3 * STAGE_BYTES, 8 * 1024 * 1024),
    (10_007 * 5, 10_007),
]


@pytest.mark.parametrize(("offset", "length"), CASES)
def test_every_byte_lands_in_its_place_and_no_other_byte_moves(tmp_path, offset, length):
    path = tmp_path / "source"
    size = offset + length + 3 * ALIGN
    _prefilled(path, size)
    data = random.Random(length).randbytes(length)
    _write(path, offset, data, seed=offset)
    stored = path.read_bytes()
    assert len(stored) == size
    assert stored[offset : offset + length] == data
    assert stored[:offset] == bytes([FILL]) * offset
    assert stored[offset + length :] == bytes([FILL]) * (size - offset - length)


def test_neighbouring_chunks_written_in_any_order_make_the_whole_file(tmp_path):
    """Chunks whose edges share blocks (10007 bytes each) written out of order, each through
    its own descriptors, as parallel requests do."""
    path, chunk, count = tmp_path / "source", 10_007, 9
    data = random.Random(3).randbytes(chunk * count - 123)
    _prefilled(path, len(data))
    order = list(range(count))
    random.Random(5).shuffle(order)
    for index in order:
        _write(path, index * chunk, data[index * chunk : (index + 1) * chunk], seed=index)
    assert path.read_bytes() == data


def test_only_whole_aligned_blocks_go_direct_and_they_skip_the_page_cache(tmp_path, monkeypatch):
    path, offset, length = tmp_path / "source", 100, 8 * 1024 * 1024
    _prefilled(path, offset + length)
    writes: list[tuple[bool, int, int]] = []
    real = os.pwrite

    def pwrite(fd: int, data: memoryview, at: int) -> int:
        direct = bool(fcntl.fcntl(fd, fcntl.F_GETFL) & aligned.O_DIRECT)
        writes.append((direct, at, len(data)))
        return real(fd, data, at)

    monkeypatch.setattr(aligned.os, "pwrite", pwrite)
    _write(path, offset, random.Random(1).randbytes(length))
    direct = [(at, size) for is_direct, at, size in writes if is_direct]
    buffered = sum(size for is_direct, _, size in writes if not is_direct)
    assert all(at % ALIGN == 0 and size % ALIGN == 0 for at, size in direct), direct
    # 100 bytes in: the head to 4096 and the last 100 bytes are the edges, the rest is direct.
    assert sum(size for _, size in direct) == length - ALIGN, "all but the edges"
    assert buffered == ALIGN, "the head up to the first block boundary and the tail after the last"
    # The kernel's own count of the file's pages in the cache: the edges, not the 8 MiB.
    resident = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--raw", "-o", "RES", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(resident.stdout.strip()) <= 4 * ALIGN, resident.stdout


def test_a_filesystem_that_refuses_direct_writes_gets_them_through_the_page_cache(
    tmp_path, monkeypatch
):
    path, offset, length = tmp_path / "source", 5, 3 * STAGE_BYTES + 11
    _prefilled(path, offset + length)
    real = os.pwrite
    refused = []

    def pwrite(fd: int, data: memoryview, at: int) -> int:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & aligned.O_DIRECT:
            refused.append(at)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, data, at)

    monkeypatch.setattr(aligned.os, "pwrite", pwrite)
    data = random.Random(2).randbytes(length)
    _write(path, offset, data)
    assert len(refused) == 1, "asked once, then the page cache for the rest"
    assert path.read_bytes()[offset:] == data


@pytest.mark.parametrize("error", [errno.EINVAL, errno.EMFILE])
def test_a_filesystem_that_cannot_open_direct_gives_a_buffered_chunk_writer(
    tmp_path, monkeypatch, error
):
    path = tmp_path / "source"
    _prefilled(path, 3 * ALIGN)
    real = os.open

    def open_(name: object, flags: int, *args: int) -> int:
        if flags & aligned.O_DIRECT:
            raise OSError(error, os.strerror(error))
        return real(name, flags, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(aligned.os, "open", open_)
    assert aligned.open_direct(path, os.O_WRONLY) is None
    fd = os.open(path, os.O_WRONLY)
    try:
        writer = ChunkWriter(fd, ALIGN, path=path)
        writer.feed([b"x" * ALIGN])
        writer.sync()
        writer.close()
    finally:
        os.close(fd)
    assert path.read_bytes() == bytes([FILL]) * ALIGN + b"x" * ALIGN + bytes([FILL]) * ALIGN


def test_a_chunk_writer_with_a_path_writes_its_chunk_once_synced(tmp_path):
    path, offset = tmp_path / "source", 3 * ALIGN + 9
    data = random.Random(4).randbytes(STAGE_BYTES + 5000)
    _prefilled(path, offset + len(data) + 100)
    fd = os.open(path, os.O_WRONLY)
    try:
        writer = ChunkWriter(fd, offset, path=path, sha256=True)
        for piece in _pieces(data, 9):
            writer.feed([piece])
        writer.sync()
        writer.close()
    finally:
        os.close(fd)
    stored = path.read_bytes()
    assert stored[offset : offset + len(data)] == data
    assert stored[offset + len(data) :] == bytes([FILL]) * 100
    assert writer.sha256 == hashlib.sha256(data).hexdigest()
    assert writer.digest == f"xxh3-128:{xxhash.xxh3_128(data).hexdigest()}"


SIZE = 2 * READ_BYTES + 3 * ALIGN + 11


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (0, 0),
        (0, 1),
        (0, ALIGN),
        (1, ALIGN + 1),
        (ALIGN - 1, 5 * STAGE_BYTES // 2),
        (7, 3_000_001),
        (0, READ_BYTES),
        (ALIGN + 5, SIZE),  # several read buffers' worth, unaligned at both ends
    ],
)
def test_read_range_gives_exactly_the_bytes_asked_for(tmp_path, start, end):
    path = tmp_path / "source"
    data = random.Random(6).randbytes(SIZE)
    path.write_bytes(data)
    got = bytearray()
    read_range(path, start, end, got.extend)
    assert bytes(got) == data[start:end]


def test_read_range_reads_through_the_page_cache_where_direct_reads_are_refused(
    tmp_path, monkeypatch
):
    path = tmp_path / "source"
    data = random.Random(8).randbytes(2 * STAGE_BYTES + 77)
    path.write_bytes(data)
    real = os.preadv

    def preadv(fd: int, buffers: list[memoryview], at: int) -> int:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & aligned.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, buffers, at)

    monkeypatch.setattr(aligned.os, "preadv", preadv)
    got = bytearray()
    read_range(path, 3, len(data), got.extend)
    assert bytes(got) == data[3:]


def test_read_range_says_where_a_file_ends_too_soon(tmp_path):
    path = tmp_path / "source"
    path.write_bytes(b"x" * (2 * ALIGN))
    with pytest.raises(OSError, match="ends at"):
        read_range(path, 0, 3 * ALIGN, lambda view: None)
