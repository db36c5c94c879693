"""Uploads into a bucket (STORAGE_URL=s3://...): chunked and tus uploads land at the video's
source key as multipart objects drained while the bytes arrive, the scratch folder never
holding the whole file; resend, out-of-order, sha256, a restart, expiry and a bucket that is
down behave as on the local folder."""

import base64
import contextlib
import hashlib
import os
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.core.db import engine
from services.core.errors import TooLarge
from services.core.layout import VideoLayout
from services.core.settings import Settings
from services.core.storage import Storage
from services.core.storage.interface import MAX_PARTS, MIN_PART_BYTES
from services.core.storage.s3 import S3Store
from services.upload.remote import PART_FLOOR, part_bytes_for, punch_hole
from services.upload.sweep import sweep_abandoned
from tests.clips import make_clip
from tests.harness import Platform, free_ports, s3_env, upload
from tests.s3server import S3Server

MIB = 1024 * 1024
CHUNK = 4 * MIB
TUS = {"Tus-Resumable": "1.0.0"}
STREAM = {"Content-Type": "application/offset+octet-stream"}


def padded_clip(path: Path, size: int) -> Path:
    """A real clip grown to `size` bytes by a top-level MP4 `free` box of random bytes: it
    still probes as a video, and its bytes do not repeat."""
    make_clip(path.with_suffix(".raw.mp4"), width=320, height=240, seconds=1)
    data = path.with_suffix(".raw.mp4").read_bytes()
    room = size - len(data) - 8
    assert room > 0
    path.write_bytes(data + struct.pack(">I4s", room + 8, b"free") + os.urandom(room))
    return path


