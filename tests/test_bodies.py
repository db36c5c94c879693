"""Every request body is bounded before it is read, and a route's token is checked before its
first byte: in the app (ASGI, counting what the guard lets through) and over real HTTP
(a stranger's 256 MB body, measured in the service's memory)."""

import http.client
import itertools
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Form, Request
from pydantic import BaseModel

from services.core.app import create_app
from services.core.auth import AdminOnly, UploaderOnly
from services.core.bodies import LINGER_BYTES, streamed_body
from services.core.settings import Settings, get_settings
from tests.harness import Platform

MiB = 1024 * 1024
LIMIT = 1024
ADMIN, UPLOADER = "admin-secret", "upload-secret"

# --- the guard in the app, message by message ----------------------------------------------

router = APIRouter()


class Thing(BaseModel):
    name: str


@router.put("/things/{thing_id}", dependencies=AdminOnly)
def put_thing(thing_id: str, thing: Thing) -> dict[str, str]:
    return {"id": thing_id, "name": thing.name}


@router.post("/form", dependencies=UploaderOnly)
def post_form(name: Annotated[str, Form()]) -> dict[str, str]:
    return {"name": name}


@router.post("/stream")
@streamed_body(lambda settings: 10 * LIMIT, "a test's limit")
async def post_stream(request: Request) -> dict[str, int]:
    size = 0
    async for piece in request.stream():
        size += len(piece)
    return {"size": size}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Any:
    settings = Settings(
        storage_dir=tmp_path_factory.mktemp("bodies"),
        admin_token=ADMIN,
        upload_token=UPLOADER,
        max_body_bytes=LIMIT,
    )
    made = create_app("bodies-test", [router])
    made.dependency_overrides[get_settings] = lambda: settings
    return made


