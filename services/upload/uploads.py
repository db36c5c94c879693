"""Chunked upload protocol, free of HTTP: declare, write chunks in place, report, complete.

Every chunk is written straight to its offset in one file (`originals/{id}/source`); a chunk
counts as received only once its bytes are on disk (a row is inserted after the write and
fsync), so a crash mid-chunk leaves it missing, never half-counted. Chunk offsets need the chunk
size: declared at `init`, or learnt from the first non-last chunk to arrive (all chunks but the
last have the same size). A last chunk that arrives before the size is known waits in
`last.part` until it can be placed: once it is recorded, by whoever holds its lock (see
`_place_parked_last`), so half of it is never placed while its bytes still arrive.

A chunk can be stored as its bytes arrive (`open_chunk`, then `ChunkIntake.feed`/`finish`)
or from a file-like object (`receive_chunk`). One copy of a chunk is stored at a time (a lock
per chunk), and the whole file's sha256 advances as chunks are counted (hashing.py), so
`complete` reads only what was not hashed yet. A chunk row keeps a cheap digest of its bytes,
what a resend is compared with, and a chunk sha256 the client sends is checked before the chunk
counts (digests.py).
"""

import errno
import hashlib
import math
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import RowMapping, Table, and_, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, make_transient_to_detached

from services.core import events, ids, jobs
from services.core.db import engine, session_scope
from services.core.errors import (
    AppError,
    Conflict,
    InsufficientStorage,
    InvalidInput,
    NotAVideo,
    NotFound,
    TooLarge,
)
from services.core.metrics import BYTES_UPLOADED
from services.core.models import Job, Status, Upload, UploadChunk, Video, utcnow
from services.core.redact import public_text
from services.core.settings import Settings
from services.core.storage import Storage
from services.core.storage.interface import StorageUnavailable
from services.media.bounds import BeyondLimits, check_source
from services.media.demuxers import Source
from services.media.ffmpeg_args import CODECS
from services.media.plan import make_plan
from services.media.probe import ProbeError, SourceInfo, probe
from services.upload import digests, remote
from services.upload.chunkfile import Buffer, ChunkLock, ChunkWriter
from services.upload.hashing import HASHERS, PrefixHasher

READ_SIZE = 1024 * 1024
# A second copy of a chunk waits this long for the first to be stored before it is a 409.
LOCK_WAIT_SECONDS = 30.0
LOCK_POLL_SECONDS = 0.05
MAX_FILENAME = 255
# The tables behind the models, for Core statements on the chunk path (_record).
UPLOADS: Table = Upload.__table__  # type: ignore[assignment]
CHUNKS: Table = UploadChunk.__table__  # type: ignore[assignment]


@dataclass
class ChunkReport:
    """Which chunks of an upload are on disk and which are still missing."""

    upload_id: str
    filename: str
    total_chunks: int
    total_size: int | None
    chunk_size: int | None
    received: list[int]
    missing: list[int]
    bytes_received: int
    completed: bool
    extra: dict[str, object] = field(default_factory=dict)


def clean_filename(name: str) -> str:
    """The uploaded name as a label: no path, no control characters, bounded length."""
    label = re.sub(r"[\x00-\x1f\x7f]", "", name.replace("\\", "/").rsplit("/", 1)[-1]).strip()
    if not label:
        raise InvalidInput("filename is empty: send the video's file name, e.g. holiday.mp4")
    return label[:MAX_FILENAME]


def video_label(settings: Settings, filename: str) -> str:
    """The video's name from a file name: cleaned, and ending in an accepted extension."""
    label = clean_filename(filename)
    _check_extension(settings, label)
    return label


def _check_extension(settings: Settings, label: str) -> None:
    allowed = [e.strip().lower() for e in settings.allowed_extensions.split(",") if e.strip()]
    _, dot, ending = label.rpartition(".")
    if not dot or ending.lower() not in allowed:
        raise InvalidInput(
            f"'{label}' does not end in a video or audio file extension; "
            f"accepted: {', '.join(allowed)}"
        )


def check_free_space(settings: Settings, storage: Storage, needed: int) -> None:
    """Refuse (507) what would leave less than MIN_FREE_BYTES free on the storage disk."""
    storage.check_free_space(needed, settings.min_free_bytes, "this upload")