@pytest.fixture(scope="module")
def big_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 2.5 parts: two drained while it arrives, the last one sent at complete."""
    return padded_clip(tmp_path_factory.mktemp("s3up") / "big.mp4", 2 * PART_FLOOR + 3 * MIB + 17)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stored_sha(store: S3Store, video_id: str) -> str:
    digest = hashlib.sha256()
    for piece in store.read_range(VideoLayout.of(video_id).source):
        digest.update(piece)
    return digest.hexdigest()


def scratch_source(platform: Platform, video_id: str) -> Path:
    return Storage(platform.storage).source_path(video_id)


def allocated(path: Path) -> int:
    return path.stat().st_blocks * 512


def send_chunk(http: httpx.Client, upload_id: str, index: int, data: bytes) -> httpx.Response:
    piece = data[index * CHUNK : (index + 1) * CHUNK]
    return http.post(
        "/upload/chunk",
        data={"upload_id": upload_id, "index": index},
        files={"file": ("blob", piece, "application/octet-stream")},
    )


def init(http: httpx.Client, name: str, data: bytes, **extra: str) -> str:
    chunks = -(-len(data) // CHUNK)
    form = {"filename": name, "total_chunks": chunks, "total_size": len(data), "chunk_size": CHUNK}
    answer = http.post("/upload/init", data={**form, **extra})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["upload_id"])


def pending_multiparts(s3_server: S3Server, platform: Platform) -> list[str]:
    prefix = platform.env["STORAGE_URL"].removeprefix("s3://").partition("/")[2]
    answer = s3_server.client().list_multipart_uploads(Bucket=s3_server.bucket, Prefix=prefix)
    return [item["Key"] for item in answer.get("Uploads", [])]


def settings_of(platform: Platform, **extra: object) -> Settings:
    return platform.settings(**extra)


# --- the rules ------------------------------------------------------------------------------


def test_parts_keep_s3_rules_for_the_largest_upload_and_refuse_what_cannot():
    for bound in (1, PART_FLOOR, 64 * 1024**3, 5 * 1024**4):
        size = part_bytes_for(bound)
        assert size >= MIN_PART_BYTES and -(-bound // size) <= MAX_PARTS
    with pytest.raises(TooLarge):
        part_bytes_for(60 * 1024**4)


def test_a_punched_range_frees_its_blocks_and_keeps_the_size(tmp_path):
    staged = tmp_path / "staged"
    with staged.open("wb") as handle:
        handle.write(os.urandom(3 * MIB))
        os.fsync(handle.fileno())
    assert punch_hole(staged, 0, 2 * MIB)
    assert staged.stat().st_size == 3 * MIB
    assert allocated(staged) <= MIB + 64 * 1024
    assert staged.read_bytes()[: 2 * MIB] == bytes(2 * MIB)


# --- chunked ----------------------------------------------------------------------------------


def test_chunked_upload_lands_in_the_bucket_without_a_whole_local_copy(
    s3_platform, s3_server, s3_client, platform_store, big_clip
):
    data = big_clip.read_bytes()
    upload_id = init(s3_client, big_clip.name, data, sha256=sha(data))
    source = scratch_source(s3_platform, upload_id)
    chunks = -(-len(data) // CHUNK)
    for index in range(chunks - 1):
        assert send_chunk(s3_client, upload_id, index, data).status_code == 200
        # Each whole part leaves the scratch folder as soon as its last chunk is in.
        assert allocated(source) < PART_FLOOR + CHUNK
    assert send_chunk(s3_client, upload_id, chunks - 1, data).status_code == 200
    done = s3_client.post("/upload/complete", data={"upload_id": upload_id})
    assert done.status_code == 200, done.text
    assert done.json()["video"]["sha256"] == sha(data)
    assert stored_sha(platform_store, upload_id) == sha(data)
    assert not source.exists()
    assert not any(upload_id in key for key in pending_multiparts(s3_server, s3_platform))


def test_complete_removes_the_staging_file_and_leaves_the_encodes_scratch(
    s3_platform, s3_client, big_clip
):
    """`complete` registers the video, so a worker on this machine may already encode it
    into its scratch under hls/{id}: the upload's cleanup after registration takes only its
    staging folder. (It removed the whole video's folders: the audio's ffmpeg, started a
    moment before, failed on its first segment, and a kill -9 test counted one encode too
    many in CI.)"""
    data = big_clip.read_bytes()
    upload_id = init(s3_client, big_clip.name, data, sha256=sha(data))
    for index in range(-(-len(data) // CHUNK)):
        assert send_chunk(s3_client, upload_id, index, data).status_code == 200
    scratch = Storage(s3_platform.storage)
    staging = scratch.original_dir(upload_id)
    assert staging.is_dir()
    # What a worker's encode has in its scratch (no worker touches this name).
    encoding = scratch.hls_dir(upload_id) / "an-encode-in-progress"
    encoding.parent.mkdir(parents=True, exist_ok=True)
    encoding.write_bytes(b"segment")
    done = s3_client.post("/upload/complete", data={"upload_id": upload_id})
    assert done.status_code == 200, done.text
    assert not staging.exists()
    assert encoding.read_bytes() == b"segment"


def test_out_of_order_and_resent_chunks_and_a_wrong_resend(
    s3_platform, s3_client, platform_store, big_clip
):
    data = big_clip.read_bytes()
    chunks = -(-len(data) // CHUNK)
    order = [2, 0, 3, chunks - 1, 1, *range(4, chunks - 1)]
    upload_id, done = upload(
        s3_client, big_clip, chunk_size=CHUNK, order=order, resend=[0, 2], sha256=sha(data)
    )
    assert done is not None and done.status_code == 200, done.text
    assert stored_sha(platform_store, upload_id) == sha(data)
    assert not scratch_source(s3_platform, upload_id).exists()


def test_a_resend_of_a_drained_chunk_with_other_bytes_is_a_conflict(
    s3_platform, s3_client, platform_store, big_clip
):
    data = big_clip.read_bytes()
    upload_id = init(s3_client, big_clip.name, data)
    for index in range(3):
        assert send_chunk(s3_client, upload_id, index, data).status_code == 200
    # Chunks 0 and 1 are in part 1, already in the bucket and gone from the scratch file.
    wrong = bytearray(data[:CHUNK])
    wrong[5] ^= 0xFF
    answer = s3_client.post(
        "/upload/chunk",
        data={"upload_id": upload_id, "index": 0},
        files={"file": ("blob", bytes(wrong), "application/octet-stream")},
    )
    assert (answer.status_code, answer.json()["error"]) == (409, "chunk_mismatch")
    same = send_chunk(s3_client, upload_id, 0, data)
    assert same.status_code == 200 and same.json()["duplicate"] is True
    for index in range(3, -(-len(data) // CHUNK)):
        assert send_chunk(s3_client, upload_id, index, data).status_code == 200
    done = s3_client.post("/upload/complete", data={"upload_id": upload_id})
    assert done.status_code == 200, done.text
    assert stored_sha(platform_store, upload_id) == sha(data)


def test_a_declared_sha256_that_differs_keeps_the_upload(s3_client, big_clip):
    data = big_clip.read_bytes()
    upload_id = init(s3_client, big_clip.name, data, sha256="0" * 64)
    for index in range(-(-len(data) // CHUNK)):
        assert send_chunk(s3_client, upload_id, index, data).status_code == 200
    done = s3_client.post("/upload/complete", data={"upload_id": upload_id})
    assert (done.status_code, done.json()["error"]) == (409, "checksum_mismatch")
    assert s3_client.get(f"/upload/{upload_id}").json()["missing"] == []


def test_a_small_upload_is_one_part(s3_client, platform_store, tmp_path):
    clip = make_clip(tmp_path / "small.mp4", width=320, height=240, seconds=1)
    upload_id, done = upload(s3_client, clip, chunk_size=64 * 1024)
    assert done is not None and done.status_code == 200, done.text
    assert stored_sha(platform_store, upload_id) == sha(clip.read_bytes())


# --- tus, a restart, expiry ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def own_platform(
    tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server
) -> Iterator[Platform]:
    """A platform of this module's own on the S3 server (it is restarted and swept)."""
    running = Platform(tmp_path_factory.mktemp("s3own") / "scratch", **s3_env(s3_server))
    running.start()
    yield running
    running.drop()


