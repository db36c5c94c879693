"""Reverse proxy: one incoming request becomes the same method, path, query and body on a service.

Bodies stream both ways (an upload chunk can be 64 MiB, an original or a segment larger still),
so nothing here reads a body into memory, but for a service's answer whose Content-Length is
at most WHOLE_BODY_BYTES. A service may answer before it has read the body (a missing token, a
body over its limit: services.core.bodies); the relay then stops sending the body at once and
relays that answer (`RelayTransport`). httpx's transport errors become the catalogue's
`UpstreamError` (502) and `UpstreamTimeout` (504) in `_upstream_errors` and nowhere else.
"""

import contextlib
import select
import ssl
import typing
from collections.abc import Iterable, Iterator
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpcore
import httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from services.core.errors import InvalidInput, UpstreamError, UpstreamTimeout

# Path prefix -> service name; a prefix matches itself and everything below it.
PREFIXES: tuple[tuple[str, str], ...] = (
    ("/upload", "upload"),
    ("/api/speedtest", "upload"),
    ("/files", "upload"),
    ("/transcode", "transcoding"),
    ("/videos", "metadata"),
    ("/oembed", "metadata"),
    ("/stream", "streaming"),
    ("/admin", "admin"),
)
METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]

# RFC 9110 7.6.1: these describe one connection, not the message, so they never cross the proxy.
# `host` is rewritten by httpx for the upstream; the client's host travels as X-Forwarded-Host.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host"}
)

# The gateway's own server writes these on every response; relaying the upstream's too would
# send each of them twice.
SERVER_OWNED = frozenset({b"date", b"server"})

# The read timeout is per socket read, but a service may legitimately say nothing for minutes:
# `complete` assembles and hashes a multi-GiB original before it answers.
DEFAULT_TIMEOUT = httpx.Timeout(300.0, connect=5.0)
# One gateway fronts every browser tab; a few hundred concurrent streams per service is plenty.
# An idle pooled connection is dropped after 4 s, before the services' servers close it on their
# side (the launcher gives uvicorn 20 s): a connection both ends think open is the only safe kind
# to reuse.
DEFAULT_LIMITS = httpx.Limits(
    max_connections=512, max_keepalive_connections=64, keepalive_expiry=4.0
)
# The relay's connections are kept in this many pools (_ShardedPool): enough that each holds
# a handful of connections at the concurrency the bench's viewers and API clients reach (50),
# few enough that a pool rarely lacks an idle connection another one has.
POOL_SHARDS = 8
# Methods safe to send twice. A service may still close a pooled connection as the gateway
# reuses it (restart, its own idle timeout); httpx then says "Server disconnected without
# sending a response" and nothing reached the service, so a bodiless safe request is resent
# once on a fresh connection instead of becoming a 502.
RETRY_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})

RawHeaders = list[tuple[bytes, bytes]]


class _AnswerAwareStream(httpcore.AsyncNetworkStream):
    """A connection to a service that stops sending a request once the service has answered.

    HTTP/1.1 lets a server answer before the request's body has arrived (401, 413), and
    httpcore reads the answer when a write fails; but it writes the whole body first, and a
    write that fails because the service closed also throws away the unread answer. So
    before each write: if the service has said something, this write fails instead, and the
    answer is read intact. (Only on plain connections: TLS sends records of its own.)

    Whether the socket has something to read is asked before every write and, by httpcore,
    before every reuse of a pooled connection. anyio answers `get_extra_info` by building
    the mapping of every attribute it knows, and httpcore's check then makes and registers
    a poll object: together about a tenth of the gateway's CPU per relayed request. So a
    plain connection keeps its socket and one poll object registered at connect, and only
    polls.
    """

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner
        # A socket.socket, or under uvloop a stand-in with the same fileno().
        self._socket: typing.Any = None
        self._poll: typing.Any = None  # select.poll's object has no public type
        sock = inner.get_extra_info("socket")
        if (
            sock is not None
            and inner.get_extra_info("ssl_object") is None
            and hasattr(select, "poll")
        ):
            self._socket, self._poll = sock, select.poll()
            self._poll.register(sock.fileno(), select.POLLIN)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        """Read from the service."""
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        """Write to the service, unless it has answered already."""
        if buffer and self._answered():
            raise httpcore.WriteError("the service answered before the whole request was sent")
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        """Close the connection."""
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """TLS over this connection (not checked for early answers: see the class's doc)."""
        return await self._inner.start_tls(ssl_context, server_hostname, timeout)

    def get_extra_info(self, info: str) -> typing.Any:
        """What httpcore asks of a connection (socket, addresses, readability)."""
        if info == "is_readable" and self._poll is not None:
            return self._readable()
        return self._inner.get_extra_info(info)

    def _readable(self) -> bool:
        """Whether the service has sent something or closed (httpcore's own test: POLLIN,
        and a hang-up or an error count too; a closed socket counts as readable)."""
        return self._socket.fileno() == -1 or bool(self._poll.poll(0))

    def _answered(self) -> bool:
        return self._poll is not None and self._readable()


