"""The whole file's sha256 advanced while chunks arrive (services/upload/hashing.py), the chunk
lock, and both forms of /upload/chunk through the real platform: in and out of order, in
parallel, resent, across a restart of the upload service."""

import hashlib
import os
import random
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from services.upload.chunkfile import ChunkLock, ChunkWriter
from services.upload.hashing import HasherRegistry, PrefixHasher
from tests.harness import Platform, send_chunk, sha256_of
from tests.test_faults import service_pid, wait_healthy

CHUNK = 16 * 1024


# ---------------------------------------------------------------- the hasher, on its own


def _file(tmp_path: Path, size: int) -> tuple[Path, bytes]:
    data = random.Random(size).randbytes(size)
    path = tmp_path / "source"
    path.write_bytes(data)
    return path, data


def _chunks(size: int, chunk: int) -> list[tuple[int, int]]:
    return [(offset, min(chunk, size - offset)) for offset in range(0, size, chunk)]


def _write_and_commit(hasher: PrefixHasher, data: bytes, offset: int, size: int) -> None:
    """What a chunk's writer does: feed begin()'s digest (if any) as it writes, then commit."""
    writer = ChunkWriter(None, offset, hasher.begin(offset))
    writer.feed([data[offset : offset + size]])
    hasher.commit(offset, size, writer.fed)


def test_chunks_in_order_are_hashed_as_they_are_written(tmp_path):
    path, data = _file(tmp_path, 10 * CHUNK + 123)
    hasher = PrefixHasher(path)
    for offset, size in _chunks(len(data), CHUNK):
        _write_and_commit(hasher, data, offset, size)
    assert hasher.position == len(data), "nothing is left for complete to read"
    assert hasher.finish(len(data)) == hashlib.sha256(data).hexdigest()


def test_chunks_out_of_order_are_read_back_once_the_prefix_reaches_them(tmp_path):
    path, data = _file(tmp_path, 9 * CHUNK + 7)
    hasher = PrefixHasher(path)
    chunks = _chunks(len(data), CHUNK)
    for offset, size in [*reversed(chunks[1:]), chunks[0]]:
        _write_and_commit(hasher, data, offset, size)
    assert hasher.finish(len(data)) == hashlib.sha256(data).hexdigest()
    assert hasher.position == len(data)


def test_chunks_committed_by_parallel_threads_give_the_file_digest(tmp_path):
    path, data = _file(tmp_path, 64 * CHUNK + 5)
    hasher = PrefixHasher(path)
    chunks = _chunks(len(data), CHUNK)
    random.Random(1).shuffle(chunks)
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda c: _write_and_commit(hasher, data, *c), chunks))
    assert hasher.finish(len(data)) == hashlib.sha256(data).hexdigest()


def test_a_new_hasher_that_saw_no_chunk_hashes_the_whole_file(tmp_path):
    """What a restarted or another upload service process has: nothing, or a late part."""
    path, data = _file(tmp_path, 5 * CHUNK)
    fresh = PrefixHasher(path)
    assert fresh.finish(len(data)) == hashlib.sha256(data).hexdigest()
    late = PrefixHasher(path)
    for offset, size in _chunks(len(data), CHUNK)[2:]:
        _write_and_commit(late, data, offset, size)
    assert late.position == 0, "chunks after a gap are not hashed before the gap is"
    assert late.finish(len(data)) == hashlib.sha256(data).hexdigest()


def test_a_chunk_that_fails_midway_leaves_the_digest_untouched(tmp_path):
    path, data = _file(tmp_path, 3 * CHUNK)
    hasher = PrefixHasher(path)
    abandoned = ChunkWriter(None, 0, hasher.begin(0))
    abandoned.feed([b"garbage that never got recorded"])  # no commit: the chunk failed
    for offset, size in _chunks(len(data), CHUNK):
        _write_and_commit(hasher, data, offset, size)
    assert hasher.finish(len(data)) == hashlib.sha256(data).hexdigest()


def test_the_registry_keeps_a_bounded_number_of_hashers(tmp_path):
    registry = HasherRegistry(limit=3, idle_seconds=3600)
    first = registry.get("a", tmp_path / "a")
    for name in "bcde":
        registry.get(name, tmp_path / name)
    assert len(registry) == 3
    assert registry.get("a", tmp_path / "a") is not first, "the oldest was evicted"
    registry.discard("a")
    assert len(registry) == 2


