"""The gateway in-process (ASGITransport) in front of a real HTTP server on 127.0.0.1.

One uvicorn server listens on five sockets, one per service, and answers with the name of the
service whose port was reached, so each test can tell where a request was routed.
"""

import asyncio
import hashlib
import os
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from gateway.app import FRONTEND_DIR, HLS_JS, PAGE, VENDOR, build_app
from gateway.proxy import DEFAULT_TIMEOUT, METHODS, POOL_SHARDS, make_client
from services.core.settings import SERVICE_NAMES, Settings, get_settings
from tests.harness import free_ports

CLIP = os.urandom(64 * 1024)
SLOW_SECONDS = 2.0


async def echo(request: Request) -> Response:
    """Say which service was reached and what arrived: raw path, query, headers, body digest."""
    digest, size = hashlib.sha256(), 0
    async for piece in request.stream():
        digest.update(piece)
        size += len(piece)
    body = {
        "service": request.app.state.services[request.scope["server"][1]],
        "method": request.method,
        "raw_path": request.scope["raw_path"].decode(),
        "query": request.scope["query_string"].decode(),
        "headers": dict(request.headers),
        "size": size,
        "sha256": digest.hexdigest(),
    }
    return JSONResponse(body, headers={"x-echo-method": request.method})


async def segment(request: Request) -> Response:
    """A file served with Starlette's byte-range support, like the streaming service."""
    return FileResponse(request.app.state.clip, media_type="video/mp2t")


async def slow(request: Request) -> Response:
    """An upstream that thinks longer than the gateway is willing to wait."""
    await asyncio.sleep(SLOW_SECONDS)
    return JSONResponse({"late": True})


def upstream_app(services: dict[int, str], clip: Path) -> Starlette:
    """The tiny stand-in for all five services."""
    app = Starlette(
        routes=[
            Route("/stream/clip/seg.ts", segment),
            Route("/videos/slow", slow),
            Route("/{path:path}", echo, methods=METHODS),
        ]
    )
    app.state.services, app.state.clip = services, clip
    return app


