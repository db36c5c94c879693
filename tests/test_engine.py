"""The chunked engine: resume continues, many workers share a job, playlists grow in order."""

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import m3u8

from tests.harness import ROOT, Platform, upload, wait_status

CHUNK = 1024 * 1024


def chunks_of(client, video_id) -> list[dict]:
    return client.get(f"/admin/videos/{video_id}/status").json()["chunks"]


def rung_timeline(client, video_id) -> dict[str, list[float]]:
    master = m3u8.loads(client.get(f"/stream/{video_id}/master.m3u8").text)
    timeline = {}
    for variant in master.playlists:
        media = m3u8.loads(client.get(f"/stream/{video_id}/{variant.uri}").text)
        timeline[variant.uri] = [round(s.duration, 3) for s in media.segments]
    return timeline


def wait_chunks(client, video_id, predicate, timeout=120) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        chunks = chunks_of(client, video_id)
        if predicate(chunks):
            return chunks
        time.sleep(0.05)
    raise AssertionError(f"chunks of {video_id} never matched: {chunks}")


def video_done(chunks) -> list[int]:
    return [c["index"] for c in chunks if c["kind"] == "video" and c["status"] == "done"]


def test_kill_9_mid_job_reencodes_only_the_chunks_in_flight(own_platform, clips):
    with own_platform.client() as client:
        reference, _ = upload(client, clips["long"], chunk_size=CHUNK)
        assert wait_status(client, reference)["overall"] == "ok"
        expected = rung_timeline(client, reference)

        video_id, _ = upload(client, clips["long"], chunk_size=CHUNK)
        in_flight, done_before = kill_9_worker_mid_job(own_platform, client, video_id)

        assert wait_status(client, video_id, timeout=300)["overall"] == "ok"
        final = chunks_of(client, video_id)
        assert len(final) > 4, "a multi-chunk job"
        for chunk in final:
            assert chunk["status"] == "done"
            if chunk["index"] in done_before:
                assert chunk["encodes"] == 1, chunk
        repeated = sum(c["encodes"] - 1 for c in final)
        assert repeated <= len(in_flight), final
        assert rung_timeline(client, video_id) == expected


def kill_9_worker_mid_job(
    platform, client, video_id: str, timeout: float = 120
) -> tuple[list[dict], set[int]]:
    """kill -9 of the process running the job's units once two video chunks are done and
    another is running: (the units it held, the video chunks done) at the kill.

    The process is stopped (SIGSTOP) before the units are read: a running worker may finish
    one unit and claim the next between a read and the kill (it records a unit beside the
    next one's encode), which on a loaded machine made two units in flight where the read
    saw one. Stopped, it claims and records nothing more; its ffmpeg go on until the kill."""
    chunks = wait_chunks(
        client,
        video_id,
        lambda cs: len(video_done(cs)) >= 2 and any(c["status"] == "running" for c in cs),
        timeout=timeout,
    )
    running = next(c for c in chunks if c["status"] == "running")
    worker_pid = int(running["worker"].rsplit(":", 1)[1])
    os.kill(worker_pid, signal.SIGSTOP)
    encoders = platform.ffmpeg_pids()
    chunks = chunks_of(client, video_id)  # the admin service reads them: not the stopped one
    in_flight = [c for c in chunks if c["status"] == "running"]
    done_before = set(video_done(chunks))
    os.kill(worker_pid, signal.SIGKILL)
    assert encoders
    assert in_flight
    _wait_gone(encoders)
    return in_flight, done_before


