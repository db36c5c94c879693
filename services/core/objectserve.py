"""How an object of a store (S3) is served: the same answers as `fileserve` gives for a file.

`ObjectResponse` is Starlette's FileResponse reading from the store instead of a file, so byte
ranges (206/416, several ranges), HEAD and If-Range are Starlette's own code, and `fileserve`'s
MIME types, cache rules and 304s apply unchanged. Only the source of the bytes and the
validators differ: the object's ETag and Last-Modified instead of a file's mtime and size.

A segment streams from the store with a ranged GET (`Store.read_range`: memory stays flat);
a playlist is read whole (`Store.get_bytes`), and may be rewritten before it is served (the
playback token, or MEDIA_PUBLIC_URL for the segments of public playback).
"""

import hashlib
import os
import stat as stat_module
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.utils import formatdate
from posixpath import splitext
from typing import Any

import anyio.to_thread
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    MalformedRangeHeader,
    RangeNotSatisfiable,
    Response,
)
from starlette.types import Receive, Scope, Send

from services.core.errors import NotFound
from services.core.fileserve import MEDIA_TYPES, cache_control, not_modified, signed_playlist
from services.core.storage.interface import ObjectMissing, Store

PATHSEND = "http.response.pathsend"
# A playlist read whole: a two-hour rung's VOD playlist is ~50 KB, its I-frame one ~150 KB.
PLAYLIST_LIMIT = 8 * 1024 * 1024
_URI_ATTRIBUTE_START = 'URI="'

ByteReader = Callable[[int, int], Iterator[bytes]]


@dataclass(frozen=True)
class Version:
    """One version of an object as served: its name (for the type), size, validators and
    a reader of its bytes [start, end)."""

    name: str
    size: int
    etag: str
    modified: float
    read: ByteReader

    @classmethod
    def in_memory(cls, name: str, body: bytes, modified: float) -> "Version":
        """A body already read (a playlist): its ETag is its own md5, whatever rewrote it."""
        etag = hashlib.md5(body, usedforsecurity=False).hexdigest()
        return cls(name, len(body), etag, modified, lambda start, end: iter((body[start:end],)))


class ObjectResponse(FileResponse):
    """Starlette's FileResponse over a `Version` (ranges, HEAD, If-Range as for a file)."""

    def __init__(
        self,
        version: Version,
        *,
        media_type: str,
        headers: dict[str, str],
        filename: str | None = None,
    ) -> None:
        # Set before FileResponse's constructor, which calls set_stat_headers.
        self.version = version
        self.range_ends: dict[int, int] = {}
        fake = os.stat_result((stat_module.S_IFREG, 0, 0, 1, 0, 0, version.size, 0, 0, 0))
        super().__init__(
            version.name,
            stat_result=fake,
            media_type=media_type,
            headers=headers,
            filename=filename,
        )

    def set_stat_headers(self, stat_result: os.stat_result) -> None:
        """Length from the size, Last-Modified and ETag from the object's own version."""
        self.headers.setdefault("content-length", str(self.version.size))
        self.headers.setdefault("last-modified", formatdate(self.version.modified, usegmt=True))
        self.headers.setdefault("etag", f'"{self.version.etag}"')

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """FileResponse's answer, never by pathsend (no file), each range read to its end."""
        extensions = scope.get("extensions") or {}
        if PATHSEND in extensions:
            scope = {**scope, "extensions": {k: v for k, v in extensions.items() if k != PATHSEND}}
        self.range_ends = self._ends(Headers(scope=scope).get("range"))
        await super().__call__(scope, receive, send)

    def _ends(self, http_range: str | None) -> dict[int, int]:
        """Where each requested range ends, so a ranged GET asks the store for no more."""
        if http_range is None:
            return {}
        try:
            ranges = self._parse_range_header(http_range, self.version.size)
        except (MalformedRangeHeader, RangeNotSatisfiable):
            return {}  # FileResponse answers these (400, 416) without reading
        return dict(ranges)

    @asynccontextmanager
    async def _open_file(self) -> AsyncIterator[Any]:
        reader = _VersionFile(self.version, self.range_ends)
        try:
            yield reader
        finally:
            with anyio.CancelScope(shield=True):
                await reader.aclose()