def _check_declaration(
    settings: Settings, total_chunks: int, total_size: int | None, chunk_size: int | None
) -> None:
    if not 1 <= total_chunks <= settings.max_chunks:
        raise InvalidInput(f"total_chunks must be between 1 and {settings.max_chunks}")
    if total_size is not None and not 0 < total_size <= settings.max_upload_bytes:
        raise InvalidInput(f"total_size must be between 1 and {settings.max_upload_bytes} bytes")
    if chunk_size is not None and not 0 < chunk_size <= settings.max_chunk_bytes:
        raise InvalidInput(f"chunk_size must be between 1 and {settings.max_chunk_bytes} bytes")
    if total_size is None and chunk_size is not None:
        _check_chunks_fit(settings, total_chunks, chunk_size)
    if total_size and chunk_size and math.ceil(total_size / chunk_size) != total_chunks:
        need = math.ceil(total_size / chunk_size)
        raise InvalidInput(
            f"total_chunks={total_chunks} does not fit total_size={total_size} in chunks of "
            f"{chunk_size} bytes: that takes {need} chunks"
        )


def _check_chunks_fit(settings: Settings, total_chunks: int, chunk_size: int) -> None:
    """With no total_size, `total_chunks` chunks of `chunk_size` bytes bound the file: past
    MAX_UPLOAD_BYTES a chunk's offset could be anywhere (even past what the disk can hold)."""
    most = total_chunks * chunk_size
    if most > settings.max_upload_bytes:
        raise TooLarge(
            f"{total_chunks} chunks of {chunk_size} bytes make up to {most} bytes; the limit "
            f"is {settings.max_upload_bytes} bytes (MAX_UPLOAD_BYTES): declare total_size, or "
            "send fewer or smaller chunks"
        )


def check_codec(codec: str | None) -> str | None:
    """The ladder codec asked for at init; None (not chosen) means DEFAULT_CODEC later."""
    if not codec:
        return None
    if codec not in CODECS:
        raise InvalidInput(f"codec must be one of {', '.join(CODECS)} (or left out), not {codec!r}")
    return codec


def init_upload(
    session: Session,
    storage: Storage,
    settings: Settings,
    *,
    filename: str,
    total_chunks: int,
    total_size: int | None = None,
    chunk_size: int | None = None,
    sha256: str | None = None,
    codec: str | None = None,
    upload_id: str | None = None,
) -> Upload:
    """Declare an upload; returns it with its id (the video id from now on): `upload_id`
    when the caller reserved one (a direct upload's), else a new one."""
    label = video_label(settings, filename)
    _check_declaration(settings, total_chunks, total_size, chunk_size)
    codec = check_codec(codec)
    largest = _largest(settings, total_chunks, total_size, chunk_size)
    check_free_space(settings, storage, remote.staged_bytes(settings, total_size or 0, largest))
    if total_chunks == 1 and total_size is not None:
        chunk_size = total_size
    sha256 = digests.hex_sha256(sha256, "the whole file's sha256")
    upload = Upload(
        id=ids.video_id(upload_id) if upload_id else ids.new_video_id(),
        filename=label,
        total_chunks=total_chunks,
        total_size=total_size,
        chunk_size=chunk_size,
        sha256=sha256,
        codec=codec,
    )
    remote.start(settings, upload, largest)
    storage.create_source(upload.id)
    session.add(upload)
    events.upload_created(session, upload)
    return upload


def _largest(
    settings: Settings, total_chunks: int, total_size: int | None, chunk_size: int | None
) -> int:
    """The most bytes the declared upload may hold."""
    if total_size is not None:
        return total_size
    if chunk_size is not None:
        return total_chunks * chunk_size
    return settings.max_upload_bytes


def get_upload(session: Session, *, upload_id: str) -> Upload:
    """The upload with this id, or NotFound."""
    upload = session.get(Upload, ids.video_id(upload_id))
    if upload is None:
        raise NotFound(f"no upload {upload_id}: call /upload/init first")
    return upload


def report(session: Session, *, upload_id: str) -> ChunkReport:
    """Which chunks have arrived and which are missing."""
    upload = get_upload(session, upload_id=upload_id)
    rows = session.execute(
        select(UploadChunk.index, UploadChunk.size).where(UploadChunk.upload_id == upload.id)
    ).all()
    received = sorted(index for index, _ in rows)
    have = set(received)
    return ChunkReport(
        upload_id=upload.id,
        filename=upload.filename,
        total_chunks=upload.total_chunks,
        total_size=upload.total_size,
        chunk_size=upload.chunk_size,
        received=received,
        missing=[i for i in range(upload.total_chunks) if i not in have],
        bytes_received=sum(size for _, size in rows),
        completed=upload.completed,
    )


