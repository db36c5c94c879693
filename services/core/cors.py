"""Who may read the platform's answers from a page on another site (CORS), by kind of path.

- **Playback** (every GET and HEAD below `/stream/`: playlists, segments, init segments,
  posters, storyboards, captions, downloads, originals) is open to any origin by default,
  as a video CDN's is: `Access-Control-Allow-Origin: *`, never with credentials, on every
  answer (errors too, so a player can read them), whether or not the request carried an
  `Origin` (a shared cache may then hand one answer to every site). Private videos stay
  private: their tokens travel in the URL, not in cookies. PLAYBACK_ORIGINS can narrow it
  to a list; the answer then names the request's origin and varies on it.
- **Direct upload URLs** (an upload path carrying `direct_token`) answer for themselves: only
  the origin the URL was made for may use it, which the upload service alone can look up
  (services/upload/direct.py). The gateway relays them untouched.
- **Everything else** (the APIs: uploads, writes, admin) follows CORS_ORIGINS, through
  Starlette's CORSMiddleware as before.

The streaming fast path and the gateway's, which answer in front of this middleware, add the
same headers (`PlaybackPolicy.headers`).
"""

from collections.abc import Sequence
from functools import lru_cache

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.core.settings import Settings, get_settings, origin_list

PLAYBACK_PREFIX = "/stream/"
DIRECT_TOKEN = "direct_token"
# Paths that a direct upload URL may name (the tus and chunked upload APIs).
DIRECT_PREFIXES = ("/files", "/upload/")
PLAYBACK_METHODS = "GET, HEAD, OPTIONS"
# What a player on another origin reads to seek and to revalidate.
PLAYBACK_EXPOSED = "Content-Length, Content-Range, Accept-Ranges, ETag"
PREFLIGHT_MAX_AGE = "86400"

RawHeaders = list[tuple[bytes, bytes]]


def is_playback(path: str) -> bool:
    """Whether `path` is a playback path (below /stream/)."""
    return path.startswith(PLAYBACK_PREFIX)


def has_direct_token(scope: Scope) -> bool:
    """Whether the request names an upload path with a direct upload token in its query."""
    query: bytes = scope.get("query_string", b"")
    return scope["path"].startswith(DIRECT_PREFIXES) and DIRECT_TOKEN.encode() + b"=" in query


class PlaybackPolicy:
    """The CORS answer of playback paths: any origin, or the PLAYBACK_ORIGINS list."""

    def __init__(self, origins: Sequence[str]) -> None:
        self.any = "*" in origins
        self.origins = frozenset(origins)

    def headers(self, origin: str | None) -> RawHeaders:
        """The CORS headers of an answer to a request from `origin` (None: no Origin)."""
        if self.any:
            return [
                (b"access-control-allow-origin", b"*"),
                (b"access-control-expose-headers", PLAYBACK_EXPOSED.encode()),
            ]
        # Listed origins only: the answer differs by origin, so caches must key on it.
        headers = [(b"vary", b"Origin")]
        if origin is not None and origin in self.origins:
            headers += [
                (b"access-control-allow-origin", origin.encode("latin-1")),
                (b"access-control-expose-headers", PLAYBACK_EXPOSED.encode()),
            ]
        return headers

    def preflight(self, request: Headers) -> tuple[int, RawHeaders]:
        """The answer to a preflight (e.g. for `Range`): 204 with what may be sent, or 403
        for an origin not allowed (without CORS headers, so the browser refuses)."""
        origin = request.get("origin")
        allowed = self.headers(origin)
        if not any(name == b"access-control-allow-origin" for name, _ in allowed):
            return 403, allowed
        # No credentials ever, so any header asked for may come (players send Range).
        asked = request.get("access-control-request-headers", "")
        allowed += [
            (b"access-control-allow-methods", PLAYBACK_METHODS.encode()),
            (b"access-control-max-age", PREFLIGHT_MAX_AGE.encode()),
        ]
        if asked:
            allowed.append((b"access-control-allow-headers", asked.encode("latin-1")))
        return 204, allowed


@lru_cache(maxsize=8)
def playback_policy(playback_origins: str) -> PlaybackPolicy:
    """The policy of a PLAYBACK_ORIGINS value, parsed once (the fast paths ask per request)."""
    return PlaybackPolicy(origin_list(playback_origins) or ["*"])


def with_headers(headers: RawHeaders, extra: RawHeaders) -> RawHeaders:
    """`headers` with `extra` set: a name in `extra` replaces that name's earlier values, but
    Vary, which adds to the Vary already there (once)."""
    names = {name for name, _ in extra if name != b"vary"}
    kept = [(k, v) for k, v in headers if k.lower() not in names]
    varies = b",".join(v for k, v in kept if k.lower() == b"vary").lower()
    added = [(k, v) for k, v in extra if k != b"vary" or v.lower() not in varies]
    return kept + added


def is_preflight(scope: Scope) -> bool:
    """An OPTIONS request a browser sends before a cross-origin request that needs one."""
    if scope["method"] != "OPTIONS":
        return False
    names = {name for name, _ in scope["headers"]}
    return b"origin" in names and b"access-control-request-method" in names


class CrossOrigin:
    """ASGI middleware choosing the CORS policy by path (see the module's doc).

    The policies are read from the app's settings per request (cached per value), so a
    test's `dependency_overrides[get_settings]` holds here as in the routes.
    """

    def __init__(
        self, app: ASGIApp, *, allow_headers: list[str], expose_headers: list[str]
    ) -> None:
        self.app = app
        self.allow_headers = allow_headers
        self.expose_headers = expose_headers
        self._api: dict[tuple[str, ...], CORSMiddleware] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
        elif is_playback(scope["path"]):
            policy = playback_policy(settings_of(scope).playback_origins)
            await self._playback(policy, scope, receive, send)
        elif has_direct_token(scope):
            await self.app(scope, receive, send)  # the upload service answers for its URLs
        else:
            await self._for_api(settings_of(scope).allowed_origins())(scope, receive, send)

    def _for_api(self, origins: list[str]) -> CORSMiddleware:
        """Starlette's CORS for the API origins (one instance per list of origins)."""
        key = tuple(origins)
        if key not in self._api:
            self._api[key] = CORSMiddleware(
                self.app,
                allow_origins=origins,
                allow_credentials="*" not in origins,
                allow_methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
                allow_headers=self.allow_headers,
                expose_headers=self.expose_headers,
                max_age=600,
            )
        return self._api[key]

    async def _playback(
        self, policy: PlaybackPolicy, scope: Scope, receive: Receive, send: Send
    ) -> None:
        request = Headers(scope=scope)
        if is_preflight(scope):
            status, headers = policy.preflight(request)
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        extra = policy.headers(request.get("origin"))

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = with_headers(list(message.get("headers", [])), extra)
            await send(message)

        await self.app(scope, receive, send_with_cors)


def settings_of(scope: Scope) -> Settings:
    """The app's settings, as its routes get them (tests override `get_settings`)."""
    app = scope.get("app")  # set by Starlette before its middleware runs
    overrides = app.dependency_overrides if isinstance(app, FastAPI) else {}
    settings = overrides.get(get_settings, get_settings)()
    assert isinstance(settings, Settings)
    return settings
