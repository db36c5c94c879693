"""Upload service, through the gateway: chunks in any order, resends, verification."""

import hashlib
import time

import httpx
import pytest

from services.core.layout import VideoLayout
from tests.harness import Platform, sha256_of, upload

CHUNK = 64 * 1024


def test_out_of_order_upload_with_resent_chunk_assembles_the_exact_file(platform, clips, client):
    source = clips["small"]
    total = -(-source.stat().st_size // CHUNK)
    order = list(reversed(range(total)))
    upload_id, done = upload(
        client,
        source,
        chunk_size=CHUNK,
        order=order,
        resend=[1, total - 1],
        declare_chunk_size=False,
        sha256=sha256_of(source),
    )
    assert done is not None and done.status_code == 200, done.text
    stored = platform.stored(VideoLayout.of(upload_id).source)
    assert stored is not None and hashlib.sha256(stored).hexdigest() == sha256_of(source)
    assert done.json()["video"]["sha256"] == sha256_of(source)
    folder = platform.storage / "originals" / upload_id
    assert not list(folder.glob("*.part")), "no per-chunk files are left behind"


def test_upload_state_lists_received_and_missing_chunks(client, clips):
    upload_id, _ = upload(client, clips["small"], chunk_size=CHUNK, order=[0, 2], complete=False)
    state = client.get(f"/upload/{upload_id}").json()
    assert state["received"] == [0, 2]
    assert state["missing"][:2] == [1, 3]
    assert state["bytes_received"] == 2 * CHUNK
    assert state["completed"] is False


def test_complete_with_missing_chunks_is_409_naming_them(client, clips):
    upload_id, _ = upload(client, clips["small"], chunk_size=CHUNK, order=[0, 2], complete=False)
    response = client.post("/upload/complete", data={"upload_id": upload_id})
    assert response.status_code == 409
    body = response.json()
    assert body["error"] == "missing_chunks"
    assert "1, 3" in body["detail"]


def test_complete_rejects_a_wrong_whole_file_sha256_and_keeps_the_chunks(client, clips):
    wrong = hashlib.sha256(b"something else").hexdigest()
    upload_id, done = upload(client, clips["small"], chunk_size=CHUNK, sha256=wrong)
    assert done is not None and done.status_code == 409
    assert done.json()["error"] == "checksum_mismatch"
    assert client.get(f"/upload/{upload_id}").json()["missing"] == []


def test_chunk_resent_with_other_bytes_is_rejected(client, clips):
    upload_id, _ = upload(client, clips["small"], chunk_size=CHUNK, order=[0], complete=False)
    response = client.post(
        "/upload/chunk",
        data={"upload_id": upload_id, "index": 0},
        files={"file": ("blob", b"x" * CHUNK, "application/octet-stream")},
    )
    assert response.status_code == 409
    assert response.json()["error"] == "chunk_mismatch"


@pytest.mark.parametrize("index", [10_000, 2**31 - 1, 2**31])
def test_chunk_index_out_of_range_is_400(client, clips, index):
    # 2**31, the largest index the route takes, is past what the database's 32-bit index
    # column holds: PostgreSQL refuses to compare the column with it.
    upload_id, _ = upload(client, clips["small"], chunk_size=CHUNK, order=[], complete=False)
    for form in ("multipart", "raw"):
        if form == "multipart":
            response = client.post(
                "/upload/chunk",
                data={"upload_id": upload_id, "index": index},
                files={"file": ("blob", b"x" * 10, "application/octet-stream")},
            )
        else:
            response = client.post(
                "/upload/chunk",
                params={"upload_id": upload_id, "index": index},
                content=b"x" * 10,
                headers={"Content-Type": "application/octet-stream"},
            )
        assert response.status_code == 400, (form, response.text)
        assert "out of range" in response.json()["detail"]


def test_malformed_upload_id_is_400_not_a_path(client):
    response = client.post(
        "/upload/chunk",
        data={"upload_id": "../../etc", "index": 0},
        files={"file": ("blob", b"x", "application/octet-stream")},
    )
    assert response.status_code == 400
    assert "not a video id" in response.json()["detail"]


def test_init_validates_the_declaration(client):
    response = client.post(
        "/upload/init",
        data={"filename": "a.mp4", "total_chunks": 2, "total_size": 100, "chunk_size": 10},
    )
    assert response.status_code == 400
    assert "10 chunks" in response.json()["detail"]


def test_upload_id_is_32_lowercase_hex(client):
    response = client.post("/upload/init", data={"filename": "x.mp4", "total_chunks": 1})
    upload_id = response.json()["upload_id"]
    assert len(upload_id) == 32 and upload_id == upload_id.lower()
    int(upload_id, 16)


def test_speedtest_sends_the_requested_bytes(client):
    response = client.get("/api/speedtest", params={"size": 100_000})
    assert response.status_code == 200
    assert len(response.content) == 100_000
    assert response.headers["cache-control"] == "no-store"


def test_every_service_answers_health_and_docs(platform: Platform):
    for name in ("upload", "transcoding", "metadata", "streaming", "admin"):
        base = platform.service_url(name)
        assert httpx.get(f"{base}/health").json()["status"] == "ok"
        assert httpx.get(f"{base}/docs").status_code == 200
        assert httpx.get(f"{base}/openapi.json").json()["paths"]
    assert httpx.get(f"{platform.url}/health").status_code == 200


def test_a_file_without_a_video_extension_is_refused_at_init(client):
    response = client.post("/upload/init", data={"filename": "notes.txt", "total_chunks": 1})
    assert response.status_code == 400
    assert "extension" in response.json()["detail"]


def test_a_chunk_bigger_than_declared_is_400_and_good_chunks_are_kept(client, clips):
    upload_id, _ = upload(client, clips["small"], chunk_size=CHUNK, order=[1], complete=False)
    response = client.post(
        "/upload/chunk",
        data={"upload_id": upload_id, "index": 0},
        files={"file": ("blob", b"x" * (CHUNK + 1), "application/octet-stream")},
    )
    assert response.status_code == 400
    assert f"{CHUNK} bytes" in response.json()["detail"]
    assert client.get(f"/upload/{upload_id}").json()["received"] == [1]


def test_an_upload_that_would_fill_the_disk_is_507(tmp_path):
    platform = Platform(tmp_path / "storage", MIN_FREE_BYTES=str(10**18)).start()
    try:
        with platform.client() as http:
            response = http.post(
                "/upload/init",
                data={"filename": "big.mp4", "total_chunks": 1, "total_size": 1000},
            )
        assert response.status_code == 507
        assert response.json()["error"] == "insufficient_storage"
        assert "free" in response.json()["detail"]
    finally:
        platform.drop()


def test_abandoned_uploads_are_swept_with_their_files(tmp_path, clips):
    platform = Platform(
        tmp_path / "storage", UPLOAD_EXPIRY_SECONDS="2", SWEEP_INTERVAL_SECONDS="0.5"
    ).start()
    try:
        with platform.client() as http:
            upload_id, _ = upload(http, clips["small"], chunk_size=CHUNK, order=[0], complete=False)
            folder = platform.storage / "originals" / upload_id
            assert folder.is_dir()
            deadline = time.monotonic() + 20
            while folder.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not folder.exists()
            assert http.get(f"/upload/{upload_id}").status_code == 404
            reclaimed = http.get("/admin/status").json()["reclaimed"]
            assert reclaimed["uploads_removed"] >= 1
            assert reclaimed["bytes_reclaimed"] >= CHUNK
    finally:
        platform.drop()
