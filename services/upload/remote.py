"""Uploads into a bucket (STORAGE_URL=s3://...): the upload's file in STORAGE_DIR is only a
staging area, drained part by part into a multipart object at `VideoLayout.of(id).source`.

The chunked and tus code paths write bytes exactly as on the local folder. Here:
- `init` (`start`) picks the part size (S3's rules: every part but the last the same size, at
  least MIN_PART_BYTES, at most MAX_PARTS parts for the largest file the upload may become)
  and starts the multipart object; its id is kept on the upload's row.
- `drain`, at the end of every request that stored bytes, sends each whole part of the
  received prefix once the whole file's sha256 (hashing.py) has passed it, records it
  (`UploadPart`: number, ETag, size) and punches its bytes out of the local file, which stays
  sparse: the staging area holds about a part and the chunks past the received prefix.
- `complete` sends what is left (the last part, a part whose drain failed), joins the parts
  and removes the local file: its work does not grow with the file's size.
- `discard` (expiry, termination) aborts the multipart object.

A restart (or an evicted hasher) loses the sha256 of the parts already sent: drains then go
on without waiting for it, and `complete` reads the joined object back to hash it, as the
local folder's `complete` re-reads the whole file after a restart.

The staging file is this process's: chunks of one upload must reach the same upload service
process (as they must reach the same folder on the local backend).
"""

import ctypes
import errno
import hashlib
import logging
import math
import os
import threading
import weakref
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.core.db import session_scope
from services.core.errors import Conflict, TooLarge
from services.core.layout import VideoLayout
from services.core.models import Upload, UploadChunk, UploadPart
from services.core.settings import Settings
from services.core.storage import Storage, remove_tree
from services.core.storage.factory import store_of, uses_object_storage
from services.core.storage.interface import (
    MAX_PARTS,
    MIN_PART_BYTES,
    ObjectInfo,
    ObjectMissing,
    Part,
    StorageUnavailable,
    Store,
)
from services.core.videos import abort_upload, remove_objects
from services.media.demuxers import RemoteSource
from services.upload.hashing import HASHERS, PrefixHasher

log = logging.getLogger(__name__)

MIB = 1024 * 1024
# Larger than S3's floor: fewer requests, and room for the hasher to trail a little.
PART_FLOOR = max(8 * MIB, MIN_PART_BYTES)
# S3's largest part.
MAX_PART_BYTES = 5 * 1024 * MIB
# How long the presigned URL the probe reads the source through stays valid.
PROBE_URL_SECONDS = 3600
READ_PIECE = 8 * MIB
# fallocate(2) flags (linux/falloc.h): free the range, keep the file's size.
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
PART_PREFIX = "part-"

_locks: "weakref.WeakValueDictionary[str, threading.Lock]" = weakref.WeakValueDictionary()
_locks_guard = threading.Lock()


def active(settings: Settings) -> bool:
    """True when uploads go to a bucket (STORAGE_URL set)."""
    return uses_object_storage(settings)


def part_bytes_for(bound: int) -> int:
    """The part size for a file of at most `bound` bytes: whole MiB, at least PART_FLOOR,
    few enough parts for MAX_PARTS; TooLarge when S3 cannot hold such a file in parts."""
    size = max(PART_FLOOR, math.ceil(bound / MAX_PARTS))
    size = math.ceil(size / MIB) * MIB
    if size > MAX_PART_BYTES:
        raise TooLarge(
            f"an upload of up to {bound} bytes needs parts of {size} bytes to stay within "
            f"{MAX_PARTS} parts, more than object storage takes ({MAX_PART_BYTES}): declare "
            "a smaller total_size"
        )
    return size


def staged_bytes(settings: Settings, size: int, bound: int) -> int:
    """The disk an upload of `size` bytes (at most `bound`) needs here at first: all of it on
    the local folder; in a bucket, a part (each chunk is checked again as it comes)."""
    if not active(settings):
        return size
    return min(size, part_bytes_for(bound))


def start(settings: Settings, upload: Upload, bound: int) -> None:
    """Give a new upload (not yet stored) its part size and multipart object, in a bucket."""
    if not active(settings):
        return
    upload.part_bytes = part_bytes_for(bound)
    key = VideoLayout.of(upload.id).source
    upload.multipart_id = store_of(settings).start_multipart(key)


def drain(settings: Settings, storage: Storage, upload_id: str) -> None:
    """Send every part of the received prefix that is whole and hashed; free its bytes.

    StorageUnavailable when the bucket cannot take a part: the bytes stay here and the next
    request (or `complete`) sends them.
    """
    if not active(settings):
        return
    with _lock_of(upload_id):
        with session_scope(settings) as session:
            upload = session.get(Upload, upload_id)
            if upload is None or upload.completed or not upload.multipart_id:
                return
            sent = _sent_parts(session, upload_id)
            covered = _received_prefix(session, upload)
        _send_ready(settings, storage, upload, sent, covered)


