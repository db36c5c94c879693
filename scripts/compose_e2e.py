"""The containers end to end (scripts/test_compose.sh runs this; `make test-compose`).

Builds the image, starts docker-compose.yml's postgres profile with three workers under its own
project name, uploads a clip through the gateway's published port on 127.0.0.1 in chunks
(restarting the upload service's container halfway, then resuming with what it misses),
sees it play while it is still encoding, `docker kill`s a worker that is encoding a chunk, sees
the job finish anyway (chunks done by several worker containers, no more repeated encodes than
chunks the dead worker held), then `docker compose down -v` and checks that no container,
network or volume is left. Prints how long each phase took.

Only the standard library: it runs before any virtual environment exists. Environment: what
docker-compose.yml reads (BASE_IMAGE, POSTGRES_IMAGE, CA_BUNDLE, ...), COMPOSE_TEST_PROJECT,
COMPOSE_TEST_S3=1 to add the s3 profile (SeaweedFS) and point STORAGE_URL at it (the platform
reads it once the S3 storage backend, issue 13, is in; until then media stays on the volume).
"""

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parents[1]
PROJECT = os.environ.get("COMPOSE_TEST_PROJECT", "vp-compose-test")
WORKERS = 3
WITH_S3 = os.environ.get("COMPOSE_TEST_S3") == "1"
PROFILES = ["postgres", "s3"] if WITH_S3 else ["postgres"]
S3_ENV = {
    "STORAGE_URL": "s3://videos/media",
    "AWS_ENDPOINT_URL": "http://seaweedfs:8333",
    "AWS_ACCESS_KEY_ID": "videoplatform",
    "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(24),
}
CHUNK = 1024 * 1024
# Long enough for several time chunks (6 s, then 18 s each), small enough to encode quickly.
CLIP_SECONDS = 60
JOB_TIMEOUT = 900
TIMES: list[tuple[str, float]] = []
T = TypeVar("T")


class Failed(Exception):
    """A check of the run did not hold."""


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Time one phase and print it as it ends."""
    start = time.monotonic()
    print(f"compose-test: {name} ...", flush=True)
    yield
    seconds = time.monotonic() - start
    TIMES.append((name, seconds))
    print(f"compose-test: {name}: {seconds:.1f} s", flush=True)


def compose(*args: str, capture: bool = False, quiet: bool = False) -> str:
    """Run `docker compose` on this project's profiles (raises when it fails)."""
    progress = ["--progress", "quiet"] if quiet else []
    profiles = [arg for name in PROFILES for arg in ("--profile", name)]
    argv = ["docker", "compose", *progress, "-p", PROJECT, *profiles, *args]
    done = subprocess.run(argv, cwd=ROOT, check=True, text=True, capture_output=capture)
    return done.stdout if capture else ""


def free_port() -> int:
    """A port nobody listens on now, on 127.0.0.1 (the gateway is published there)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Gateway:
    """HTTP to the published gateway port (the only way in, as for a user)."""

    def __init__(self, port: int, token: str) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.token = token

    def call(self, method: str, path: str, body: bytes | None = None, **headers: str) -> bytes:
        """The answer's body; raises Failed on a status other than 2xx."""
        request = urllib.request.Request(self.base + path, data=body, method=method)
        for name, value in headers.items():
            request.add_header(name.replace("_", "-"), value)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                data: bytes = response.read()
                return data
        except urllib.error.HTTPError as exc:
            raise Failed(f"{method} {path}: {exc.code} {exc.read()[:300]!r}") from exc

    def json(self, method: str, path: str, body: bytes | None = None, **headers: str) -> dict:
        """The answer as JSON."""
        answer: dict = json.loads(self.call(method, path, body, **headers))
        return answer

    def admin(self, path: str) -> dict:
        """An admin API answer (the admin token)."""
        return self.json("GET", path, Authorization=f"Bearer {self.token}")


def make_clip(folder: Path) -> Path:
    """A 640x360 test clip with sound, rendered by the image's own ffmpeg (lavfi)."""
    clip = folder / "clip.mp4"
    lavfi = [
        *("-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=30:duration={CLIP_SECONDS}"),
        *("-f", "lavfi", "-i", f"sine=frequency=440:duration={CLIP_SECONDS}"),
    ]
    encode = ["-c:v", "libx264", "-preset", "ultrafast", "-crf", "30", "-g", "60"]
    encode += ["-c:a", "aac", "-shortest"]
    user = f"{os.getuid()}:{os.getgid()}"
    docker = ["docker", "run", "--rm", "--user", user, "-v", f"{folder}:/out", "--entrypoint"]
    image = os.environ.get("PLATFORM_IMAGE", "videoplatform:latest")
    argv = [*docker, "ffmpeg", image, "-v", "error", *lavfi, *encode, "/out/clip.mp4"]
    subprocess.run(argv, check=True)
    return clip


FORM = "application/x-www-form-urlencoded"


