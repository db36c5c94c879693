"""Chunked upload protocol, free of HTTP: declare, write chunks in place, report, complete.

Every chunk is written straight to its offset in one file (`originals/{id}/source`); a chunk
counts as received only once its bytes are on disk (a row is inserted after the write and
fsync), so a crash mid-chunk leaves it missing, never half-counted. Chunk offsets need the chunk
size: declared at `init`, or learnt from the first non-last chunk to arrive (all chunks but the
last have the same size). A last chunk that arrives before the size is known waits in
`last.part` until it can be placed.
"""

import hashlib
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.core import ids, jobs
from services.core.db import session_scope
from services.core.errors import (
    Conflict,
    InsufficientStorage,
    InvalidInput,
    NotAVideo,
    NotFound,
    TooLarge,
)
from services.core.metrics import BYTES_UPLOADED
from services.core.models import Job, Status, Upload, UploadChunk, Video, utcnow
from services.core.settings import Settings
from services.core.storage import Storage
from services.media.plan import make_plan
from services.media.probe import ProbeError, SourceInfo, probe

READ_SIZE = 1024 * 1024
SHA256_RE = re.compile(r"[0-9a-f]{64}")
MAX_FILENAME = 255


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


def _check_extension(settings: Settings, label: str) -> None:
    allowed = [e.strip().lower() for e in settings.allowed_extensions.split(",") if e.strip()]
    _, dot, ending = label.rpartition(".")
    if not dot or ending.lower() not in allowed:
        raise InvalidInput(
            f"'{label}' does not end in a video file extension; accepted: {', '.join(allowed)}"
        )


def check_free_space(settings: Settings, storage: Storage, needed: int) -> None:
    """Refuse (507) what would leave less than MIN_FREE_BYTES free on the storage disk."""
    free = storage.disk_usage().free
    if free - needed < settings.min_free_bytes:
        raise InsufficientStorage(
            f"not enough disk space: {free} bytes free, {needed} needed and "
            f"{settings.min_free_bytes} must stay free; try again later or ask the operator"
        )


def _check_declaration(
    settings: Settings, total_chunks: int, total_size: int | None, chunk_size: int | None
) -> None:
    if not 1 <= total_chunks <= settings.max_chunks:
        raise InvalidInput(f"total_chunks must be between 1 and {settings.max_chunks}")
    if total_size is not None and not 0 < total_size <= settings.max_upload_bytes:
        raise InvalidInput(f"total_size must be between 1 and {settings.max_upload_bytes} bytes")
    if chunk_size is not None and not 0 < chunk_size <= settings.max_chunk_bytes:
        raise InvalidInput(f"chunk_size must be between 1 and {settings.max_chunk_bytes} bytes")
    if total_size and chunk_size and math.ceil(total_size / chunk_size) != total_chunks:
        need = math.ceil(total_size / chunk_size)
        raise InvalidInput(
            f"total_chunks={total_chunks} does not fit total_size={total_size} in chunks of "
            f"{chunk_size} bytes: that takes {need} chunks"
        )


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
) -> Upload:
    """Declare an upload; returns it with its new id (the video id from now on)."""
    label = clean_filename(filename)
    _check_extension(settings, label)
    _check_declaration(settings, total_chunks, total_size, chunk_size)
    check_free_space(settings, storage, total_size or 0)
    if total_chunks == 1 and total_size is not None:
        chunk_size = total_size
    if sha256 is not None:
        sha256 = sha256.strip().lower()
        if not SHA256_RE.fullmatch(sha256):
            raise InvalidInput("sha256 must be 64 hex characters (the whole file's sha256)")
    upload = Upload(
        id=ids.new_video_id(),
        filename=label,
        total_chunks=total_chunks,
        total_size=total_size,
        chunk_size=chunk_size,
        sha256=sha256,
    )
    directory = storage.original_dir(upload.id)
    directory.mkdir(parents=True, exist_ok=True)
    storage.source_path(upload.id).touch()
    session.add(upload)
    return upload


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
    sha256: str
    duplicate: bool


def _hash_stream(data: BinaryIO) -> str:
    digest = hashlib.sha256()
    data.seek(0)
    while piece := data.read(READ_SIZE):
        digest.update(piece)
    return digest.hexdigest()


def _write_at(path: Path, offset: int, data: BinaryIO) -> str:
    """Copy `data` into `path` at `offset`, fsync, return the bytes' sha256."""
    digest = hashlib.sha256()
    data.seek(0)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o640)
    try:
        position = offset
        while piece := data.read(READ_SIZE):
            digest.update(piece)
            os.pwrite(fd, piece, position)
            position += len(piece)
        # The chunk is counted only after this returns: a crash before it loses the chunk
        # (the client resends it), never counts a torn one.
        os.fdatasync(fd)
    finally:
        os.close(fd)
    return digest.hexdigest()


def _check_chunk_size(upload: Upload, index: int, size: int, settings: Settings) -> None:
    if size <= 0:
        raise InvalidInput(f"chunk {index} is empty: send the chunk's bytes in the 'file' field")
    if size > settings.max_chunk_bytes:
        raise TooLarge(f"chunk {index} has {size} bytes; the limit is {settings.max_chunk_bytes}")
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