def _wait_gone(pids: list[int], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in pids if Path(f"/proc/{p}").exists() and not _zombie(p)]
        if not alive:
            return
        time.sleep(0.05)
    raise AssertionError(f"ffmpeg outlived its worker: {alive}")


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_two_workers_share_one_job_without_encoding_a_chunk_twice(own_platform, clips):
    extra = subprocess.Popen(
        [sys.executable, "-m", "services.transcoding.worker"],
        cwd=ROOT,
        env={**own_platform.env, "WORKERS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with own_platform.client() as client:
            video_id, _ = upload(client, clips["long"], chunk_size=CHUNK)
            assert wait_status(client, video_id, timeout=300)["overall"] == "ok"
            chunks = chunks_of(client, video_id)
    finally:
        extra.send_signal(signal.SIGTERM)
        extra.wait(timeout=20)
    assert all(c["encodes"] == 1 for c in chunks), chunks
    processes = {c["done_by"].rsplit(":", 1)[1] for c in chunks if c["kind"] == "video"}
    assert len(processes) == 2, chunks
    assert str(extra.pid) in processes


def test_playlists_grow_as_event_then_end_as_vod(client, clips):
    video_id, _ = upload(client, clips["long"], chunk_size=CHUNK)
    seen: list[list[str]] = []
    while (status := client.get(f"/transcode/status/{video_id}").json())["overall"] != "ok":
        assert status["overall"] in ("queued", "running"), status
        response = client.get(f"/stream/{video_id}/720p/playlist.m3u8")
        if response.status_code == 200:
            media = m3u8.loads(response.text)
            if not media.is_endlist:
                assert media.playlist_type == "event"
                assert response.headers["cache-control"] == "no-cache"
                seen.append([s.uri for s in media.segments])
        time.sleep(0.1)
    assert seen, "the video was playable before it was complete"
    for earlier, later in itertools.pairwise(seen):
        assert later[: len(earlier)] == earlier, "a growing playlist only appends"
    final = m3u8.loads(client.get(f"/stream/{video_id}/720p/playlist.m3u8").text)
    assert final.playlist_type == "vod" and final.is_endlist
    assert [s.uri for s in final.segments] == [
        f"seg_{i:05d}.ts" for i in range(len(final.segments))
    ]
    client.delete(f"/admin/videos/{video_id}")


def test_stop_and_resume_keep_finished_chunks_and_progress_never_drops(client, clips):
    video_id, _ = upload(client, clips["long"], chunk_size=CHUNK)
    progress: list[float] = []

    def sample() -> dict:
        status = client.get(f"/transcode/status/{video_id}").json()
        progress.append(status["progress"])
        return status

    chunks = wait_chunks(client, video_id, lambda cs: len(video_done(cs)) >= 2)
    sample()
    assert client.post(f"/admin/videos/{video_id}/stop").status_code == 200
    stopped = wait_status(client, video_id, {"stopped"}, timeout=5)
    sample()
    finished = set(video_done(chunks_of(client, video_id)))
    assert finished >= set(video_done(chunks))
    time.sleep(1)
    assert sample()["progress"] >= stopped["progress"]
    assert client.post(f"/admin/videos/{video_id}/resume").status_code == 200
    while sample()["overall"] != "ok":
        time.sleep(0.1)
    assert progress == sorted(progress), progress
    assert progress[-1] == 100
    final = {c["index"]: c for c in chunks_of(client, video_id)}
    assert all(final[i]["encodes"] == 1 for i in finished)
    client.delete(f"/admin/videos/{video_id}")


FAILING_FFMPEG = """#!/bin/sh
# Real ffmpeg, except that the chunk starting at 2 s fails while the flag file exists.
case "$*" in
  *"-ss 2.000000 "*) [ -e "{flag}" ] && {{ echo "injected failure" >&2; exit 1; }} ;;
esac
exec ffmpeg "$@"
"""


def test_a_failing_chunk_retries_then_fails_the_job_and_resume_requeues_it(tmp_path, clips):
    flag = tmp_path / "fail-chunk-1"
    flag.touch()
    wrapper = tmp_path / "ffmpeg"
    wrapper.write_text(FAILING_FFMPEG.format(flag=flag))
    wrapper.chmod(0o755)
    platform = Platform(
        tmp_path / "storage",
        FFMPEG_BIN=str(wrapper),
        MAX_ATTEMPTS="3",
        RETRY_BACKOFF_SECONDS="0.2",
    ).start()
    try:
        with platform.client() as client:
            video_id, _ = upload(client, clips["full"], chunk_size=CHUNK)
            failed = wait_status(client, video_id, timeout=120)
            assert failed["overall"] == "failed"
            assert "chunk 1 failed 3 times" in failed["error"]
            assert "injected failure" in failed["error"]
            broken = {c["index"]: c for c in chunks_of(client, video_id)}[1]
            assert broken["status"] == "failed" and broken["encodes"] == 3
            flag.unlink()
            assert client.post(f"/admin/videos/{video_id}/resume").status_code == 200
            assert wait_status(client, video_id, timeout=120)["overall"] == "ok"
            chunks = {c["index"]: c for c in chunks_of(client, video_id)}
            assert chunks[0]["encodes"] == 1, "the finished chunk was kept"
            assert chunks[1]["encodes"] == 4
    finally:
        platform.drop()
