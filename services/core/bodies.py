"""Request bodies bounded before they are read; tokens checked before the first body byte.

FastAPI reads a JSON or form body (spooling file parts) before it runs a route's
dependencies, so a stranger's 256 MB body would be read before the 401. `BodyGuard` wraps
every service's app (`create_app` puts it there) and stands between a route and its body.
When the route asks for the body's first bytes (the router has matched it by then:
`scope["route"]`), nothing has been read yet, and the guard first

- checks that route's bearer token (`auth.TOKEN_CHECKS`, the route's own dependencies):
  401, nothing read;
- refuses a `Content-Length` over the route's limit: 413, nothing read;

then counts the bytes as the route reads them (chunked transfer encoding too) and answers
413 as soon as the count passes the limit. Whatever the route makes of a body it could not
read (FastAPI: a 400), the answer is the guard's.

An answer given before the whole body was read (the guard's, or a route's that did not want
the body) carries `Connection: close`, and the connection lingers before it closes: the rest
of the body is read and dropped for a moment (at most LINGER_BYTES, LINGER_SECONDS), as a web
server's lingering close does. A client still sending, or the gateway relaying, has then
read the answer before the close (closing on unread bytes resets the connection, and a reset
can destroy an answer not read yet); the gateway stops relaying once it has one
(gateway/proxy.py). Nothing dropped is kept: memory does not grow with the body.

A route's limit is MAX_BODY_BYTES (JSON and forms) unless its endpoint declares its own with
`@streamed_body(...)`: the routes that read their body themselves, as it arrives (an upload
chunk, a tus PATCH, the gateway's relay). Form parsing has limits of its own too (FORM_FIELDS,
FORM_FILES, FORM_PART_BYTES: `create_app` hands them to FastAPI).
"""

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import anyio
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.core.auth import TOKEN_CHECKS, TokenCheck, check_once
from services.core.cors import settings_of
from services.core.errors import AppError, TooLarge, Unauthorized, error_body
from services.core.settings import Settings

Limit = Callable[[Settings], int]
Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])
_LIMIT_ATTRIBUTE = "__streamed_body_limit__"
# A lingering close drops at most this much (more than the socket buffers hold between the
# gateway and a service, so the gateway has seen the answer before the close), for at most
# this long.
LINGER_BYTES = 16 * 1024 * 1024
LINGER_SECONDS = 2.0

# What FastAPI's form parsing accepts besides the byte limit (create_app): the forms here are
# a few short text fields; a file part has no place in them (chunks have their own route).
FORM_FIELDS = 32
FORM_FILES = 0
FORM_PART_BYTES = 16 * 1024


def streamed_body(limit: Limit, why: str) -> Callable[[Endpoint], Endpoint]:
    """Declare that an endpoint reads its body itself, as a stream, up to `limit(settings)`
    bytes; `why` names the limit in the 413's message (e.g. "MAX_CHUNK_BYTES ...")."""

    def mark(endpoint: Endpoint) -> Endpoint:
        setattr(endpoint, _LIMIT_ATTRIBUTE, (limit, why))
        return endpoint

    return mark


def _default_limit(settings: Settings) -> int:
    return settings.max_body_bytes


DEFAULT = (_default_limit, "MAX_BODY_BYTES, for JSON and form bodies")


@dataclass(frozen=True)
class Rule:
    """What a route asks of a request's body: the tokens to check first, the most bytes."""

    name: str  # "PUT /videos/{hash}", for messages
    checks: tuple[TokenCheck, ...]
    limit: Limit
    why: str


def rule_of(route: BaseRoute | None) -> Rule:
    """The rule of `route` (None, or not an API route: only the default limit applies)."""
    if not isinstance(route, APIRoute):
        return Rule("this path", (), *DEFAULT)
    limit, why = getattr(route.endpoint, _LIMIT_ATTRIBUTE, DEFAULT)
    checks = tuple(dict.fromkeys(TOKEN_CHECKS[call] for call in _calls(route.dependant)))
    return Rule(f"{'/'.join(sorted(route.methods or ()))} {route.path}", checks, limit, why)


def _calls(dependant: Dependant) -> Iterator[Any]:
    """The token dependencies anywhere in a route's dependency tree."""
    for sub in dependant.dependencies:
        if sub.call in TOKEN_CHECKS:
            yield sub.call
        yield from _calls(sub)


def _has_body(scope: Scope) -> bool:
    """Whether the request may carry a body (HTTP/1.1 says so in its headers)."""
    if scope.get("http_version", "1.1") not in ("1.0", "1.1"):
        return True
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


def _header(scope: Scope, wanted: bytes) -> str | None:
    for name, value in scope["headers"]:
        if name == wanted:
            return str(value.decode("latin-1"))
    return None


def _content_length(scope: Scope) -> int | None:
    value = (_header(scope, b"content-length") or "").strip()
    return int(value) if value.isdigit() else None