def _send_ready(
    settings: Settings, storage: Storage, upload: Upload, sent: dict[int, Part], covered: int
) -> None:
    assert upload.part_bytes is not None
    size = upload.part_bytes
    hasher = _hasher(storage, upload.id, sent, size)
    for number in range(1, covered // size + 1):
        if number in sent:
            continue
        end = number * size
        if not hasher.lost and hasher.catch_up() < end:
            return
        _send_part(settings, storage, upload, number, end - size, size, punch=True)


def _hasher(storage: Storage, upload_id: str, sent: dict[int, Part], size: int) -> PrefixHasher:
    """This process's hasher of the upload, marked lost when it missed a part already sent
    (a restart): the bytes it would need are in the bucket, no longer here."""
    hasher = HASHERS.get(upload_id, storage.source_path(upload_id))
    sent_end = max(sent, default=0) * size
    if hasher.position < sent_end:
        hasher.lose()
    return hasher


def complete(
    settings: Settings, storage: Storage, upload: Upload, size: int, declared: str | None
) -> str:
    """Send what is left, join the parts into the source object; its sha256 (checked against
    `declared` before the parts are joined whenever this process hashed them all)."""
    key = VideoLayout.of(upload.id).source
    store = store_of(settings)
    assert upload.multipart_id is not None and upload.part_bytes is not None
    with _lock_of(upload.id):
        with session_scope(settings) as session:
            sent = _sent_parts(session, upload.id)
        hasher = _hasher(storage, upload.id, sent, upload.part_bytes)
        digest = None if hasher.lost else hasher.finish(size)
        if digest is not None:
            check_digest(digest, declared, kept=True)
        count = max(1, math.ceil(size / upload.part_bytes))
        for number in range(1, count + 1):
            if number not in sent:
                start_at = (number - 1) * upload.part_bytes
                length = min(upload.part_bytes, size - start_at)
                _send_part(settings, storage, upload, number, start_at, length, punch=False)
        with session_scope(settings) as session:
            parts = list(_sent_parts(session, upload.id).values())
        _join(store, key, upload.multipart_id, parts[:count], size)
    if digest is None:
        digest = _object_sha256(settings, key)
        if declared and digest != declared:
            store.delete(key)
            check_digest(digest, declared, kept=False)
    return digest


def check_digest(digest: str, declared: str | None, *, kept: bool) -> None:
    """Conflict when the file's sha256 is not the one declared at init."""
    if not declared or digest == declared:
        return
    rest = (
        "the chunks are kept: check the file and resend the chunks that differ"
        if kept
        else "the stored file was removed: start the upload again"
    )
    raise Conflict(
        f"the assembled file's sha256 is {digest}, not the declared {declared}; {rest}",
        code="checksum_mismatch",
    )


def _join(store: Store, key: str, multipart_id: str, parts: list[Part], size: int) -> None:
    """finish_multipart; a second `complete` after a join that went through finds the object."""
    try:
        info: ObjectInfo | None = store.finish_multipart(key, multipart_id, parts)
    except ObjectMissing:
        info = store.stat(key)
        if info is None:
            raise Conflict(
                "the upload's parts are gone from object storage: start the upload again",
                code="upload_parts_missing",
            ) from None
    if info is None or info.size != size:
        held = info.size if info else 0
        raise Conflict(
            f"object storage holds {held} bytes for this upload, not {size}: start it again",
            code="upload_parts_missing",
        )


def _object_sha256(settings: Settings, key: str) -> str:
    """The sha256 of the joined object, read back from the bucket."""
    digest = hashlib.sha256()
    for piece in store_of(settings).read_range(key):
        digest.update(piece)
    return digest.hexdigest()


def probe_source(settings: Settings, upload_id: str) -> RemoteSource:
    """What the probe reads: the source object through a presigned URL."""
    key = VideoLayout.of(upload_id).source
    url = store_of(settings).reader_url(key, expires_seconds=PROBE_URL_SECONDS)
    assert url is not None, "a bucket always gives reader URLs"
    return RemoteSource(url)


def finished(settings: Settings, storage: Storage, upload_id: str) -> None:
    """After registration: the parts' rows and the staging file are no longer needed.

    Only the staging folder goes: the video is registered, so a worker on this machine may
    already be encoding it into its scratch under hls/{id} (the audio's growing rendition,
    a chunk's claim folder), which removing the whole video's folders would pull away from
    under its ffmpeg."""
    with session_scope(settings) as session:
        session.execute(delete(UploadPart).where(UploadPart.upload_id == upload_id))
    remove_tree(storage.original_dir(upload_id))


def discard(settings: Settings, upload_id: str) -> None:
    """Abort the multipart object of an upload being removed and delete every object under
    its id (a source joined but never registered); StorageUnavailable when the bucket cannot
    be reached (keep the row). A finished upload is a video: its objects stay."""
    if not active(settings):
        return
    with session_scope(settings) as session:
        upload = session.get(Upload, upload_id)
        done = upload is not None and upload.completed
    if done:
        return
    abort_upload(settings, upload_id)
    remove_objects(settings, upload_id)
    with session_scope(settings) as session:
        session.execute(delete(UploadPart).where(UploadPart.upload_id == upload_id))


def _send_part(
    settings: Settings,
    storage: Storage,
    upload: Upload,
    number: int,
    start_at: int,
    length: int,
    *,
    punch: bool,
) -> None:
    """Part `number` = bytes [start_at, start_at+length) of the staging file, to the bucket."""
    assert upload.multipart_id is not None
    source = storage.source_path(upload.id)
    piece = storage.original_dir(upload.id) / f"{PART_PREFIX}{number:05d}"
    try:
        _copy_out(source, piece, start_at, length)
        part = store_of(settings).put_part(
            VideoLayout.of(upload.id).source, upload.multipart_id, number, piece
        )
    finally:
        piece.unlink(missing_ok=True)
    try:
        with session_scope(settings) as session:
            session.add(
                UploadPart(upload_id=upload.id, number=number, etag=part.etag, size=part.size)
            )
    except IntegrityError:
        return  # recorded by another request meanwhile (same bytes: same ETag)
    if punch:
        punch_hole(source, start_at, length)


def _copy_out(source: Path, target: Path, start_at: int, length: int) -> None:
    """Bytes [start_at, start_at+length) of `source` into a new file `target`."""
    fd_in = os.open(source, os.O_RDONLY)
    try:
        fd_out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            copied = 0
            while copied < length:
                done = _copy_some(fd_in, fd_out, length - copied, start_at + copied, copied)
                if done == 0:
                    raise OSError(errno.EIO, f"the upload's file ends before {start_at + length}")
                copied += done
        finally:
            os.close(fd_out)
    finally:
        os.close(fd_in)


def _copy_some(fd_in: int, fd_out: int, count: int, src: int, dst: int) -> int:
    try:
        return os.copy_file_range(fd_in, fd_out, count, src, dst)
    except (AttributeError, OSError):
        data = os.pread(fd_in, min(count, READ_PIECE), src)
        return os.pwrite(fd_out, data, dst) if data else 0


_libc: ctypes.CDLL | None = None


def punch_hole(path: Path, start_at: int, length: int) -> bool:
    """Free the disk blocks of [start_at, start_at+length) of `path`, keeping its size; False
    where the filesystem (or the platform) cannot, and the bytes then stay."""
    global _libc
    fallocate = None
    try:
        _libc = _libc or ctypes.CDLL(None, use_errno=True)
        fallocate = _libc.fallocate
    except (OSError, AttributeError):
        return False
    fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
    fallocate.restype = ctypes.c_int
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError:
        return False
    try:
        mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
        if fallocate(fd, mode, start_at, length) != 0:
            log.debug("cannot punch a hole in %s: errno %d", path.name, ctypes.get_errno())
            return False
    finally:
        os.close(fd)
    return True


def _lock_of(upload_id: str) -> threading.Lock:
    """One drain of an upload at a time in this process (its staging file is this
    process's)."""
    with _locks_guard:
        lock = _locks.get(upload_id)
        if lock is None:
            lock = threading.Lock()
            _locks[upload_id] = lock
        return lock


def _sent_parts(session: Session, upload_id: str) -> dict[int, Part]:
    rows = session.scalars(select(UploadPart).where(UploadPart.upload_id == upload_id)).all()
    return {row.number: Part(row.number, row.etag, row.size) for row in rows}


def _received_prefix(session: Session, upload: Upload) -> int:
    """How many bytes from the file's start have all arrived and are counted (never the
    chunked upload's last chunk: its place may still change)."""
    if upload.tus_offset is not None:
        return upload.tus_offset
    if not upload.chunk_size:
        return 0
    indexes = session.scalars(
        select(UploadChunk.index)
        .where(UploadChunk.upload_id == upload.id, UploadChunk.index < upload.total_chunks - 1)
        .order_by(UploadChunk.index)
    ).all()
    run = 0
    for index in indexes:
        if index != run:
            break
        run += 1
    return run * upload.chunk_size


def unavailable(index_or_offset: str, exc: StorageUnavailable) -> StorageUnavailable:
    """The 503 of a request whose bytes are stored here but whose part could not be sent."""
    return StorageUnavailable(
        f"{index_or_offset} is stored, but its part cannot be sent to object storage now "
        f"({exc.detail}); send it again later to go on"
    )
