"""The uvicorn protocol the services run with (services.core.http_protocol): request bodies
reach the app whole and in order, as bytes, and a piece that waits alone is handed over as the
very object the parser made (no copy); the launcher runs every uvicorn service with it."""

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import yaml
from uvicorn.config import Config
from uvicorn.importer import import_from_string
from uvicorn.server import ServerState

from services import launcher
from services.core.http_protocol import PieceProtocol
from services.core.settings import Settings


class Transport(asyncio.Transport):
    """What a protocol writes, kept; reading paused or not."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 5000)}.get(name, default)

    def write(self, data: Any) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


async def _no_app(scope: Any, receive: Any, send: Any) -> None:
    await asyncio.sleep(3600)


def _connected(app: Any = _no_app) -> tuple[PieceProtocol, Transport]:
    config = Config(app=app, http=PieceProtocol, log_config=None)
    protocol = PieceProtocol(config=config, server_state=ServerState(), app_state={})
    transport = Transport()
    protocol.connection_made(transport)
    return protocol, transport


HEAD = b"POST /upload HTTP/1.1\r\nHost: example\r\nContent-Length: %d\r\n\r\n"


def _close(protocol: PieceProtocol) -> None:
    for task in protocol.http.tasks:
        task.cancel()
    protocol.connection_lost(None)


async def test_a_piece_waiting_alone_is_handed_over_as_it_is():
    protocol, _ = _connected()
    protocol.http.data_received(HEAD % 12)
    cycle = protocol.http.cycle
    piece = b"abcdef"

    protocol.http.on_body(piece)
    message = await cycle.receive()
    _close(protocol)

    assert message["body"] is piece and message["more_body"] is True


async def test_pieces_that_arrive_before_the_app_asks_are_joined_in_order():
    protocol, transport = _connected()
    protocol.http.data_received(HEAD % 200_000)
    cycle = protocol.http.cycle

    protocol.http.on_body(b"a" * 50_000)
    protocol.http.on_body(b"b" * 50_000)
    protocol.http.on_body(b"c" * 50_000)
    assert transport.reading is False, "more than the high-water mark waits: reading pauses"
    joined = await cycle.receive()
    protocol.http.on_body(b"d" * 50_000)
    last = await cycle.receive()
    _close(protocol)

    assert type(joined["body"]) is bytes and type(last["body"]) is bytes
    assert joined["body"] == b"a" * 50_000 + b"b" * 50_000 + b"c" * 50_000
    assert last["body"] == b"d" * 50_000


async def test_what_a_read_brought_is_copied_out_before_the_next_read_reuses_the_buffer():
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen["path"], seen["headers"], body = scope["path"], scope["headers"], b""
        while True:
            message = await receive()
            body += message["body"]
            if not message["more_body"]:
                break
        seen["body"] = body
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    protocol, transport = _connected(app)
    body = bytes(range(250)) * 20
    request = (
        b"POST /upload/chunk?index=3 HTTP/1.1\r\nHost: example\r\nX-Long: "
        + b"v" * 3000
        + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
        + body
    )
    for start in range(0, len(request), 700):  # headers and body cut across reads
        piece = request[start : start + 700]
        buffer = protocol.get_buffer(-1)
        buffer[: len(piece)] = piece
        protocol.buffer_updated(len(piece))
        buffer[: len(piece)] = b"\xff" * len(piece)  # the next read lands where this one did
        await asyncio.sleep(0)
    for _ in range(100):
        if transport.written.endswith(b"ok"):
            break
        await asyncio.sleep(0.01)
    _close(protocol)

    assert seen["path"] == "/upload/chunk"
    assert (b"x-long", b"v" * 3000) in seen["headers"]
    assert seen["body"] == body


@pytest.fixture
def server() -> Iterator[tuple[int, list[list[bytes]]]]:
    """A real uvicorn with PieceProtocol on a free port; each request's body pieces as the app
    received them."""
    bodies: list[list[bytes]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        pieces = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            assert type(message["body"]) is bytes
            pieces.append(message["body"])
            if not message.get("more_body"):
                break
        bodies.append(pieces)
        total = b"%d" % sum(len(p) for p in pieces)
        length = b"%d" % len(total)
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", length)]}
        )
        await send({"type": "http.response.body", "body": total})

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = Config(app=app, http=PieceProtocol, lifespan="off", log_config=None)
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not running.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield sock.getsockname()[1], bodies
    running.should_exit = True
    thread.join(10)


def _exchange(port: int, request: bytes, pause_after: int | None = None) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        if pause_after is None:
            conn.sendall(request)
        else:  # in two writes, apart: the body arrives as separate pieces
            conn.sendall(request[:pause_after])
            time.sleep(0.05)
            conn.sendall(request[pause_after:])
        answer = b""
        while not _complete(answer):
            data = conn.recv(65536)
            assert data, f"connection closed after {answer!r}"
            answer += data
        return answer


def _complete(answer: bytes) -> bool:
    """Whether `answer` holds a whole response (headers and its Content-Length of body)."""
    head, sep, body = answer.partition(b"\r\n\r\n")
    lengths = [ln for ln in head.lower().split(b"\r\n") if ln.startswith(b"content-length:")]
    return bool(sep and lengths) and len(body) >= int(lengths[0].split(b":")[1])


def test_a_large_body_arrives_whole_and_in_order(server, monkeypatch):
    port, bodies = server
    body = bytes(range(256)) * 40_000  # 10 MB, in many socket reads
    head = HEAD % len(body)
    reads = []
    original = PieceProtocol.get_buffer
    monkeypatch.setattr(
        PieceProtocol, "get_buffer", lambda self, hint: reads.append(hint) or original(self, hint)
    )

    answer = _exchange(port, head + body, pause_after=len(head) + 123_457)

    assert answer.endswith(b"%d" % len(body))
    assert b"".join(bodies[-1]) == body
    assert len(reads) >= 10, "the event loop reads into the protocol's buffer"


def test_a_chunked_body_and_the_next_request_on_the_connection(server):
    port, bodies = server
    chunked = (
        b"POST /upload HTTP/1.1\r\nHost: example\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    plain = HEAD % 3 + b"end"

    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(chunked + plain)  # pipelined
        answer = b""
        while answer.count(b"HTTP/1.1 200") < 2 or not answer.endswith(b"\r\n\r\n3"):
            data = conn.recv(65536)
            assert data, f"connection closed after {answer!r}"
            answer += data

    assert b"".join(bodies[-2]) == b"hello world"
    assert b"".join(bodies[-1]) == b"end"


def test_the_launcher_runs_every_uvicorn_service_with_it():
    settings = Settings()
    for name, app in launcher.APPS.items():
        argv = launcher.server_argv(name, app, settings, "log.json")
        if "uvicorn" in argv:
            assert import_from_string(argv[argv.index("--http") + 1]) is PieceProtocol


def test_the_containers_run_their_uvicorn_services_with_it_too():
    compose = yaml.safe_load((Path(__file__).parents[2] / "docker-compose.yml").read_text())
    commands = [
        service["command"]
        for service in compose["services"].values()
        if service.get("command", [None])[0] == "uvicorn"
    ]

    assert len(commands) == 4  # upload, transcoding, metadata, admin
    for command in commands:
        assert command[command.index("--http") + 1] == launcher.HTTP_PROTOCOL