class _AnswerAwareBackend(httpcore.AsyncNetworkBackend):
    """httpcore's anyio connections, each an `_AnswerAwareStream`."""

    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """A TCP connection to a service."""
        stream = await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _AnswerAwareStream(stream)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """A Unix socket connection to a service."""
        stream = await self._inner.connect_unix_socket(path, timeout, socket_options)
        return _AnswerAwareStream(stream)

    async def sleep(self, seconds: float) -> None:
        """Sleep (httpcore's retries)."""
        await self._inner.sleep(seconds)


class _ShardedPool:
    """`shards` connection pools, each with its share of the limits; a request goes to the
    one with the fewest requests in flight (the first of those), so one at a time they all
    reuse the first pool's connection, and many at once spread evenly.

    httpcore's pool looks over every connection it holds when a request comes and when one
    ends, and over all of them again for each idle one (`_assign_requests_to_connections`):
    with 50 requests at once through the gateway that was 42 % of its Python time on an API
    answer (py-spy). A pool with a share of the connections looks over that share. The
    pools are httpcore's own; only which one takes a request is decided here.
    """

    def __init__(self, limits: httpx.Limits, shards: int) -> None:
        def share(limit: int | None) -> int | None:
            return None if limit is None else max(1, -(-limit // shards))

        self._shards = [
            httpcore.AsyncConnectionPool(
                ssl_context=httpx.create_ssl_context(trust_env=False),
                max_connections=share(limits.max_connections),
                max_keepalive_connections=share(limits.max_keepalive_connections),
                keepalive_expiry=limits.keepalive_expiry,
                network_backend=_AnswerAwareBackend(),
            )
            for _ in range(shards)
        ]
        self.in_flight = [0] * shards  # requests sent and not yet closed, by pool

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        """Send `request` through the least busy pool; its count drops when the answer closes."""
        shard = self.in_flight.index(min(self.in_flight))
        self.in_flight[shard] += 1
        try:
            response = await self._shards[shard].handle_async_request(request)
        except BaseException:
            self.in_flight[shard] -= 1
            raise
        response.stream = _Counted(response.stream, self.in_flight, shard)
        return response

    async def aclose(self) -> None:
        """Close every pool."""
        for pool in self._shards:
            await pool.aclose()

    async def __aenter__(self) -> "_ShardedPool":
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()


class _Counted:
    """An answer's body stream that takes its request off its pool's count when closed."""

    def __init__(self, stream: typing.Any, counts: list[int], shard: int) -> None:
        self._stream, self._counts = stream, counts
        self._shard: int | None = shard

    def __aiter__(self) -> typing.AsyncIterator[bytes]:
        return self._stream.__aiter__()

    async def aclose(self) -> None:
        """Close the stream (the connection goes back to its pool) and uncount it, once."""
        try:
            await self._stream.aclose()
        finally:
            if self._shard is not None:
                self._counts[self._shard] -= 1
                self._shard = None


class RelayTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over `_AnswerAwareBackend` connections, in POOL_SHARDS pools."""

    def __init__(self, limits: httpx.Limits = DEFAULT_LIMITS) -> None:
        super().__init__(limits=limits, trust_env=False)
        # httpx takes no network backend: its pool is made again, alike but for the backend.
        self._pool = _ShardedPool(limits, POOL_SHARDS)  # type: ignore[assignment]  # the same calls


def make_client(
    *,
    timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """The gateway's one pooled client; tests pass a short timeout or their own transport."""
    return httpx.AsyncClient(
        timeout=timeout,
        limits=DEFAULT_LIMITS,
        transport=transport or RelayTransport(DEFAULT_LIMITS),
        # Services live on a private network: an HTTP(S)_PROXY meant for the outside must not
        # capture them.
        trust_env=False,
        # The client is shared by every user, so it must not keep anyone's Set-Cookie.
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
    )


def _strip_hop_by_hop(raw: Iterable[tuple[bytes, bytes]]) -> RawHeaders:
    """Drop hop-by-hop headers, including any the Connection header names."""
    headers = list(raw)
    named = {
        token.strip().lower()
        for name, value in headers
        if name.lower() == b"connection"
        for token in value.split(b",")
    }
    return [
        (name, value)
        for name, value in headers
        if name.lower().decode("latin-1") not in HOP_BY_HOP
        and not name.lower().startswith(b"proxy-")
        and name.lower() not in named
    ]


def upstream_headers(request: Request) -> RawHeaders:
    """The client's headers minus hop-by-hop ones, plus the X-Forwarded-* trio."""
    # Replaced, not duplicated: the For chain is carried over below, and Proto/Host are what
    # this hop saw (uvicorn's --proxy-headers already folds a trusted outer proxy into them).
    forwarded = (b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host")
    headers = [
        (k, v) for k, v in _strip_hop_by_hop(request.headers.raw) if k.lower() not in forwarded
    ]
    client_ip = request.client.host if request.client else "unknown"
    earlier = request.headers.get("x-forwarded-for")
    forwarded_for = f"{earlier}, {client_ip}" if earlier else client_ip
    headers += [
        (b"x-forwarded-for", forwarded_for.encode("latin-1")),
        (b"x-forwarded-proto", request.url.scheme.encode("latin-1")),
        (b"x-forwarded-host", request.headers.get("host", "").encode("latin-1")),
    ]
    return headers


DOT_SEGMENTS = (b".", b"..")


def upstream_url(base_url: str, request: Request) -> httpx.URL:
    """`base_url` + the request's path and query exactly as the client encoded them."""
    # raw_path keeps percent-escapes (`%2F`) that the decoded `request.url.path` would lose.
    raw_path: bytes = request.scope.get("raw_path") or request.url.path.encode("utf-8")
    if any(segment in DOT_SEGMENTS for segment in raw_path.split(b"/")):
        # The HTTP client would resolve them and fetch another resource than the one named.
        raise InvalidInput("the path contains '.' or '..' segments: name the resource directly")
    query: bytes = request.scope.get("query_string", b"")
    base = httpx.URL(base_url)
    target = base.raw_path.rstrip(b"/") + raw_path + (b"?" + query if query else b"")
    return base.copy_with(raw_path=target)


def build_upstream_request(request: Request, base_url: str) -> httpx.Request:
    """The outgoing request, its body streamed from the incoming one as it arrives."""
    headers = upstream_headers(request)
    has_body = "content-length" in request.headers or "transfer-encoding" in request.headers
    return httpx.Request(
        request.method,
        upstream_url(base_url, request),
        headers=headers,
        # A forwarded Content-Length makes httpx send that length, not chunked encoding.
        content=request.stream() if has_body else None,
    )


@contextlib.contextmanager
def _upstream_errors(service: str, base_url: str) -> Iterator[None]:
    """httpx's transport errors as the catalogue's: 504 for a timeout, 502 for the rest."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise UpstreamTimeout(
            f"the {service} service at {base_url} did not answer in time: {_describe(exc)}"
        ) from exc
    except httpx.TransportError as exc:
        raise UpstreamError(
            f"the {service} service at {base_url} is not reachable: {_describe(exc)}"
        ) from exc


async def send_upstream(
    client: httpx.AsyncClient, upstream: httpx.Request, *, service: str, base_url: str
) -> httpx.Response:
    """Send and return the response with its body unread; the catalogue's errors on failure."""
    with _upstream_errors(service, base_url):
        try:
            return await client.send(upstream, stream=True)
        except httpx.RemoteProtocolError:
            if upstream.method not in RETRY_SAFE or _has_body(upstream):
                raise
            return await client.send(upstream, stream=True)


def _has_body(upstream: httpx.Request) -> bool:
    return "content-length" in upstream.headers or "transfer-encoding" in upstream.headers


def _describe(exc: Exception) -> str:
    # Some httpx errors (ReadTimeout, ...) carry an empty message; the class name still says why.
    return str(exc) or type(exc).__name__


# An answer of at most this many bytes (its Content-Length says so) is read whole and sent in
# one: most of the services' answers are JSON of a few hundred bytes. Relayed as a stream,
# each cost a task group: the gateway's server speaks ASGI 2.3, so Starlette listens for the
# client's disconnect beside every streamed response.
WHOLE_BODY_BYTES = 64 * 1024


async def relay_response(upstream: httpx.Response, *, service: str, base_url: str) -> Response:
    """The upstream's raw (still encoded) bytes with its status and end-to-end headers: read
    whole when small, streamed otherwise."""
    length = upstream.headers.get("content-length", "")
    response: Response
    if length.isdigit() and int(length) <= WHOLE_BODY_BYTES:
        try:
            with _upstream_errors(service, base_url):
                # At most the declared length: h11 refuses a body longer than it.
                body = b"".join([piece async for piece in upstream.aiter_raw()])
        finally:
            await upstream.aclose()
        response = Response(body, status_code=upstream.status_code)
    else:
        response = StreamingResponse(
            upstream.aiter_raw(),
            status_code=upstream.status_code,
            # The connection goes back to the pool only once the body has been relayed.
            background=BackgroundTask(upstream.aclose),
        )
    # Assigned raw so repeated headers (Set-Cookie, Vary, ...) survive intact.
    # ASGI wants lower-case names; httpx keeps the upstream's spelling.
    headers = [(k.lower(), v) for k, v in _strip_hop_by_hop(upstream.headers.raw)]
    response.raw_headers = [(k, v) for k, v in headers if k not in SERVER_OWNED]
    return response


async def forward(
    request: Request, client: httpx.AsyncClient, *, service: str, base_url: str
) -> Response:
    """Proxy `request` to `service` at `base_url` and relay its answer."""
    upstream = build_upstream_request(request, base_url)
    response = await send_upstream(client, upstream, service=service, base_url=base_url)
    return await relay_response(response, service=service, base_url=base_url)
