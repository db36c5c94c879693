"""Transcoding service, through the gateway: start, status, stop/resume, failures."""

import contextlib
import os
import signal
import time

from tests.harness import cmdline, unknown_video_id, upload, wait_status
from tests.test_engine import chunks_of

CHUNK = 1024 * 1024


def _running_with_progress(client, video_id, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(f"/transcode/status/{video_id}").json()
        if status["overall"] == "running" and status["progress"] > 0:
            return status
        time.sleep(0.1)
    raise AssertionError(f"{video_id} never ran: {status}")


def test_status_reports_overall_and_per_quality_progress(client, transcoded):
    status = client.get(f"/transcode/status/{transcoded['full']}").json()
    assert status["overall"] == "ok" and status["progress"] == 100
    assert set(status["qualities"]) == {"1080p", "720p", "480p", "360p", "audio"}
    assert all(q == {"status": "ok", "progress": 100} for q in status["qualities"].values())
    assert status["error"] is None


def test_stop_ends_the_running_ffmpeg_and_resume_completes(client, clips, platform):
    """A stop ends the job's encoders, even one that answers no signal but SIGKILL, and the
    unit it held is encoded again on resume, not counted done.

    The encoders are frozen (SIGSTOP) before the stop: a frozen ffmpeg cannot finish its
    chunk by itself, so it is gone only if the platform ended it. (Timing the stop instead
    fails on a loaded machine; how fast a polite stop is lies with the runner's own tests.)"""
    video_id, done = upload(client, clips["long"], chunk_size=CHUNK)
    assert done is not None and done.status_code == 200, done.text
    _running_with_progress(client, video_id)
    frozen = _freeze_a_video_encoder(platform, video_id)
    try:
        held = _held_by_the_frozen_run(client, video_id)
        assert client.post(f"/admin/videos/{video_id}/stop").status_code == 200
        wait_status(client, video_id, {"stopped"}, timeout=60)
        deadline = time.monotonic() + 60
        while platform.ffmpeg_pids(video_id) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert platform.ffmpeg_pids(video_id) == [], "the stop must end every encoder"
    finally:
        for pid in frozen:  # never leave a frozen process behind a failed assertion
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    stopped = {c["index"]: c for c in chunks_of(client, video_id)}
    assert stopped[held]["status"] != "done", stopped[held]
    assert client.get(f"/videos/{video_id}/stopped").json()["stopped"] is True
    resumed = client.post("/transcode/resume", json={"upload_id": video_id})
    assert resumed.json()["resumed"] == [video_id]
    while (status := client.get(f"/transcode/status/{video_id}").json())["overall"] != "ok":
        assert status["overall"] in ("queued", "running"), status
        time.sleep(0.2)
    assert status["progress"] == 100
    final = {c["index"]: c for c in chunks_of(client, video_id)}
    assert final[held]["encodes"] == stopped[held]["encodes"] + 1, final[held]
    assert client.get(f"/stream/{video_id}/master.m3u8").status_code == 200


def _held_by_the_frozen_run(client, video_id, timeout=30) -> int:
    """The video chunk the frozen encoder holds: the one video chunk left running once the
    chunks stop changing. Not the chunk its -ss names: a run goes on from there into the next
    chunks, and one it closed just before the freeze is recorded done meanwhile."""
    deadline = time.monotonic() + timeout
    last, steady = None, 0
    while time.monotonic() < deadline:
        chunks = chunks_of(client, video_id)
        now = [(c["index"], c["status"]) for c in chunks]
        steady = steady + 1 if now == last else 0
        last = now
        running = [c["index"] for c in chunks if c["kind"] == "video" and c["status"] == "running"]
        if steady >= 5 and len(running) == 1:  # a second unchanged
            return running[0]
        time.sleep(0.2)
    raise AssertionError(f"no one video chunk held by the frozen encoder: {last}")


def _freeze_a_video_encoder(platform, video_id, timeout=60) -> list[int]:
    """SIGSTOP the video's encoders (the audio's too, if it runs) until one of them encodes a
    video chunk: the pids frozen. Posters and storyboards are left be."""
    frozen: list[int] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in platform.ffmpeg_pids(video_id):
            argv = cmdline(pid).split()
            if pid in frozen or "hls" not in argv:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
                frozen.append(pid)
                if "-filter_complex" in argv:
                    return frozen
        time.sleep(0.02)
    raise AssertionError(f"no video encoder of {video_id} ran within {timeout} s")


def test_progress_never_goes_backwards_while_running(client, clips):
    # The 4 s clip (three units: opening chunk, chunk, audio): this file runs in all four of
    # make test's passes. The 20 s one, stopped and resumed, is tests/test_engine.py's
    # test_stop_and_resume_keep_finished_chunks_and_progress_never_drops (SQLite, PostgreSQL).
    video_id, _ = upload(client, clips["full"], chunk_size=CHUNK)
    seen = []
    while (status := client.get(f"/transcode/status/{video_id}").json())["overall"] != "ok":
        if status["overall"] == "running":
            seen.append(status["progress"])
        time.sleep(0.1)
    assert len(seen) >= 3
    assert seen == sorted(seen)
    client.delete(f"/admin/videos/{video_id}")


def test_text_file_named_mp4_fails_with_ffprobe_reason(client, clips):
    video_id, done = upload(client, clips["text"], chunk_size=CHUNK)
    assert done is not None and done.status_code == 422
    assert done.json()["error"] == "not_a_video"
    status = wait_status(client, video_id)
    assert status["overall"] == "failed"
    assert "Invalid data" in status["error"] or "no video" in status["error"]
    assert client.get(f"/videos/{video_id}").json()["status"] == "failed"


def test_truncated_file_fails_and_is_not_retried_forever(client, clips):
    video_id, done = upload(client, clips["truncated"], chunk_size=CHUNK)
    assert done is not None and done.status_code in (200, 422)
    status = wait_status(client, video_id, timeout=60)
    assert status["overall"] == "failed" and status["error"]


def test_start_requeues_a_finished_video(client, transcoded):
    video_id = transcoded["tiny"]
    started = client.post("/transcode/start", json={"upload_id": video_id})
    assert started.status_code == 200, started.text
    assert started.json()["overall"] == "queued"
    assert wait_status(client, video_id)["overall"] == "ok"


def test_start_unknown_video_is_404_and_bad_body_is_422(client):
    unknown = {"upload_id": unknown_video_id()}
    assert client.post("/transcode/start", json=unknown).status_code == 404
    assert client.post("/transcode/start", json={}).status_code == 422
    assert client.get("/transcode/status/nope").status_code == 400