def test_idle_hashers_are_evicted(tmp_path):
    registry = HasherRegistry(limit=100, idle_seconds=0)
    registry.get("a", tmp_path / "a")
    registry.get("b", tmp_path / "b")
    assert len(registry) == 1


def test_one_copy_of_a_chunk_holds_its_lock_at_a_time(tmp_path):
    path = tmp_path / "source"
    path.touch()
    first, second, other = ChunkLock(path, 3), ChunkLock(path, 3), ChunkLock(path, 4)
    assert first.acquire()
    results = []
    thread = threading.Thread(target=lambda: results.append(second.acquire()))
    thread.start()
    thread.join()
    assert results == [False], "another thread cannot take a held chunk"
    assert other.acquire(), "other chunks are not held up"
    first.release()
    assert second.acquire()
    second.release()
    other.release()


# ---------------------------------------------------------------- through the platform


def _init(client: httpx.Client, data: bytes, chunk: int = CHUNK, **extra: object) -> str:
    form = {
        "filename": "clip.mp4",
        "total_chunks": -(-len(data) // chunk),
        "total_size": len(data),
        "chunk_size": chunk,
        "sha256": hashlib.sha256(data).hexdigest(),
        **extra,
    }
    response = client.post("/upload/init", data=form)
    assert response.status_code == 200, response.text
    return str(response.json()["upload_id"])


def _send(
    client: httpx.Client,
    upload_id: str,
    data: bytes,
    index: int,
    raw: bool = False,
    chunk: int = CHUNK,
    checked: bool = False,
):  # type: ignore[no-untyped-def]
    """Send one chunk; `checked` sends its sha256 along (Content-Digest, or the form field)."""
    piece = data[index * chunk : (index + 1) * chunk]
    sha256 = hashlib.sha256(piece).hexdigest() if checked else None
    return send_chunk(client, upload_id, index, piece, raw=raw, sha256=sha256)


def _complete(client: httpx.Client, upload_id: str) -> httpx.Response:
    return client.post("/upload/complete", data={"upload_id": upload_id})


# 16 KiB chunks start and end on the 4 KiB blocks written past the page cache (aligned.py);
# 10007-byte ones never do, so every chunk has a head and a tail through the page cache too.
@pytest.mark.parametrize("chunk", [CHUNK, 10_007], ids=["aligned", "unaligned"])
@pytest.mark.parametrize("raw", [False, True], ids=["multipart", "octet-stream"])
def test_parallel_out_of_order_chunks_with_resends_give_the_exact_file(
    platform, client, clips, raw, chunk
):
    data = clips["small"].read_bytes()
    upload_id = _init(client, data, chunk)
    total = -(-len(data) // chunk)
    order = list(range(total))
    random.Random(7).shuffle(order)
    with ThreadPoolExecutor(max_workers=4) as pool:
        sent = list(
            pool.map(
                # Every other chunk with its sha256 to check: both kinds run side by side.
                lambda i: _send(client, upload_id, data, i, raw, chunk, checked=i % 2 == 0),
                [*order, 0, 2],
            )
        )
    assert all(r.status_code == 200 for r in sent), [r.text for r in sent if r.status_code != 200]
    assert sum(r.json()["duplicate"] for r in sent) == 2
    for response in sent:
        index = response.json()["index"]
        piece = data[index * chunk : (index + 1) * chunk]
        checked = hashlib.sha256(piece).hexdigest() if index % 2 == 0 else None
        assert response.json()["sha256"] == checked
    done = _complete(client, upload_id)
    assert done.status_code == 200, done.text
    assert done.json()["video"]["sha256"] == sha256_of(clips["small"])
    stored = platform.stored(f"originals/{upload_id}/source") or b""
    assert hashlib.sha256(stored).hexdigest() == sha256_of(clips["small"])


def test_a_wrong_declared_sha256_is_still_a_409_after_a_parallel_upload(client, clips):
    data = clips["small"].read_bytes()
    upload_id = _init(client, data, sha256=hashlib.sha256(b"other").hexdigest())
    with ThreadPoolExecutor(max_workers=4) as pool:
        sent = list(
            pool.map(lambda i: _send(client, upload_id, data, i), range(-(-len(data) // CHUNK)))
        )
    assert all(r.status_code == 200 for r in sent)
    done = _complete(client, upload_id)
    assert done.status_code == 409
    assert done.json()["error"] == "checksum_mismatch"
    assert hashlib.sha256(data).hexdigest() in done.json()["detail"]


def test_a_form_with_the_file_before_its_fields_is_stored_too(client, clips):
    data = clips["small"].read_bytes()
    upload_id = _init(client, data)
    for index in range(-(-len(data) // CHUNK)):
        piece = data[index * CHUNK : (index + 1) * CHUNK]
        boundary = "fileFirst"
        body = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="b"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode() + piece
        body += (
            f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="upload_id"\r\n\r\n'
            f"{upload_id}\r\n--{boundary}\r\nContent-Disposition: form-data; "
            f'name="index"\r\n\r\n{index}\r\n--{boundary}--\r\n'
        ).encode()
        response = client.post(
            "/upload/chunk",
            content=body,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        assert response.status_code == 200, response.text
    done = _complete(client, upload_id)
    assert done.status_code == 200, done.text
    assert done.json()["video"]["sha256"] == hashlib.sha256(data).hexdigest()


def test_a_raw_chunk_longer_than_its_place_is_refused_and_its_neighbour_kept(
    platform, client, clips
):
    data = clips["small"].read_bytes()
    upload_id = _init(client, data)
    assert _send(client, upload_id, data, 1, raw=True).status_code == 200
    response = client.post(
        "/upload/chunk",
        params={"upload_id": upload_id, "index": 0},
        content=b"x" * (CHUNK + 1),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 400
    assert f"{CHUNK} bytes" in response.json()["detail"]
    stored = (platform.storage / "originals" / upload_id / "source").read_bytes()
    assert stored[CHUNK : 2 * CHUNK] == data[CHUNK : 2 * CHUNK]
    assert client.get(f"/upload/{upload_id}").json()["received"] == [1]


def test_a_form_cut_off_inside_the_file_is_not_counted(client, clips):
    data = clips["small"].read_bytes()
    upload_id = _init(client, data)
    boundary = "cut"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="upload_id"\r\n\r\n{upload_id}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="index"\r\n\r\n0\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="b"\r\n\r\n'
    ).encode() + data[:CHUNK]
    response = client.post(
        "/upload/chunk",
        content=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status_code == 400
    assert "ended inside the file part" in response.json()["detail"]
    assert client.get(f"/upload/{upload_id}").json()["received"] == []


@pytest.mark.parametrize(
    ("content_type", "params", "needs"),
    [
        ("text/plain", {}, "multipart/form-data"),
        ("application/octet-stream", {"index": 0}, "upload_id and index"),
        ("application/octet-stream", {"upload_id": "0" * 32, "index": "x"}, "index"),
    ],
)
def test_a_chunk_in_neither_form_is_a_400_saying_what_to_send(client, content_type, params, needs):
    response = client.post(
        "/upload/chunk", params=params, content=b"abc", headers={"Content-Type": content_type}
    )
    assert 400 <= response.status_code < 500
    assert needs in response.json()["detail"]


def test_a_restart_of_the_upload_service_mid_upload_still_gives_the_right_digest(
    own_platform: Platform, clips
):
    data = clips["small"].read_bytes()
    total = -(-len(data) // CHUNK)
    with own_platform.client() as client:
        upload_id = _init(client, data)
        for index in range(0, total, 2):
            assert _send(client, upload_id, data, index).status_code == 200
        os.kill(service_pid(own_platform, "upload"), signal.SIGKILL)
        wait_healthy(own_platform, "upload")
        for index in range(1, total, 2):
            assert _send(client, upload_id, data, index, raw=True).status_code == 200
        done = _complete(client, upload_id)
    assert done.status_code == 200, done.text
    assert done.json()["video"]["sha256"] == hashlib.sha256(data).hexdigest()


def test_a_raw_chunk_without_length_before_the_chunk_size_is_known_is_stored(client, clips):
    """Chunked transfer encoding and no declared chunk size: the place needs the size first."""
    data = clips["small"].read_bytes()
    total = -(-len(data) // CHUNK)
    response = client.post(
        "/upload/init",
        data={"filename": "clip.mp4", "total_chunks": total, "total_size": len(data)},
    )
    upload_id = response.json()["upload_id"]
    for index in reversed(range(total)):
        piece = data[index * CHUNK : (index + 1) * CHUNK]
        sent = client.post(
            "/upload/chunk",
            params={"upload_id": upload_id, "index": index},
            content=iter([piece[:100], piece[100:]]),
            headers={"Content-Type": "application/octet-stream"},
        )
        assert sent.status_code == 200, sent.text
    done = _complete(client, upload_id)
    assert done.status_code == 200, done.text
    assert done.json()["video"]["sha256"] == hashlib.sha256(data).hexdigest()
