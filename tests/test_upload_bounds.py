"""Declared sizes and indexes, and the order chunks land in, never make a wrong or endless file."""

import hashlib
import threading
import time
from collections.abc import Iterator

import httpx

MiB = 1024 * 1024


def _wait_for(condition, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_last_chunk_trickled_while_chunk_zero_lands_is_stored_whole(platform, client, clips):
    """No sizes declared: the last chunk waits aside (its offset is unknown) while it arrives;
    chunk 0 landing meanwhile must not place the half that has arrived."""
    data = clips["full"].read_bytes()
    chunk = 4 * MiB
    head, tail = data[:chunk], data[chunk:]
    assert 2 * MiB < len(tail) <= chunk, len(data)
    init = client.post("/upload/init", data={"filename": "race.mp4", "total_chunks": 2})
    assert init.status_code == 200, init.text
    upload_id = init.json()["upload_id"]
    folder = platform.storage / "originals" / upload_id
    landed = threading.Event()
    answers: dict[str, httpx.Response] = {}

    def trickle() -> Iterator[bytes]:
        # Twice the server's 1 MiB write batch: a batch is on disk before chunk 0 lands.
        yield tail[: 2 * MiB]
        landed.wait(60)
        for start in range(2 * MiB, len(tail), 256 * 1024):
            time.sleep(0.05)
            yield tail[start : start + 256 * 1024]

    def send_last() -> None:
        answers["last"] = httpx.post(
            f"{platform.url}/upload/chunk",
            params={"upload_id": upload_id, "index": 1},
            content=trickle(),
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(tail))},
            timeout=120,
        )

    sender = threading.Thread(target=send_last)
    sender.start()
    try:
        parked = lambda: sum(p.stat().st_size for p in folder.iterdir() if p.name != "source")  # noqa: E731
        assert _wait_for(lambda: parked() >= MiB), "the last chunk's first half never arrived"
        first = client.post(
            "/upload/chunk",
            data={"upload_id": upload_id, "index": 0},
            files={"file": ("blob", head, "application/octet-stream")},
        )
        assert first.status_code == 200, first.text
    finally:
        landed.set()
        sender.join(120)
    assert answers["last"].status_code == 200, answers["last"].text
    done = client.post("/upload/complete", data={"upload_id": upload_id})
    stored = (folder / "source").read_bytes()
    print(f"stored {len(stored)} bytes; the tail has {stored[chunk:].count(0)} zero bytes")
    print(f"(the file's tail has {tail.count(0)})")
    assert hashlib.sha256(stored).hexdigest() == hashlib.sha256(data).hexdigest()
    assert done.status_code == 200, done.text
    assert done.json()["video"]["sha256"] == hashlib.sha256(data).hexdigest()