def _refusal_messages(error: AppError) -> tuple[Message, Message]:
    """The catalogue's JSON answer for `error` as ASGI messages (start, whole body)."""
    # As JSONResponse writes it, so that every error reads alike.
    body = json.dumps(error_body(error.code, error.detail), separators=(",", ":")).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if isinstance(error, Unauthorized):
        headers.append((b"www-authenticate", b"Bearer"))
    start = {"type": "http.response.start", "status": error.status, "headers": headers}
    return start, {"type": "http.response.body", "body": body}


class BodyGuard:
    """ASGI middleware: every request with a body goes through a `Guarded` body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._rules: dict[int, Rule] = {}  # by id(route): the routes live as long as the app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(scope):
            await self.app(scope, receive, send)
            return
        await Guarded(self, scope, receive, send).run(self.app)

    def rule(self, route: BaseRoute | None) -> Rule:
        """The rule of `route`, worked out once."""
        key = id(route)
        if key not in self._rules:
            self._rules[key] = rule_of(route)
        return self._rules[key]


class Guarded:
    """One request's body, given to its route only once the route's token and limit allow."""

    def __init__(self, guard: BodyGuard, scope: Scope, receive: Receive, send: Send) -> None:
        self.guard, self.scope = guard, scope
        self._receive, self._send = receive, send
        self.rule: Rule | None = None  # known at the route's first read
        self.limit = 0
        self.received = 0
        self.whole = False  # the body's last message has been read
        self.refusal: AppError | None = None  # the answer, once the body is refused
        self.started = self.replaced = False
        self.early = False  # the answer started before the whole body was read
        # One reader at a time: Starlette's StreamingResponse listens for a disconnect (it
        # reads) while the lingering close reads too. Uncontended (every read of a body but
        # those), taking it costs no trip round the event loop.
        self._reading = anyio.Lock(fast_acquire=True)

    async def run(self, app: ASGIApp) -> None:
        """Run `app` on the guarded body; the refusal if it raised one unanswered."""
        try:
            await app(self.scope, self.receive, self.send)
        except Exception:
            if self.refusal is None or self.started:
                raise
            await self._refuse()

    async def receive(self) -> Message:
        """The next body message, once allowed and counted (a refusal raises, then: gone)."""
        if self.refusal is not None:
            return {"type": "http.disconnect"}
        if self.rule is None and not self.started:
            await self._admit()
        message = await self._read()
        if self.received > self.limit and not self.started:
            self._fail(self._too_large())
        return message

    async def _read(self) -> Message:
        """The next message from the server, its body bytes counted."""
        async with self._reading:
            message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            self.whole = not message.get("more_body", False)
        return message

    async def _admit(self) -> None:
        """Before the first byte: the route's tokens (each made once a request: a route that
        reads its own body has had its dependencies checked already), then its limit against
        Content-Length."""
        self.rule = self.guard.rule(self.scope.get("route"))
        settings = settings_of(self.scope)
        self.limit = self.rule.limit(settings)
        try:
            for check in self.rule.checks:
                await check_once(self.scope, check, settings)
        except AppError as exc:
            self._fail(exc)
        length = _content_length(self.scope)
        if length is not None and length > self.limit:
            self._fail(self._too_large(length))

    def _too_large(self, length: int | None = None) -> TooLarge:
        assert self.rule is not None
        size = f"has {length} bytes" if length is not None else f"is over {self.limit} bytes"
        return TooLarge(
            f"the request body {size}; {self.rule.name} takes at most {self.limit} bytes "
            f"({self.rule.why})"
        )

    def _fail(self, refusal: AppError) -> NoReturn:
        self.refusal = refusal
        raise refusal

    async def send(self, message: Message) -> None:
        """The route's answer; once the body is refused, the refusal instead (unless the
        route answered with the refusal's status itself, in its own words and headers)."""
        if message["type"] == "http.response.start":
            if self.refusal is not None and message["status"] != self.refusal.status:
                # Whatever the route made of the body it could not read (FastAPI: a 400).
                await self._refuse()
                return
            await self._start(message)
        elif not self.replaced:
            await self._body(message)

    async def _refuse(self) -> None:
        assert self.refusal is not None
        self.replaced = True
        start, body = _refusal_messages(self.refusal)
        await self._start(start)
        await self._body(body)

    async def _start(self, message: Message) -> None:
        self.started = True
        self.early = not self.whole
        if self.early:
            message["headers"] = [*message.get("headers", []), (b"connection", b"close")]
        await self._send(message)

    async def _body(self, message: Message) -> None:
        if not self.early or message.get("more_body", False):
            await self._send(message)
            return
        # The answer goes out whole, and the connection lingers before it is closed.
        await self._send({**message, "more_body": True})
        await self._linger()
        await self._send({"type": "http.response.body", "body": b""})

    async def _linger(self) -> None:
        """Read and drop the rest of the body for a moment (see the module's doc)."""
        stop = self.received + LINGER_BYTES
        with anyio.move_on_after(LINGER_SECONDS):
            while not self.whole and self.received < stop:
                if (await self._read())["type"] != "http.request":
                    return  # the client has gone
