"""Faults: processes killed mid-request and mid-job, many clients at once."""

import os
import signal
import socket
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.clips import make_clip
from tests.harness import Platform, database_server_under_test, sha256_of, upload, wait_status

CHUNK = 256 * 1024


def service_pid(platform: Platform, name: str) -> int:
    """The pid of the uvicorn process serving `name` for this platform."""
    port = str(platform.ports[name])
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        server = b"uvicorn" in b" ".join(argv) or b"granian" in b" ".join(argv)
        if server and port.encode() in argv:
            return int(entry.name)
    raise AssertionError(f"no process serves {name} on {port}")


def wait_healthy(platform: Platform, name: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{platform.service_url(name)}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{name} did not come back")


def test_kill_9_of_the_upload_service_mid_chunk_loses_nothing(own_platform, clips):
    source = clips["small"].read_bytes()
    with own_platform.client() as client:
        init = client.post(
            "/upload/init",
            data={
                "filename": "a.mp4",
                "total_chunks": -(-len(source) // CHUNK),
                "total_size": len(source),
                "chunk_size": CHUNK,
            },
        ).json()
        upload_id = init["upload_id"]
        _send_half_a_chunk_then_kill(own_platform, upload_id, source[:CHUNK])
        wait_healthy(own_platform, "upload")
        state = client.get(f"/upload/{upload_id}").json()
        assert 0 in state["missing"], "a torn chunk is never counted as received"
        for index in state["missing"]:
            piece = source[index * CHUNK : (index + 1) * CHUNK]
            sent = client.post(
                "/upload/chunk",
                data={"upload_id": upload_id, "index": index},
                files={"file": ("blob", piece, "application/octet-stream")},
            )
            assert sent.status_code == 200, sent.text
        done = client.post("/upload/complete", data={"upload_id": upload_id})
        assert done.status_code == 200, done.text
        assert done.json()["video"]["sha256"] == sha256_of(clips["small"])


def _send_half_a_chunk_then_kill(platform: Platform, upload_id: str, piece: bytes) -> None:
    boundary = "----faultboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="upload_id"\r\n\r\n{upload_id}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="index"\r\n\r\n0\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="blob"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    body = head + piece + tail
    conn = socket.create_connection(("127.0.0.1", platform.ports["upload"]))
    try:
        conn.sendall(
            b"POST /upload/chunk HTTP/1.1\r\nHost: x\r\n"
            + f"Content-Type: multipart/form-data; boundary={boundary}\r\n".encode()
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[: len(body) // 2]
        )
        time.sleep(0.5)
        os.kill(service_pid(platform, "upload"), signal.SIGKILL)
    finally:
        conn.close()


def test_kill_9_of_every_service_mid_job_leaves_the_job_finished_and_the_db_sound(
    own_platform, clips
):
    with own_platform.client() as client:
        video_id, _ = upload(client, clips["long"], chunk_size=1 << 20)
        wait_status(client, video_id, {"running"})
        for name in ("gateway", "metadata", "streaming", "admin", "upload", "transcoding"):
            os.kill(service_pid(own_platform, name), signal.SIGKILL)
            wait_healthy(own_platform, name)
            wait_healthy(own_platform, "gateway")
        assert wait_status(client, video_id, timeout=300)["overall"] == "ok"
        assert own_platform.wait_no_ffmpeg() == []
        assert client.get(f"/stream/{video_id}/master.m3u8").status_code == 200
    if not database_server_under_test():
        with sqlite3.connect(own_platform.storage / "videos.db") as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_twenty_clients_upload_and_transcode_at_once_without_cross_talk(client, tmp_path):
    sources = [
        make_clip(tmp_path / f"c{i:02d}.mp4", width=320, height=240, seconds=1 + (i % 3) / 2)
        for i in range(20)
    ]
    results: dict[int, tuple[str, int]] = {}
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            with httpx.Client(base_url=str(client.base_url), timeout=120) as own:
                video_id, done = upload(own, sources[i], chunk_size=16 * 1024)
                assert done is not None and done.status_code == 200, done.text
                results[i] = (video_id, done.status_code)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    assert len({video_id for video_id, _ in results.values()}) == 20
    for i, (video_id, _) in results.items():
        assert wait_status(client, video_id, timeout=300)["overall"] == "ok"
        record = client.get(f"/videos/{video_id}").json()
        assert record["sha256"] == sha256_of(sources[i]), "no cross-talk between uploads"
        assert record["filename"] == sources[i].name
        original = client.get(f"/stream/{video_id}/original")
        assert original.content == sources[i].read_bytes()


@pytest.mark.skipif(
    os.geteuid() != 0 and os.environ.get("CI") != "true",
    reason="mounting a small tmpfs needs root (CI runs as root, where this never skips)",
)
def test_running_out_of_disk_mid_transcode_fails_cleanly(tmp_path, clips):
    import subprocess

    import m3u8

    storage = tmp_path / "storage"
    hls = storage / "hls"
    hls.mkdir(parents=True)
    # A 3 MiB filesystem for the renditions: the 20 s 1080p ladder cannot fit.
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(hls)], check=True)
    platform = Platform(storage, MAX_ATTEMPTS="2", RETRY_BACKOFF_SECONDS="0.2")
    try:
        platform.start()
        with platform.client() as client:
            video_id, _ = upload(client, clips["long"], chunk_size=1 << 20)
            status = wait_status(client, video_id, timeout=240)
            assert status["overall"] == "failed", status
            assert "No space left on device" in status["error"], status["error"]
            assert client.get(f"/videos/{video_id}").json()["status"] == "failed"
            assert not (hls / video_id / ".complete").exists()
            master = client.get(f"/stream/{video_id}/master.m3u8")
            if master.status_code == 200:  # what was published before the disk filled
                for variant in m3u8.loads(master.text).playlists:
                    media = m3u8.loads(client.get(f"/stream/{video_id}/{variant.uri}").text)
                    assert not media.is_endlist, "a failed video is never presented as whole"
                    rung = hls / video_id / variant.uri.split("/")[0]
                    for segment in media.segments:
                        probe = subprocess.run(
                            [
                                "ffprobe",
                                "-v",
                                "error",
                                "-count_frames",
                                "-select_streams",
                                "v:0",
                                "-show_entries",
                                "stream=nb_read_frames",
                                "-of",
                                "csv=p=0",
                                str(rung / segment.uri),
                            ],
                            capture_output=True,
                            text=True,
                            check=True,
                        )
                        assert probe.stderr == "" and int(probe.stdout) > 0, segment.uri
    finally:
        platform.drop()
        subprocess.run(["umount", str(hls)], check=False)
