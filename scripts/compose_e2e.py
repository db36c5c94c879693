"""The containers end to end (scripts/test_compose.sh runs this; `make test-compose`).

Builds the images and starts the shared-nothing setup (docker-compose.yml with
docker-compose.s3.yml merged over it: PostgreSQL, SeaweedFS as S3, and three workers) under its
own project name; checks that no platform container mounts a volume another one mounts; uploads
a clip through the gateway's published port on 127.0.0.1 in chunks (restarting the upload
service's container halfway, then resuming with what it misses), `docker kill`s a worker that
is encoding a chunk, sees the video play while it is still encoding and the job finish anyway
(chunks done by several worker containers, no more repeated encodes than chunks the dead
worker held), finds the video's objects in the bucket through SeaweedFS's S3 port published
on 127.0.0.1, then `docker compose down -v` and checks that no container, network or volume
(the containers' own scratch volumes included) is left. Prints how long each phase took.

Only the standard library: it runs before any virtual environment exists. Environment: what
the compose files read (BASE_IMAGE, POSTGRES_IMAGE, CA_BUNDLE, ...), COMPOSE_TEST_PROJECT.
"""

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parents[1]
PROJECT = os.environ.get("COMPOSE_TEST_PROJECT", "vp-compose-test")
# Shared nothing: the override starts PostgreSQL and SeaweedFS and drops the media volume.
FILES = ["docker-compose.yml", "docker-compose.s3.yml"]
# The platform's containers (the rest, postgres and seaweedfs, keep their own data volumes).
PLATFORM = ["migrate", "upload", "transcoding", "metadata", "streaming", "admin", "gateway"]
WORKERS = 3
BUCKET, PREFIX = "videos", "media"  # docker-compose.s3.yml's STORAGE_URL
S3_KEY, S3_SECRET = "videoplatform", secrets.token_urlsafe(24)
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
    """Run `docker compose` on this project's files (raises when it fails)."""
    progress = ["--progress", "quiet"] if quiet else []
    files = [arg for name in FILES for arg in ("-f", name)]
    argv = ["docker", "compose", *progress, "-p", PROJECT, *files, *args]
    done = subprocess.run(argv, cwd=ROOT, check=True, text=True, capture_output=capture)
    return done.stdout if capture else ""


def docker_said(*args: str) -> str | None:
    """Run `docker ARGS`: None when it succeeded, else what docker said."""
    done = subprocess.run(["docker", *args], capture_output=True, text=True)
    return None if done.returncode == 0 else (done.stderr or done.stdout).strip()[-1000:]


def docker(*args: str) -> None:
    """Run `docker ARGS` (raises Failed with what docker said when it fails)."""
    if (said := docker_said(*args)) is not None:
        raise Failed(f"docker {' '.join(args)} failed: {said}")


def paused(container: str) -> bool:
    """`docker pause` it; False, with it left running to be tried again, when that failed.
    CI saw `docker pause` exit 1 (its message was not kept) just as the worker began a unit's
    encode; runc's freezer is known to miss a container now and then ("unable to freeze",
    moby/moby#48205)."""
    said = docker_said("pause", container)
    if said is None:
        return True
    print(f"compose-test: docker pause missed {container[:12]}, trying again: {said}", flush=True)
    # A freeze that failed halfway must not leave it frozen (unpausing a running one fails).
    docker_said("unpause", container)
    return False


