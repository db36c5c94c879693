"""The hot path of HLS delivery: playlists and segments answered in front of FastAPI.

A player asks for a segment or a playlist every few seconds, so these requests are most of the
traffic. FastAPI's routing, dependency injection and middleware cost more than serving the
file itself, so `HlsFastPath` answers them first, with the very same files, headers and access
rules as the routes (`fileserve.file_response`, `Storage`, `signing.verify`). A segment is handed
to the server to send (`http.response.pathsend`: granian sends it without Python), and once
asked for twice it is sent from memory (`segment_cache.py`: granian reads the file again on
every pathsend, at about twice nginx's CPU per byte); a playlist, small and asked for far more
often, is sent from memory, read once per version of the file.

Only requests that succeed are answered here: GET or HEAD of a well-formed master, playlist or
segment path, with a valid token when playback is private, for a file that exists. Its
answers carry the playback CORS headers the app's middleware would add
(`services.core.cors.PlaybackPolicy`: `Access-Control-Allow-Origin: *` by default); with
PLAYBACK_ORIGINS narrowed to a list, a request with an `Origin` goes to the app, whose
middleware names the origin. Everything else goes on to the app, whose routes answer it and
give the catalogue's errors (400, 403, 404, 422).

With STORAGE_URL set (media in a bucket) it answers nothing: the storage folder is then each
process's scratch, and the routes serve from the store (`services.core.objectserve`).

The gateway installs it too: sharing the storage folder with the streaming service, it serves
these files itself instead of relaying them; a file that is not in its storage folder goes on
to the proxy as before.

Per request this costs a cached path lookup and one stat (two for a playlist: the marker of a
finished presentation decides its caching); responses are built once per version of a file.
It wraps the FastAPI app rather than sitting in its middleware stack, whose layers (telemetry
checks, error handling, routing) would cost more than the rest of the request.
"""

import os
import re
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.datastructures import Headers, QueryParams
from starlette.responses import FileResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.core import ids, layout, signing
from services.core.cors import RawHeaders, playback_policy, with_headers
from services.core.fileserve import (
    file_response,
    not_modified,
    regular_file_stat,
    serve_signed_playlist,
)
from services.core.metrics import (
    BYTES_SENT,
    LATENCY,
    REQUESTS,
    SEGMENT_CACHE_BYTES,
    SEGMENT_CACHE_REQUESTS,
)
from services.core.segment_cache import Key, SegmentCache, read_version, version_key
from services.core.settings import Settings, get_settings
from services.core.storage import Storage

PATHSEND = "http.response.pathsend"
# Built from the validators' own patterns: a path matching it names a file by valid ids only.
HLS_FILE = re.compile(
    rf"/stream/(?P<video_id>{ids.VIDEO_ID_RE.pattern})/(?:{re.escape(layout.MASTER)}|"
    rf"(?P<quality>{ids.QUALITY_RE.pattern})/"
    rf"(?P<name>{re.escape(layout.PLAYLIST)}|{layout.SEGMENT_RE.pattern})|"
    rf"captions/(?P<caption>{ids.CAPTION_ID_RE.pattern})/(?P<file>{layout.CAPTION_FILE_RE.pattern}))"
)
CONDITIONAL = frozenset({b"if-none-match", b"if-modified-since"})
# File versions whose responses are kept (headers, and the bytes of a playlist), and at most
# this many playlist bytes in all: past either, the kept versions are dropped and rebuilt.
RESPONSES_KEPT = 4096
BODIES_KEPT_BYTES = 32 * 1024 * 1024
# Playlists up to this size are kept in memory (a two-hour rung's VOD playlist is ~50 KB).
BODY_KEPT_BYTES = 64 * 1024


@dataclass(frozen=True)
class Target:
    """The file a request path names, with the route template the app would have used."""

    video_id: str
    path: Path
    route: str
    # The marker of a finished presentation, for playlists (their caching depends on it).
    marker: Path | None

    @property
    def kind(self) -> str:
        return "playlist" if self.marker is not None else "segment"


@lru_cache(maxsize=8)
def _storage(root: Path) -> Storage:
    # Storage resolves its root on the filesystem: once per root, not once per request.
    return Storage(root)


