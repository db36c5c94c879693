"""serving: one ~3 MB HLS segment and its playlist under 50 concurrent connections for 5 s,
from the streaming service and through the gateway, against nginx serving the same files.

    .venv/bin/python scripts/bench_serving.py        # alone, about 1.2 minutes
    .venv/bin/python scripts/bench.py serving        # as one of the benchmarks

ffmpeg renders a 6 s 1280x720 clip at 4 Mb/s into one ~3.3 MB MPEG-TS segment and its VOD
playlist, written into a real platform's storage folder exactly where a transcoded video's
720p rung lives (with its master playlist and the marker of a finished presentation), so the
platform serves them through its real routes. The platform is started as `make run` starts it
(tests/harness.py: the launcher on free ports).

The baseline is Debian's nginx-light, started here with `sendfile on` (two workers, access log
off, as the platform keeps none) serving the same storage folder; the load generator is
Debian's wrk, `wrk -t2 -c50 -d5s`, the same for every target. Both are installed with
apt-get when missing (as root). Per kind the runs alternate, nginx, streaming service, nginx,
gateway, nginx (each after a 1 s warm-up), and each platform figure's baseline is the mean of
the nginx runs just before and just after it: on a shared machine the load changes within a
minute, and this is nginx at the time the platform was measured. Goals (issue 6): segments
at least 90 % of nginx's bytes per second, playlists at least 30 % of its requests per second.
Every target's answer is checked (status, bytes, Content-Type) before it is measured, and a
run with any error or non-2xx answer is refused.

Then an API answer (`GET /videos?limit=5`: a database query and a few hundred bytes of JSON)
through the gateway, its baseline the mean of the same request straight from the metadata
service just before and just after: what the gateway's relay costs a request, in requests per
second and in the gateway's own CPU per relayed answer beside the service's.

Each run also prints the server's CPU time per request (its whole process tree: nginx's
workers, granian's workers), which depends far less on what else the machine is doing than
the rates do; and the 1-minute load average before and after.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services import launcher  # noqa: E402
from services.core import ids  # noqa: E402
from services.core.settings import Settings  # noqa: E402
from services.core.storage import Storage  # noqa: E402
from tests.harness import Platform, free_ports  # noqa: E402

Row = Callable[[str, float | str, float | str, str], None]

RUNG = "720p"
# The streaming service with its segment cache off (SEGMENT_CACHE_MB=0): a cold segment's cost.
UNCACHED = "streaming, no cache"
SEGMENT = "seg_00000.ts"
CLIP_SECONDS = 6
# Ten runs of this: 5 s windows keep the full bench within its 10 minutes (each platform run
# is bracketed by nginx runs, which is what absorbs the machine's drift, not the window).
DURATION = "5s"
WARMUP = "1s"
CONNECTIONS = 50
THREADS = 2
GOALS = {"segment": 0.90, "playlist": 0.30}
# The API answer measured through the gateway and straight from its service (API: whether;
# bench.py --quick leaves it out).
API_PATH = "/videos?limit=5"
API = True
MEDIA_TYPES = {"segment": "video/mp2t", "playlist": "application/vnd.apple.mpegurl"}
# wrk prints its own summary; this adds one exact line: requests, bytes, microseconds, errors.
ERRORS = ("connect errors", "read errors", "write errors", "non-2xx/3xx answers", "timeouts")
REPORT_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d %d %d\\n", summary.requests, summary.bytes,
    summary.duration, e.connect, e.read, e.write, e.status, e.timeout))
end
"""
NGINX_CONF = """
{user}worker_processes 2;
daemon off;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  client_body_temp_path {work}/body;
  proxy_temp_path {work}/proxy;
  fastcgi_temp_path {work}/fastcgi;
  uwsgi_temp_path {work}/uwsgi;
  scgi_temp_path {work}/scgi;
  types {{ application/vnd.apple.mpegurl m3u8; video/mp2t ts; }}
  default_type application/octet-stream;
  server {{
    listen 127.0.0.1:{port};
    root {root};
  }}
}}
"""


@dataclass(frozen=True)
class Load:
    """What wrk measured against one URL, and the CPU the server used meanwhile."""

    requests: int
    bytes: int
    seconds: float
    cpu_seconds: float

    def figure(self, kind: str) -> float:
        """The figure the goal is about: MB/s for segments, requests/s for playlists."""
        return self.megabytes_per_second if kind == "segment" else self.per_second

    def describe(self) -> str:
        return (
            f"{self.per_second:9.0f} req/s {self.megabytes_per_second:8.1f} MB/s "
            f"{self.cpu_seconds / self.requests * 1e6:7.1f} us CPU/request"
        )

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds

    @property
    def megabytes_per_second(self) -> float:
        return self.bytes / self.seconds / 1e6