def free_port() -> int:
    """A port nobody listens on now, on 127.0.0.1 (the gateway is published there)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def fetch(request: urllib.request.Request, what: str) -> bytes:
    """The body of the answer to `request`; raises Failed on a status other than 2xx."""
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            data: bytes = response.read()
            return data
    except urllib.error.HTTPError as exc:
        raise Failed(f"{what}: {exc.code} {exc.read()[:300]!r}") from exc


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
        return fetch(request, f"{method} {path}")

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
    """`docker kill` a worker container encoding a video chunk other than the first, and not
    the audio; its hostname and the units (kind, index) it held then.

    The first playable chunk (the first video chunk and the audio's start) then does not wait
    for the dead worker's lease to run out, while the job's end does: playback while encoding
    can be seen next however fast the rest encodes."""
    containers = worker_containers()
    if len(containers) != WORKERS:
        raise Failed(f"{len(containers)} worker containers, not {WORKERS}")

    def busy() -> tuple[str, Held] | None:
        status = gateway.admin(f"/admin/videos/{video_id}/status")
        if status["job"] and status["job"]["overall"] in ("ok", "failed", "stopped"):
            raise Failed(f"the job ended {status['job']['overall']} before a kill could be made")
        held: dict[str, Held] = {}
        for c in status["chunks"]:
            if c["status"] == "running" and _host(c["worker"]) in containers:
                held.setdefault(_host(c["worker"]), set()).add((c["kind"], c["index"]))
        for host, units in held.items():
            if all(kind == "video" and index > 0 for kind, index in units):
                return host, units
        return None

    def frozen_busy() -> tuple[str, Held] | None:
        # Look, then freeze the worker seen busy and look again: a frozen worker updates
        # nothing, so its rows now say what it holds when it dies (between a look and a kill
        # it could finish its unit, or claim another). Thawed when it holds no later video
        # chunk any more, and the search goes on.
        found = busy()
        if found is None:
            return None
        host = found[0]
        if not paused(containers[host]):
            return None
        status = gateway.admin(f"/admin/videos/{video_id}/status")
        held = {
            (c["kind"], c["index"])
            for c in status["chunks"]
            if c["status"] == "running" and _host(c["worker"]) == host
        }
        if held and all(kind == "video" and index > 0 for kind, index in held):
            return host, held
        docker("unpause", containers[host])
        return None

    host, held = wait_for("a worker encoding a video chunk", frozen_busy, every=0.2)
    docker("kill", containers[host])
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


def shares_nothing() -> set[str]:
    """Check that no platform container (workers, migrate) mounts a host folder, a volume of
    the compose file or a volume another one mounts; the names of their own scratch volumes."""
    ids = compose("ps", "-a", "-q", *PLATFORM, "worker", capture=True).split()
    argv = ["docker", "inspect", *ids]
    found = json.loads(subprocess.run(argv, check=True, text=True, capture_output=True).stdout)
    users: dict[str, list[str]] = {}
    for container in found:
        name = container["Name"].lstrip("/")
        for mount in container["Mounts"]:
            declared = mount["Type"] == "volume" and mount["Name"].startswith(f"{PROJECT}_")
            if mount["Type"] not in ("volume", "tmpfs") or declared:
                what = mount.get("Name") or mount.get("Source")
                raise Failed(f"{name} mounts {mount['Type']} {what} at {mount['Destination']}")
            if mount["Type"] == "volume":
                users.setdefault(mount["Name"], []).append(name)
    shared = {volume: names for volume, names in users.items() if len(names) > 1}
    if shared:
        raise Failed(f"volumes mounted by several containers: {shared}")
    if len(found) != len(PLATFORM) + WORKERS:
        raise Failed(f"{len(found)} platform containers, not {len(PLATFORM) + WORKERS}")
    print(f"compose-test: {len(found)} platform containers, {len(users)} volumes, none shared")
    return set(users)


def s3_get(port: int, path: str, query: dict[str, str]) -> bytes:
    """A GET to the S3 port published on 127.0.0.1 (signed by hand: see `_signed`)."""
    host = f"127.0.0.1:{port}"
    quoted = "&".join(f"{_quote(k)}={_quote(v)}" for k, v in sorted(query.items()))
    request = urllib.request.Request(f"http://{host}{path}?{quoted}")
    for name, value in _signed(host, path, quoted).items():
        request.add_header(name, value)
    return fetch(request, f"S3 GET {path}")


def _signed(host: str, path: str, quoted: str) -> dict[str, str]:
    """The headers of a bodiless GET signed with AWS Signature Version 4 (only the standard
    library is at hand: no boto3)."""
    now = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    scope = f"{now[:8]}/us-east-1/s3/aws4_request"
    payload = hashlib.sha256(b"").hexdigest()
    headers = {"host": host, "x-amz-content-sha256": payload, "x-amz-date": now}
    lines = [f"{name}:{value}" for name, value in headers.items()]
    canonical = "\n".join(["GET", path, quoted, *lines, "", ";".join(headers), payload])
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    key = f"AWS4{S3_SECRET}".encode()
    for part in (now[:8], "us-east-1", "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    to_sign = f"AWS4-HMAC-SHA256\n{now}\n{scope}\n{digest}"
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    credential = f"Credential={S3_KEY}/{scope}, SignedHeaders={';'.join(headers)}"
    del headers["host"]  # urllib sends it, the same
    return {**headers, "Authorization": f"AWS4-HMAC-SHA256 {credential}, Signature={signature}"}


def _quote(text: str) -> str:
    return urllib.parse.quote(text, safe="-_.~")


def bucket_keys(port: int, prefix: str) -> list[str]:
    """Every key under `prefix` in the bucket (ListObjectsV2, page after page)."""
    keys: list[str] = []
    query = {"list-type": "2", "prefix": prefix}
    while True:
        listing = ET.fromstring(s3_get(port, f"/{BUCKET}", query))
        keys += [e.text or "" for e in listing.iter() if _local(e.tag) == "Key"]
        token = next((e.text for e in listing if _local(e.tag) == "NextContinuationToken"), None)
        if not token:
            return keys
        query["continuation-token"] = token


def _local(tag: str) -> str:
    """An XML element's name without its namespace."""
    return tag.rpartition("}")[2]


def check_bucket(gateway: Gateway, port: int, video_id: str) -> None:
    """The platform says it stores in the bucket, and the video's objects are there."""
    storage = gateway.admin("/admin/status")["storage"]
    if storage["backend"] != "s3" or not storage["reachable"]:
        raise Failed(f"/admin/status reports the storage {storage}")
    keys = bucket_keys(port, f"{PREFIX}/")
    mine = [key for key in keys if f"/{video_id}/" in key]
    wanted = [f"{PREFIX}/originals/{video_id}/source", f"{PREFIX}/hls/{video_id}/master.m3u8"]
    segments = [key for key in mine if key.rpartition("/")[2].startswith("seg_")]
    if any(key not in mine for key in wanted) or not segments:
        raise Failed(f"the bucket lacks the video's source, master or segments: {sorted(mine)}")
    print(
        f"compose-test: {len(mine)} objects of the video in s3://{BUCKET}/{PREFIX}/ "
        f"({len(segments)} segments), listed through 127.0.0.1:{port}"
    )


def leftovers(scratch: Iterable[str]) -> list[str]:
    """Containers, networks and volumes of the project still there, and the containers'
    scratch volumes (anonymous: they carry no project label)."""
    label = f"label=com.docker.compose.project={PROJECT}"
    found = []
    for kind in ("container", "network", "volume"):
        extra = ["-a"] if kind == "container" else []
        argv = ["docker", kind, "ls", *extra, "-q", "--filter", label]
        names = subprocess.run(argv, check=True, text=True, capture_output=True).stdout.split()
        found += [f"{kind} {name}" for name in names]
    for volume in scratch:
        gone = subprocess.run(["docker", "volume", "inspect", volume], capture_output=True)
        found += [] if gone.returncode else [f"scratch volume {volume}"]
    return found


def run(gateway: Gateway, s3_port: int, scratch: set[str]) -> None:
    """Every phase from the build to the job's end (the caller tears down); the platform
    containers' scratch volumes go into `scratch`."""
    with phase("build"):
        compose("build", "migrate", "seaweedfs")
    with phase(f"up (postgres + s3, shared nothing, {WORKERS} workers)"):
        compose("up", "-d", "--wait", "--scale", f"worker={WORKERS}", quiet=True)
        scratch.update(shares_nothing())
    with tempfile.TemporaryDirectory() as folder:
        with phase(f"render a {CLIP_SECONDS} s clip"):
            clip = make_clip(Path(folder))
        with phase("upload through the gateway, upload service restarted halfway"):
            video_id = upload(gateway, clip)
    with phase("kill a busy worker"):
        killed, held = kill_a_busy_worker(gateway, video_id)
    with phase("playback while encoding"):
        playable_while_encoding(gateway, video_id)
    with phase("job finishes"):
        finished(gateway, video_id)
        check_work(gateway, video_id, killed, held)
    with phase("objects in the bucket"):
        check_bucket(gateway, s3_port, video_id)
    state = ["docker", "inspect", "-f", "{{.State.Status}}, {{.RestartCount}} restart(s)", killed]
    after = subprocess.run(state, check=True, text=True, capture_output=True).stdout.strip()
    print(f"compose-test: the killed container now: {after}")


def main() -> int:
    """Run, tear down whatever happened, print the phase times; 0 when every check held."""
    port, s3_port = free_port(), free_port()
    while s3_port == port:
        s3_port = free_port()
    token = secrets.token_urlsafe(24)
    os.environ.update(
        GATEWAY_PORT=str(port),
        S3_PORT=str(s3_port),
        S3_BUCKET=BUCKET,
        ADMIN_TOKEN=token,
        AWS_ACCESS_KEY_ID=S3_KEY,
        AWS_SECRET_ACCESS_KEY=S3_SECRET,
        # The fastest x264 preset: the test checks how the parts work together, not quality.
        X264_PRESET="ultrafast",
    )
    failure: Exception | None = None
    scratch: set[str] = set()
    try:
        run(Gateway(port, token), s3_port, scratch)
    except (Failed, subprocess.CalledProcessError, OSError) as exc:
        failure = exc
        print(f"compose-test: FAILED: {exc}", file=sys.stderr)
        compose("logs", "--tail", "40")
    finally:
        with phase("down -v"):
            compose("down", "-v", "--remove-orphans", quiet=True)
    left = leftovers(scratch)
    if left:
        failure = failure or Failed(f"left behind: {left}")
        print(f"compose-test: FAILED: left behind {left}", file=sys.stderr)
    for name, seconds in TIMES:
        print(f"compose-test: {seconds:7.1f} s  {name}")
    print("compose-test: " + ("0 passed, 1 failed" if failure else "1 passed, 0 failed"))
    return 1 if failure else 0


if __name__ == "__main__":
    sys.exit(main())