@lru_cache(maxsize=RESPONSES_KEPT)
def locate(root: Path, request_path: str) -> Target | None:
    """The file `request_path` names below `root`, if it is an HLS file path; else None."""
    match = HLS_FILE.fullmatch(request_path)
    if match is None:
        return None
    storage = _storage(root)
    video_id, quality, name = match.group("video_id", "quality", "name")
    marker = storage.complete_marker(video_id)
    caption, file = match.group("caption", "file")
    if caption is not None:
        path = storage.caption_file_path(video_id, caption, file)
        route = _route("captions/{caption_id}/{name}")
        return Target(video_id, path, route, marker if path.suffix == ".m3u8" else None)
    if quality is None:
        return Target(video_id, storage.master_path(video_id), _route("master.m3u8"), marker)
    if name == layout.PLAYLIST:
        path = storage.playlist_path(video_id, quality)
        return Target(video_id, path, _route("{quality}/playlist.m3u8"), marker)
    path = storage.segment_path(video_id, quality, name)
    # The I-frame playlist lives among the segments but grows like a playlist.
    kept = marker if path.suffix == ".m3u8" else None
    return Target(video_id, path, _route("{quality}/{segment}"), kept)


def _route(rest: str) -> str:
    # The routes' own templates, so the metrics read the same whichever path answered.
    return "/stream/{video_id}/" + rest


def playback_token(settings: Settings, video_id: str, query: bytes) -> tuple[bool, str | None]:
    """(allowed, token to carry into playlists): the routes' `playback_guard`, as a check."""
    key = settings.playback_signing_key
    if not key:
        return True, None
    token = QueryParams(query.decode("latin-1")).get("token")
    return signing.verify(key, video_id, token), token


class HlsFastPath:
    """ASGI app answering successful HLS file requests, and passing the rest to `app`."""

    def __init__(self, app: FastAPI, *, service: str) -> None:
        self.app = app
        self.metrics = _Metrics(service)
        self.responses: dict[Key, _Version] = {}
        self.kept_bytes = 0
        # Sized from the settings on first use (SEGMENT_CACHE_MB).
        self.segments = SegmentCache(0)
        self._kept_gauge = SEGMENT_CACHE_BYTES.labels(service)
        self._hits = SEGMENT_CACHE_REQUESTS.labels(service, "hit")
        self._misses = SEGMENT_CACHE_REQUESTS.labels(service, "miss")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the file when the request qualifies; otherwise pass it on."""
        response, target = None, None
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
            settings = self._settings()
            # On object storage the folder is scratch: the app's routes read the bucket.
            if not settings.storage_url.strip():
                target = locate(settings.storage_dir, scope["path"])
            if target is not None:
                response = self._response(settings, target, scope)
        if response is None or target is None:
            await self._pass(scope, receive, send)
            return
        started = time.perf_counter()
        if isinstance(response, _Version) and response.plain_get(scope):
            # The common cases, kept short: a plain GET of a playlist or a hot segment.
            body = response.body
            if body is None and response.immutable:
                body = self._kept_segment(settings, response)
            if body is not None:
                await response.send_body(send, body)
                seconds = time.perf_counter() - started
                self.metrics.record("GET", target, 200, len(body), seconds)
                return
        counted = _Counted(send)
        try:
            await response(scope, receive, counted)
        finally:
            seconds = time.perf_counter() - started
            self.metrics.record(scope["method"], target, counted.status, counted.sent, seconds)

    async def _pass(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The app's own file routes stream through Python, as under any server, so its
        # metrics keep counting every byte they send.
        extensions = scope.get("extensions") or {}
        if PATHSEND in extensions:
            scope = {**scope, "extensions": {k: v for k, v in extensions.items() if k != PATHSEND}}
        await self.app(scope, receive, send)

    def _kept_segment(self, settings: Settings, version: "_Version") -> bytes | None:
        """The bytes of an immutable file if kept in memory (else noted as asked for)."""
        capacity = settings.segment_cache_mb * 1024 * 1024
        if self.segments.capacity != capacity:
            self.segments = SegmentCache(capacity, gauge=self._kept_gauge)
        body = self.segments.get(version.key)
        if body is None:
            self._misses.inc()
            self.segments.missed(version.key)
        else:
            self._hits.inc()
        return body

    def _settings(self) -> Settings:
        """The app's settings, honouring a test's `dependency_overrides[get_settings]`."""
        provider = self.app.dependency_overrides.get(get_settings, get_settings)
        settings: Settings = provider()
        return settings

    def _response(self, settings: Settings, target: Target, scope: Scope) -> ASGIApp | None:
        """The answer, or None: a forbidden or missing request goes to the app, and so does
        one with an Origin when playback is open to listed origins only."""
        names = {name for name, _ in scope["headers"]}
        policy = playback_policy(settings.playback_origins)
        if b"origin" in names and not policy.any:
            return None
        allowed, token = playback_token(settings, target.video_id, scope["query_string"])
        stat = _stat(target.path) if allowed else None
        if stat is None:
            return None
        cors = policy.headers(None)
        if token and target.marker is not None:
            signed = serve_signed_playlist(target.path, token, what=target.route)
            signed.raw_headers[:] = with_headers(signed.raw_headers, cors)
            return signed
        version = self._version(target, stat, cors)
        if names & CONDITIONAL:
            unchanged = not_modified(Headers(scope=scope), version.response)
            if unchanged is not None:
                unchanged.raw_headers[:] = with_headers(unchanged.raw_headers, cors)
                return unchanged
        return version

    def _version(self, target: Target, stat: os.stat_result, cors: RawHeaders) -> "_Version":
        """The response for one version of a file (inode, size, mtime) in its caching state."""
        key = version_key(target.path, stat)
        known = self.responses.get(key)
        # Segments are immutable whatever the presentation's state. A playlist may be cached
        # once the presentation is finished, and this version of it then stays finished (a
        # new encode writes new files): the marker is looked for only until it is there.
        finished = (
            target.marker is None
            or (known is not None and known.finished)
            or target.marker.exists()
        )
        if known is not None and known.finished == finished:
            return known
        version = _Version.of(target, stat, key, finished, cors)
        size = len(version.body or b"")
        self.kept_bytes -= len(known.body or b"") if known is not None else 0
        if self.kept_bytes + size > BODIES_KEPT_BYTES or len(self.responses) >= RESPONSES_KEPT:
            # Mostly old versions by then: grown playlists, re-encoded videos.
            self.responses.clear()
            self.kept_bytes = 0
        self.responses[key] = version
        self.kept_bytes += size
        return version


class _Version:
    """One version of a file: Starlette's FileResponse for it (headers, ranges, HEAD, the file
    by pathsend) and, for a small playlist, its bytes to answer a plain GET from memory. A
    segment's bytes, when hot, are kept by the fast path's SegmentCache under `key`."""

    def __init__(
        self,
        response: FileResponse,
        body: bytes | None,
        finished: bool,
        *,
        key: Key,
        immutable: bool,
    ) -> None:
        self.response = response
        self.body = body
        self.finished = finished
        self.key = key
        # Not a playlist: this version's bytes never change (segments, caption files).
        self.immutable = immutable

    @classmethod
    def of(
        cls, target: Target, stat: os.stat_result, key: Key, finished: bool, cors: RawHeaders
    ) -> "_Version":
        response = file_response(target.path, stat, finished=finished)
        # What the app's CORS middleware adds to a playback answer (services.core.cors).
        response.raw_headers[:] = with_headers(response.raw_headers, cors)
        small = target.marker is not None and stat.st_size <= BODY_KEPT_BYTES
        body = read_version(key) if small else None
        return cls(response, body, finished, key=key, immutable=target.marker is None)

    @staticmethod
    def plain_get(scope: Scope) -> bool:
        """Whether the request is a plain GET (no Range): one the whole file answers."""
        if scope["method"] != "GET":
            return False
        return not any(name == b"range" for name, _ in scope["headers"])

    async def send_body(self, send: Send, body: bytes) -> None:
        """The whole file from memory, with the FileResponse's own headers."""
        start = {"type": "http.response.start", "status": 200, "headers": self.response.raw_headers}
        await send(start)
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """From memory when it can; otherwise (HEAD, Range, a segment) by the FileResponse."""
        if self.body is not None and self.plain_get(scope):
            await self.send_body(send, self.body)
        else:
            await self.response(scope, receive, send)