def install_tools() -> tuple[str, str]:
    """(wrk, nginx) paths; Debian's wrk and nginx-light installed with apt-get when missing."""
    found = shutil.which("wrk"), shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if all(found):
        return found[0] or "", found[1] or ""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SystemExit("serving: needs wrk and nginx-light (apt-get install wrk nginx-light)")
    print("serving: installing wrk and nginx-light with apt-get", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with _no_service_starts():
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "wrk", "nginx-light"],
            env=env,
            check=True,
        )
    _stop_system_nginx()
    return _required("wrk"), _required("nginx")


@contextmanager
def _no_service_starts() -> Iterator[None]:
    """Debian's policy-rc.d hook (exit 101: 'action forbidden'), so the package's install
    script does not start nginx as a system service; left alone if one is already there."""
    policy = Path("/usr/sbin/policy-rc.d")
    if policy.exists():
        yield
        return
    policy.write_text("#!/bin/sh\n# bench_serving: no service starts while installing\nexit 101\n")
    policy.chmod(0o755)
    try:
        yield
    finally:
        policy.unlink()


def _stop_system_nginx() -> None:
    """Stop a system nginx the install started anyway (systemd ignores policy-rc.d)."""
    if shutil.which("systemctl") and Path("/run/systemd/system").exists():
        subprocess.run(["systemctl", "disable", "--now", "nginx"], check=False)
    pid_file = Path("/run/nginx.pid")
    if pid_file.exists():
        subprocess.run([_required("nginx"), "-s", "quit"], check=False)


