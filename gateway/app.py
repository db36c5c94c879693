"""The gateway: one origin for the page and every service's API, so the browser needs no CORS.

Run with `granian --interface asgi --port 8000 gateway.app:app` (what the launcher does) or
uvicorn. Tests build their own app with `build_app`, handing it a client factory (short
timeouts, another transport) and overriding `get_settings`.

HLS playlists and segments are not relayed when the gateway shares the storage folder with the
streaming service: `serving_app` puts the fast path the streaming service runs
(`services.core.hls_fastpath`) in front, serving them with the same files, headers and access
rules; a file it does not find there is relayed as before.

`/watch/{id}` and `/embed/{id}` are the page and the embeddable player on one video
(gateway.pages); no answer but the embed page may be framed by another site (gateway.frames).
"""

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

import httpx
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import FileResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from gateway.frames import FrameGuard
from gateway.pages import video_pages_router
from gateway.proxy import METHODS, PREFIXES, forward, make_client
from services.core import hls_fastpath
from services.core.app import create_app
from services.core.bodies import streamed_body
from services.core.deps import SettingsDep
from services.core.errors import AppError, NotFound
from services.core.memory import keep_freed_memory
from services.core.settings import PROJECT_ROOT

FRONTEND_DIR = PROJECT_ROOT / "frontend"
PAGE = "src"
HLS_JS = Path("node_modules/hls.js/dist/hls.min.js")
# The page's npm files, by their name under /vendor/: served from node_modules, never copied.
VENDOR = {
    "hls.min.js": HLS_JS,
    # Incremental SHA-256 (WebAssembly inlined) for the upload's hashing worker.
    "sha256.umd.min.js": Path("node_modules/hash-wasm/dist/sha256.umd.min.js"),
}
# Fixed here because the host's mime.types decides otherwise and differs between machines.
MEDIA_TYPES = {".js": "application/javascript", ".css": "text/css", ".html": "text/html"}

ClientFactory = Callable[[], httpx.AsyncClient]


class VendorMissing(AppError):
    """A third-party asset installed by `make install` (npm) is not on disk."""

    code, status = "vendor_missing", 503


async def get_http(request: Request) -> httpx.AsyncClient:
    """The pooled client the lifespan opened (a coroutine: FastAPI runs a plain function
    dependency in a worker thread, a hop for every proxied request)."""
    client: httpx.AsyncClient = request.app.state.http
    return client


HttpDep = Annotated[httpx.AsyncClient, Depends(get_http)]


class FrontendFiles(StaticFiles):
    """StaticFiles (traversal-safe, ETag/304, ranges) with Content-Types fixed across hosts."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        """The file's response, its Content-Type taken from MEDIA_TYPES when listed."""
        response = super().file_response(full_path, stat_result, scope, status_code)
        media_type = MEDIA_TYPES.get(Path(full_path).suffix)
        if media_type and response.status_code != 304:
            response.headers["content-type"] = media_type
        return response


# The services bound each body by its route (and check tokens before reading one); the relay
# streams it and only caps it at what no route takes: an upload's bytes and some framing.
RELAY_BODY = streamed_body(
    lambda settings: settings.max_upload_bytes + settings.max_chunk_bytes,
    "MAX_UPLOAD_BYTES plus MAX_CHUNK_BYTES, past what any service takes",
)


def _proxy_endpoint(service: str) -> Callable[..., object]:
    @RELAY_BODY
    async def proxy(request: Request, settings: SettingsDep, http: HttpDep) -> Response:
        return await forward(request, http, service=service, base_url=settings.service_url(service))

    proxy.__name__ = f"proxy_{service}"
    return proxy


def proxy_router() -> APIRouter:
    """Every method on every service prefix, forwarded unchanged; kept out of /docs."""
    router = APIRouter(include_in_schema=False)
    for prefix, service in PREFIXES:
        endpoint = _proxy_endpoint(service)
        for path in (prefix, prefix + "/{rest:path}"):
            router.add_api_route(path, endpoint, methods=METHODS, include_in_schema=False)
    return router


def page_router(frontend_dir: Path) -> APIRouter:
    """`/` (the page) and `/vendor/{name}` (VENDOR's files from node_modules, never copied)."""
    router = APIRouter(include_in_schema=False)

    @router.get("/")
    async def index() -> FileResponse:
        return FileResponse(frontend_dir / PAGE / "index.html", media_type=MEDIA_TYPES[".html"])

    @router.get("/vendor/{name}")
    async def vendor(name: str) -> FileResponse:
        relative = VENDOR.get(name)
        if relative is None:
            raise NotFound(f"no vendor file {name!r}: the page's are {', '.join(VENDOR)}")
        path = frontend_dir / relative
        if not path.is_file():
            raise VendorMissing(f"{path} is missing: run `make install` (npm install in frontend/)")
        return FileResponse(path, media_type=MEDIA_TYPES[".js"])

    return router


def build_app(
    *, frontend_dir: Path = FRONTEND_DIR, client_factory: ClientFactory = make_client
) -> FastAPI:
    """The gateway app; its lifespan opens one pooled client from `client_factory`."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        keep_freed_memory()  # upload bodies pass through in pieces of about 400 KiB
        async with client_factory() as client:
            app.state.http = client
            yield

    app = create_app(
        "gateway",
        [page_router(frontend_dir), video_pages_router(frontend_dir / PAGE), proxy_router()],
        lifespan=lifespan,
        description="The page, and every service's API under its own path prefix.",
    )
    # Only the page's own sources: package.json and node_modules stay out of reach.
    app.mount("/static", FrontendFiles(directory=frontend_dir / PAGE), name="static")
    # X-Forwarded-* from a proxy in front (TLS termination) set the client and scheme, as
    # uvicorn's --proxy-headers does; granian has no such option. FORWARDED_ALLOW_IPS is
    # uvicorn's own setting for whom to trust.
    trusted = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
    app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=trusted)
    app.add_middleware(FrameGuard)
    return app


def serving_app(app: FastAPI) -> hls_fastpath.HlsFastPath:
    """What the server runs: HLS playlists and segments served from the shared storage folder
    by the fast path the streaming service runs, everything else by `app` (relayed or local)."""
    return hls_fastpath.wrap(app, service="gateway")


app = serving_app(build_app())