@dataclass(frozen=True)
class ChunkReceipt:
    upload_id: str
    index: int
    size: int
    sha256: str | None  # only when the client sent the chunk's sha256, and it matched
    duplicate: bool


class ChunkBusy(Conflict):
    """Another request is storing this very chunk right now (try again in a moment)."""

    code = "chunk_busy"


def _write_at(path: Path, offset: int, data: BinaryIO, *, direct: bool) -> None:
    """Copy `data` into `path` at `offset` (past the page cache if `direct`), fsync."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o640)
    try:
        writer = ChunkWriter(fd, offset, path=path if direct else None)
        try:
            data.seek(0)
            while piece := data.read(READ_SIZE):
                writer.feed([piece])
            writer.sync()
        finally:
            writer.close()
    finally:
        os.close(fd)


def _check_chunk_size(upload: Upload, index: int, size: int, settings: Settings) -> None:
    if size <= 0:
        raise InvalidInput(f"chunk {index} is empty: send the chunk's bytes in the 'file' field")
    if size > settings.max_chunk_bytes:
        raise TooLarge(
            f"chunk {index} has {size} bytes; the limit is {settings.max_chunk_bytes} "
            "(MAX_CHUNK_BYTES): send smaller chunks"
        )
    last = index == upload.total_chunks - 1
    if upload.chunk_size is None:
        return
    if not last and size != upload.chunk_size:
        raise InvalidInput(
            f"chunk {index} has {size} bytes; every chunk but the last must have "
            f"{upload.chunk_size} bytes (the chunk size of this upload)"
        )
    if last and upload.total_size is not None:
        expected = upload.total_size - index * upload.chunk_size
        if size != expected:
            raise InvalidInput(f"last chunk {index} has {size} bytes; expected {expected}")
    elif last and size > upload.chunk_size:
        raise InvalidInput(f"last chunk {index} is larger than the chunk size {upload.chunk_size}")


def _learn_chunk_size(settings: Settings, upload: Upload, size: int) -> int:
    """Record the chunk size from the first non-last chunk; return the size that stands."""
    if upload.total_size is not None and math.ceil(upload.total_size / size) != upload.total_chunks:
        raise InvalidInput(
            f"a chunk of {size} bytes does not split total_size={upload.total_size} into "
            f"{upload.total_chunks} chunks"
        )
    if upload.total_size is None:
        _check_chunks_fit(settings, upload.total_chunks, size)
    with session_scope(settings) as session:
        session.execute(
            update(Upload)
            .where(Upload.id == upload.id, Upload.chunk_size.is_(None))
            .values(chunk_size=size)
        )
        stored = session.scalar(select(Upload.chunk_size).where(Upload.id == upload.id))
    assert stored is not None
    return stored


def _offset(settings: Settings, upload: Upload, index: int, size: int) -> int | None:
    """Where chunk `index` goes, or None when it is the last and the chunk size is unknown."""
    last = index == upload.total_chunks - 1
    if upload.chunk_size is None and not last:
        upload.chunk_size = _learn_chunk_size(settings, upload, size)
        _check_chunk_size(upload, index, size, settings)
    if index == 0:
        return 0
    if upload.chunk_size is not None:
        return index * upload.chunk_size
    if upload.total_size is not None:
        return upload.total_size - size
    return None


PARKED = "last.part"


def _parked_path(storage: Storage, upload_id: str) -> Path:
    return storage.original_dir(upload_id) / PARKED


def _place_parked_last(
    settings: Settings,
    storage: Storage,
    upload_id: str,
    *,
    held: ChunkLock | None = None,
    wait_seconds: float | None = None,
) -> None:
    """Move a last chunk parked in last.part (it came before the chunk size was known) to its
    offset in the file, once that is known.

    Only the holder of the last chunk's lock may: the request storing that chunk writes
    last.part as its bytes arrive, so anyone else would copy half of it. `held` is that lock
    when the caller has it; otherwise it is taken here, without waiting (`wait_seconds`
    None: a busy lock means its holder places the chunk itself) or waiting that long. Only a
    recorded chunk is placed: recorded means all its bytes are on disk.
    """
    if not _parked_path(storage, upload_id).exists():
        return
    lock = held
    if lock is None:
        with session_scope(settings) as session:
            last = get_upload(session, upload_id=upload_id).total_chunks - 1
        if wait_seconds is not None:
            lock = _lock_chunk(storage, upload_id, last, wait_seconds)
        else:
            lock = ChunkLock(storage.source_path(upload_id), last)
            if not lock.acquire():
                return
    try:
        _place_parked_locked(settings, storage, upload_id)
    finally:
        if lock is not held:
            lock.release()


def _place_parked_locked(settings: Settings, storage: Storage, upload_id: str) -> None:
    """`_place_parked_last` once the last chunk's lock is held."""
    parked = _parked_path(storage, upload_id)
    with session_scope(settings) as session:
        upload = get_upload(session, upload_id=upload_id)
        row = session.get(UploadChunk, (upload.id, upload.total_chunks - 1))
    if row is None or upload.chunk_size is None or not parked.exists():
        return
    if row.size > upload.chunk_size or parked.stat().st_size != row.size:
        return  # it cannot go anywhere: `complete` says so (see _assemble)
    # Not given to the whole file's hasher: it may not be counted yet (see hashing.py), and
    # it is one chunk, which `complete` reads in no time.
    with parked.open("rb") as data:
        offset = (upload.total_chunks - 1) * upload.chunk_size
        _write_at(storage.source_path(upload.id), offset, data, direct=settings.direct_io)
    parked.unlink()