def _required(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin")
    if not path:
        raise SystemExit(f"serving: {name} is still missing after apt-get install")
    return path


def write_video(storage: Storage) -> tuple[str, Path, Path]:
    """A video's 720p rung as the transcoder leaves it; returns (id, segment, playlist)."""
    video_id = ids.new_video_id()
    rung = storage.rung_dir(video_id, RUNG)
    rung.mkdir(parents=True)
    video = f"testsrc2=size=1280x720:rate=30:duration={CLIP_SECONDS},noise=alls=10:allf=t"
    audio = f"sine=frequency=440:sample_rate=48000:duration={CLIP_SECONDS}"
    # fmt: off
    subprocess.run(
        [
            "ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", video, "-f", "lavfi", "-i", audio,
            "-c:v", "libx264", "-preset", "ultrafast", "-b:v", "4M", "-maxrate", "4M",
            "-bufsize", "8M", "-g", "60", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k",
            # One 6 s segment: the production segment length.
            "-f", "hls", "-hls_time", str(CLIP_SECONDS), "-hls_playlist_type", "vod",
            "-hls_segment_filename", str(rung / "seg_%05d.ts"), str(rung / "playlist.m3u8"),
        ],
        check=True,
    )
    # fmt: on
    storage.master_path(video_id).write_text(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-INDEPENDENT-SEGMENTS\n"
        '#EXT-X-STREAM-INF:BANDWIDTH=4400000,RESOLUTION=1280x720,CODECS="avc1.42c01f,mp4a.40.2"\n'
        f"{RUNG}/playlist.m3u8\n"
    )
    storage.complete_marker(video_id).touch()
    return video_id, rung / SEGMENT, rung / "playlist.m3u8"


@contextmanager
def nginx(binary: str, root: Path, work: Path) -> Iterator[tuple[str, int]]:
    """nginx serving `root` on a free port (sendfile on); yields its base URL and pid."""
    work.mkdir(parents=True, exist_ok=True)
    (port,) = free_ports(1)
    # As root, nginx's workers would run as `nobody`, who cannot read a private temp folder.
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = work / "nginx.conf"
    conf.write_text(NGINX_CONF.format(user=user, work=work, port=port, root=root))
    process = subprocess.Popen(
        [binary, "-c", str(conf), "-p", str(work)], stderr=subprocess.DEVNULL
    )
    try:
        _wait_port(port, process)
        yield f"http://127.0.0.1:{port}", process.pid
    finally:
        process.send_signal(signal.SIGQUIT)  # graceful: workers finish, then exit
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_port(port: int, process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"serving: nginx exited with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit("serving: nginx did not listen in time")


def check(url: str, expected: bytes, media_type: str) -> None:
    """The target answers 200 with the file's bytes and type: the load measures that answer."""
    response = httpx.get(url, timeout=30)
    if response.status_code != 200 or response.content != expected:
        raise SystemExit(f"serving: {url} answered {response.status_code}, not the file")
    if response.headers.get("content-type") != media_type:
        raise SystemExit(f"serving: {url} said {response.headers.get('content-type')}")


def wrk(binary: str, url: str, script: Path, duration: str | None = None) -> tuple[int, int, float]:
    """One wrk run (-t2 -c50, DURATION long unless `duration`) against `url`: (requests,
    bytes, seconds); refused on errors."""
    duration = duration or DURATION
    done = subprocess.run(
        [
            *(binary, f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{duration}"),
            *("--timeout", "5s", "-s", str(script), url),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"serving: no result from wrk: {done.stdout[-500:]}{done.stderr[-500:]}")
    requests, size, micros, *errors = (int(x) for x in line.split()[1:])
    if any(errors) or not requests:
        counts = ", ".join(f"{n} {what}" for n, what in zip(errors, ERRORS, strict=True) if n)
        raise SystemExit(f"serving: {counts} out of {requests} requests on {url}")
    return requests, size, micros / 1e6


def measure(binary: str, url: str, script: Path, server_pid: int) -> Load:
    """A short warm-up (connections, page cache, the server's first requests), then the run."""
    wrk(binary, url, script, duration=WARMUP)
    before = tree_cpu_seconds(server_pid)
    requests, size, seconds = wrk(binary, url, script)
    return Load(requests, size, seconds, tree_cpu_seconds(server_pid) - before)


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds used so far by `root` and its live descendants (/proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    parents, used = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        parents[int(entry.name)] = int(fields[1])
        used[int(entry.name)] = (int(fields[11]) + int(fields[12])) / ticks
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier.extend(children)
    return sum(used.get(pid, 0.0) for pid in tree)


def server_pid(launcher_pid: int, port: int) -> int:
    """The launcher's child serving `port` (found by its command line)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if ppid == launcher_pid and str(port).encode() in argv:
            return int(entry.name)
    raise SystemExit(f"serving: no process of the platform listens on {port}")


def verdict(kind: str, ratio: float) -> str:
    """The ratio and whether it meets the issue's goal for this kind."""
    return f"{ratio:.3f} {'met' if ratio >= GOALS[kind] else 'MISS'}"


def bench(work: Path, row: Row, wrk_bin: str, nginx_bin: str) -> None:
    """Start the platform and nginx on the same files, measure every target, print the rows."""
    platform = Platform(work / "storage").start()
    uncached: subprocess.Popen[bytes] | None = None
    try:
        storage = Storage(platform.storage)
        video_id, segment, playlist = write_video(storage)
        script = work / "report.lua"
        script.write_text(REPORT_LUA)
        assert platform.process is not None
        pids = {
            name: server_pid(platform.process.pid, platform.ports[name])
            for name in ("streaming", "gateway")
        }
        uncached, uncached_url = _streaming_without_cache(platform)
        with nginx(nginx_bin, storage.root / "hls", work / "nginx") as (nginx_url, nginx_pid):
            for kind, path in (("segment", segment), ("playlist", playlist)):
                relative = path.relative_to(storage.hls_dir(video_id)).as_posix()
                targets = {
                    "nginx": (f"{nginx_url}/{video_id}/{relative}", nginx_pid),
                    "streaming service": (
                        f"{platform.service_url('streaming')}/stream/{video_id}/{relative}",
                        pids["streaming"],
                    ),
                    "gateway": (f"{platform.url}/stream/{video_id}/{relative}", pids["gateway"]),
                }
                if kind == "segment":
                    targets[UNCACHED] = (
                        f"{uncached_url}/stream/{video_id}/{relative}",
                        uncached.pid,
                    )
                for url, _ in targets.values():
                    check(url, path.read_bytes(), MEDIA_TYPES[kind])
                loads = _measure_kind(kind, wrk_bin, script, targets)
                _rows(row, kind, loads, path.stat().st_size / 1e6)
        if API:
            _measure_api(row, wrk_bin, script, platform, pids["gateway"])
    finally:
        if uncached is not None:
            uncached.send_signal(signal.SIGTERM)
            try:
                uncached.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(uncached.pid, signal.SIGKILL)
                uncached.wait()
        platform.drop()


def _streaming_without_cache(platform: Platform) -> tuple[subprocess.Popen[bytes], str]:
    """A second streaming service on the platform's storage and database, started as the
    launcher starts it, with SEGMENT_CACHE_MB=0: every segment read from its file (pathsend),
    what a segment nobody else watches costs."""
    (port,) = free_ports(1)
    env = {**platform.env, "STREAMING_PORT": str(port), "SEGMENT_CACHE_MB": "0"}
    settings = Settings(storage_dir=platform.storage, streaming_port=port, segment_cache_mb=0)
    log_config = str(launcher.log_config_file(settings))
    argv = launcher.server_argv("streaming", launcher.APPS["streaming"], settings, log_config)
    with (platform.storage / "uncached-streaming.log").open("ab") as log:
        process = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    if launcher.wait_healthy(settings, names=["streaming"]):
        process.kill()
        raise SystemExit("serving: the uncached streaming service did not start in 60 s")
    return process, f"http://127.0.0.1:{port}"


def _measure_kind(
    kind: str, wrk_bin: str, script: Path, targets: dict[str, tuple[str, int]]
) -> dict[str, tuple[Load, float]]:
    """Each platform target between two nginx runs: {target: (its load, nginx's figure)}."""
    order = ["nginx", "streaming service", "nginx", "gateway", "nginx"]
    if UNCACHED in targets:
        order += [UNCACHED, "nginx"]
    runs: list[tuple[str, Load]] = []
    for name in order:
        url, pid = targets[name]
        runs.append((name, measure(wrk_bin, url, script, pid)))
        print(f"  {kind:<8} {name:<17} {runs[-1][1].describe()}", flush=True)
    # The mean of the nginx runs just before and just after: nginx at the time ours ran.
    return {
        name: (load, (runs[i - 1][1].figure(kind) + runs[i + 1][1].figure(kind)) / 2)
        for i, (name, load) in enumerate(runs)
        if name != "nginx"
    }


def _measure_api(row: Row, wrk_bin: str, script: Path, platform: Platform, gateway: int) -> None:
    """An API answer (the metadata service's list of videos, a database query and a few
    hundred bytes of JSON) through the gateway, between two runs straight from the service:
    what the gateway's relay costs a request, in requests/s and in its own CPU beside the
    service's (each run counts the CPU of the server it asks, as the other kinds do)."""
    assert platform.process is not None
    service = server_pid(platform.process.pid, platform.ports["metadata"])
    direct, relayed = platform.service_url("metadata") + API_PATH, platform.url + API_PATH
    for url in (direct, relayed):
        got = httpx.get(url, timeout=30)
        if got.status_code != 200 or "application/json" not in got.headers["content-type"]:
            raise SystemExit(f"serving: {url} answered {got.status_code}: {got.text[:200]}")
    runs = []
    for name, url, pid in (
        ("metadata service", direct, service),
        ("gateway", relayed, gateway),
        ("metadata service", direct, service),
    ):
        runs.append(measure(wrk_bin, url, script, pid))
        print(f"  api      {name:<17} {runs[-1].describe()}", flush=True)
    before, through, after = runs
    base = (before.per_second + after.per_second) / 2
    ratio = through.per_second / base
    row(
        "API answer, through the gateway vs the service (req/s)",
        through.per_second,
        base,
        f"{ratio:.3f}",
    )
    relay = through.cpu_seconds / through.requests
    answer = (before.cpu_seconds + after.cpu_seconds) / (before.requests + after.requests)
    row(
        "  gateway's CPU per relayed answer vs the service's (us)",
        relay * 1e6,
        answer * 1e6,
        f"{relay / answer:.2f}x",
    )


def _rows(row: Row, kind: str, loads: dict[str, tuple[Load, float]], size_mb: float) -> None:
    for name, (load, base) in loads.items():
        ours = load.figure(kind)
        if kind == "segment":
            figure = f"segment {size_mb:.1f} MB, {name} (MB/s)"
        else:
            figure = f"playlist, {name} (req/s)"
        # The goal is the platform as it runs; the cache-off figure is for comparison.
        ratio = f"{ours / base:.3f}" if name == UNCACHED else verdict(kind, ours / base)
        row(figure, ours, base, ratio)


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def run(work: Path, row: Row) -> None:
    """The serving benchmark: prints one row per (kind, path), nginx as the baseline."""
    work.mkdir(parents=True, exist_ok=True)
    wrk_bin, nginx_bin = install_tools()
    print(
        f"serving: wrk -t{THREADS} -c{CONNECTIONS} -d{DURATION} per target; baseline nginx "
        f"(sendfile on); goals: segments >= {GOALS['segment']:.2f}, playlists >= "
        f"{GOALS['playlist']:.2f} of nginx; load average {load_average()}",
        flush=True,
    )
    bench(work, row, wrk_bin, nginx_bin)
    print(f"serving: load average after {load_average()}", flush=True)


if __name__ == "__main__":
    from bench_table import row  # scripts/ is on sys.path when this file runs as a script

    print(f"{'figure':<46} {'platform':>12} {'nginx':>12} {'ratio':>10}")
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        run(Path(tmp), row)
