"""Running the platform: restarts resume jobs, kill -9 is survived, stopping leaves nothing."""

import os
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from services.core.settings import Settings
from services.launcher import allow_open_files
from tests.harness import ROOT, Platform, ffmpeg_pids, free_ports, upload, wait_status

CHUNK = 1024 * 1024


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid and stat[0] != "Z":
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_kill_9_of_the_transcoding_service_mid_job_resumes_and_finishes(own_platform, clips):
    with own_platform.client() as client:
        video_id, _ = upload(client, clips["long"], chunk_size=CHUNK)
        holder = _running_chunk_worker(client, video_id, own_platform)
        service_pid = int(holder.rsplit(":", 1)[1])
        os.kill(service_pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while own_platform.ffmpeg_pids() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert own_platform.ffmpeg_pids() == [], "ffmpeg must die with its worker"
        final = wait_status(client, video_id, timeout=240)
        assert final["overall"] == "ok", final
        chunks = client.get(f"/admin/videos/{video_id}/status").json()["chunks"]
        assert any(c["done_by"] != holder for c in chunks), "the restarted service finished it"
        assert client.get(f"/stream/{video_id}/master.m3u8").status_code == 200


def _running_chunk_worker(client, video_id, platform, timeout=60) -> str:
    """The worker of a running chunk, at a moment its ffmpeg is encoding (a chunk is still
    `running` for the second its output is checked and published after ffmpeg ends)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        chunks = client.get(f"/admin/videos/{video_id}/status").json()["chunks"]
        running = [c["worker"] for c in chunks if c["status"] == "running" and c["worker"]]
        if running and platform.ffmpeg_pids(video_id):
            return str(running[0])
        time.sleep(0.05)
    raise AssertionError(f"no chunk of {video_id} ever ran")


def test_restarting_the_platform_resumes_a_running_job(tmp_path, clips):
    platform = Platform(tmp_path / "storage").start()
    with platform.client() as client:
        video_id, _ = upload(client, clips["long"], chunk_size=CHUNK)
        wait_status(client, video_id, {"running"})
    platform.stop()
    assert platform.ffmpeg_pids() == []
    platform.start()
    try:
        with platform.client() as client:
            assert wait_status(client, video_id, timeout=240)["overall"] == "ok"
    finally:
        platform.drop()


def test_ctrl_c_stops_every_process(own_platform):
    launcher = own_platform.process
    assert launcher is not None
    children = _children(launcher.pid)
    assert len(children) == 6, "five services and the gateway"
    launcher.send_signal(signal.SIGINT)
    launcher.wait(timeout=20)
    deadline = time.monotonic() + 5
    while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in children)
    assert ffmpeg_pids(str(own_platform.storage)) == []


def test_start_all_returns_healthy_and_stop_all_stops(tmp_path):
    ports = dict(
        zip(
            ("GATEWAY", "UPLOAD", "TRANSCODING", "METADATA", "STREAMING", "ADMIN"),
            free_ports(6),
            strict=True,
        )
    )
    env = {
        **os.environ,
        "STORAGE_DIR": str(tmp_path / "storage"),
        **{f"{k}_PORT": str(v) for k, v in ports.items()},
    }
    started = subprocess.run(
        ["bash", "scripts/start_all.sh"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert started.returncode == 0, started.stdout + started.stderr
    pid = int((tmp_path / "storage" / "run" / "platform.pid").read_text())
    try:
        for port in ports.values():
            assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
        assert (tmp_path / "storage" / "videos.db").exists()
    finally:
        stopped = subprocess.run(
            ["bash", "scripts/stop_all.sh"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert stopped.returncode == 0, stopped.stderr
    assert not _alive(pid)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{ports['GATEWAY']}/health")


def test_init_only_migrates_and_makes_the_admin_token(tmp_path):
    """`--init` (compose's one-shot `migrate`) prepares the storage and exits: no server. It
    migrates whatever MIGRATE_ON_START says (that setting is for the services)."""
    env = {
        **os.environ,
        "STORAGE_DIR": str(tmp_path),
        "ADMIN_TOKEN": "",
        "DATABASE_URL": "",
        "MIGRATE_ON_START": "false",
    }
    done = subprocess.run(
        [sys.executable, "-m", "services.launcher", "--init"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    token = (tmp_path / "admin_token").read_text().strip()
    assert token and token in done.stdout
    assert (tmp_path / "videos.db").stat().st_size > 0
    with sqlite3.connect(tmp_path / "videos.db") as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchone()


# More than granian's own default lets in (its backlog, 1024, over its workers): with it, the
# connection after those waited in the backlog, unanswered, until one of them closed.
IDLE_VIEWERS = 1100


@pytest.mark.parametrize("service", ["gateway", "streaming"])
def test_a_file_server_answers_while_many_idle_connections_stay_open(platform, service):
    """Players keep a connection open between segments: a crowd of them, idle, must not keep
    the next viewer out."""
    allow_open_files(Settings(serve_connections=IDLE_VIEWERS))  # this test holds as many
    base = platform.url if service == "gateway" else platform.service_url(service)
    parts = urlsplit(base)
    idle: list[socket.socket] = []
    try:
        for _ in range(IDLE_VIEWERS):
            idle.append(socket.create_connection((parts.hostname, parts.port), timeout=10))
        answer = httpx.get(f"{base}/health", timeout=10)
        assert answer.status_code == 200, answer.text
        # The last one opened was accepted too: it is answered on its own connection.
        idle[-1].sendall(f"GET /health HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode())
        assert idle[-1].recv(64).startswith(b"HTTP/1.1 200")
    finally:
        for sock in idle:
            sock.close()


def test_the_launcher_raises_a_low_open_file_limit_for_the_connections_it_serves():
    """A system's usual soft limit (1024 files) is under one file server's SERVE_CONNECTIONS:
    the launcher raises it, within the hard limit, for the servers it starts."""
    code = (
        "import resource\n"
        "from services.core.settings import Settings\n"
        "from services.launcher import allow_open_files\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
        "allow_open_files(Settings(serve_connections=2048))\n"
        "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0], hard)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    soft, hard = int(out[0]), int(out[1])
    wanted = 2048 + 1024
    assert soft == (wanted if hard == resource.RLIM_INFINITY else min(wanted, hard))