def _place_pending_last(storage: Storage, upload: Upload) -> None:
    """Move a last chunk that arrived before the chunk size was known to its offset."""
    pending = storage.original_dir(upload.id) / "last.part"
    if not pending.exists() or upload.chunk_size is None:
        return
    with pending.open("rb") as data:
        _write_at(
            storage.source_path(upload.id), (upload.total_chunks - 1) * upload.chunk_size, data
        )
    pending.unlink()


def receive_chunk(
    settings: Settings,
    storage: Storage,
    *,
    upload_id: str,
    index: int,
    data: BinaryIO,
    size: int,
) -> ChunkReceipt:
    """Write chunk `index` at its place; a resend of the same bytes is accepted once more."""
    with session_scope(settings) as session:
        upload = get_upload(session, upload_id=upload_id)
        last = upload.total_chunks - 1
        if not 0 <= index <= last:
            raise InvalidInput(f"index {index} is out of range: this upload has chunks 0..{last}")
        existing = session.get(UploadChunk, (upload.id, index))
    if upload.completed:
        raise Conflict(f"upload {upload.id} is already complete")
    _check_chunk_size(upload, index, size, settings)
    if existing is not None:
        return _compare_resent(existing, data)
    check_free_space(settings, storage, size)
    offset = _offset(settings, upload, index, size)
    target = storage.source_path(upload.id)
    if offset is None:
        target, offset = storage.original_dir(upload.id) / "last.part", 0
    try:
        digest = _write_at(target, offset, data)
    except FileNotFoundError:
        # Swept as abandoned between the lookup above and this write.
        raise NotFound(f"upload {upload.id} has expired: start again with /upload/init") from None
    BYTES_UPLOADED.inc(size)
    receipt = ChunkReceipt(upload.id, index, size, digest, duplicate=False)
    try:
        with session_scope(settings) as session:
            session.add(UploadChunk(upload_id=upload.id, index=index, size=size, sha256=digest))
            # The abandoned-upload sweep measures idleness from the last chunk.
            session.execute(
                update(Upload).where(Upload.id == upload.id).values(updated_at=utcnow())
            )
    except IntegrityError:
        # Two copies of one chunk raced; both wrote the same place. Same bytes: fine.
        with session_scope(settings) as session:
            winner = session.get(UploadChunk, (upload.id, index))
        assert winner is not None
        return _compare_resent(winner, data)
    _place_pending_last(storage, upload)
    return receipt


def _compare_resent(existing: UploadChunk, data: BinaryIO) -> ChunkReceipt:
    digest = _hash_stream(data)
    if digest != existing.sha256:
        raise Conflict(
            f"chunk {existing.index} was already received with other bytes "
            f"(sha256 {existing.sha256[:12]}…, now {digest[:12]}…); the first copy is kept",
            code="chunk_mismatch",
        )
    return ChunkReceipt(existing.upload_id, existing.index, existing.size, digest, duplicate=True)


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
    _place_pending_last(storage, upload)
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
            id=upload.id, filename=upload.filename, size=size, sha256=digest, qualities=[]
        )
        if isinstance(info_or_error, ProbeError):
            video.status, video.error = Status.FAILED, info_or_error.detail
            session.add(video)
            session.add(
                Job(video_id=upload.id, status=Status.FAILED, error=video.error, qualities={})
            )
            return video
        _apply_probe(video, info_or_error)
        session.add(video)
        session.flush()
        # Planned here, in the same transaction: workers can start on chunk 0 at once.
        assert isinstance(info_or_error, SourceInfo)
        plan, chunks = make_plan(info_or_error, settings)
        jobs.enqueue(session, video_id=video.id, plan=plan.to_dict(), chunks=chunks)
        video.status = Status.QUEUED
        return video


def _apply_probe(video: Video, info: object) -> None:
    assert isinstance(info, SourceInfo)
    video.duration, video.width, video.height = info.duration, info.width, info.height
    video.fps, video.video_codec, video.audio_codec = info.fps, info.video_codec, info.audio_codec


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
    digest = file_sha256(storage.source_path(upload.id))
    if upload.sha256 and digest != upload.sha256:
        raise Conflict(
            f"the assembled file's sha256 is {digest}, not the declared {upload.sha256}; "
            "the chunks are kept: check the file and resend the chunks that differ",
            code="checksum_mismatch",
        )
    try:
        info: object = probe(storage.source_path(upload.id), ffprobe=settings.ffprobe_bin)
    except ProbeError as exc:
        info = exc
    video = _register(settings, upload, size, digest, info)
    if isinstance(info, ProbeError):
        raise NotAVideo(f"'{upload.filename}' is not a playable video: {info.detail}")
    return video


def get_video_or_conflict(session: Session, video_id: str) -> Video:
    video = session.get(Video, video_id)
    if video is None:
        raise Conflict(f"upload {video_id} is being completed by another request")
    return video