def test_tus_upload_resumes_after_a_restart(own_platform, s3_server, big_clip):
    data = big_clip.read_bytes()
    half = PART_FLOOR + 3 * MIB
    store = own_store(own_platform, s3_server)
    with own_platform.client() as http:
        meta = "filename " + base64.b64encode(b"big.mp4").decode()
        created = http.post(
            "/files/", headers={**TUS, "Upload-Length": str(len(data)), "Upload-Metadata": meta}
        )
        assert created.status_code == 201, created.text
        url = created.headers["location"]
        first = http.patch(
            url, content=data[:half], headers={**TUS, **STREAM, "Upload-Offset": "0"}
        )
        assert first.status_code == 204, first.text
    upload_id = url.rstrip("/").rsplit("/", 1)[1]
    assert allocated(scratch_source(own_platform, upload_id)) < half
    own_platform.stop()
    own_platform.start()
    with own_platform.client() as http:
        head = http.head(url, headers=TUS)
        assert int(head.headers["upload-offset"]) == half
        rest = http.patch(
            url, content=data[half:], headers={**TUS, **STREAM, "Upload-Offset": str(half)}
        )
        assert rest.status_code == 204, rest.text
        video = http.get(f"/videos/{upload_id}")
        assert video.status_code == 200, video.text
        assert video.json()["sha256"] == sha(data)
    assert stored_sha(store, upload_id) == sha(data)
    assert not scratch_source(own_platform, upload_id).exists()


def own_store(platform: Platform, server: S3Server) -> S3Store:
    return platform.bucket(server.endpoint)


def test_the_sweep_aborts_an_abandoned_multipart_upload(own_platform, s3_server, big_clip):
    data = big_clip.read_bytes()
    with own_platform.client() as http:
        upload_id = init(http, big_clip.name, data)
        for index in range(3):
            assert send_chunk(http, upload_id, index, data).status_code == 200
    assert pending_multiparts(s3_server, own_platform)
    settings = settings_of(own_platform, upload_expiry_seconds=0)
    try:
        assert sweep_abandoned(settings).uploads_removed >= 1
    finally:
        engine(settings).dispose()
    assert pending_multiparts(s3_server, own_platform) == []
    assert not scratch_source(own_platform, upload_id).exists()
    with own_platform.client() as http:
        assert http.get(f"/upload/{upload_id}").status_code == 404


# --- the bucket down -----------------------------------------------------------------------------


class Relay:
    """A TCP relay to the S3 server that can be cut and restored (the bucket "down")."""

    def __init__(self, target: str) -> None:
        host, port = target.removeprefix("http://").split(":")
        self.target = (host, int(port))
        self.port = free_ports(1)[0]
        self.open: list[socket.socket] = []
        self.server: socket.socket | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        self.server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def down(self) -> None:
        if self.server is not None:
            # shutdown wakes the thread blocked in accept(); close alone leaves it listening.
            with contextlib.suppress(OSError):
                self.server.shutdown(socket.SHUT_RDWR)
            self.server.close()
            self.server = None
        for sock in self.open:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self.open.clear()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while piece := source.recv(65536):
            sink.sendall(piece)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


@pytest.fixture(scope="module")
def relayed(
    tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server
) -> Iterator[tuple[Platform, Relay]]:
    relay = Relay(s3_server.endpoint)
    relay.up()
    env = {**s3_env(s3_server), "AWS_ENDPOINT_URL": relay.endpoint, "S3_MAX_ATTEMPTS": "1"}
    running = Platform(tmp_path_factory.mktemp("s3relay") / "scratch", **env)
    running.start()
    yield running, relay
    running.drop()
    relay.down()


def test_the_bucket_down_is_a_clear_503_and_the_upload_goes_on_after(relayed, s3_server, big_clip):
    platform, relay = relayed
    data = big_clip.read_bytes()
    with platform.client() as http:
        upload_id = init(http, big_clip.name, data)
        assert send_chunk(http, upload_id, 0, data).status_code == 200
        relay.down()
        try:
            cut = send_chunk(http, upload_id, 1, data)
            assert cut.status_code == 503, cut.text
            assert cut.json()["error"] == "storage_unavailable"
            assert "object storage" in cut.json()["detail"]
            refused = http.post("/upload/init", data={"filename": "x.mp4", "total_chunks": 1})
            assert refused.status_code == 503, refused.text
        finally:
            relay.up()
        # The chunk was kept: its resend is a duplicate, and its part goes out now.
        again = send_chunk(http, upload_id, 1, data)
        assert again.status_code == 200 and again.json()["duplicate"] is True
        for index in range(2, -(-len(data) // CHUNK)):
            assert send_chunk(http, upload_id, index, data).status_code == 200
        done = http.post("/upload/complete", data={"upload_id": upload_id})
        assert done.status_code == 200, done.text
    assert stored_sha(own_store(platform, s3_server), upload_id) == sha(data)