class _VersionFile:
    """The async file FileResponse reads: seek, then reads of exact sizes, from the store."""

    def __init__(self, version: Version, range_ends: dict[int, int]) -> None:
        self.version = version
        self.range_ends = range_ends
        self.position = 0
        self.pieces: Iterator[bytes] | None = None
        self.buffer = bytearray()

    async def seek(self, position: int) -> None:
        await self.aclose()
        self.position = position

    async def read(self, size: int) -> bytes:
        """`size` bytes (fewer only at the end of the object or of the range)."""
        if self.pieces is None:
            end = self.range_ends.get(self.position, self.version.size)
            self.pieces = await anyio.to_thread.run_sync(self.version.read, self.position, end)
        while len(self.buffer) < size:
            piece = await anyio.to_thread.run_sync(next, self.pieces, b"")
            if not piece:
                break
            self.buffer += piece
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        self.position += len(data)
        return data

    async def aclose(self) -> None:
        """Close the store's stream (a ranged GET cut short gives its connection back)."""
        pieces, self.pieces = self.pieces, None
        self.buffer.clear()
        close = getattr(pieces, "close", None)
        if close is not None:
            await anyio.to_thread.run_sync(close)


def serve_object(
    request: Request,
    store: Store,
    key: str,
    *,
    finished: bool,
    what: str,
    media_type: str | None = None,
    filename: str | None = None,
) -> Response:
    """The object under `key` as `fileserve.serve` serves a file; NotFound names `what`."""
    info = store.stat(key)
    if info is None:
        raise NotFound(f"{what} does not exist")
    version = Version(
        key,
        info.size,
        info.etag,
        info.modified,
        lambda start, end: store.read_range(key, start, end),
    )
    return _answer(request, version, finished=finished, media_type=media_type, filename=filename)


def serve_playlist_object(
    request: Request,
    store: Store,
    key: str,
    token: str | None,
    *,
    finished: bool,
    what: str,
    public: Callable[[str], str | None] | None = None,
) -> Response:
    """A playlist object: with a token, its URIs carry it (private, never cached); else as
    `serve_object`, its relative URIs first sent to `public(uri)` where that gives a URL."""
    info = store.stat(key)
    body = _read_playlist(store, key, what) if info is not None else None
    if info is None or body is None:
        raise NotFound(f"{what} does not exist")
    if token:
        return signed_playlist(body.decode("utf-8"), token)
    if public is not None:
        body = public_uris(body.decode("utf-8"), public).encode("utf-8")
    version = Version.in_memory(key, body, info.modified)
    return _answer(request, version, finished=finished)


def public_uris(text: str, public: Callable[[str], str | None]) -> str:
    """Each relative URI of a playlist (media lines, URI="..." attributes) that `public` maps
    to a URL replaced by it; the others kept as they are."""

    def mapped(uri: str) -> str:
        return public(uri) or uri

    lines = []
    for line in text.splitlines():
        if line and not line.startswith("#"):
            line = mapped(line)
        elif _URI_ATTRIBUTE_START in line:
            head, _, rest = line.partition(_URI_ATTRIBUTE_START)
            uri, quote, tail = rest.partition('"')
            line = f"{head}{_URI_ATTRIBUTE_START}{mapped(uri)}{quote}{tail}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def _read_playlist(store: Store, key: str, what: str) -> bytes | None:
    try:
        return store.get_bytes(key, limit=PLAYLIST_LIMIT)
    except ObjectMissing:
        return None
    except ValueError as exc:
        raise NotFound(f"{what} is too large to be a playlist") from exc


def _answer(
    request: Request,
    version: Version,
    *,
    finished: bool,
    media_type: str | None = None,
    filename: str | None = None,
) -> Response:
    suffix = splitext(version.name)[1]
    response = ObjectResponse(
        version,
        media_type=media_type or MEDIA_TYPES.get(suffix, "application/octet-stream"),
        headers={"Cache-Control": cache_control(suffix, finished)},
        filename=filename,
    )
    return not_modified(request.headers, response) or response


def public_segments(store: Store, keys: Callable[[str], str | None]) -> Callable[[str], str | None]:
    """`public` for `serve_playlist_object`: a relative URI's URL under MEDIA_PUBLIC_URL,
    through `keys` (the URI's layout key, or None to keep the URI as it is)."""

    def public(uri: str) -> str | None:
        if "/" in uri or "?" in uri or ":" in uri:
            return None
        key = keys(uri)
        return store.public_url(key) if key is not None else None

    return public