def upload(gateway: Gateway, clip: Path) -> str:
    """Upload in raw chunks through the gateway (the README's chunked API), restarting the
    upload service's container halfway and resuming from what it says is missing; the id."""
    data = clip.read_bytes()
    chunks = (len(data) + CHUNK - 1) // CHUNK
    if chunks < 2:
        raise Failed(f"the clip is {len(data)} bytes: too small to restart halfway")
    form = f"filename=clip.mp4&total_chunks={chunks}&total_size={len(data)}&chunk_size={CHUNK}"
    upload_id = str(
        gateway.json("POST", "/upload/init", form.encode(), Content_Type=FORM)["upload_id"]
    )
    send_chunks(gateway, upload_id, data, range(chunks // 2))
    compose("restart", "upload", quiet=True)
    missing = wait_for("the upload service back", lambda: _missing(gateway, upload_id), 120)
    if missing != list(range(chunks // 2, chunks)):
        raise Failed(f"after the restart the server misses chunks {missing}")
    send_chunks(gateway, upload_id, data, missing)
    gateway.call("POST", "/upload/complete", f"upload_id={upload_id}".encode(), Content_Type=FORM)
    print(f"compose-test: {chunks} chunks, {len(missing)} sent after the upload service restarted")
    return upload_id


def send_chunks(gateway: Gateway, upload_id: str, data: bytes, indexes: Iterable[int]) -> None:
    """Send these chunks of `data` as raw bodies, their place in the URL."""
    for index in indexes:
        part = data[index * CHUNK : (index + 1) * CHUNK]
        path = f"/upload/chunk?upload_id={upload_id}&index={index}"
        gateway.call("POST", path, part, Content_Type="application/octet-stream")


def _missing(gateway: Gateway, upload_id: str) -> list[int] | None:
    """The chunks the upload service misses, or None while it cannot answer."""
    try:
        missing: list[int] = gateway.json("GET", f"/upload/{upload_id}")["missing"]
    except (Failed, OSError):
        return None
    return missing


def wait_for(
    what: str, check: Callable[[], T | None], timeout: float = JOB_TIMEOUT, every: float = 0.5
) -> T:
    """Poll `check()` until it returns something true; that value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise Failed(f"timed out after {timeout:.0f} s waiting for {what}")


def playable_while_encoding(gateway: Gateway, video_id: str) -> None:
    """The master playlist answers while the job is still running."""

    def playable() -> dict | None:
        status = gateway.json("GET", f"/transcode/status/{video_id}")
        if status["overall"] in ("failed", "stopped"):
            raise Failed(f"job ended {status['overall']}: {status.get('error')}")
        return status if status.get("playable") else None

    status = wait_for("the first playable chunk", playable)
    master = gateway.call("GET", f"/stream/{video_id}/master.m3u8").decode()
    if not master.startswith("#EXTM3U"):
        raise Failed(f"master.m3u8 is not a playlist: {master[:200]!r}")
    if status["overall"] == "ok":
        raise Failed("the job was already done: playback while encoding was not seen")
    print(f"compose-test: playable at {status['progress']:.0f} % ({status['overall']})")


def worker_containers() -> dict[str, str]:
    """Worker containers by hostname (the first 12 characters of the id: worker ids start so)."""
    ids = compose("ps", "-q", "worker", capture=True).split()
    return {cid[:12]: cid for cid in ids}


Held = set[tuple[str, int]]


def _host(worker_id: str | None) -> str:
    """The container (hostname) part of a worker id (`{hostname}/{name}:{pid}`)."""
    return (worker_id or "").split("/")[0]


def kill_a_busy_worker(gateway: Gateway, video_id: str) -> tuple[str, Held]:
    """`docker kill` the container of a worker encoding a video chunk; its hostname and the
    units (kind, index) it held then."""
    containers = worker_containers()
    if len(containers) != WORKERS:
        raise Failed(f"{len(containers)} worker containers, not {WORKERS}")

    def busy() -> tuple[str, Held] | None:
        chunks = gateway.admin(f"/admin/videos/{video_id}/status")["chunks"]
        running = [c for c in chunks if c["status"] == "running" and c["worker"]]
        for chunk in running:
            if chunk["kind"] == "video" and _host(chunk["worker"]) in containers:
                host = _host(chunk["worker"])
                return host, {
                    (c["kind"], c["index"]) for c in running if _host(c["worker"]) == host
                }
        return None

    host, held = wait_for("a worker encoding a video chunk", busy, every=0.2)
    subprocess.run(["docker", "kill", containers[host]], check=True, capture_output=True)
    print(f"compose-test: killed worker container {host} holding {sorted(held)}")
    return host, held


def finished(gateway: Gateway, video_id: str) -> dict:
    """Wait for the job's end; its final status (raises unless `ok`)."""

    def ended() -> dict | None:
        status = gateway.json("GET", f"/transcode/status/{video_id}")
        return status if status["overall"] in ("ok", "failed", "stopped") else None

    status = wait_for("the job to finish", ended, every=1.0)
    if status["overall"] != "ok":
        raise Failed(f"job ended {status['overall']}: {status.get('error')}")
    return status


def check_work(gateway: Gateway, video_id: str, killed: str, held: Held) -> None:
    """Chunks done by several containers; no more repeated encodes than units in flight."""
    chunks = gateway.admin(f"/admin/videos/{video_id}/status")["chunks"]
    hosts = {_host(c["done_by"]) for c in chunks if c["done_by"]}
    if len(hosts) < 2:
        raise Failed(f"every chunk was done by one container: {hosts}")
    repeats = sum(max(0, c["encodes"] - 1) for c in chunks)
    if repeats > len(held):
        units = "; ".join(
            f"{c['kind']} {c['index']}: {c['encodes']} encodes, by {_host(c['done_by'])}"
            for c in chunks
        )
        lost = compose("logs", "--no-color", "worker", capture=True).count("claim lost")
        raise Failed(
            f"{repeats} repeated encodes for {len(held)} unit(s) in flight at the kill ({units}; "
            f"{lost} claim(s) lost to an expired lease in the workers' logs)"
        )
    # A unit may have been published in the instant between the look and the kill.
    redone = [
        c for c in chunks if (c["kind"], c["index"]) in held and _host(c["done_by"]) != killed
    ]
    playlist = gateway.call("GET", f"/stream/{video_id}/master.m3u8").decode()
    rung = next(line for line in playlist.splitlines() if line and not line.startswith("#"))
    gateway.call("GET", f"/stream/{video_id}/{rung}")
    print(
        f"compose-test: {len(chunks)} units done by {len(hosts)} containers "
        f"({', '.join(sorted(hosts))}); {len(redone)} of the {len(held)} held by the killed "
        f"{killed} finished elsewhere; {repeats} repeated encode(s)"
    )


def leftovers() -> list[str]:
    """Containers, networks and volumes of the project still there."""
    label = f"label=com.docker.compose.project={PROJECT}"
    found = []
    for kind in ("container", "network", "volume"):
        extra = ["-a"] if kind == "container" else []
        argv = ["docker", kind, "ls", *extra, "-q", "--filter", label]
        names = subprocess.run(argv, check=True, text=True, capture_output=True).stdout.split()
        found += [f"{kind} {name}" for name in names]
    return found


def run(gateway: Gateway) -> None:
    """Every phase from the build to the job's end (the caller tears down)."""
    with phase("build"):
        compose("build", "migrate", *(["seaweedfs"] if WITH_S3 else []))
    with phase(f"up ({' + '.join(PROFILES)}, {WORKERS} workers)"):
        compose("up", "-d", "--wait", "--scale", f"worker={WORKERS}", quiet=True)
    with tempfile.TemporaryDirectory() as folder:
        with phase(f"render a {CLIP_SECONDS} s clip"):
            clip = make_clip(Path(folder))
        with phase("upload through the gateway, upload service restarted halfway"):
            video_id = upload(gateway, clip)
    with phase("playback while encoding"):
        playable_while_encoding(gateway, video_id)
    with phase("kill a busy worker"):
        killed, held = kill_a_busy_worker(gateway, video_id)
    with phase("job finishes"):
        finished(gateway, video_id)
        check_work(gateway, video_id, killed, held)
    state = ["docker", "inspect", "-f", "{{.State.Status}}, {{.RestartCount}} restart(s)", killed]
    after = subprocess.run(state, check=True, text=True, capture_output=True).stdout.strip()
    print(f"compose-test: the killed container now: {after}")


def main() -> int:
    """Run, tear down whatever happened, print the phase times; 0 when every check held."""
    port = free_port()
    token = secrets.token_urlsafe(24)
    os.environ.update(
        GATEWAY_PORT=str(port),
        ADMIN_TOKEN=token,
        DATABASE_URL="postgresql+psycopg://postgres:postgres@postgres/videos",
        **(S3_ENV if WITH_S3 else {}),
    )
    failure = None
    try:
        run(Gateway(port, token))
    except (Failed, subprocess.CalledProcessError) as exc:
        failure = exc
        print(f"compose-test: FAILED: {exc}", file=sys.stderr)
        compose("logs", "--tail", "40")
    finally:
        with phase("down -v"):
            compose("down", "-v", "--remove-orphans", quiet=True)
    left = leftovers()
    if left:
        failure = failure or Failed(f"left behind: {left}")
        print(f"compose-test: FAILED: left behind {left}", file=sys.stderr)
    for name, seconds in TIMES:
        print(f"compose-test: {seconds:7.1f} s  {name}")
    print("compose-test: " + ("0 passed, 1 failed" if failure else "1 passed, 0 failed"))
    return 1 if failure else 0


if __name__ == "__main__":
    sys.exit(main())
