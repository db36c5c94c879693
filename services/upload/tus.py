"""tus 1.0 resumable uploads, free of HTTP routing (`tus_routes.py` adapts it to /files/).

A tus upload is an upload like the chunked ones: its id is the video's id, its bytes go to
`originals/{id}/source` at their offset, and once the last byte is stored it goes through
`uploads.complete_upload` (checks, probe, registration, queued transcoding). What tus adds:

- `Upload.tus_offset` counts the bytes durably stored. A PATCH's bytes are fdatasync'ed
  before the offset moves, so a PATCH cut off mid-body keeps what arrived (unless it carried
  a checksum, which only the whole body can satisfy; then none of it counts).
- Each PATCH's bytes are one `UploadChunk` row (size, digest): the chunk report and
  `complete_upload` see a tus upload as a run of received chunks.
- One writer at a time: an exclusive, non-blocking flock on the source file. A second
  writer gets 423 Locked (tus clients retry it; the PATCH route first waits a bounded while,
  TUS_LOCK_WAIT_SECONDS); the abandoned-upload sweep skips a locked upload (`busy`).
- Expiry is the chunked uploads' idle expiry: `Upload-Expires` is the last write plus
  UPLOAD_EXPIRY_SECONDS, after which the sweep may remove the upload (410 until it does).
- Concatenation: partial uploads never become videos. A final upload copies its finished
  partials, in order, into its own source and then completes like any other upload. Each
  partial goes into one final upload, once: it is claimed by the final before any byte is
  copied, and removed once copied (its bytes live on in the final).

Errors are the platform's catalogue plus tus's own statuses (412, 415, 423, 460, ...).
"""

import base64
import binascii
import contextlib
import errno
import fcntl
import hashlib
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import delete, select, update

from services.core import ids
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
from services.core.models import Upload, UploadChunk, as_utc, utcnow
from services.core.settings import Settings
from services.core.storage import Storage
from services.core.storage.interface import StorageUnavailable
from services.upload import aligned, digests, remote, uploads
from services.upload.hashing import HASHERS

TUS_VERSION = "1.0.0"
EXTENSIONS = (
    "creation",
    "creation-with-upload",
    "creation-defer-length",
    "termination",
    "checksum",
    "expiration",
    "concatenation",
)
CHECKSUMS: dict[str, Callable[[], Any]] = {
    "sha1": hashlib.sha1,
    "md5": hashlib.md5,
    "sha256": hashlib.sha256,
}
OFFSET_STREAM = "application/offset+octet-stream"
PARTIAL = "partial"
# tus_concat of a partial upload claimed by a final one: "used;<final upload id>".
USED = "used;"
MAX_METADATA = 8 * 1024
MAX_PARTS = 1000
SIZE_RE = re.compile(r"[0-9]{1,19}")
# Printable ASCII but space and comma: what tus allows in an Upload-Metadata key.
METADATA_KEY_RE = re.compile(r"[!-+\--~]+")


# --- the catalogue's tus statuses ------------------------------------------------------------


class VersionUnsupported(AppError):
    code, status = "tus_version_unsupported", 412


class UnsupportedMediaType(AppError):
    code, status = "unsupported_media_type", 415


class ChecksumMismatch(AppError):
    code, status = "checksum_mismatch", 460


class UploadGone(AppError):
    code, status = "upload_expired", 410


class UploadLocked(AppError):
    code, status = "upload_locked", 423


class FinalUploadReadOnly(AppError):
    code, status = "final_upload", 403


# --- headers in ------------------------------------------------------------------------------


def check_version(value: str | None) -> None:
    """Every request but OPTIONS names the protocol version; only 1.0.0 is spoken."""
    if value is None:
        raise VersionUnsupported("Tus-Resumable is missing: send 'Tus-Resumable: 1.0.0'")
    if value.strip() != TUS_VERSION:
        raise VersionUnsupported(
            f"Tus-Resumable {value.strip()[:20]!r} is not supported: this server speaks 1.0.0"
        )