@dataclass
class Exchange:
    """One request through the app: what it answered and how much of the body it took."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    taken_before_answer: int | None = None  # body bytes handed to the app before its answer
    taken: int = 0

    @property
    def detail(self) -> str:
        return str(json.loads(self.body)["detail"])


async def exchange(
    app: Any,
    method: str,
    path: str,
    pieces: Iterator[bytes],
    *,
    headers: dict[str, str],
    length: int | None = None,
) -> Exchange:
    """Run `app` on a request whose body is `pieces` (pulled one by one as the app asks)."""
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    raw.append(
        (b"content-length", str(length).encode())
        if length is not None
        else (b"transfer-encoding", b"chunked")
    )
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "scheme": "http",
        "query_string": b"",
        "headers": raw,
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
    }
    seen = Exchange()
    ahead = next(pieces, None)

    async def receive() -> dict[str, Any]:
        nonlocal ahead
        if ahead is None:
            return {"type": "http.disconnect"}
        piece, ahead = ahead, next(pieces, None)
        seen.taken += len(piece)
        return {"type": "http.request", "body": piece, "more_body": ahead is not None}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            seen.status = message["status"]
            seen.headers = {k.decode(): v.decode() for k, v in message["headers"]}
            seen.taken_before_answer = seen.taken
        elif message["type"] == "http.response.body":
            seen.body += message.get("body", b"")

    await app(scope, receive, send)
    return seen


def blocks(total: int, size: int = 64 * 1024, fill: bytes = b"x") -> Iterator[bytes]:
    """`total` bytes in blocks of `size`, made as they are asked for."""
    block = fill * size
    for start in range(0, total, size):
        yield block[: min(size, total - start)]


def json_pieces(total: int) -> Iterator[bytes]:
    yield b'{"name": "'
    yield from blocks(total)
    yield b'"}'


async def test_a_body_on_an_admin_route_is_not_read_before_the_token_is_checked(app):
    for given, says in ((None, "needs 'Authorization"), ("wrong", "the token given is wrong")):
        headers = {"content-type": "application/json"}
        if given:
            headers["authorization"] = f"Bearer {given}"
        seen = await exchange(app, "PUT", "/things/a", json_pieces(10 * MiB), headers=headers)
        assert seen.status == 401, seen.body
        assert says in seen.detail and "admin" in seen.detail
        assert seen.headers["www-authenticate"] == "Bearer"
        assert seen.taken_before_answer == 0
        assert seen.headers["connection"] == "close"
        # The lingering close drops a bounded amount after the answer, never the whole body.
        assert seen.taken <= LINGER_BYTES + 64 * 1024


async def test_a_form_route_checks_the_upload_token_before_reading_the_form(app):
    form = blocks(10 * MiB)
    seen = await exchange(
        app, "POST", "/form", form, headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert seen.status == 401 and "uploading needs" in seen.detail
    assert seen.taken_before_answer == 0


async def test_a_declared_length_over_the_limit_is_413_before_any_byte(app):
    headers = {"content-type": "application/json", "authorization": f"Bearer {ADMIN}"}
    size = 100 * LIMIT
    seen = await exchange(app, "PUT", "/things/a", json_pieces(size), headers=headers, length=size)
    assert seen.status == 413
    assert f"at most {LIMIT} bytes" in seen.detail and "MAX_BODY_BYTES" in seen.detail
    assert f"has {size} bytes" in seen.detail
    assert seen.taken_before_answer == 0


async def test_a_chunked_body_is_cut_off_with_413_once_past_the_limit(app):
    headers = {"content-type": "application/json", "authorization": f"Bearer {ADMIN}"}
    pieces = json_pieces(100 * LIMIT)
    seen = await exchange(app, "PUT", "/things/a", pieces, headers=headers)
    assert seen.status == 413, seen.body
    assert f"over {LIMIT} bytes" in seen.detail and "PUT /things/{thing_id}" in seen.detail
    # The count stops at the first piece past the limit (pieces of 64 KiB here).
    assert seen.taken_before_answer is not None and seen.taken_before_answer <= 64 * 1024 + 10


async def test_a_small_body_with_the_token_goes_through(app):
    headers = {"content-type": "application/json", "authorization": f"Bearer {ADMIN}"}
    body = b'{"name": "ok"}'
    seen = await exchange(app, "PUT", "/things/a", iter([body]), headers=headers, length=len(body))
    assert seen.status == 200 and json.loads(seen.body) == {"id": "a", "name": "ok"}
    assert "connection" not in seen.headers


def _form(boundary: str, disposition: str, size: int) -> Iterator[bytes]:
    """A multipart form: a short field, then a part of `size` bytes under `disposition`."""
    yield (
        f'--{boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\nx\r\n'
        f"--{boundary}\r\nContent-Disposition: form-data; {disposition}\r\n"
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    yield from blocks(size)
    yield f"\r\n--{boundary}--\r\n".encode()


async def test_a_form_route_given_a_100_mb_part_answers_without_spooling_it(app):
    headers = {
        "content-type": "multipart/form-data; boundary=b0undary",
        "authorization": f"Bearer {UPLOADER}",
    }
    # A file part: refused at its headers (these forms take no file), before its bytes.
    file_part = _form("b0undary", 'name="file"; filename="f"', 100 * MiB)
    seen = await exchange(app, "POST", "/form", file_part, headers=headers)
    assert seen.status == 400 and "files" in seen.detail, seen.body
    assert seen.taken_before_answer is not None and seen.taken_before_answer < 1024
    # A field as large: cut off by the byte count, nothing past the limit read.
    field_part = _form("b0undary", 'name="other"', 100 * MiB)
    seen = await exchange(app, "POST", "/form", field_part, headers=headers)
    assert seen.status == 413 and f"over {LIMIT} bytes" in seen.detail, seen.body
    assert seen.taken_before_answer is not None and seen.taken_before_answer < 64 * 1024 + 1024
    # Declared: refused before a byte.
    declared = _form("b0undary", 'name="file"; filename="f"', 100 * MiB)
    seen = await exchange(app, "POST", "/form", declared, headers=headers, length=100 * MiB)
    assert seen.status == 413 and seen.taken_before_answer == 0


async def test_form_fields_and_files_are_limited_too(app):
    headers = {
        "content-type": "application/x-www-form-urlencoded",
        "authorization": f"Bearer {UPLOADER}",
    }
    many = "&".join(f"f{i}=1" for i in range(100)).encode()
    seen = await exchange(app, "POST", "/form", iter([many]), headers=headers, length=len(many))
    assert seen.status == 400 and "fields" in seen.detail.lower(), seen.body


async def test_a_streamed_route_takes_up_to_its_own_limit(app):
    fits = await exchange(app, "POST", "/stream", blocks(10 * LIMIT, 1000), headers={})
    assert fits.status == 200 and json.loads(fits.body) == {"size": 10 * LIMIT}
    over = await exchange(app, "POST", "/stream", blocks(10 * LIMIT + 1, 1000), headers={})
    assert over.status == 413 and "a test's limit" in over.detail
    assert f"at most {10 * LIMIT} bytes" in over.detail


# --- a real platform: memory of the service and of the gateway -------------------------------


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """A platform whose uploading needs a token too."""
    running = Platform(
        tmp_path_factory.mktemp("guarded") / "storage", UPLOAD_TOKEN=UPLOADER
    ).start()
    yield running
    running.drop()


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                found.append(int(entry.name))
    return found


def _tree(pid: int) -> list[int]:
    return [pid, *(p for child in _children(pid) for p in _tree(child))]


def server_pids(platform: Platform, app: str) -> list[int]:
    """The processes serving `app` (its server's and any worker's), among the launcher's."""
    assert platform.process is not None
    for child in _children(platform.process.pid):
        if app.encode() in (Path("/proc") / str(child) / "cmdline").read_bytes():
            return _tree(child)
    raise AssertionError(f"no process serves {app}")


