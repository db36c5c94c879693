"""The chunked engine: resume continues, many workers share a job, playlists grow in order."""

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import m3u8

from tests.harness import ROOT, Platform, pg_connect, upload, wait_status

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
        assert_reencoded_only_in_flight(own_platform, video_id, final, in_flight, done_before)
        assert rung_timeline(client, video_id) == expected


def kill_9_worker_mid_job(
    platform, client, video_id: str, timeout: float = 120
) -> tuple[list[dict], set[int]]:
    """kill -9 of the process running the job's units once two video chunks are done and
    another is running: (the units it held, the video chunks done) at its death.

    What it held is read once its death has settled, before anything can take it over:
    - the launcher is stopped (SIGSTOP) first, so that no worker restarts meanwhile;
    - the worker is stopped, its ffmpeg and its database sessions noted, then killed;
    - on PostgreSQL its sessions are waited out: a COMMIT it sent just before it stopped
      (the claim of its next unit) may still be in the server's hands, and a read right
      after the stop could then miss a unit it held.
    (CI's "2 encoded again, 1 in flight" came from elsewhere: the S3 upload's cleanup took a
    running encode's scratch, which the failure's job_log showed. This window was not seen.)"""
    chunks = wait_chunks(
        client,
        video_id,
        lambda cs: len(video_done(cs)) >= 2 and any(c["status"] == "running" for c in cs),
        timeout=timeout,
    )
    running = next(c for c in chunks if c["status"] == "running")
    worker_pid = int(running["worker"].rsplit(":", 1)[1])
    assert platform.process is not None
    launcher = platform.process.pid
    os.kill(launcher, signal.SIGSTOP)
    try:
        os.kill(worker_pid, signal.SIGSTOP)
        encoders = platform.ffmpeg_pids()
        sessions = database_sessions(platform, worker_pid)
        os.kill(worker_pid, signal.SIGKILL)
        _wait_gone([worker_pid, *encoders])
        wait_sessions_over(platform, sessions)
        chunks = chunks_of(client, video_id)
    finally:
        os.kill(launcher, signal.SIGCONT)
    assert encoders
    # Held by any of its workers (video and audio: ids `host/name:pid`).
    in_flight = [
        c
        for c in chunks
        if c["status"] == "running" and c["worker"].rsplit(":", 1)[1] == str(worker_pid)
    ]
    assert in_flight, chunks
    return in_flight, set(video_done(chunks))


def assert_reencoded_only_in_flight(
    platform: Platform,
    video_id: str,
    final: list[dict],
    in_flight: list[dict],
    done_before: set[int],
) -> None:
    """Every unit done, those done before the kill encoded once, and no more encodes again
    than units the dead worker held; a failure says what the worker logged of the job."""
    repeated = {c["index"]: c["encodes"] for c in final if c["encodes"] > 1}

    def why() -> str:  # an assert's message is built only when it fails: the log is read then
        held = sorted(c["index"] for c in in_flight)
        return (
            f"encoded again {repeated}, held at the kill {held}, done before "
            f"{sorted(done_before)}; units {final}; the worker's log of the job:\n"
            + job_log(platform, video_id)
        )

    assert all(c["status"] == "done" for c in final), why()
    assert not done_before & set(repeated), why()
    assert sum(n - 1 for n in repeated.values()) <= len(in_flight), why()


def job_log(platform: Platform, video_id: str, most: int = 80) -> str:
    """What the workers logged about `video_id`, and the launcher's lines: the last `most`."""
    lines = platform.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    worker = '"logger": "services.transcoding'
    about = [ln for ln in lines if (video_id in ln and worker in ln) or "[launcher]" in ln]
    return "\n".join(about[-most:])


def database_sessions(platform: Platform, pid: int) -> list[int]:
    """The PostgreSQL server processes serving process `pid`'s connections (none on SQLite):
    its TCP sockets to the server, found by inode, then their client ports."""
    if not platform.database_url:
        return []
    from sqlalchemy.engine import make_url

    url = make_url(platform.database_url)
    server_port = url.port or 5432
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    ports = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == server_port:
                ports.append(int(local.rsplit(":", 1)[1], 16))
    assert ports, "the worker holds no connection to the database server"
    with pg_connect(platform.database_url) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND client_port = ANY(%s)",
            (url.database, ports),
        ).fetchall()
    return [row[0] for row in rows]


def wait_sessions_over(platform: Platform, sessions: list[int], timeout: float = 30) -> None:
    """Wait until the server processes `sessions` have exited: whatever they were committing
    is then committed and visible, or rolled back."""
    if not sessions:
        return
    deadline = time.monotonic() + timeout
    with pg_connect(platform.database_url) as conn:
        while True:
            (left,) = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (sessions,)
            ).fetchone()
            if not left:
                return
            assert time.monotonic() < deadline, f"{left} sessions of the dead worker remain"
            time.sleep(0.02)


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
        # An ffmpeg per chunk, so the one starting at 2 s is chunk 1's: a run from chunk 0
        # would encode it without a start of its own (see tests/transcoding/test_worker_runs).
        CHUNK_RUNS="false",
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
