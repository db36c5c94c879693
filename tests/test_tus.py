"""tus 1.0 at /files/ (upload service, and through the gateway): the protocol's edges over real
HTTP, then real clients (tuspy from PyPI, tus-js-client from npm under Node) uploading clips
rendered by the tests, one of each interrupted and resumed, to transcoded videos."""

import base64
import gc
import hashlib
import json
import select
import socket
import subprocess
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import pytest
from tusclient.client import TusClient
from tusclient.storage.filestorage import FileStorage

from services.core.db import engine
from services.core.settings import Settings
from services.upload.sweep import sweep_abandoned
from tests.harness import ROOT, Platform, sha256_of, wait_status

TUS = {"Tus-Resumable": "1.0.0"}
STREAM = {"Content-Type": "application/offset+octet-stream"}
NODE_CLIENT = ROOT / "tests" / "tus_node"
T = TypeVar("T")


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def named(filename: str) -> dict[str, str]:
    return {"Upload-Metadata": f"filename {b64(filename)}"}


def create(
    http: httpx.Client, length: int, *, content: bytes = b"", **headers: str
) -> httpx.Response:
    """POST /files/ declaring `length` bytes (named clip.mp4 unless headers say otherwise)."""
    sent = {**TUS, "Upload-Length": str(length), **named("clip.mp4"), **headers}
    return http.post("/files/", headers=sent, content=content)


def new_upload(http: httpx.Client, length: int, **headers: str) -> str:
    """A new upload's URL."""
    response = create(http, length, **headers)
    assert response.status_code == 201, response.text
    return response.headers["location"]


def new_partial(http: httpx.Client, length: int) -> str:
    response = http.post(
        "/files/", headers={**TUS, "Upload-Length": str(length), "Upload-Concat": "partial"}
    )
    assert response.status_code == 201, response.text
    return response.headers["location"]


def patch(http: httpx.Client, url: str, offset: int, body: bytes, **headers: str) -> httpx.Response:
    sent = {**TUS, **STREAM, "Upload-Offset": str(offset), **headers}
    return http.patch(url, content=body, headers=sent)


def offset_of(http: httpx.Client, url: str) -> int:
    head = http.head(url, headers=TUS)
    assert head.status_code == 200, head.status_code
    return int(head.headers["upload-offset"])