@dataclass(frozen=True)
class Placement:
    """Where a chunk's bytes go, and the most bytes it may have."""

    path: Path
    offset: int
    limit: int
    in_source: bool  # False: a last chunk parked in last.part until the chunk size is known


def _placement(
    settings: Settings, storage: Storage, upload: Upload, index: int, size: int | None
) -> Placement | None:
    """Where chunk `index` goes; None when that depends on its size and `size` is unknown."""
    source = storage.source_path(upload.id)
    if size is not None:
        _check_chunk_size(upload, index, size, settings)
        offset = _offset(settings, upload, index, size)
        if offset is None:
            return Placement(_parked_path(storage, upload.id), 0, size, False)
        return Placement(source, offset, size, True)
    if upload.chunk_size is None:
        return None
    offset = index * upload.chunk_size
    limit = upload.chunk_size
    if index == upload.total_chunks - 1 and upload.total_size is not None:
        limit = upload.total_size - offset
    return Placement(source, offset, min(limit, settings.max_chunk_bytes), True)


class ChunkIntake:
    """One chunk being received: `feed` its bytes in order, then `finish`; always `close`
    (it is a context manager).

    A new chunk is written at its place as it arrives; a chunk already on disk is only hashed
    and compared. Bytes past the chunk's size are refused before they are written, so a
    neighbouring chunk is never touched. The chunk's lock is held from `open_chunk` to
    `close`: no other copy of the chunk is written or counted meanwhile.
    """

    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        upload: Upload,
        index: int,
        place: Placement,
        lock: ChunkLock,
        existing: UploadChunk | None,
        sha256: str | None = None,
    ) -> None:
        self.settings, self.storage, self.upload, self.index = settings, storage, upload, index
        self.place, self.lock, self.existing = place, lock, existing
        self.sha256 = sha256  # the chunk's sha256 as the client sent it, to be checked
        self.hasher: PrefixHasher | None = None
        self._own_fd: int | None = None
        check = sha256 is not None
        if existing is not None:
            # Hashed as the first copy was, to be compared with it.
            algorithm = digests.algorithm_of(existing.digest)
            self.writer = ChunkWriter(None, 0, algorithm=algorithm, sha256=check)
            return
        check_free_space(settings, storage, place.limit)
        unbuffered = place.path if settings.direct_io else None  # past the page cache
        if place.in_source:
            self.hasher = HASHERS.get(upload.id, place.path)
            fed = self.hasher.begin(place.offset)
            self.writer = ChunkWriter(lock.fd, place.offset, fed, path=unbuffered, sha256=check)
        else:
            # Truncated: what an earlier, cut-off copy left must not outlast this one's end.
            self._own_fd = os.open(place.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
            self.writer = ChunkWriter(self._own_fd, place.offset, path=unbuffered, sha256=check)

    def __enter__(self) -> "ChunkIntake":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def feed(self, pieces: Sequence[Buffer]) -> None:
        """Store the next pieces of the chunk (or only hash them, for a resend)."""
        if self.writer.size + sum(len(p) for p in pieces) > self.place.limit:
            raise self._too_long()
        try:
            self.writer.feed(pieces)
        except OSError as exc:
            raise _write_error(exc, self.index) from exc

    def finish(self, announced: int | None = None, rest: Sequence[Buffer] = ()) -> ChunkReceipt:
        """The chunk is whole (with `rest`, its last pieces, fed first): check its size, make
        it durable, count it; the receipt."""
        if rest:
            self.feed(rest)
        size, digest, sha256 = self.writer.size, self.writer.digest, self.writer.sha256
        if announced is not None and size != announced:
            raise InvalidInput(
                f"chunk {self.index} brought {size} bytes, not the {announced} announced"
            )
        _check_chunk_size(self.upload, self.index, size, self.settings)
        if sha256 != self.sha256:
            raise InvalidInput(
                f"chunk {self.index} arrived with sha256 {str(sha256)[:12]}…, not the "
                f"{str(self.sha256)[:12]}… sent with it: it was changed on the way and is not "
                "counted; send it again",
                code="chunk_checksum_mismatch",
            )
        if self.existing is not None:
            return self._drained(_compare_resent(self.existing, digest, sha256))
        try:
            self.writer.sync()
        except OSError as exc:
            raise _write_error(exc, self.index) from exc
        winner = _record(self.settings, self.upload.id, self.index, size, digest)
        if winner is not None:
            return _compare_resent(winner, digest, sha256)
        BYTES_UPLOADED.inc(size)
        if self.hasher is not None:
            self.hasher.commit(self.place.offset, size, self.writer.fed)
        last = self.index == self.upload.total_chunks - 1
        _place_parked_last(
            self.settings, self.storage, self.upload.id, held=self.lock if last else None
        )
        return self._drained(ChunkReceipt(self.upload.id, self.index, size, sha256, False))

    def _drained(self, receipt: ChunkReceipt) -> ChunkReceipt:
        """`receipt`, once the parts this chunk made whole are in the bucket (if any)."""
        try:
            remote.drain(self.settings, self.storage, self.upload.id)
        except StorageUnavailable as exc:
            raise remote.unavailable(f"chunk {self.index}", exc) from exc
        return receipt

    def close(self) -> None:
        """Let go of the chunk (its lock and any file this intake opened)."""
        self.writer.close()
        if self._own_fd is not None:
            os.close(self._own_fd)
            self._own_fd = None
        self.lock.release()

    def _too_long(self) -> AppError:
        limit = self.place.limit
        if limit >= self.settings.max_chunk_bytes:
            return TooLarge(f"chunk {self.index} has more than {limit} bytes, the limit")
        why = "announced"
        if self.upload.chunk_size == limit and self.index < self.upload.total_chunks - 1:
            why = "the chunk size of this upload: every chunk but the last has it"
        elif self.place.in_source and self.upload.chunk_size is not None:
            why = "left for the last chunk of this upload"
        return InvalidInput(f"chunk {self.index} has more than {limit} bytes ({why})")


def _write_error(exc: OSError, index: int) -> Exception:
    """A write that failed: a full disk is the client's 507, a file past what the filesystem
    holds its 413 (the declared bounds keep offsets below it), anything else stays an error."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return InsufficientStorage(
            f"the disk filled up while chunk {index} was stored; try again later"
        )
    if exc.errno == errno.EFBIG:
        return TooLarge(f"chunk {index} would end past the largest file this storage holds")
    return exc


def open_chunk(
    settings: Settings,
    storage: Storage,
    *,
    upload_id: str,
    index: int,
    size: int | None = None,
    wait_seconds: float = 0.0,
    sha256: str | None = None,
) -> ChunkIntake | None:
    """Get ready to receive chunk `index` of an upload: checked, placed and locked.

    `size` is the chunk's size when known before its bytes. Returns None when the chunk's
    place depends on a size not given (the upload's chunk size is not known yet): then send
    it with its size, through `receive_chunk`. Raises ChunkBusy when another request is
    storing the same chunk for longer than `wait_seconds`. With `sha256` (the client's, hex),
    the chunk counts only if its bytes have that sha256.
    """
    if index < 0:
        raise InvalidInput(f"index {index} is negative: chunks are numbered from 0")
    video_id = ids.video_id(upload_id)
    lock = _lock_chunk(storage, video_id, index, wait_seconds)
    try:
        intake = _prepare(settings, storage, video_id, index, size, lock, sha256)
    except BaseException:
        lock.release()
        raise
    if intake is None:
        lock.release()
    return intake


def _lock_chunk(storage: Storage, video_id: str, index: int, wait_seconds: float) -> ChunkLock:
    lock = ChunkLock(storage.source_path(video_id), index)
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            if lock.acquire():
                return lock
        except FileNotFoundError:
            raise NotFound(
                f"no upload {video_id}: call /upload/init first (an idle upload expires)"
            ) from None
        if time.monotonic() >= deadline:
            raise ChunkBusy(
                f"chunk {index} of upload {video_id} is being stored by another request "
                "right now; send it again in a moment"
            )
        time.sleep(LOCK_POLL_SECONDS)


# The statements a chunk's request or a tus request runs, built once, on the tables and a
# plain connection: a chunk's request reads its upload and chunk row in one query and records
# the chunk in two statements; a tus request reads its upload in one. Through the ORM (a
# Session.get each, a Session per transaction, statements built per call) the same work cost
# about twice the CPU.
_UPLOAD = select(UPLOADS).where(UPLOADS.c.id == bindparam("id"))
_UPLOAD_AND_CHUNK = (
    select(UPLOADS, CHUNKS.c.size.label("chunk_bytes"), CHUNKS.c.digest.label("chunk_digest"))
    .outerjoin(
        CHUNKS,
        and_(CHUNKS.c.upload_id == UPLOADS.c.id, CHUNKS.c.index == bindparam("index")),
    )
    .where(UPLOADS.c.id == bindparam("id"))
)
INSERT_CHUNK = insert(CHUNKS)  # also the tus PATCH's (tus.py)
_TOUCH_UPLOAD = (
    update(UPLOADS).where(UPLOADS.c.id == bindparam("upload")).values(updated_at=bindparam("now"))
)
_UPLOAD_COLUMNS = tuple(column.key for column in UPLOADS.columns)
INDEX_COLUMN_MAX = 2**31 - 1  # upload_chunks.index is an INTEGER


def _detached(row: RowMapping) -> Upload:
    """An Upload made from its row, detached as a closed session leaves what it loaded."""
    upload = Upload(**{key: row[key] for key in _UPLOAD_COLUMNS})
    make_transient_to_detached(upload)
    return upload


def load_upload(settings: Settings, video_id: str) -> Upload | None:
    """The upload `video_id` (a normalised id), detached; None when there is none."""
    with engine(settings).connect() as connection:
        row = connection.execute(_UPLOAD, {"id": video_id}).first()
    return None if row is None else _detached(row._mapping)


def _upload_and_chunk(
    settings: Settings, video_id: str, index: int
) -> tuple[Upload, UploadChunk | None]:
    """The upload (NotFound if there is none) and its chunk `index`'s row, if recorded: both
    detached."""
    with engine(settings).connect() as connection:
        row = connection.execute(_UPLOAD_AND_CHUNK, {"id": video_id, "index": index}).first()
    if row is None:
        raise NotFound(f"no upload {video_id}: call /upload/init first")
    fields = row._mapping
    existing = None
    if fields["chunk_digest"] is not None:
        existing = UploadChunk(
            upload_id=video_id,
            index=index,
            size=fields["chunk_bytes"],
            digest=fields["chunk_digest"],
        )
        make_transient_to_detached(existing)
    return _detached(fields), existing


def _prepare(
    settings: Settings,
    storage: Storage,
    video_id: str,
    index: int,
    size: int | None,
    lock: ChunkLock,
    sha256: str | None,
) -> ChunkIntake | None:
    """Check the chunk against its upload (the caller holds the chunk's lock)."""
    # Read with the index clamped to what the database's 32-bit column holds: PostgreSQL
    # refuses to compare the column with a larger number (the route takes up to 2**31), and
    # an index past it is out of range for every upload, as the check below says.
    upload, existing = _upload_and_chunk(settings, video_id, min(index, INDEX_COLUMN_MAX))
    last = upload.total_chunks - 1
    if not 0 <= index <= last:
        raise InvalidInput(f"index {index} is out of range: this upload has chunks 0..{last}")
    if upload.completed:
        raise Conflict(f"upload {upload.id} is already complete")
    place = _placement(settings, storage, upload, index, size)
    if place is None:
        return None
    return ChunkIntake(settings, storage, upload, index, place, lock, existing, sha256)


def _record(
    settings: Settings, upload_id: str, index: int, size: int, digest: str
) -> UploadChunk | None:
    """Count a chunk whose bytes are on disk; the row already there if another copy won."""
    try:
        with engine(settings).begin() as connection:
            connection.execute(
                INSERT_CHUNK,
                {"upload_id": upload_id, "index": index, "size": size, "digest": digest},
            )
            # The abandoned-upload sweep measures idleness from the last chunk.
            connection.execute(_TOUCH_UPLOAD, {"upload": upload_id, "now": utcnow()})
    except IntegrityError:
        # Only when the chunk lock could not keep the other copy out (a storage shared over
        # a network that ignores locks), or the upload was swept meanwhile.
        with session_scope(settings) as session:
            winner = session.get(UploadChunk, (upload_id, index))
        if winner is None:
            raise NotFound(
                f"upload {upload_id} has expired: start again with /upload/init"
            ) from None
        return winner
    return None


def receive_chunk(
    settings: Settings,
    storage: Storage,
    *,
    upload_id: str,
    index: int,
    data: BinaryIO,
    size: int,
    sha256: str | None = None,
) -> ChunkReceipt:
    """Write chunk `index` (`size` bytes read from `data`) at its place; a resend of the same
    bytes is accepted once more, other bytes are a 409."""
    intake = open_chunk(
        settings,
        storage,
        upload_id=upload_id,
        index=index,
        size=size,
        wait_seconds=LOCK_WAIT_SECONDS,
        sha256=sha256,
    )
    assert intake is not None, "a chunk whose size is known always has a place"
    with intake:
        data.seek(0)
        while piece := data.read(READ_SIZE):
            intake.feed([piece])
        return intake.finish(announced=size)


def _compare_resent(existing: UploadChunk, digest: str, sha256: str | None) -> ChunkReceipt:
    """The receipt of a chunk sent again: the same bytes as the first copy, or a 409. The
    resend was hashed with the first copy's algorithm (ChunkIntake), so equal bytes give equal
    digests."""
    if digest != existing.digest:
        raise Conflict(
            f"chunk {existing.index} was already received with other bytes; the first copy is kept",
            code="chunk_mismatch",
        )
    return ChunkReceipt(existing.upload_id, existing.index, existing.size, sha256, duplicate=True)


def file_sha256(path: Path) -> str:
    """sha256 of a whole file, read in large blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while piece := handle.read(8 * READ_SIZE):
            digest.update(piece)
    return digest.hexdigest()


def _missing_message(missing: list[int], total: int) -> str:
    shown = ", ".join(str(i) for i in missing[:50])
    more = f" and {len(missing) - 50} more" if len(missing) > 50 else ""
    return (
        f"{len(missing)} of {total} chunks are missing: {shown}{more}; "
        "send them with /upload/chunk, then complete again"
    )


def _assemble(settings: Settings, storage: Storage, upload_id: str) -> tuple[Upload, int]:
    """Check every chunk is on disk and the sizes add up; return the upload and its size."""
    with session_scope(settings) as session:
        upload = get_upload(session, upload_id=upload_id)
        state = report(session, upload_id=upload_id)
    if state.missing:
        raise Conflict(_missing_message(state.missing, state.total_chunks), code="missing_chunks")
    # Every chunk is recorded: a holder of the last chunk's lock is only finishing (or
    # comparing a resend), so it is waited for.
    _place_parked_last(settings, storage, upload.id, wait_seconds=LOCK_WAIT_SECONDS)
    if _parked_path(storage, upload.id).exists():
        raise Conflict(
            f"the last chunk is larger than the other chunks ({upload.chunk_size} bytes), so "
            "it has no place in the file: start the upload again with every chunk but the "
            "last the same size and the last no larger",
            code="last_chunk_misfit",
        )
    size = state.bytes_received
    if upload.total_size is not None and size != upload.total_size:
        raise Conflict(f"received {size} bytes but total_size was declared as {upload.total_size}")
    source = storage.source_path(upload.id)
    if source.stat().st_size != size:
        os.truncate(source, size)
    return upload, size


def _register(
    settings: Settings, upload: Upload, size: int, digest: str, info_or_error: object
) -> Video:
    """One transaction: the upload is complete, the video exists, its job is queued or failed."""
    with session_scope(settings) as session:
        done = session.execute(
            update(Upload)
            .where(Upload.id == upload.id, Upload.completed.is_(False))
            .values(completed=True, updated_at=utcnow())
        )
        if done.rowcount != 1:  # type: ignore[attr-defined]
            video = session.get(Video, upload.id)
            if video is None:
                raise Conflict(f"upload {upload.id} is being completed by another request")
            return video
        video = Video(
            id=upload.id,
            filename=upload.filename,
            size=size,
            sha256=digest,
            qualities=[],
            codec=upload.codec or settings.default_codec,
        )
        if isinstance(info_or_error, ProbeError):
            video.status, video.error = Status.FAILED, public_text(info_or_error.detail)
            session.add(video)
            session.add(
                Job(video_id=upload.id, status=Status.FAILED, error=video.error, qualities={})
            )
            events.upload_completed(session, video, error=video.error)
            return video
        _apply_probe(video, info_or_error)
        session.add(video)
        session.flush()
        events.upload_completed(session, video)
        # Planned here, in the same transaction: workers can start on chunk 0 at once.
        assert isinstance(info_or_error, SourceInfo)
        plan, chunks = make_plan(info_or_error, settings, codec=video.codec)
        jobs.enqueue(session, video_id=video.id, plan=plan.to_dict(), chunks=chunks)
        video.status = Status.QUEUED
        return video


def _apply_probe(video: Video, info: object) -> None:
    assert isinstance(info, SourceInfo)
    video.duration, video.audio_codec = info.duration, info.audio_codec
    if info.has_video:  # an audio-only source has no picture facts: they stay unknown (null)
        video.width, video.height = info.width, info.height
        video.fps, video.video_codec = info.fps, info.video_codec


def complete_chunked_upload(settings: Settings, storage: Storage, *, upload_id: str) -> Video:
    """`complete` as a client asks for it: only for uploads made of chunks.

    A tus upload completes by itself at its last byte; completing it early would register
    a file whose end has not arrived (or a partial upload meant for concatenation).
    """
    with session_scope(settings) as session:
        upload = get_upload(session, upload_id=upload_id)
        if upload.tus_offset is not None and not upload.completed:
            raise Conflict(
                f"upload {upload.id} is a tus upload: it completes by itself when its last "
                f"byte arrives (PATCH /files/{upload.id}); /upload/complete is for chunked ones"
            )
    return complete_upload(settings, storage, upload_id=upload_id)


def complete_upload(settings: Settings, storage: Storage, *, upload_id: str) -> Video:
    """Verify and register the upload; the video's job is queued for a worker to claim.

    A file that does not probe as video is registered as `failed` with ffprobe's reason and
    reported as NotAVideo; it is never queued.
    """
    with session_scope(settings) as session:
        upload = get_upload(session, upload_id=upload_id)
        if upload.completed:
            return get_video_or_conflict(session, upload.id)
    upload, size = _assemble(settings, storage, upload_id)
    source: Source = storage.source_path(upload.id)
    if upload.multipart_id:
        # In a bucket: the parts are joined there and the probe reads the object.
        digest = remote.complete(settings, storage, upload, size, upload.sha256)
        source = remote.probe_source(settings, upload.id)
    else:
        # Most of the file was hashed while its chunks arrived: only the rest is read here.
        digest = HASHERS.get(upload.id, storage.source_path(upload.id)).finish(size)
        remote.check_digest(digest, upload.sha256, kept=True)
    info: SourceInfo | ProbeError
    try:
        info = probe(source, ffprobe=settings.ffprobe_bin)
        # Before the transaction that plans it: planning cuts the claimed duration into rows.
        check_source(info, settings, size=size)
    except ProbeError as exc:
        info = exc
    video = _register(settings, upload, size, digest, info)
    HASHERS.discard(upload.id)
    if upload.multipart_id:
        remote.finished(settings, storage, upload.id)
    if isinstance(info, ProbeError):
        verdict = "is not accepted" if isinstance(info, BeyondLimits) else "is not a playable video"
        raise NotAVideo(f"'{upload.filename}' {verdict}: {info.detail}", code=info.code)
    return video


def get_video_or_conflict(session: Session, video_id: str) -> Video:
    video = session.get(Video, video_id)
    if video is None:
        raise Conflict(f"upload {video_id} is being completed by another request")
    return video
