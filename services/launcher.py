"""Start the five services and the gateway (the transcoding service runs the workers), keep
them running, stop them all on Ctrl-C / SIGTERM leaving no process behind.

    python -m services.launcher            # what `make run` does
    python -m services.launcher --wait 60  # wait until every /health answers (start_all.sh)
    python -m services.launcher --init     # only migrate the database and make the admin token
"""

import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from services.core.app import configure_logging
from services.core.auth import ensure_admin_token, token_path
from services.core.db import init_db
from services.core.logs import logging_config
from services.core.settings import SERVICE_NAMES, Settings, get_settings

APPS = {name: f"services.{name}.app:app" for name in SERVICE_NAMES} | {"gateway": "gateway.app:app"}
RESTART_DELAY = 1.0


@dataclass
class Child:
    """One supervised uvicorn process."""

    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = field(default=0.0)
    # Where a multi-process server's workers keep their Prometheus samples (None: one process).
    metrics_dir: Path | None = None

    def start(self) -> None:
        env = None
        if self.metrics_dir is not None:
            # A fresh folder per start: the samples of a previous run's pids must not add up.
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
            self.metrics_dir.mkdir(parents=True)
            env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir)}
        # Own process group: Ctrl-C reaches the launcher, which stops children in order, and a
        # straggler's whole group (ffmpeg included) can be killed at once.
        self.process = subprocess.Popen(self.argv, start_new_session=True, env=env)
        self.started_at = time.monotonic()

    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def kill_leftovers(self) -> None:
        """Kill what a dead server left in its process group (a server killed with -9
        leaves its worker processes running, still holding the port)."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)


def _port(settings: Settings, name: str) -> int:
    port: int = getattr(settings, f"{name}_port")
    return port


def log_config_file(settings: Settings) -> Path:
    """uvicorn's logging configuration (the platform's format), written under the storage."""
    path = Path(settings.storage_dir) / "run" / "logging.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(logging_config(settings)))
    return path


# Where the traffic is files (playlists and segments), granian: its Rust HTTP server sends a
# file by itself (ASGI pathsend) and answers small requests several times faster than uvicorn.
GRANIAN = frozenset({"streaming", "gateway"})
# Two processes each: one Python process is the limit on small requests (playlists), and two
# cores are what a laptop can spare beside the encoders.
GRANIAN_WORKERS = min(2, os.cpu_count() or 1)
GRACEFUL_SECONDS = 5
UVICORN_KEEP_ALIVE_SECONDS = 20
HTTP_PROTOCOL = "services.core.http_protocol:PieceProtocol"


def server_argv(name: str, app: str, settings: Settings, log_config: str) -> list[str]:
    """The command running one service's app: granian for GRANIAN, uvicorn for the rest."""
    common = ["--host", settings.host, "--port", str(_port(settings, name))]
    common += ["--log-level", settings.log_level.lower(), "--log-config", log_config]
    # A line per request only when asked for (ACCESS_LOG): a line for every upload chunk and
    # every playlist request a player makes would be most of the log.
    common += ["--access-log" if settings.access_log else "--no-access-log"]
    if name in GRANIAN:
        return [
            *(sys.executable, "-m", "granian", "--interface", "asgi", *common),
            *("--workers", str(GRANIAN_WORKERS), "--workers-kill-timeout", str(GRACEFUL_SECONDS)),
            # granian holds at most `backpressure` connections a worker, idle keep-alive ones
            # included, and by default that is its backlog (1024) over its workers: past 512
            # a worker, every further viewer waited in the backlog for a connection to close
            # (800 viewers: segment p99 4.4-5.5 s; SERVE_CONNECTIONS 4096: 22-33 ms, nginx's).
            *("--backlog", str(settings.serve_connections)),
            *("--backpressure", str(settings.serve_connections)),
            # HTTP/1.1 only (no browser speaks cleartext HTTP/2; detecting it costs every
            # request), and no websockets here.
            *("--http", "1", "--no-ws", app),
        ]
    return [
        *(sys.executable, "-m", "uvicorn", app, *common),
        *("--timeout-graceful-shutdown", str(GRACEFUL_SECONDS)),
        # Longer than the gateway's pool keeps an idle connection (4 s), so the gateway, not
        # the service, is the side that ends one (uvicorn's default, 5 s, races it).
        *("--timeout-keep-alive", str(UVICORN_KEEP_ALIVE_SECONDS)),
        # uvicorn's httptools protocol reading into one shared buffer, body pieces uncopied.
        *("--http", HTTP_PROTOCOL),
    ]