def id_of(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[1]


def checksum(algorithm: str, data: bytes) -> str:
    return f"{algorithm} {base64.b64encode(hashlib.new(algorithm, data).digest()).decode()}"


def eventually(check: Callable[[], T], what: str, timeout: float = 30) -> T:
    """Poll `check` until it returns something truthy (the server finishes in the background)."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)
    return value


def start_patch(base_url: str, url: str, *, declared: int, body: bytes) -> socket.socket:
    """A PATCH at offset 0 that declares `declared` bytes and sends only `body`, left open."""
    parts = urlsplit(base_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    sock = socket.create_connection((host, port), timeout=30)
    head = (
        f"PATCH {urlsplit(url).path} HTTP/1.1\r\nHost: {host}:{port}\r\nTus-Resumable: 1.0.0\r\n"
        f"Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    return sock


def answered(sock: socket.socket) -> bool:
    """The server has answered (or closed) the request on `sock`."""
    return bool(select.select([sock], [], [], 0.05)[0])


def status_line(sock: socket.socket) -> str:
    """The first line of the answer on `sock`."""
    answer = b""
    while b"\r\n" not in answer:
        piece = sock.recv(4096)
        if not piece:
            break
        answer += piece
    return answer.split(b"\r\n", 1)[0].decode()


def source_of(platform: Platform, url: str) -> Path:
    return platform.storage / "originals" / id_of(url) / "source"


# --- discovery, versions, creation ------------------------------------------------------------


def test_options_announces_the_version_extensions_size_limit_and_checksums(client):
    response = client.options("/files/")
    assert response.status_code == 204
    assert response.headers["tus-version"] == "1.0.0"
    extensions = set(response.headers["tus-extension"].split(","))
    assert {
        "creation",
        "creation-with-upload",
        "termination",
        "checksum",
        "expiration",
        "concatenation",
    } <= extensions
    assert response.headers["tus-checksum-algorithm"].split(",") == ["sha1", "md5", "sha256"]
    assert int(response.headers["tus-max-size"]) > 0


@pytest.mark.parametrize("version", [None, "0.2.2"])
def test_a_missing_or_other_protocol_version_is_412_naming_ours(client, version):
    headers = {"Upload-Length": "10", **named("clip.mp4")}
    if version:
        headers["Tus-Resumable"] = version
    response = client.post("/files/", headers=headers)
    assert response.status_code == 412
    assert response.headers["tus-version"] == "1.0.0"
    assert "1.0.0" in response.json()["detail"]


def test_location_is_the_upload_url_as_seen_through_the_gateway_and_on_the_service(
    platform, client
):
    upload_service = platform.service_url("upload")
    through_gateway = new_upload(client, 100)
    assert through_gateway.startswith(f"{platform.url}/files/")
    with httpx.Client(base_url=upload_service) as direct:
        on_service = new_upload(direct, 100)
        assert on_service.startswith(f"{upload_service}/files/")
        # One resource, two doors.
        assert offset_of(direct, through_gateway.replace(platform.url, upload_service)) == 0
    assert offset_of(client, on_service.replace(upload_service, platform.url)) == 0


def test_head_tells_offset_length_metadata_and_expiry_and_is_never_cached(client):
    name = "Holiday, 2026 - été.mp4"  # a comma and non-ASCII: base64 carries both
    url = new_upload(client, 1000, **named(name))
    assert patch(client, url, 0, b"x" * 100).status_code == 204
    head = client.head(url, headers=TUS)
    assert head.status_code == 200
    assert head.headers["upload-offset"] == "100"
    assert head.headers["upload-length"] == "1000"
    assert head.headers["upload-metadata"] == f"filename {b64(name)}"
    assert head.headers["cache-control"] == "no-store"
    assert head.headers["tus-resumable"] == "1.0.0"
    assert parsedate_to_datetime(head.headers["upload-expires"]) > datetime.now(UTC)


BAD_CREATIONS = [
    ({**named("a.mp4")}, 400, "Upload-Length is missing"),
    ({"Upload-Length": "ten", **named("a.mp4")}, 400, "non-negative integer"),
    ({"Upload-Length": "-5", **named("a.mp4")}, 400, "non-negative integer"),
    ({"Upload-Length": "10", "Upload-Defer-Length": "1", **named("a.mp4")}, 400, "not both"),
    ({"Upload-Defer-Length": "yes", **named("a.mp4")}, 400, "must be 1"),
    ({"Upload-Length": str(2**62), **named("a.mp4")}, 413, "limit"),
    ({"Upload-Length": "0", **named("a.mp4")}, 400, "empty file"),
    ({"Upload-Length": "10"}, 400, "needs a filename"),
    ({"Upload-Length": "10", "Upload-Metadata": "filename %%%"}, 400, "base64"),
    ({"Upload-Length": "10", **named("notes.txt")}, 400, "video or audio file extension"),
    ({"Upload-Length": "10", "Upload-Metadata": "filename,x eA=="}, 400, "needs a filename"),
    (
        {"Upload-Length": "10", "Upload-Metadata": f"filename {b64('a.mp4')},filename eA=="},
        400,
        "twice",
    ),
    ({"Upload-Length": "10", "Upload-Metadata": f"filename {b64('a.mp4')},,x"}, 400, "key"),
    (
        {"Upload-Length": "10", "Upload-Metadata": f"filename {b64('a.mp4')},codec {b64('vp9')}"},
        400,
        "codec must be one of h264, hevc",
    ),
    ({"Upload-Length": "10", "Upload-Concat": "sideways", **named("a.mp4")}, 400, "Upload-Concat"),
    (
        {"Upload-Concat": "final;/files/../../etc/passwd", **named("a.mp4")},
        400,
        "not an upload URL",
    ),
    ({"Upload-Concat": f"final;/files/{'0' * 32}", **named("a.mp4")}, 404, "no tus upload"),
]


@pytest.mark.parametrize(("headers", "status", "says"), BAD_CREATIONS)
def test_a_bad_creation_request_is_a_4xx_saying_what_to_fix(client, headers, status, says):
    response = client.post("/files/", headers={**TUS, **headers})
    assert response.status_code == status, response.text
    assert says in response.json()["detail"]
    assert response.headers["tus-resumable"] == "1.0.0"


def test_an_unknown_upload_is_404_a_malformed_id_400_and_a_chunked_upload_not_a_tus_one(client):
    assert client.head(f"/files/{'0' * 32}", headers=TUS).status_code == 404
    malformed = patch(client, "/files/..%2f..%2fetc", 0, b"x")
    assert malformed.status_code in (400, 404)
    response = patch(client, "/files/NOT-AN-ID", 0, b"x")
    assert response.status_code == 400
    assert "32 lowercase hex" in response.json()["detail"]
    chunked = client.post("/upload/init", data={"filename": "c.mp4", "total_chunks": 1})
    assert client.head(f"/files/{chunked.json()['upload_id']}", headers=TUS).status_code == 404


# --- PATCH -----------------------------------------------------------------------------------


def test_patch_answers_the_new_offset_and_when_the_upload_expires(client):
    url = new_upload(client, 10)
    response = patch(client, url, 0, b"hello")
    assert response.status_code == 204
    assert response.headers["upload-offset"] == "5"
    assert parsedate_to_datetime(response.headers["upload-expires"]) > datetime.now(UTC)


def test_patch_at_another_offset_is_409_and_stores_nothing(platform, client):
    url = new_upload(client, 10)
    assert patch(client, url, 0, b"hello").status_code == 204
    response = patch(client, url, 2, b"XXXXX")
    assert response.status_code == 409
    assert response.json()["error"] == "offset_mismatch"
    assert "resume from 5" in response.json()["detail"]
    assert offset_of(client, url) == 5
    # Not completed: the bytes are where they are staged (the folder; on S3 its scratch).
    assert source_of(platform, url).read_bytes() == b"hello"


def test_a_tus_upload_cannot_be_completed_early_through_the_chunked_api(client):
    url = new_upload(client, 10, **named("early.mp4"))
    assert patch(client, url, 0, b"hello").status_code == 204
    response = client.post("/upload/complete", data={"upload_id": id_of(url)})
    assert response.status_code == 409
    assert "completes by itself" in response.json()["detail"]
    assert offset_of(client, url) == 5


def test_patch_that_is_not_an_offset_stream_is_415(client):
    url = new_upload(client, 10)
    response = patch(client, url, 0, b"hello", **{"Content-Type": "application/octet-stream"})
    assert response.status_code == 415
    assert "application/offset+octet-stream" in response.json()["detail"]


def test_patch_past_the_declared_length_is_413(client):
    url = new_upload(client, 4)
    response = patch(client, url, 0, b"hello")
    assert response.status_code == 413
    assert offset_of(client, url) == 0


def test_patch_without_upload_offset_is_400(client):
    url = new_upload(client, 10)
    response = client.patch(url, content=b"hello", headers={**TUS, **STREAM})
    assert response.status_code == 400
    assert "Upload-Offset is missing" in response.json()["detail"]


@pytest.mark.parametrize("algorithm", ["sha1", "md5", "sha256"])
def test_a_patch_whose_checksum_matches_is_stored(client, algorithm):
    url = new_upload(client, 10)
    response = patch(client, url, 0, b"hello", **{"Upload-Checksum": checksum(algorithm, b"hello")})
    assert response.status_code == 204
    assert response.headers["upload-offset"] == "5"


@pytest.mark.parametrize("algorithm", ["sha1", "md5", "sha256"])
def test_a_checksum_mismatch_is_460_and_the_bytes_are_discarded(platform, client, algorithm):
    url = new_upload(client, 10)
    assert patch(client, url, 0, b"hello").status_code == 204
    wrong = checksum(algorithm, b"WORLD")
    response = patch(client, url, 5, b"world", **{"Upload-Checksum": wrong})
    assert response.status_code == 460
    assert response.json()["error"] == "checksum_mismatch"
    assert offset_of(client, url) == 5
    # Not completed: the bytes are where they are staged (the folder; on S3 its scratch).
    assert source_of(platform, url).read_bytes() == b"hello"


@pytest.mark.parametrize(
    ("value", "says"),
    [("crc32 AAAAAA==", "not supported"), ("sha1 !!!", "base64"), ("sha1 aGVsbG8=", "wrong size")],
)
def test_a_bad_upload_checksum_header_is_400(client, value, says):
    url = new_upload(client, 10)
    response = patch(client, url, 0, b"hello", **{"Upload-Checksum": value})
    assert response.status_code == 400
    assert says in response.json()["detail"]
    assert offset_of(client, url) == 0


def test_creation_with_upload_stores_the_first_bytes_with_the_post(client):
    response = create(client, 10, content=b"hello", **STREAM)
    assert response.status_code == 201, response.text
    assert response.headers["upload-offset"] == "5"
    assert offset_of(client, response.headers["location"]) == 5


def test_x_http_method_override_stands_in_for_patch_and_delete(client):
    url = new_upload(client, 10)
    headers = {**TUS, **STREAM, "Upload-Offset": "0", "X-HTTP-Method-Override": "PATCH"}
    response = client.post(url, content=b"hello", headers=headers)
    assert response.status_code == 204
    assert response.headers["upload-offset"] == "5"
    deleted = client.post(url, headers={**TUS, "X-HTTP-Method-Override": "DELETE"})
    assert deleted.status_code == 204
    assert client.head(url, headers=TUS).status_code == 404


@pytest.mark.parametrize("door", ["gateway", "upload"])
def test_a_patch_cut_off_mid_body_keeps_the_bytes_that_arrived(platform, client, clips, door):
    data = clips["tiny"].read_bytes()
    url = new_upload(client, len(data), **named(f"cut via {door}.mp4"))
    base = platform.url if door == "gateway" else platform.service_url("upload")
    cut = len(data) // 3
    start_patch(base, url, declared=len(data), body=data[:cut]).close()
    eventually(lambda: offset_of(client, url) == cut, "the bytes sent before the cut count")
    response = patch(client, url, cut, data[cut:])
    assert response.status_code == 204, response.text
    assert response.headers["upload-offset"] == str(len(data))
    video = client.get(f"/videos/{id_of(url)}").json()
    assert video["sha256"] == hashlib.sha256(data).hexdigest()
    assert video["filename"] == f"cut via {door}.mp4"


def test_a_second_writer_waits_for_the_first_and_is_locked_out_when_it_stalls(client, platform):
    # Straight to the service: the gateway relays an answer only once the body is sent, and
    # a refused first writer must be seen here to be started again.
    service = platform.service_url("upload")
    url = new_partial(client, 100)
    writers: list[socket.socket] = []

    def second_is_locked_out() -> httpx.Response | None:
        # The probe takes the lock for a moment too: when it beat the first PATCH to it, the
        # first was refused (it has an answer already), so start that one again.
        if not writers or answered(writers[-1]):
            writers.append(start_patch(service, url, declared=100, body=b"a" * 40))
        response = patch(client, url, 0, b"")  # an empty PATCH changes nothing
        return response if response.status_code == 423 else None

    try:
        # Stalled for longer than TUS_LOCK_WAIT_SECONDS, the first writer locks the second out.
        locked = eventually(second_is_locked_out, "a second PATCH meets the lock")
        assert locked.json()["error"] == "upload_locked"
        # One that finishes within the wait lets a waiting PATCH in, as a client retrying
        # right after a dropped connection meets it: no 423 to retry.
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(patch, client, url, 100, b"")
            time.sleep(0.5)  # ordering only: the second PATCH is waiting for the lock
            writers[-1].sendall(b"a" * 60)
            assert status_line(writers[-1]).split()[1] == "204"
            second = waiting.result()
        assert second.status_code == 204, second.text
        assert second.headers["upload-offset"] == "100"
    finally:
        for writer in writers:
            writer.close()
    assert offset_of(client, url) == 100


def test_a_deferred_length_is_given_by_a_later_patch(client, clips):
    data = clips["tiny"].read_bytes()
    half = len(data) // 2
    response = client.post(
        "/files/", headers={**TUS, "Upload-Defer-Length": "1", **named("deferred.mp4")}
    )
    assert response.status_code == 201, response.text
    url = response.headers["location"]
    head = client.head(url, headers=TUS)
    assert head.headers["upload-defer-length"] == "1"
    assert "upload-length" not in head.headers
    assert patch(client, url, 0, data[:half]).status_code == 204
    done = patch(client, url, half, data[half:], **{"Upload-Length": str(len(data))})
    assert done.status_code == 204, done.text
    assert client.head(url, headers=TUS).headers["upload-length"] == str(len(data))
    assert client.get(f"/videos/{id_of(url)}").json()["sha256"] == sha256_of(clips["tiny"])


def test_a_finished_upload_that_is_not_a_video_is_422_with_the_reason(client, clips):
    data = clips["text"].read_bytes()
    url = new_upload(client, len(data))
    response = patch(client, url, 0, data)
    assert response.status_code == 422
    assert response.json()["error"] == "not_a_video"
    assert client.get(f"/videos/{id_of(url)}").json()["status"] == "failed"


# --- termination -----------------------------------------------------------------------------


def test_delete_terminates_an_unfinished_upload_without_the_admin_token(platform, client):
    url = new_upload(client, 10)
    assert patch(client, url, 0, b"hello").status_code == 204
    folder = source_of(platform, url).parent
    assert folder.is_dir()
    assert httpx.delete(url, headers=TUS).status_code == 204  # no Authorization header
    assert client.head(url, headers=TUS).status_code == 404
    assert not folder.exists()


def test_a_finished_upload_is_a_video_and_delete_says_how_to_remove_it(client, clips):
    data = clips["tiny"].read_bytes()
    url = new_upload(client, len(data), **named("../../../tmp/escape.mp4"))
    assert patch(client, url, 0, data).status_code == 204
    video = client.get(f"/videos/{id_of(url)}").json()
    assert video["filename"] == "escape.mp4"  # a label: the path is dropped
    response = client.delete(url, headers=TUS)
    assert response.status_code == 409
    assert "DELETE /videos/" in response.json()["detail"]
    assert offset_of(client, url) == len(data)


# --- concatenation ---------------------------------------------------------------------------


def test_partial_uploads_sent_in_parallel_concatenate_into_a_transcoded_video(
    platform, client, clips
):
    data = clips["tiny"].read_bytes()
    step = -(-len(data) // 3)
    pieces = [data[i : i + step] for i in range(0, len(data), step)]

    def send(piece: bytes) -> str:
        with httpx.Client(base_url=platform.url) as http:
            url = new_partial(http, len(piece))
            assert patch(http, url, 0, piece).status_code == 204
            return url

    with ThreadPoolExecutor(len(pieces)) as pool:
        parts = list(pool.map(send, pieces))
    # The spec allows absolute URLs and paths alike.
    listed = [parts[0], *(urlsplit(u).path for u in parts[1:])]
    concat = "final;" + " ".join(listed)
    response = client.post("/files/", headers={**TUS, "Upload-Concat": concat, **named("j.mp4")})
    assert response.status_code == 201, response.text
    final = response.headers["location"]
    head = client.head(final, headers=TUS)
    assert head.headers["upload-offset"] == head.headers["upload-length"] == str(len(data))
    assert head.headers["upload-concat"] == concat
    refused = patch(client, final, len(data), b"more")
    assert refused.status_code == 403
    assert refused.json()["error"] == "final_upload"
    video_id = id_of(final)
    assert wait_status(client, video_id)["overall"] == "ok"
    video = client.get(f"/videos/{video_id}").json()
    assert (video["filename"], video["sha256"]) == ("j.mp4", sha256_of(clips["tiny"]))


def test_a_final_upload_needs_finished_partial_uploads(client):
    unfinished = new_partial(client, 10)
    assert patch(client, unfinished, 0, b"hello").status_code == 204
    plain = new_upload(client, 10)
    for part, says in ((unfinished, "not finished"), (plain, "not a partial upload")):
        response = client.post(
            "/files/", headers={**TUS, "Upload-Concat": f"final;{part}", **named("f.mp4")}
        )
        assert response.status_code == 400
        assert says in response.json()["detail"]
    with_length = client.post(
        "/files/",
        headers={**TUS, "Upload-Concat": f"final;{unfinished}", "Upload-Length": "10"},
    )
    assert with_length.status_code == 400
    assert "no Upload-Length" in with_length.json()["detail"]


# --- expiration ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def expiring(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """A platform whose uploads expire after 2 s idle; its sweep is run by the test itself."""
    storage = tmp_path_factory.mktemp("expiring") / "storage"
    running = Platform(storage, UPLOAD_EXPIRY_SECONDS="2", SWEEP_INTERVAL_SECONDS="3600").start()
    yield running
    running.drop()


def test_expired_uploads_answer_410_and_are_swept_unless_being_written(expiring):
    with expiring.client() as http:
        idle = new_upload(http, 100)
        written = patch(http, idle, 0, b"x" * 10)
        partial = new_partial(http, 100)
        busy = new_partial(http, 100)
        writing = start_patch(expiring.url, busy, declared=100, body=b"y" * 10)
        try:
            expires = parsedate_to_datetime(written.headers["upload-expires"])
            time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 1.5)
            assert http.head(idle, headers=TUS).status_code == 410
            gone = patch(http, idle, 10, b"x")
            assert (gone.status_code, gone.json()["error"]) == (410, "upload_expired")
            settings = Settings(
                storage_dir=expiring.storage,
                database_url=expiring.database_url,
                upload_expiry_seconds=2,
            )
            try:
                assert sweep_abandoned(settings).uploads_removed == 2
            finally:
                engine(settings).dispose()
            for url in (idle, partial):
                assert http.head(url, headers=TUS).status_code == 404
                assert not source_of(expiring, url).parent.exists()
            # The upload being written was left alone; its PATCH ends well and renews it.
            writing.sendall(b"y" * 90)
            assert status_line(writing).split()[1] == "204"
        finally:
            writing.close()
        assert offset_of(http, busy) == 100


# --- real clients ----------------------------------------------------------------------------


def tuspy_quietly(work: Callable[[], T]) -> T:
    """Run tuspy code: it opens the file for each request and leaves closing it to the GC."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            return work()
        finally:
            gc.collect()


def test_tuspy_stopped_and_resumed_from_its_stored_url_through_the_gateway(
    platform, client, clips, tmp_path
):
    source, chunk, name = clips["small"], 64 * 1024, "tuspy resumed.mp4"
    endpoint = f"{platform.url}/files/"

    def uploader(storage: FileStorage) -> Any:
        return TusClient(endpoint).uploader(
            str(source),
            chunk_size=chunk,
            metadata={"filename": name},
            store_url=True,
            url_storage=storage,
            upload_checksum=True,  # sha1 of every PATCH: the checksum extension
        )

    def interrupted() -> tuple[str, str, int]:
        storage = FileStorage(str(tmp_path / "tus-urls.json"))
        try:
            first = uploader(storage)
            first.upload(stop_at=3 * chunk)  # the client stops after three chunks
            # A new client, as after a restart: it finds the URL it stored, asks the offset.
            second = uploader(storage)
            resumed_from = second.offset
            second.upload()
            return first.url, second.url, resumed_from
        finally:
            storage.close()

    first_url, url, resumed_from = tuspy_quietly(interrupted)
    assert url == first_url
    assert resumed_from == 3 * chunk
    assert offset_of(client, url) == source.stat().st_size
    assert wait_status(client, id_of(url))["overall"] == "ok"
    video = client.get(f"/videos/{id_of(url)}").json()
    assert (video["filename"], video["sha256"]) == (name, sha256_of(source))


def test_tuspy_in_one_patch_straight_to_the_upload_service(platform, client, clips):
    source, service = clips["tiny"], platform.service_url("upload")

    def whole() -> str:
        uploader = TusClient(f"{service}/files/").uploader(
            str(source), metadata={"filename": "tuspy direct.mp4"}
        )
        uploader.upload()
        return str(uploader.url)

    url = tuspy_quietly(whole)
    assert url.startswith(f"{service}/files/")
    assert wait_status(client, id_of(url))["overall"] == "ok"
    assert client.get(f"/videos/{id_of(url)}").json()["filename"] == "tuspy direct.mp4"


def run_node_client(*args: str) -> dict[str, Any]:
    """tests/tus_node/upload.mjs under Node; its one JSON line."""
    if not (NODE_CLIENT / "node_modules" / "tus-js-client").is_dir():
        pytest.fail("tus-js-client is not installed: run scripts/install.sh --test")
    done = subprocess.run(
        ["node", "upload.mjs", *args],
        cwd=NODE_CLIENT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_tus_js_client_aborted_mid_upload_resumes_from_its_stored_url(
    platform, client, clips, tmp_path
):
    source, name = clips["small"], "tus-js resumed.mp4"
    urls = tmp_path / "tus-js-urls.json"
    result = run_node_client("resume", f"{platform.url}/files/", str(source), name, str(urls))
    # One PATCH carried the whole file: an offset between its ends is the part of that body
    # that arrived before the abort, kept by the server.
    assert 0 < result["storedOffset"] < result["size"] == source.stat().st_size
    assert result["previousUploads"] == 1
    assert result["url"] == result["interruptedUrl"]
    assert result["finalOffset"] == result["size"]
    video_id = id_of(result["url"])
    assert wait_status(client, video_id)["overall"] == "ok"
    video = client.get(f"/videos/{video_id}").json()
    assert (video["filename"], video["sha256"]) == (name, sha256_of(source))


def test_tus_js_client_parallel_upload_is_concatenated_into_a_video(platform, client, clips):
    source, name = clips["tiny"], "tus-js parallel.mp4"
    result = run_node_client("parallel", f"{platform.url}/files/", str(source), name)
    assert result["finalOffset"] == result["size"]
    video_id = id_of(result["url"])
    head = client.head(result["url"], headers=TUS)
    assert head.headers["upload-concat"].startswith("final;")
    assert len(head.headers["upload-concat"].split()) == 3
    assert wait_status(client, video_id)["overall"] == "ok"
    video = client.get(f"/videos/{video_id}").json()
    assert (video["filename"], video["sha256"]) == (name, sha256_of(source))