def _stat(path: Path) -> os.stat_result | None:
    # Any failure (missing, not a file, unreadable) is the app's to report.
    try:
        return regular_file_stat(path)
    except OSError:
        return None


class _Metrics:
    """What MetricsMiddleware records, for the requests answered here (label sets cached)."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.children: dict[tuple[str, str, str, int], tuple[Any, Any, Any]] = {}

    def record(self, method: str, target: Target, status: int, sent: int, seconds: float) -> None:
        key = (method, target.route, target.kind, status)
        children = self.children.get(key)
        if children is None:
            children = self.children[key] = (
                REQUESTS.labels(self.service, method, target.route, str(status)),
                LATENCY.labels(self.service, method, target.route),
                BYTES_SENT.labels(self.service, target.kind),
            )
        requests, latency, body_bytes = children
        requests.inc()
        latency.observe(seconds)
        body_bytes.inc(sent)


class _Counted:
    """A `send` that notes the status and the body bytes, pathsend's file included."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.status = 500
        self.sent = 0
        self.length = 0

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message["status"]
            self.length = _content_length(message["headers"])
        elif kind == "http.response.body":
            self.sent += len(message.get("body", b""))
        elif kind == PATHSEND:
            self.sent += self.length
        await self.send(message)


def _content_length(headers: list[tuple[bytes, bytes]]) -> int:
    for name, value in headers:
        if name == b"content-length":
            return int(value)
    return 0


def wrap(app: FastAPI, *, service: str) -> HlsFastPath:
    """`app` behind the fast path (what the server runs)."""
    return HlsFastPath(app, service=service)