def rss(pids: list[int]) -> int:
    """Resident memory of these processes together (VmRSS), in bytes."""
    total = 0
    for pid in pids:
        for line in (Path("/proc") / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


@dataclass
class Sent:
    """A body generator that counts what the client handed over."""

    total: int
    bytes: int = 0

    def __iter__(self) -> Iterator[bytes]:
        block = b"{" * MiB
        for _ in range(self.total // MiB):
            self.bytes += len(block)
            yield block


APPS = {
    "metadata": "services.metadata.app:app",
    "upload": "services.upload.app:app",
    "admin": "services.admin.app:app",
    "transcoding": "services.transcoding.app:app",
    "gateway": "gateway.app:app",
}
STRANGERS = [
    ("metadata", "PUT", "/videos/" + "0" * 32, "application/json"),
    ("upload", "POST", "/upload/init", "application/x-www-form-urlencoded"),
    ("upload", "POST", "/upload/chunk", "multipart/form-data; boundary=x"),
    ("upload", "PATCH", "/files/" + "0" * 32, "application/offset+octet-stream"),
    ("admin", "POST", "/admin/resume_all", "application/json"),
    ("transcoding", "POST", "/transcode/start", "application/json"),
]


@pytest.mark.parametrize("via", ["service", "gateway"])
@pytest.mark.parametrize(("service", "method", "path", "ctype"), STRANGERS)
def test_an_unauthenticated_256_mb_body_is_refused_without_the_memory_growing(
    guarded, via, service, method, path, ctype
):
    base = guarded.service_url(service) if via == "service" else guarded.url
    watched = {service: server_pids(guarded, APPS[service])}
    if via == "gateway":
        watched["gateway"] = server_pids(guarded, APPS["gateway"])
    headers = {"Content-Type": ctype, "Tus-Resumable": "1.0.0", "Upload-Offset": "0"}
    # Once small first: what a first request allocates anyway is not the body's doing.
    httpx.request(method, base + path, content=b"{}", headers=headers, timeout=30)
    before = {name: rss(pids) for name, pids in watched.items()}
    body = Sent(256 * MiB)
    started = time.monotonic()
    response = httpx.request(
        method,
        base + path,
        content=iter(body),
        headers={**headers, "Content-Length": str(body.total)},
        timeout=60,
    )
    seconds = time.monotonic() - started
    growth = {name: (rss(pids) - before[name]) / MiB for name, pids in watched.items()}
    print(
        f"{method} {path} via {via}: {response.status_code} after {seconds:.2f} s; the client "
        f"sent {body.bytes / MiB:.0f} MiB of 256; RSS growth "
        + ", ".join(f"{name} {mib:+.1f} MiB" for name, mib in growth.items())
    )
    assert response.status_code == 401, response.text
    assert "needs 'Authorization: Bearer <token>'" in response.json()["detail"]
    assert all(mib < 8 for mib in growth.values()), growth
    # The answer came before the body was through: the rest was never sent (nor relayed).
    assert body.bytes < 128 * MiB


@pytest.mark.parametrize("via", ["service", "gateway"])
def test_an_oversize_body_with_a_valid_token_is_413_naming_the_limit(guarded, via):
    base = guarded.service_url("metadata") if via == "service" else guarded.url
    path = f"{base}/videos/{'0' * 32}"
    headers = {**guarded.auth, "Content-Type": "application/json"}
    big = json.dumps({"description": "x" * 100_000}).encode()
    declared = httpx.put(path, content=big, headers=headers, timeout=30)
    assert declared.status_code == 413, declared.text
    assert "at most 65536 bytes (MAX_BODY_BYTES" in declared.json()["detail"]
    # Chunked transfer encoding: no length up front, cut off while counting.
    streamed = httpx.put(path, content=iter([big[:50_000], big[50_000:]]), headers=headers)
    assert streamed.status_code == 413, streamed.text
    assert "over 65536 bytes" in streamed.json()["detail"]
    form = {"filename": "a.mp4", "total_chunks": "1", "sha256": "0" * 100_000}
    init = httpx.post(
        f"{guarded.url if via == 'gateway' else guarded.service_url('upload')}/upload/init",
        data=form,
        headers={"Authorization": f"Bearer {UPLOADER}"},
        timeout=30,
    )
    assert init.status_code == 413 and "65536" in init.json()["detail"], init.text


def test_a_chunk_over_max_chunk_bytes_is_413_before_it_is_read(tmp_path):
    platform = Platform(tmp_path / "storage", MAX_CHUNK_BYTES=str(MiB)).start()
    try:
        with platform.client() as client:
            made = client.post("/upload/init", data={"filename": "a.mp4", "total_chunks": "2"})
        upload_id = made.json()["upload_id"]
        for base, declared in itertools.product(
            (platform.url, platform.service_url("upload")), (True, False)
        ):
            # The client's bytes in flight when the 413 reaches it depend on the machine's
            # load (loopback buffers of several MiB at each hop, and how soon the upload
            # service answers): 15 MiB declared and 55 MiB chunked through the gateway in one
            # loaded CI run. A body of 256 MiB leaves that room; one read whole still fails.
            body = Sent(256 * MiB)
            headers = {**platform.auth, "Content-Type": "application/octet-stream"}
            if declared:
                headers["Content-Length"] = str(body.total)
            answer = httpx.post(
                f"{base}/upload/chunk",
                params={"upload_id": upload_id, "index": 0},
                content=iter(body),
                headers=headers,
                timeout=60,
            )
            print(f"{base} declared={declared}: {answer.status_code}, sent {body.bytes / MiB} MiB")
            assert answer.status_code == 413, answer.text
            assert "MAX_CHUNK_BYTES" in answer.json()["detail"]
            assert body.bytes < 128 * MiB
    finally:
        platform.drop()


# --- metrics labels --------------------------------------------------------------------------


def _metrics_lines(base: str) -> int:
    # The gateway's worker processes answer in turn and report one sum.
    return max(len(httpx.get(f"{base}/metrics").text.splitlines()) for _ in range(4))


def _send_method(base: str, method: str) -> int:
    url = httpx.URL(base)
    conn = http.client.HTTPConnection(url.host, url.port, timeout=10)
    try:
        conn.request(method, f"/videos/{os.urandom(4).hex()}")
        return conn.getresponse().status
    except (http.client.HTTPException, OSError):
        return 0  # a server may refuse an unknown method by closing: just as good
    finally:
        conn.close()


@pytest.mark.parametrize("target", ["gateway", "metadata"])
def test_made_up_methods_do_not_grow_the_metrics(guarded, target):
    base = guarded.url if target == "gateway" else guarded.service_url(target)
    _send_method(base, "FROBNICATE")  # the first one may add the `other` series
    before = _metrics_lines(base)
    statuses = {_send_method(base, f"M{os.urandom(6).hex().upper()}") for _ in range(300)}
    after = _metrics_lines(base)
    print(f"{target}: /metrics {before} -> {after} lines after 300 made-up methods {statuses}")
    assert after - before <= 2
    assert not any(status >= 500 for status in statuses)