def listening_socket() -> socket.socket:
    """A socket bound to a free 127.0.0.1 port, for uvicorn to serve on."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Start the stand-in services in a thread; yield their base URLs by service name."""
    clip = tmp_path_factory.mktemp("upstream") / "seg.ts"
    clip.write_bytes(CLIP)
    sockets = {name: listening_socket() for name in SERVICE_NAMES}
    ports = {name: sock.getsockname()[1] for name, sock in sockets.items()}
    app = upstream_app({port: name for name, port in ports.items()}, clip)
    config = uvicorn.Config(app, lifespan="off", ws="none", log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": list(sockets.values())})
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started, "the upstream test server did not start"
    yield {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    server.should_exit = True
    thread.join(timeout=SLOW_SECONDS + 10)
    for sock in sockets.values():
        sock.close()


def settings_for(urls: dict[str, str]) -> Settings:
    """Settings whose service URLs point at `urls`."""
    return Settings().model_copy(update={f"{name}_url": url for name, url in urls.items()})


@asynccontextmanager
async def gateway_client(
    settings: Settings,
    *,
    timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    frontend_dir: Path = FRONTEND_DIR,
) -> AsyncIterator[httpx.AsyncClient]:
    """A client talking to a freshly built gateway whose lifespan is running."""
    app = build_app(frontend_dir=frontend_dir, client_factory=lambda: make_client(timeout=timeout))
    app.dependency_overrides[get_settings] = lambda: settings
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
            yield client


@pytest.fixture
async def client(upstream: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway in front of the stand-in services."""
    async with gateway_client(settings_for(upstream)) as client:
        yield client


@pytest.mark.parametrize(
    ("target", "service"),
    [
        ("/upload/init?filename=a%20b.mp4&total_chunks=3", "upload"),
        ("/upload/0123abcd", "upload"),
        ("/api/speedtest?size=1024", "upload"),
        ("/transcode/status/0123abcd?verbose=1", "transcoding"),
        ("/videos?limit=5&offset=10", "metadata"),
        ("/videos/0123abcd/stopped", "metadata"),
        ("/stream/0123abcd/720p/playlist.m3u8?token=a%2Fb", "streaming"),
        ("/admin/status", "admin"),
    ],
)
async def test_path_and_query_reach_their_service_unchanged(
    client: httpx.AsyncClient, target: str, service: str
) -> None:
    response = await client.get(target)

    assert response.status_code == 200
    echoed = response.json()
    assert echoed["service"] == service
    path, _, query = target.partition("?")
    assert (echoed["raw_path"], echoed["query"]) == (path, query)


@pytest.mark.parametrize("method", METHODS)
async def test_every_method_is_forwarded(client: httpx.AsyncClient, method: str) -> None:
    response = await client.request(method, "/admin/videos/0123abcd")

    assert response.status_code == 200
    assert response.headers["x-echo-method"] == method


async def test_hop_by_hop_headers_are_dropped_and_forwarded_headers_added(
    client: httpx.AsyncClient,
) -> None:
    headers = {"x-custom": "kept", "x-private-hop": "dropped", "connection": "x-private-hop"}
    headers |= {"proxy-authorization": "Basic secret", "keep-alive": "timeout=5"}

    echoed = (await client.get("/videos", headers=headers)).json()["headers"]

    assert echoed["x-custom"] == "kept"
    assert not {"x-private-hop", "proxy-authorization", "keep-alive"} & echoed.keys()
    assert echoed["host"].startswith("127.0.0.1:")
    assert echoed["x-forwarded-host"] == "gateway.test"
    assert echoed["x-forwarded-proto"] == "http"
    assert echoed["x-forwarded-for"] == "127.0.0.1"


async def test_post_body_with_a_length_arrives_intact(client: httpx.AsyncClient) -> None:
    body = os.urandom(5 * 1024 * 1024)

    echoed = (await client.post("/upload/chunk", content=body)).json()

    assert (echoed["size"], echoed["sha256"]) == (len(body), hashlib.sha256(body).hexdigest())
    assert echoed["headers"]["content-length"] == str(len(body))


async def test_chunked_post_body_is_streamed_through_intact(client: httpx.AsyncClient) -> None:
    pieces = [os.urandom(64 * 1024) for _ in range(64)]

    async def stream() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    echoed = (await client.post("/upload/chunk", content=stream())).json()

    body = b"".join(pieces)
    assert (echoed["size"], echoed["sha256"]) == (len(body), hashlib.sha256(body).hexdigest())


async def test_range_request_returns_the_upstream_partial_content(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/stream/clip/seg.ts", headers={"range": "bytes=100-199"})

    assert response.status_code == 206
    assert response.headers["content-range"] == f"bytes 100-199/{len(CLIP)}"
    assert response.headers["content-length"] == "100"
    assert response.content == CLIP[100:200]


async def test_whole_file_keeps_length_type_and_accept_ranges(client: httpx.AsyncClient) -> None:
    response = await client.get("/stream/clip/seg.ts")

    assert response.content == CLIP
    assert response.headers["content-length"] == str(len(CLIP))
    assert response.headers["content-type"] == "video/mp2t"
    assert response.headers["accept-ranges"] == "bytes"


async def test_upstream_date_and_server_are_left_to_the_gateway_server(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/videos")

    # uvicorn in front of the gateway writes its own; relayed ones would be duplicates.
    assert "date" not in response.headers
    assert "server" not in response.headers


async def test_upstream_down_is_a_502_naming_the_service() -> None:
    down = f"http://127.0.0.1:{free_ports(1)[0]}"
    async with gateway_client(settings_for({"upload": down})) as client:
        response = await client.post("/upload/init", data={"filename": "a.mp4"})

    assert response.status_code == 502
    body = response.json()
    assert body["error"] == "upstream_unavailable"
    assert body["detail"].startswith(f"the upload service at {down} is not reachable: ")


async def test_upstream_slower_than_the_read_timeout_is_a_504(upstream: dict[str, str]) -> None:
    timeout = httpx.Timeout(0.3, connect=5.0)
    async with gateway_client(settings_for(upstream), timeout=timeout) as client:
        response = await client.get("/videos/slow")

    assert response.status_code == 504
    body = response.json()
    assert body["error"] == "upstream_timeout"
    assert "metadata service" in body["detail"]


async def test_unknown_path_is_a_404_in_the_error_shape(client: httpx.AsyncClient) -> None:
    response = await client.get("/nowhere")

    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


async def test_gateway_health(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")

    assert response.json() == {"service": "gateway", "status": "ok"}


async def test_root_serves_the_page(client: httpx.AsyncClient) -> None:
    response = await client.get("/")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "<video" in response.text
    assert "/vendor/hls.min.js" in response.text


@pytest.mark.parametrize(
    ("name", "media_type"), [("app.js", "application/javascript"), ("style.css", "text/css")]
)
async def test_static_files_have_their_content_type(
    client: httpx.AsyncClient, name: str, media_type: str
) -> None:
    response = await client.get(f"/static/{name}")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith(media_type)
    assert response.content == (FRONTEND_DIR / PAGE / name).read_bytes()


@pytest.mark.parametrize("path", ["package.json", "node_modules/hls.js/package.json"])
async def test_static_serves_only_the_page_sources(client: httpx.AsyncClient, path: str) -> None:
    assert (await client.get(f"/static/{path}")).status_code == 404


async def test_static_files_do_not_escape_the_frontend_folder(client: httpx.AsyncClient) -> None:
    response = await client.get("/static/%2e%2e/pyproject.toml")

    assert response.status_code == 404


async def test_hls_js_is_served_from_node_modules(client: httpx.AsyncClient) -> None:
    # `make test` installs the page's npm packages first: a missing hls.js is a failure.
    assert (FRONTEND_DIR / HLS_JS).is_file(), "hls.js is not installed: run `make install`"

    response = await client.get("/vendor/hls.min.js")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/javascript")
    assert response.content == (FRONTEND_DIR / HLS_JS).read_bytes()


@pytest.mark.parametrize(("name", "relative"), VENDOR.items())
async def test_every_vendor_file_is_served_from_node_modules(
    client: httpx.AsyncClient, name: str, relative: Path
) -> None:
    assert (FRONTEND_DIR / relative).is_file(), f"{relative} is not installed: run `make install`"

    response = await client.get(f"/vendor/{name}")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/javascript")
    assert response.content == (FRONTEND_DIR / relative).read_bytes()


@pytest.mark.parametrize("name", ["package.json", "hls.js", "..%2Fpackage.json"])
async def test_vendor_serves_only_the_listed_files(client: httpx.AsyncClient, name: str) -> None:
    response = await client.get(f"/vendor/{name}")

    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


async def test_missing_hls_js_is_a_503_that_says_how_to_install(
    upstream: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / PAGE).mkdir()
    async with gateway_client(settings_for(upstream), frontend_dir=tmp_path) as client:
        response = await client.get("/vendor/hls.min.js")

    assert response.status_code == 503
    assert response.json()["error"] == "vendor_missing"
    assert "make install" in response.json()["detail"]


@asynccontextmanager
async def closes_reused_connections() -> AsyncIterator[tuple[str, list[str]]]:
    """A service that answers the first request on each connection (keeping it open) and
    closes the connection, unanswered, when a second request arrives on it: what a service
    closing an idle connection just as the gateway reuses it looks like to the gateway."""
    seen: list[str] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        answered = False
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                request_line = head.split(b"\r\n", 1)[0].decode()
                length = next(
                    (
                        int(line.split(b":", 1)[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                await reader.readexactly(length)
                if answered:
                    seen.append(f"dropped {request_line}")
                    break
                seen.append(f"answered {request_line}")
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
                answered = True
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}", seen


async def test_a_get_on_a_connection_the_service_closed_is_resent_once() -> None:
    async with (
        closes_reused_connections() as (url, seen),
        gateway_client(settings_for({"metadata": url})) as client,
    ):
        first = await client.get("/videos")
        second = await client.get("/videos")

    assert (first.status_code, second.status_code) == (200, 200), second.text
    assert seen == [
        "answered GET /videos HTTP/1.1",
        "dropped GET /videos HTTP/1.1",
        "answered GET /videos HTTP/1.1",
    ]


async def test_a_post_on_a_connection_the_service_closed_is_not_resent() -> None:
    async with (
        closes_reused_connections() as (url, seen),
        gateway_client(settings_for({"upload": url})) as client,
    ):
        first = await client.post("/upload/init", data={"filename": "a.mp4"})
        second = await client.post("/upload/init", data={"filename": "a.mp4"})

    assert first.status_code == 200
    assert second.status_code == 502
    assert second.json()["error"] == "upstream_unavailable"
    assert seen == ["answered POST /upload/init HTTP/1.1", "dropped POST /upload/init HTTP/1.1"]


class _Searches:
    """A finder first on sys.meta_path that records every module Python looks for (and
    finds nothing itself): an import of a module already loaded never reaches it."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        self.names.append(name)


async def test_a_relayed_request_searches_for_no_module_and_takes_no_thread_hop(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # httpcore imports sniffio inside every pooled request and falls back to asyncio when it
    # is missing; Python does not remember a failed import, so each one searched sys.path
    # again (a fifth of the gateway's CPU per request). And FastAPI runs a plain-function
    # dependency in a worker thread: two hops a request for the settings and the client.
    import fastapi.dependencies.utils as fastapi_deps

    hops: list[str] = []
    in_thread = fastapi_deps.run_in_threadpool

    async def counted(func, *args, **kwargs):  # type: ignore[no-untyped-def]
        hops.append(getattr(func, "__name__", repr(func)))
        return await in_thread(func, *args, **kwargs)

    for _ in range(2):  # whatever is imported lazily on a first request
        assert (await client.get("/videos/0123abcd")).status_code == 200
    searches = _Searches()
    monkeypatch.setattr(fastapi_deps, "run_in_threadpool", counted)
    monkeypatch.setattr(sys, "meta_path", [searches, *sys.meta_path])

    for _ in range(3):
        assert (await client.get("/videos/0123abcd")).status_code == 200
        assert (await client.post("/upload/chunk", content=b"x" * 1000)).status_code == 200

    assert searches.names == []
    assert hops == []


async def send(writer: asyncio.StreamWriter, raw: bytes) -> None:
    """Write `raw` to the gateway's connection."""
    writer.write(raw)
    await writer.drain()


async def until_gone(writer: asyncio.StreamWriter, serve: Callable[[], Awaitable[None]]) -> None:
    """Run `serve` on one connection, quietly ending when the gateway goes; then close it."""
    try:
        await serve()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


@asynccontextmanager
async def answers_with(raw: bytes) -> AsyncIterator[str]:
    """A service that answers every connection's first request with `raw` and closes it."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def answer() -> None:
            await reader.readuntil(b"\r\n\r\n")
            await send(writer, raw)

        await until_gone(writer, answer)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with server:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def test_a_small_answer_arrives_whole_with_the_services_headers() -> None:
    body = b'{"id":"0123abcd","title":"x"}'
    head = b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\nset-cookie: a=1\r\n"
    head += b"set-cookie: b=2\r\nx-custom: kept\r\ncontent-length: %d\r\n\r\n" % len(body)
    async with (
        answers_with(head + body) as url,
        gateway_client(settings_for({"metadata": url})) as client,
    ):
        response = await client.get("/videos/0123abcd")

    assert (response.status_code, response.content) == (201, body)
    assert response.headers.get_list("set-cookie") == ["a=1", "b=2"]
    assert response.headers["x-custom"] == "kept"
    assert response.headers["content-length"] == str(len(body))


async def test_a_small_answer_cut_short_by_the_service_is_a_502_not_half_an_answer() -> None:
    # A small answer is read whole before it is relayed (WHOLE_BODY_BYTES): a service that
    # dies after 10 of its 100 bytes is the gateway's clear 502, not a 200 with a cut body.
    cut = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n"
    async with (
        answers_with(cut + b'{"id":"01"') as url,
        gateway_client(settings_for({"metadata": url})) as client,
    ):
        response = await client.get("/videos/0123abcd")

    assert response.status_code == 502
    assert response.json()["error"] == "upstream_unavailable"
    assert "metadata service" in response.json()["detail"]


async def test_requests_at_once_spread_over_the_pools_and_one_at_a_time_reuse_one() -> None:
    # The relay keeps its connections in POOL_SHARDS pools (httpcore looks over every
    # connection of a pool for each request): a request goes to the pool with the fewest in
    # flight, so one at a time they reuse one connection and many at once spread evenly.
    peers: list[int] = []
    release = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def answer_each() -> None:
            while await reader.readuntil(b"\r\n\r\n"):
                peers.append(writer.get_extra_info("peername")[1])
                if len(peers) >= 2 * POOL_SHARDS:
                    release.set()
                await release.wait()
                await send(writer, b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")

        await until_gone(writer, answer_each)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/videos"
    async with server, make_client() as client:
        release.set()
        for _ in range(5):
            assert (await client.get(url)).status_code == 200
        assert len(set(peers)) == 1
        release.clear()
        peers.clear()
        # Answered only once all of them have arrived: they are in flight together.
        answers = await asyncio.gather(*(client.get(url) for _ in range(2 * POOL_SHARDS)))
        pool = client._transport._pool  # type: ignore[attr-defined]
        held = [len(shard.connections) for shard in pool._shards]
        in_flight = list(pool.in_flight)

    assert [answer.status_code for answer in answers] == [200] * (2 * POOL_SHARDS)
    assert len(set(peers)) == 2 * POOL_SHARDS
    assert held == [2] * POOL_SHARDS
    assert in_flight == [0] * POOL_SHARDS