def check_offset_stream(content_type: str | None) -> None:
    """PATCH bodies (and creation-with-upload bodies) are raw bytes at an offset."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != OFFSET_STREAM:
        raise UnsupportedMediaType(
            f"Content-Type must be {OFFSET_STREAM} (got {media_type[:60] or 'none'!r})"
        )


def parse_size(name: str, value: str) -> int:
    """A byte count header: a non-negative decimal integer."""
    text = value.strip()
    if not SIZE_RE.fullmatch(text):
        raise InvalidInput(f"{name} must be a non-negative integer of bytes (got {text[:40]!r})")
    return int(text)


def parse_metadata(value: str | None) -> dict[str, bytes]:
    """Upload-Metadata: comma-separated `key base64value` pairs (the value may be left out)."""
    if value is None or not value.strip():
        return {}
    if len(value) > MAX_METADATA:
        raise InvalidInput(f"Upload-Metadata is longer than {MAX_METADATA} characters")
    pairs: dict[str, bytes] = {}
    for item in value.split(","):
        key, _, encoded = item.strip().partition(" ")
        if not METADATA_KEY_RE.fullmatch(key):
            raise InvalidInput(
                f"Upload-Metadata key {key[:40]!r} is empty or has spaces or commas: send "
                "comma-separated 'key base64value' pairs"
            )
        if key in pairs:
            raise InvalidInput(f"Upload-Metadata has the key {key[:40]!r} twice")
        pairs[key] = _b64(encoded.strip(), f"Upload-Metadata value of {key[:40]!r}")
    return pairs


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{what} is not valid base64") from None


def metadata_filename(metadata: dict[str, bytes]) -> str:
    """The `filename` metadata, decoded; it becomes the video's name."""
    raw = metadata.get("filename")
    if not raw:
        raise InvalidInput(
            "Upload-Metadata needs a filename: 'filename <base64 of the file name>', "
            "e.g. 'filename aG9saWRheS5tcDQ=' for holiday.mp4"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("the filename in Upload-Metadata is not UTF-8 once decoded") from None


def metadata_codec(metadata: dict[str, bytes]) -> str | None:
    """The `codec` metadata (h264 or hevc), as `init`'s codec field; None: DEFAULT_CODEC."""
    raw = metadata.get("codec")
    # Bounded: a wrong value is quoted back in the error.
    return raw[:32].decode("ascii", "replace") if raw else None


@dataclass(frozen=True)
class Checksum:
    """Upload-Checksum: the algorithm and the digest the PATCH body must have."""

    algorithm: str
    digest: bytes


def parse_checksum(value: str | None) -> Checksum | None:
    """`Upload-Checksum: <algorithm> <base64 digest>`, or None when not sent."""
    if value is None:
        return None
    algorithm, _, encoded = value.strip().partition(" ")
    if algorithm not in CHECKSUMS:
        raise InvalidInput(
            f"Upload-Checksum algorithm {algorithm[:20]!r} is not supported; "
            f"use one of {', '.join(CHECKSUMS)}"
        )
    digest = _b64(encoded.strip(), "the Upload-Checksum digest")
    if len(digest) != CHECKSUMS[algorithm]().digest_size:
        raise InvalidInput(f"the Upload-Checksum digest is not a {algorithm} digest (wrong size)")
    return Checksum(algorithm, digest)


@dataclass(frozen=True)
class Concat:
    """Upload-Concat: a partial upload, or a final one made of these partial uploads' ids."""

    final: bool
    parts: tuple[str, ...] = ()


def parse_concat(value: str | None) -> Concat | None:
    """`partial`, or `final;<url> <url> ...` with the partial uploads' URLs (or paths)."""
    if value is None:
        return None
    text = value.strip()
    if text == PARTIAL:
        return Concat(final=False)
    kind, semicolon, urls = text.partition(";")
    if kind.strip() != "final" or not semicolon:
        raise InvalidInput(
            "Upload-Concat must be 'partial' or 'final;<partial upload URL> <URL> ...'"
        )
    parts = tuple(part_id(url) for url in urls.split())
    if not 1 <= len(parts) <= MAX_PARTS:
        raise InvalidInput(f"a final upload names between 1 and {MAX_PARTS} partial uploads")
    seen: set[str] = set()
    for part in parts:
        if part in seen:
            raise InvalidInput(
                f"partial upload {part} is listed twice in Upload-Concat: each partial upload "
                "goes into a final upload once (upload a repeated piece as a partial of its own)"
            )
        seen.add(part)
    return Concat(final=True, parts=parts)


def part_id(url: str) -> str:
    """The upload id at the end of a partial upload's URL (`.../files/{id}`)."""
    prefix, _, last = urlsplit(url).path.rstrip("/").rpartition("/")
    if not prefix.endswith("files") or not ids.VIDEO_ID_RE.fullmatch(last):
        raise InvalidInput(
            f"{url[:100]!r} in Upload-Concat is not an upload URL of this server "
            "(…/files/<32 hex characters>)"
        )
    return last


# --- what HEAD tells -------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadInfo:
    """A tus upload as HEAD describes it."""

    id: str
    offset: int
    length: int | None  # None: deferred (Upload-Defer-Length: 1)
    metadata: str | None
    concat: str | None
    expires: datetime | None  # None once it is a video (no longer expires)

    @property
    def final(self) -> bool:
        return bool(self.concat) and self.concat != PARTIAL


def discovery(settings: Settings) -> dict[str, str]:
    """What OPTIONS announces: version, extensions, size limit and checksum algorithms."""
    return {
        "Tus-Resumable": TUS_VERSION,
        "Tus-Version": TUS_VERSION,
        "Tus-Extension": ",".join(EXTENSIONS),
        "Tus-Max-Size": str(settings.max_upload_bytes),
        "Tus-Checksum-Algorithm": ",".join(CHECKSUMS),
    }


def _info(settings: Settings, upload: Upload) -> UploadInfo:
    assert upload.tus_offset is not None
    return UploadInfo(
        id=upload.id,
        offset=upload.tus_offset,
        length=upload.total_size,
        metadata=upload.tus_metadata,
        concat=upload.tus_concat,
        expires=_expires(settings, upload),
    )


def _expires(settings: Settings, upload: Upload) -> datetime | None:
    if upload.completed:
        return None
    last_write = as_utc(upload.updated_at)
    assert last_write is not None
    return last_write + timedelta(seconds=settings.upload_expiry_seconds)


def _load(settings: Settings, upload_id: str) -> Upload:
    """The tus upload with this id: 404 when unknown (or a chunked upload), 410 when expired."""
    video_id = ids.video_id(upload_id)
    upload = uploads.load_upload(settings, video_id)
    if upload is None or upload.tus_offset is None:
        raise NotFound(f"no tus upload {video_id}: create one with POST /files/")
    if upload.tus_concat and upload.tus_concat.startswith(USED):
        raise UploadGone(
            f"partial upload {video_id} has gone into final upload "
            f"{upload.tus_concat.removeprefix(USED)}: its bytes are there now"
        )
    expires = _expires(settings, upload)
    if expires is not None and expires < utcnow():
        raise UploadGone(
            f"upload {video_id} expired at {expires.isoformat()} (no data for "
            f"{settings.upload_expiry_seconds:g} s) and is being removed: start a new upload"
        )
    return upload


def _remaining(upload: Upload) -> int | None:
    assert upload.tus_offset is not None
    return None if upload.total_size is None else upload.total_size - upload.tus_offset


def _stranded(upload: Upload) -> bool:
    """Every byte is stored but the upload never got registered (a crash in between)."""
    return not upload.completed and upload.tus_concat != PARTIAL and _remaining(upload) == 0


def describe(settings: Settings, storage: Storage, *, upload_id: str) -> UploadInfo:
    """HEAD: the upload's offset and declaration. Finishes an upload stranded at its end."""
    upload = _load(settings, upload_id)
    if _stranded(upload):
        # Locked: a PATCH holds it and finishes it itself. Not a video: registered as failed
        # with the reason, and HEAD still reports the offset.
        with contextlib.suppress(UploadLocked, NotAVideo), _Lock(storage, upload.id):
            _finish(settings, storage, upload.id)
        upload = _load(settings, upload_id)
    return _info(settings, upload)


# --- locking ---------------------------------------------------------------------------------


class _Lock:
    """An flock on an upload's source file, held until `release` (or the `with` block ends)."""

    def __init__(self, storage: Storage, upload_id: str, *, shared: bool = False) -> None:
        try:
            self.fd = os.open(storage.source_path(upload_id), os.O_RDWR)
        except FileNotFoundError:
            raise NotFound(f"upload {upload_id} has been removed: start a new upload") from None
        try:
            fcntl.flock(self.fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise UploadLocked(
                f"another request is writing to upload {upload_id}: retry once it has "
                "finished (HEAD gives the offset to resume from)"
            ) from None

    def release(self) -> None:
        """Closing the descriptor drops the lock."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> int:
        return self.fd

    def __exit__(self, *_: object) -> None:
        self.release()


def busy(storage: Storage, upload_id: str) -> bool:
    """True while a request writes to this upload (the sweep must leave it alone)."""
    try:
        with _Lock(storage, upload_id):
            return False
    except UploadLocked:
        return True
    except NotFound:
        return False


# --- creation --------------------------------------------------------------------------------


def _declared_length(
    settings: Settings, length: str | None, defer: str | None, *, partial: bool
) -> int | None:
    """Upload-Length, or None for `Upload-Defer-Length: 1`."""
    if length is not None and defer is not None:
        raise InvalidInput("send either Upload-Length or Upload-Defer-Length: 1, not both")
    if defer is not None:
        if defer.strip() != "1":
            raise InvalidInput("Upload-Defer-Length must be 1 (the length follows in a PATCH)")
        return None
    if length is None:
        raise InvalidInput(
            "Upload-Length is missing: send the file's size in bytes "
            "(or Upload-Defer-Length: 1 and the length in a later PATCH)"
        )
    size = parse_size("Upload-Length", length)
    _check_max(settings, size)
    if size == 0 and not partial:
        raise InvalidInput("Upload-Length is 0: an empty file is not a video")
    return size


def _check_max(settings: Settings, size: int) -> None:
    if size > settings.max_upload_bytes:
        raise TooLarge(
            f"the upload would have {size} bytes; the limit is {settings.max_upload_bytes} "
            "(Tus-Max-Size)"
        )


def create(
    settings: Settings,
    storage: Storage,
    *,
    length: str | None,
    defer_length: str | None,
    metadata: str | None,
    concat: str | None,
    name: str | None = None,
    codec: str | None = None,
    upload_id: str | None = None,
) -> UploadInfo:
    """POST: a new upload (plain, partial or final) from its creation headers. A direct
    upload's (services/upload/direct.py) brings its name, codec and reserved id."""
    pairs = parse_metadata(metadata)
    parsed = parse_concat(concat)
    if parsed is not None and parsed.final:
        if length is not None or defer_length is not None:
            raise InvalidInput(
                "a final upload takes no Upload-Length: its length is the sum of its parts"
            )
        return _concatenate(settings, storage, parsed.parts, pairs, metadata, concat)
    partial = parsed is not None
    size = _declared_length(settings, length, defer_length, partial=partial)
    tus_columns = {"tus_metadata": metadata, "tus_concat": PARTIAL if partial else None}
    if partial:
        upload = _new_partial(settings, storage, size, tus_columns)
    else:
        filename = name or metadata_filename(pairs)
        # A direct upload's codec was chosen when its URL was made; otherwise the client's.
        chosen = codec if codec is not None else metadata_codec(pairs)
        upload = _new_upload(
            settings, storage, filename, size, tus_columns, codec=chosen, upload_id=upload_id
        )
    return _info(settings, upload)


def _new_upload(
    settings: Settings,
    storage: Storage,
    filename: str,
    size: int | None,
    tus_columns: dict[str, str | None],
    *,
    codec: str | None = None,
    upload_id: str | None = None,
) -> Upload:
    """An upload that becomes a video: declared like a chunked one (name, extension, space,
    ladder codec)."""
    with session_scope(settings) as session:
        upload = uploads.init_upload(
            session,
            storage,
            settings,
            filename=filename,
            total_chunks=1,
            total_size=size,
            codec=codec,
            upload_id=upload_id,
        )
        # Chunks are counted as PATCHes arrive (one row each), and have no fixed size.
        upload.total_chunks, upload.chunk_size, upload.tus_offset = 0, None, 0
        for column, value in tus_columns.items():
            setattr(upload, column, value)
        session.flush()
    return upload


def _new_partial(
    settings: Settings, storage: Storage, size: int | None, tus_columns: dict[str, str | None]
) -> Upload:
    """A partial upload: bytes only, never a video by itself, so no name is needed. It is
    kept whole in this process's folder, in a bucket too (its final upload copies it), so
    the check counts all of it."""
    uploads.check_free_space(settings, storage, size or 0)
    upload = Upload(
        id=ids.new_video_id(),
        filename=PARTIAL,
        total_chunks=0,
        total_size=size,
        tus_offset=0,
        **tus_columns,
    )
    storage.create_source(upload.id)
    with session_scope(settings) as session:
        session.add(upload)
        session.flush()
    return upload


# --- PATCH -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PatchResult:
    """Where the upload stands after a PATCH."""

    offset: int
    expires: datetime | None


class PatchWriter:
    """One PATCH body written at the upload's offset; nothing counts until `commit`.

    Holds the upload's lock from `start_patch` until `release`.
    """

    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        upload: Upload,
        lock: _Lock,
        *,
        checksum: Checksum | None,
        new_length: int | None,
    ) -> None:
        assert upload.tus_offset is not None
        self.settings, self.storage, self.upload, self.lock = settings, storage, upload, lock
        self.offset = upload.tus_offset
        self.checksum = checksum
        self.new_length = new_length
        length = new_length if new_length is not None else upload.total_size
        self.limit = (length if length is not None else settings.max_upload_bytes) - self.offset
        self.written = 0
        self.digest = digests.new()
        # A PATCH continues the file from its offset: when the whole file's sha256 has reached
        # that offset, its bytes are hashed as they are written, never read back (hashing.py).
        self.hasher = HASHERS.get(upload.id, storage.source_path(upload.id))
        self.fed = self.hasher.begin(self.offset)
        self.check = CHECKSUMS[checksum.algorithm]() if checksum else None
        # In a bucket, a long body counts part by part and each whole part is sent as it
        # arrives: scratch holds about a part, not the body. A checksum covers the whole body,
        # so nothing of such a body counts before its end.
        self.part = upload.part_bytes if remote.active(settings) and checksum is None else None
        # Past the page cache where the filesystem allows it (aligned.py): staged whole blocks
        # go direct, and `_record` writes what is staged before its fdatasync.
        self._staged: aligned.StagedWrite | None = None
        if settings.direct_io:
            source = storage.source_path(upload.id)
            self._staged = aligned.StagedWrite.open(lock.fd, source, self.offset)

    def write(self, data: bytes) -> None:
        """Write the next piece of the body (not yet durable, not yet counted)."""
        if self.written + len(data) > self.limit:
            raise TooLarge(
                f"the PATCH body goes past the upload's end: {self.limit} more bytes fit "
                f"after offset {self.offset}"
            )
        with _disk_errors():
            if self._staged is not None:
                self._staged.write([data])
            else:
                aligned.write_at(self.lock.fd, data, self.offset + self.written)
        self.digest.update(data)
        if self.fed is not None:
            self.fed.update(data)
        if self.check is not None:
            self.check.update(data)
        self.written += len(data)
        if self.part and (self.offset + self.written) // self.part > self.offset // self.part:
            self._count_so_far()

    def _count_so_far(self) -> None:
        """Record what the body brought so far and send its whole parts; the rest of the body
        goes on from there (a PATCH cut off later keeps this much, as a shorter one would)."""
        self._record()
        try:
            remote.drain(self.settings, self.storage, self.upload.id)
        except StorageUnavailable as exc:
            raise remote.unavailable(f"upload {self.upload.id} up to its offset", exc) from exc
        if self.new_length is not None:
            self.upload.total_size, self.new_length = self.new_length, None
        self.upload.total_chunks += 1
        self.offset += self.written
        self.limit -= self.written
        self.written = 0
        self.digest = digests.new()
        self.fed = self.hasher.begin(self.offset)

    def commit(self, *, whole_body: bool) -> PatchResult:
        """Make the written bytes count (durable first), then finish the upload if complete.

        `whole_body` is False when the client went away mid-body: what arrived is kept,
        unless a checksum was sent (it covers the whole body, so none of it can be trusted).
        """
        if self.check is not None and self.checksum is not None:
            matches = whole_body and self.check.digest() == self.checksum.digest
            if not matches:
                self._discard()
            if whole_body and not matches:
                raise ChecksumMismatch(
                    f"the PATCH body's {self.checksum.algorithm} is not the one in "
                    f"Upload-Checksum; its bytes were discarded, the offset stays {self.offset}"
                )
        if self.written or self.new_length is not None:
            self._record()
            try:
                remote.drain(self.settings, self.storage, self.upload.id)
            except StorageUnavailable as exc:
                raise remote.unavailable(f"upload {self.upload.id} up to its offset", exc) from exc
        upload = _load(self.settings, self.upload.id)
        if _stranded(upload):
            _finish(self.settings, self.storage, upload.id)
            upload = _load(self.settings, self.upload.id)
        return PatchResult(offset=upload.tus_offset or 0, expires=_expires(self.settings, upload))

    def _discard(self) -> None:
        # Nothing past the offset counts anyway; trimming keeps the disk honest.
        self.written = 0
        if self._staged is not None:
            self._staged.discard()
            self._staged = None
        os.ftruncate(self.lock.fd, self.offset)

    def _record(self) -> None:
        """fdatasync, then move the offset and add the PATCH's chunk row in one transaction."""
        if self._staged is not None:
            with _disk_errors():
                self._staged.drain()
        os.fdatasync(self.lock.fd)
        values: dict[str, Any] = {"tus_offset": self.offset + self.written, "updated_at": utcnow()}
        if self.new_length is not None:
            values["total_size"] = self.new_length
        if self.written:
            values["total_chunks"] = uploads.UPLOADS.c.total_chunks + 1
        # Core statements on a plain connection, as the chunk path records its chunks.
        with engine(self.settings).begin() as connection:
            moved = connection.execute(
                update(uploads.UPLOADS)
                .where(
                    uploads.UPLOADS.c.id == self.upload.id,
                    uploads.UPLOADS.c.tus_offset == self.offset,
                )
                .values(**values)
            )
            if moved.rowcount != 1:
                raise NotFound(f"upload {self.upload.id} was removed while this PATCH ran")
            if self.written:
                row = {
                    "upload_id": self.upload.id,
                    "index": self.upload.total_chunks,
                    "size": self.written,
                    "digest": digests.stored(digests.FAST, self.digest.hexdigest()),
                }
                connection.execute(uploads.INSERT_CHUNK, row)
        BYTES_UPLOADED.inc(self.written)
        if self.written:
            # Hashed already (`fed`), or now, in the background: at the last byte `complete`
            # then hashes only what is not hashed yet, whatever the file's size.
            self.hasher.commit(self.offset, self.written, self.fed)

    def release(self) -> None:
        """Let the next request write."""
        if self._staged is not None:
            self._staged.discard()  # only bytes that never counted are still staged
            self._staged = None
        self.lock.release()


@contextlib.contextmanager
def _disk_errors() -> Iterator[None]:
    """A full disk or a file past what the filesystem holds, as the client's error."""
    try:
        yield
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise InsufficientStorage("the storage disk is full: try again later") from None
        if exc.errno == errno.EFBIG:
            raise TooLarge(
                "the upload would end past the largest file this storage holds"
            ) from None
        raise


def start_patch(
    settings: Settings,
    storage: Storage,
    *,
    upload_id: str,
    offset: str | None,
    length: str | None,
    checksum: str | None,
    content_type: str | None,
    content_length: int | None,
) -> PatchWriter:
    """Check a PATCH against the upload and take its lock; the caller feeds the body."""
    check_offset_stream(content_type)
    if offset is None:
        raise InvalidInput("Upload-Offset is missing: HEAD the upload and send its offset")
    claimed = parse_size("Upload-Offset", offset)
    expected = parse_checksum(checksum)
    upload = _load(settings, upload_id)
    if upload.tus_concat not in (None, PARTIAL):
        raise FinalUploadReadOnly(
            f"upload {upload.id} is a final concatenation: it is made of its partial uploads "
            "and takes no PATCH"
        )
    lock = _Lock(storage, upload.id)
    try:
        upload = _load(settings, upload_id)  # as it is now that no one else writes
        new_length = _check_patch(
            settings, storage, upload, claimed, length, content_length, whole=expected is not None
        )
    except BaseException:
        lock.release()
        raise
    return PatchWriter(settings, storage, upload, lock, checksum=expected, new_length=new_length)


def _check_patch(
    settings: Settings,
    storage: Storage,
    upload: Upload,
    claimed: int,
    length: str | None,
    content_length: int | None,
    *,
    whole: bool,
) -> int | None:
    """409 on an offset mismatch, the length rules, 413/507; returns a newly set length."""
    if claimed != upload.tus_offset:
        raise Conflict(
            f"Upload-Offset is {claimed} but upload {upload.id} has {upload.tus_offset} bytes: "
            f"resume from {upload.tus_offset}",
            code="offset_mismatch",
        )
    new_length = _length_in_patch(settings, upload, length)
    total = new_length if new_length is not None else upload.total_size
    room = (total if total is not None else settings.max_upload_bytes) - claimed
    if content_length is not None and content_length > room:
        raise TooLarge(
            f"the PATCH body has {content_length} bytes but only {room} fit "
            f"(the upload ends at {total if total is not None else 'Tus-Max-Size'})"
        )
    staged = _staged(settings, upload, content_length or 0, whole)
    uploads.check_free_space(settings, storage, staged)
    return new_length


def _staged(settings: Settings, upload: Upload, body: int, whole: bool) -> int:
    """How much of a PATCH body scratch holds at once: all of it on the local folder (or with
    a checksum), about a part in a bucket (PatchWriter sends each part as it is whole)."""
    if whole or not remote.active(settings) or not upload.part_bytes:
        return body
    return min(body, upload.part_bytes)


def _length_in_patch(settings: Settings, upload: Upload, length: str | None) -> int | None:
    """A deferred length arrives in a PATCH; a known one must not change."""
    if length is None:
        return None
    size = parse_size("Upload-Length", length)
    if upload.total_size is not None:
        if size != upload.total_size:
            raise InvalidInput(
                f"Upload-Length cannot change: upload {upload.id} was declared with "
                f"{upload.total_size} bytes"
            )
        return None
    _check_max(settings, size)
    assert upload.tus_offset is not None
    if size < upload.tus_offset or (size == 0 and upload.tus_concat != PARTIAL):
        raise InvalidInput(
            f"Upload-Length {size} is less than the {upload.tus_offset} bytes already stored "
            "(or zero)"
        )
    return size


# --- completion, termination, concatenation --------------------------------------------------


def _finish(settings: Settings, storage: Storage, upload_id: str) -> None:
    """The chunked uploads' completion: verify, probe, register the video, queue its job."""
    uploads.complete_upload(settings, storage, upload_id=upload_id)


def terminate(settings: Settings, storage: Storage, *, upload_id: str) -> None:
    """DELETE: remove an unfinished upload and its bytes (a finished one is a video now)."""
    try:
        upload = _load(settings, upload_id)
    except UploadGone:
        upload = None  # expired: remove it now rather than wait for the sweep
    video_id = ids.video_id(upload_id)
    if upload is not None and upload.completed:
        raise Conflict(
            f"upload {video_id} is finished and is now video {video_id}: delete the video "
            "with DELETE /videos/{id} and the admin token",
            code="upload_finished",
        )
    with _Lock(storage, video_id):
        _remove(settings, storage, video_id)


def _remove(settings: Settings, storage: Storage, upload_id: str) -> None:
    """The upload's rows and files, gone (the caller holds its lock)."""
    remote.discard(settings, upload_id)
    with session_scope(settings) as session:
        session.execute(delete(UploadChunk).where(UploadChunk.upload_id == upload_id))
        session.execute(delete(Upload).where(Upload.id == upload_id))
    storage.delete_video(upload_id)


def _finished_partial(settings: Settings, upload_id: str) -> Upload:
    """A partial upload that has all its bytes (concatenation-unfinished is not offered)."""
    upload = _load(settings, upload_id)
    if upload.tus_concat != PARTIAL:
        raise InvalidInput(
            f"upload {upload_id} in Upload-Concat is not a partial upload "
            "(create parts with 'Upload-Concat: partial')"
        )
    if _remaining(upload) != 0:
        raise InvalidInput(
            f"partial upload {upload_id} is not finished ({upload.tus_offset} of "
            f"{upload.total_size if upload.total_size is not None else '?'} bytes): "
            "finish every part before creating the final upload"
        )
    return upload


def _concatenate(
    settings: Settings,
    storage: Storage,
    part_ids: tuple[str, ...],
    pairs: dict[str, bytes],
    metadata: str | None,
    concat: str | None,
) -> UploadInfo:
    """A final upload: the parts' bytes copied in order into a new upload, then finished.

    Every check (each part finished, the total within MAX_UPLOAD_BYTES, the disk space) comes
    before any byte is copied; the parts are claimed before copying and removed after.
    """
    parts = [_finished_partial(settings, part) for part in part_ids]
    total = sum(part.total_size or 0 for part in parts)
    _check_max(settings, total)
    if total == 0:
        raise InvalidInput("the partial uploads are all empty: an empty file is not a video")
    filename = metadata_filename(pairs)
    tus_columns = {"tus_metadata": metadata, "tus_concat": concat}
    final = _new_upload(
        settings, storage, filename, total, tus_columns, codec=metadata_codec(pairs)
    )
    with _Lock(storage, final.id) as target:
        try:
            _claim(settings, final.id, parts)
            _copy_parts(storage, parts, target)
        except BaseException:
            _unclaim(settings, final.id)
            _remove(settings, storage, final.id)
            raise
        _adopt_chunks(settings, final.id, parts)
        _remove_parts(settings, storage, parts)
        _finish(settings, storage, final.id)
    with session_scope(settings) as session:
        done = session.get(Upload, final.id)
        assert done is not None
        return _info(settings, done)


def _claim(settings: Settings, final_id: str, parts: list[Upload]) -> None:
    """Mark every part as the final upload's in one transaction (all or none): a part that
    another final upload claimed meanwhile is a 409, and nothing was copied."""
    with session_scope(settings) as session:
        for part in parts:
            taken = session.execute(
                update(Upload)
                .where(Upload.id == part.id, Upload.tus_concat == PARTIAL)
                .values(tus_concat=USED + final_id)
            )
            if taken.rowcount != 1:  # type: ignore[attr-defined]
                raise Conflict(
                    f"partial upload {part.id} has just gone into another final upload: "
                    "each partial upload goes into one final upload",
                    code="partial_used",
                )


def _unclaim(settings: Settings, final_id: str) -> None:
    """Give the parts back (the final upload failed before it took their bytes)."""
    with session_scope(settings) as session:
        session.execute(
            update(Upload).where(Upload.tus_concat == USED + final_id).values(tus_concat=PARTIAL)
        )


def _copy_parts(storage: Storage, parts: list[Upload], target: int) -> None:
    """The parts' bytes, in order, into the final upload's file, made durable."""
    position = 0
    for part in parts:
        with _Lock(storage, part.id, shared=True) as source:
            _copy_range(source, target, part.total_size or 0, position)
        position += part.total_size or 0
    os.fdatasync(target)


def _remove_parts(settings: Settings, storage: Storage, parts: list[Upload]) -> None:
    """Remove the copied parts; one a request still holds is left to the abandoned-upload
    sweep (it is claimed, so it can go into no other final upload)."""
    for part in parts:
        with contextlib.suppress(UploadLocked, NotFound), _Lock(storage, part.id):
            _remove(settings, storage, part.id)


def _copy_range(source: int, target: int, size: int, position: int) -> None:
    """Copy `size` bytes from the start of `source` to `position` in `target`."""
    copied = 0
    while copied < size:
        done = _copy_some(source, target, size - copied, copied, position + copied)
        if done == 0:
            raise Conflict("a partial upload is shorter than its length: upload it again")
        copied += done


def _copy_some(source: int, target: int, count: int, start: int, position: int) -> int:
    try:
        # In the kernel (a reflink where the filesystem can): no bytes through Python.
        return os.copy_file_range(source, target, count, start, position)
    except (AttributeError, OSError):
        # No copy_file_range here (macOS), or not between these files: copy by hand.
        data = os.pread(source, min(count, 8 * 1024 * 1024), start)
        return os.pwrite(target, data, position)


def _adopt_chunks(settings: Settings, final_id: str, parts: list[Upload]) -> None:
    """The final upload's chunk rows are its parts' rows, in order; its offset is its end."""
    with session_scope(settings) as session:
        index = 0
        for part in parts:
            rows = session.scalars(
                select(UploadChunk)
                .where(UploadChunk.upload_id == part.id)
                .order_by(UploadChunk.index)
            ).all()
            for row in rows:
                session.add(
                    UploadChunk(upload_id=final_id, index=index, size=row.size, digest=row.digest)
                )
                index += 1
        total = sum(part.total_size or 0 for part in parts)
        session.execute(
            update(Upload)
            .where(Upload.id == final_id)
            .values(tus_offset=total, total_chunks=index, updated_at=utcnow())
        )