def children(settings: Settings) -> list[Child]:
    """The processes to run, gateway last."""
    log_config = str(log_config_file(settings))
    run = Path(settings.storage_dir) / "run" / "metrics"
    return [
        Child(
            name,
            server_argv(name, app, settings, log_config),
            # Several worker processes answer /metrics in turn: each must report them all.
            metrics_dir=run / name if name in GRANIAN and GRANIAN_WORKERS > 1 else None,
        )
        for name, app in APPS.items()
    ]


def wait_healthy(
    settings: Settings, timeout: float = 60.0, names: Iterable[str] = APPS
) -> list[str]:
    """Wait until every `/health` (of `names`) answers; return the names still down at the
    timeout."""
    deadline = time.monotonic() + timeout
    pending = list(names)
    while pending and time.monotonic() < deadline:
        pending = [n for n in pending if not _healthy(settings, n)]
        if pending:
            time.sleep(0.2)
    return pending


def _healthy(settings: Settings, name: str) -> bool:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    url = f"http://{host}:{_port(settings, name)}/health"
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def stop_all(procs: list[Child], grace: float = 10.0) -> None:
    """SIGTERM every child, then SIGKILL whatever is still alive after `grace` seconds."""
    for child in procs:
        if child.process and child.process.poll() is None:
            child.process.terminate()
    deadline = time.monotonic() + grace
    for child in procs:
        if child.process is None:
            continue
        try:
            child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.process.pid, signal.SIGKILL)
            child.process.wait()


def supervise(procs: list[Child], stopping: list[bool]) -> None:
    """Restart a child that died (crash, kill -9) until asked to stop."""
    while not stopping:
        for child in procs:
            code = child.exited()
            if code is not None and not stopping:
                print(f"[launcher] {child.name} exited with {code}; restarting", flush=True)
                child.kill_leftovers()
                time.sleep(RESTART_DELAY)
                if not stopping:
                    child.restarts += 1
                    child.start()
        time.sleep(0.2)


def prepare(settings: Settings) -> None:
    """Bring the schema up to date and make sure there is an admin token (saying where)."""
    init_db(settings, migrate=True)  # once, before five processes race to create the tables
    token, generated = ensure_admin_token(settings)
    if generated:
        print(f"[launcher] admin token (stored in {token_path(settings)}, mode 600): {token}")
    elif not settings.admin_token:
        print(f"[launcher] admin token: see {token_path(settings)}", flush=True)


def allow_open_files(settings: Settings) -> None:
    """Raise this process's soft limit on open files towards its hard one, for the servers it
    starts: each process of the streaming service and the gateway may hold SERVE_CONNECTIONS
    sockets, past the 1024 many systems give a process by default."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = settings.serve_connections + 1024  # its files, the database, the services
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def main() -> int:
    """Run the platform in the foreground (`--wait N`: only wait N s for it to be healthy;
    `--init`: only prepare the database and the admin token, as compose's `migrate` does)."""
    configure_logging()
    settings = get_settings()
    if len(sys.argv) == 3 and sys.argv[1] == "--wait":
        down = wait_healthy(settings, timeout=float(sys.argv[2]))
        print("healthy" if not down else f"down: {', '.join(down)}")
        return 1 if down else 0
    prepare(settings)
    if sys.argv[1:] == ["--init"]:
        return 0
    allow_open_files(settings)
    # The schema is current: the services it starts need not each look again (a restarted
    # one neither: only a newer launcher brings newer migrations).
    os.environ["MIGRATE_ON_START"] = "false"
    procs = children(settings)
    stopping: list[bool] = []

    def _stop(signum: int, _frame: object) -> None:
        stopping.append(True)

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    for child in procs:
        child.start()
    down = wait_healthy(settings)
    if down:
        print(f"[launcher] not healthy after 60 s: {', '.join(down)}", flush=True)
    else:
        gateway = f"http://127.0.0.1:{settings.gateway_port}"
        print(f"[launcher] platform ready: {gateway}/  (Ctrl-C stops everything)", flush=True)
    supervise(procs, stopping)
    print("[launcher] stopping", flush=True)
    stop_all(procs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
