"""The storage interface: what every backend (the local folder, S3-compatible object storage)
offers the platform. Its docstrings are the contract, as tusd's DataStore is; everything above
it is the same code for every backend.

Objects are named by keys that only `services.core.layout` builds (`originals/{id}/source`,
`hls/{id}/720p/seg_00003.ts`, ...): '/'-separated, relative, validated. Nobody above this
interface joins a name to a path or to a URL.

Errors, whatever the backend:
    a missing object is `ObjectMissing` (a NotFound), never a backend error;
    `StorageUnavailable` (a 503) when the backend cannot be reached or answers 5xx: callers
    retry later, nothing already stored is lost;
    `InsufficientStorage` (a 507) when the backend is full.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from services.core.errors import AppError, NotFound


class ObjectMissing(NotFound):
    """No object under that key."""


class StorageUnavailable(AppError):
    """The storage backend cannot be reached (or failed): try again later."""

    code, status = "storage_unavailable", 503


@dataclass(frozen=True)
class ObjectInfo:
    """What a backend knows of one object without reading it."""

    key: str
    size: int
    # Changes whenever the bytes change (an S3 ETag; size+mtime for a file): for HTTP ETags.
    etag: str
    # Seconds since the epoch.
    modified: float


@dataclass(frozen=True)
class Part:
    """One uploaded part of a multipart object (S3 rules: 1..10000, each but the last at
    least MIN_PART_BYTES)."""

    number: int
    etag: str
    size: int


# AWS S3's rules, kept by every caller even where a backend is more lenient.
MIN_PART_BYTES = 5 * 1024 * 1024
MAX_PARTS = 10_000


class Store(Protocol):
    """One storage backend. Every method is safe to call from several threads and processes
    (and machines, for a shared backend) at once; none of them keeps a lock across calls."""

    name: str  # "local" or "s3", shown by /admin/status

    # --- whole objects --------------------------------------------------------------------
    def put_file(self, key: str, source: Path, *, content_type: str | None = None) -> ObjectInfo:
        """Store the local file `source` under `key`, replacing what was there, durably
        (fsynced / acknowledged) before returning. `source` is consumed: the local backend
        renames it into place (same disk), S3 uploads it (multipart when large) and the caller
        deletes it. Readers see the old object or the whole new one, never a part."""
        ...

    def put_bytes(self, key: str, data: bytes, *, content_type: str | None = None) -> ObjectInfo:
        """Atomically publish a small object (a playlist, the master, a marker): readers see
        the old bytes or the new ones, never a mix or an empty object; durable on return."""
        ...

    def get_bytes(self, key: str, *, limit: int) -> bytes:
        """The whole object (at most `limit` bytes, else ValueError): playlists and markers."""
        ...

    def read_range(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The bytes [start, end) of the object (end None: to its end), as pieces, streamed:
        memory stays flat whatever the size."""
        ...

    def stat(self, key: str) -> ObjectInfo | None:
        """The object's size and version, or None when there is none."""
        ...

    def list_prefix(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose key starts with `prefix` (a layout prefix ending in '/'),
        in key order."""
        ...

    def delete(self, key: str) -> None:
        """Remove one object; removing a missing one is not an error."""
        ...

    def delete_prefix(self, prefix: str) -> int:
        """Remove every object under `prefix` (a layout prefix ending in '/'); how many."""
        ...

    # --- readers that are not this process ------------------------------------------------
    def local_path(self, key: str) -> Path | None:
        """The file that holds the object when it is a file on this machine (the local
        backend: for sendfile, ffmpeg inputs, pwrite), else None."""
        ...

    def reader_url(self, key: str, *, expires_seconds: int) -> str | None:
        """A URL any HTTP client (ffmpeg, a player) can GET (with ranges) for
        `expires_seconds` without credentials: a presigned URL on S3; None where the backend
        has none (the local folder: use local_path)."""
        ...

    def public_url(self, key: str) -> str | None:
        """The object's URL under MEDIA_PUBLIC_URL (a CDN or public bucket), or None."""
        ...

    # --- streaming writes: multipart objects ----------------------------------------------
    def start_multipart(self, key: str, *, content_type: str | None = None) -> str:
        """Begin an object written in parts; its upload id (kept by the caller, e.g. in the
        database, so another process can continue or abort it)."""
        ...

    def put_part(self, key: str, upload_id: str, number: int, source: Path) -> Part:
        """Upload part `number` from the local file `source` (the caller keeps S3's rules:
        MIN_PART_BYTES, MAX_PARTS); the part's ETag is checked against the bytes sent."""
        ...

    def finish_multipart(self, key: str, upload_id: str, parts: list[Part]) -> ObjectInfo:
        """Join the parts, in number order, into the object under `key`."""
        ...

    def abort_multipart(self, key: str, upload_id: str) -> None:
        """Drop an unfinished multipart object and its parts (the sweep of abandoned uploads);
        an unknown or finished upload id is not an error."""
        ...

    # --- health ---------------------------------------------------------------------------
    def check(self) -> str | None:
        """None when the backend answers; else one line saying what is wrong (for
        /admin/status and start-up)."""
        ...
