"""A real platform for tests: the launcher started on free ports with its own storage folder,
spoken to over real HTTP through the gateway."""

import base64
import contextlib
import fcntl
import hashlib
import math
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from services.core.layout import VideoLayout

if TYPE_CHECKING:
    from services.core.settings import Settings
    from services.core.storage.s3 import S3Store
    from tests.s3server import S3Server

ROOT = Path(__file__).resolve().parents[1]
PORT_NAMES = ("gateway", "upload", "transcoding", "metadata", "streaming", "admin")
TERMINAL = ("ok", "failed")


# free_ports hands out ports from blocks of PORT_BLOCK that this process holds a lock on
# (flock on a file per block under PORT_LOCKS, released when the process ends): two test
# processes side by side (scripts/test_lanes.sh's lanes) then never pick the same port in the
# moment before its server binds it. Each port is handed out once per process, so a server
# that has just stopped (its connections in TIME_WAIT) does not lend its port to the next.
PORT_BLOCK = 16
PORT_LOCKS = Path(tempfile.gettempdir()) / f"vp-test-ports-{os.getuid()}"  # a user's own
_held_blocks: list[int] = []  # lock file descriptors, kept open
_unused: list[int] = []  # ports of held blocks not handed out yet
_PICK = random.SystemRandom()  # not the global `random`: hypothesis seeds that one


def _ephemeral_ports() -> range:
    """The kernel's range for the source ports of outgoing connections."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(low, high + 1)


def port_pool() -> range:
    """Where `free_ports` picks: 20000 up to the kernel's ephemeral range (or above it, when
    that range starts too low to leave room). A port inside the ephemeral range can become the
    source port of any outgoing connection (a service's own, to another service or to the
    database) between the check here and the server's bind: the server then fails with
    EADDRINUSE for as long as that connection lives, and the launcher restarts it in vain."""
    ephemeral = _ephemeral_ports()
    if ephemeral.start - 20000 >= 4096:
        return range(20000, ephemeral.start)
    return range(ephemeral.stop, 65536) if 65536 - ephemeral.stop >= 4096 else range(1024, 65536)


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _claim_block() -> range:
    """Lock a block of PORT_BLOCK ports of `port_pool` no other process holds."""
    pool = port_pool()
    starts = list(range(pool.start, pool.stop - PORT_BLOCK + 1, PORT_BLOCK))
    _PICK.shuffle(starts)
    PORT_LOCKS.mkdir(mode=0o700, exist_ok=True)
    for start in starts:
        fd = os.open(PORT_LOCKS / f"{start}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        _held_blocks.append(fd)
        return range(start, start + PORT_BLOCK)
    raise RuntimeError(f"every block of ports in {pool.start}-{pool.stop - 1} is held")


def free_ports(count: int) -> list[int]:
    """`count` distinct ports nothing listens on right now, from outside the kernel's
    ephemeral range (`port_pool`), in blocks no other process takes from, none handed out
    before by this process."""
    ports: list[int] = []
    while len(ports) < count:
        if not _unused:
            _unused.extend(_claim_block())
        port = _unused.pop(0)
        if _bindable(port):
            ports.append(port)
    return ports


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def unknown_video_id() -> str:
    """A well-formed video id no platform holds: fresh each time. (Not a fixed one such as
    "0" * 32: the session's shared platform is fuzzed by schemathesis, whose POST /videos may
    create any id, the all-zero one first.)"""
    return uuid.uuid4().hex


def database_server_under_test() -> str | None:
    """TEST_DATABASE_URL: the PostgreSQL server the suite also runs against (None: SQLite)."""
    return os.environ.get("TEST_DATABASE_URL") or None


def pg_connect(url: str, **change: str) -> Any:
    """An autocommit psycopg connection to the PostgreSQL database of SQLAlchemy URL `url`
    (`change`: parts of the URL to replace first, e.g. database="postgres")."""
    import psycopg
    from sqlalchemy.engine import make_url

    plain = make_url(url).set(drivername="postgresql", **change)
    return psycopg.connect(plain.render_as_string(hide_password=False), autocommit=True)


def create_database(server_url: str) -> str:
    """A fresh, empty database on `server_url`'s server; returns its SQLAlchemy URL."""
    from sqlalchemy.engine import make_url

    name = f"vp_test_{uuid.uuid4().hex[:12]}"
    with pg_connect(server_url) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    """Drop a database made by create_database (connections are closed by force)."""
    from sqlalchemy.engine import make_url

    with pg_connect(url, database="postgres") as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


def storage_under_test() -> str:
    """TEST_STORAGE: "s3" runs every platform on the test run's S3 server, each on a prefix
    of its own, its storage folder then only its scratch; else ("local") on the folder."""
    return os.environ.get("TEST_STORAGE", "local")


_shared_s3: list["S3Server"] = []


def shared_s3_server() -> "S3Server":
    """The test run's S3 server (SeaweedFS), started at first use, stopped at exit."""
    if not _shared_s3:
        import atexit

        from tests.s3server import start_s3_server

        folder = Path(tempfile.mkdtemp(prefix="vp-s3-"))
        server = start_s3_server(folder)

        def _stop() -> None:
            server.stop()
            shutil.rmtree(folder, ignore_errors=True)

        atexit.register(_stop)
        _shared_s3.append(server)
    return _shared_s3[0]


def s3_env(server: "S3Server", prefix: str | None = None) -> dict[str, str]:
    """The settings that put a platform on `server`, under a prefix of its own."""
    return {
        "STORAGE_URL": f"s3://{server.bucket}/{prefix or 'vp-' + uuid.uuid4().hex[:12]}",
        "AWS_ENDPOINT_URL": server.endpoint,
        "AWS_ACCESS_KEY_ID": server.access_key,
        "AWS_SECRET_ACCESS_KEY": server.secret_key,
        "AWS_REGION": server.region,
    }


# What every test platform changes from the defaults, for speed (scripts/bench.py puts them
# back: it measures the defaults).
TEST_SETTINGS = {
    "X264_PRESET": "ultrafast",
    # ultrafast's own analysis is lighter still than the production options.
    "X264_PARAMS": "",
    "X264_LOWER_PARAMS": "",
    "SEGMENT_SECONDS": "2",
    "KEYFRAME_SECONDS": "2",
    # Short chunks so a few-second clip is already a multi-chunk job.
    "CHUNK_SEGMENTS": "2",
    "FIRST_CHUNK_SEGMENTS": "1",
    # No short opening unless a test asks for one (tests/browser/test_opening_playback.py):
    # the chunk layouts the tests count stay those of whole segments.
    "OPENING_SECONDS": "0",
    "LOG_LEVEL": "INFO",
    "LEASE_SECONDS": "5",
    "RETRY_BACKOFF_SECONDS": "0.5",
}


# What the platform's 507 says (services.core.storage.full_disk).
FULL_DISK = re.compile(r"(\d+) bytes free, (\d+) needed and (\d+) must stay free")


def refused_for_space(answer: Any, storage: Path, declared: list[int] | None = None) -> bool:
    """Whether `answer` (an httpx or schemathesis response) is the 507 for a size the storage
    disk cannot hold: not a fault and not bad input, but the operator's capacity (the same
    request fits a larger disk, and a test's declared sizes reach 64 GiB). Such a 507 must say
    so with the disk's own figures, and (`declared`: every size the request named) need no
    more than the client declared. Any other answer is False, for the caller to judge."""
    if answer.status_code != 507:
        return False
    body = answer.json()
    assert body["error"] == "insufficient_storage", body
    figures = FULL_DISK.search(body["detail"])
    assert figures, body
    free, needed, keep = (int(g) for g in figures.groups())
    assert free - needed < keep, body
    if declared is not None:
        assert needed <= max(declared, default=0), (declared, body)
    # Other tests write on the same disk meanwhile: the figure is the disk's, give or take.
    assert abs(free - shutil.disk_usage(storage).free) < 4 * 1024**3, body
    return True


class Platform:
    """The five services, the gateway and a worker, as `make run` starts them.

    With TEST_DATABASE_URL set, it runs on a fresh PostgreSQL database of its own; otherwise
    on the embedded SQLite file in its storage folder. With TEST_STORAGE=s3 (or STORAGE_URL
    given), its media go to an S3 bucket and the storage folder is only its scratch.
    """

    def __init__(self, storage: Path, **env: str) -> None:
        self.storage = storage
        self.ports = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES)), strict=True))
        server = database_server_under_test()
        self.database_url = create_database(server) if server else ""
        # ADMIN_TOKEN="" starts it without one: the platform then generates and stores its own.
        given = env.pop("ADMIN_TOKEN", None)
        self.admin_token = uuid.uuid4().hex if given is None else given
        if storage_under_test() == "s3" and "STORAGE_URL" not in env:
            env = {**s3_env(shared_s3_server()), **env}
        self.env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "ADMIN_TOKEN": self.admin_token,
            "STORAGE_DIR": str(storage),
            **TEST_SETTINGS,
            **{f"{name.upper()}_PORT": str(port) for name, port in self.ports.items()},
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = storage / "platform-test.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['gateway']}"

    def service_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def start(self, timeout: float = 60) -> "Platform":
        self.storage.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "services.launcher"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"launcher exited: {self._log_tail()}")
            if all(self._healthy(name) for name in PORT_NAMES):
                return self
            time.sleep(0.2)
        down = [f"{n} ({self.ports[n]})" for n in PORT_NAMES if not self._healthy(n)]
        raise RuntimeError(
            f"platform not healthy in {timeout} s, not answering: {', '.join(down)}; "
            f"its log: {self._log_tail()}"
        )

    def _log_tail(self, chars: int = 3000) -> str:
        """The end of the launcher's log without the health checks' access lines (which
        would fill it: they are what the wait above sends)."""
        text = self.log_path.read_text(errors="replace")
        kept = [line for line in text.splitlines() if "GET /health " not in line]
        return "\n".join(kept)[-chars:]

    def _healthy(self, name: str) -> bool:
        try:
            return httpx.get(f"{self.service_url(name)}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def drop(self) -> None:
        """Stop, and drop its PostgreSQL database if it has one."""
        self.stop()
        if self.database_url:
            drop_database(self.database_url)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def ffmpeg_pids(self, video_id: str | None = None) -> list[int]:
        """ffmpeg processes working on this platform's storage (on one video's files, if
        given: posters and storyboards of other videos are made in the background)."""
        pids = ffmpeg_pids(str(self.storage))
        return [p for p in pids if video_id is None or video_id in cmdline(p)]

    def wait_no_ffmpeg(self, timeout: float = 90.0) -> list[int]:
        """The ffmpeg pids still alive after `timeout` s: a background picture (poster,
        storyboard) ends within a second on an idle machine, a leaked encoder never does.
        The wait is long because make test's lanes load the machine: a storyboard of a
        20 s 1080p clip, at the encoders' low priority, can then take many seconds; it
        costs time only when something is left running."""
        deadline = time.monotonic() + timeout
        while (pids := self.ffmpeg_pids()) and time.monotonic() < deadline:
            time.sleep(0.1)
        return pids

    def files(self, video_id: str) -> Path:
        """A folder laid out as the storage folder that holds the video's files: the storage
        folder itself, or on S3 a fresh copy of the video's objects (for checks that read
        files with ffprobe and the like)."""
        if not self.env.get("STORAGE_URL", ""):
            return self.storage
        layout = VideoLayout.of(video_id)
        store = self.bucket()
        copy = Path(tempfile.mkdtemp(prefix="objects-", dir=self.storage.parent))
        for prefix in (layout.originals, layout.hls):
            for info in store.list_prefix(prefix):
                target = copy / info.key
                target.parent.mkdir(parents=True, exist_ok=True)
                with target.open("wb") as out:
                    for piece in store.read_range(info.key):
                        out.write(piece)
        return copy

    def bucket(self, endpoint: str | None = None) -> "S3Store":
        """A store on the platform's own bucket and prefix (`endpoint`: reach it elsewhere
        than the platform does, e.g. past a relay a test cuts)."""
        from services.core.storage.s3 import S3Store

        bucket, _, prefix = self.env["STORAGE_URL"].removeprefix("s3://").partition("/")
        return S3Store(
            bucket,
            prefix,
            endpoint_url=endpoint or self.env["AWS_ENDPOINT_URL"],
            access_key=self.env["AWS_ACCESS_KEY_ID"],
            secret_key=self.env["AWS_SECRET_ACCESS_KEY"],
            region=self.env["AWS_REGION"],
        )

    def stored(self, key: str) -> bytes | None:
        """The bytes the platform stored under a layout key: in its folder, or in its bucket
        when it runs on S3 (None when there is no such file or object)."""
        url = self.env.get("STORAGE_URL", "")
        if not url:
            path = self.storage / key
            return path.read_bytes() if path.is_file() else None
        from services.core.storage.interface import ObjectMissing

        try:
            return b"".join(self.bucket().read_range(key))
        except ObjectMissing:
            return None

    def keys(self, prefix: str) -> list[str]:
        """The layout keys the platform stores below `prefix` (".../" for a folder), sorted:
        the files in its folder, or the objects in its bucket."""
        if not self.env.get("STORAGE_URL", ""):
            folder = self.storage / prefix
            if not folder.is_dir():
                return []
            return sorted(
                p.relative_to(self.storage).as_posix() for p in folder.rglob("*") if p.is_file()
            )
        return sorted(info.key for info in self.bucket().list_prefix(prefix))

    def settings(self, **extra: Any) -> "Settings":
        """Settings for code a test runs in its own process on this platform's database and
        storage (its folder, or its bucket with the folder as scratch)."""
        from services.core.settings import Settings

        env = self.env
        on_s3: dict[str, Any] = {}
        if env.get("STORAGE_URL", ""):
            on_s3 = {
                "storage_url": env["STORAGE_URL"],
                "aws_endpoint_url": env["AWS_ENDPOINT_URL"],
                "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
                "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
                "aws_region": env["AWS_REGION"],
            }
        return Settings(
            storage_dir=self.storage, database_url=self.database_url, **{**on_s3, **extra}
        )

    def execute(self, statement: Any) -> None:
        """Run one SQLAlchemy statement in the platform's own database, behind its back (a
        test moving a clock or rewriting a row)."""
        from services.core.db import make_engine

        url = self.database_url or f"sqlite:///{self.storage / 'videos.db'}"
        engine = make_engine(url)
        try:
            with engine.begin() as connection:
                connection.execute(statement)
        finally:
            engine.dispose()

    def put(self, key: str, data: bytes) -> None:
        """Store `data` under a layout key, behind the platform's back (a test's tampering)."""
        if not self.env.get("STORAGE_URL", ""):
            path = self.storage / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        else:
            self.bucket().put_bytes(key, data)

    def delete(self, key: str) -> None:
        """Remove one stored file or object (nothing when there is none)."""
        if not self.env.get("STORAGE_URL", ""):
            (self.storage / key).unlink(missing_ok=True)
        else:
            self.bucket().delete(key)

    def client(self) -> httpx.Client:
        """A client of the gateway that carries the admin token (what an operator sends)."""
        return httpx.Client(base_url=self.url, timeout=120, headers=self.auth)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}


def send_chunk(
    client: httpx.Client,
    upload_id: str,
    index: int,
    piece: bytes,
    *,
    raw: bool = False,
    sha256: str | None = None,
) -> httpx.Response:
    """POST one chunk: a form (upload_id, index, then file), or a raw body with its place in
    the URL; with `sha256` (hex), claimed for it (a form field, or Content-Digest)."""
    if raw:
        headers = {"Content-Type": "application/octet-stream"}
        if sha256 is not None:
            encoded = base64.b64encode(bytes.fromhex(sha256)).decode()
            headers["Content-Digest"] = f"sha-256=:{encoded}:"
        return client.post(
            "/upload/chunk",
            params={"upload_id": upload_id, "index": index},
            content=piece,
            headers=headers,
        )
    fields: dict[str, object] = {"upload_id": upload_id, "index": index}
    if sha256 is not None:
        fields["sha256"] = sha256
    return client.post(
        "/upload/chunk", data=fields, files={"file": ("blob", piece, "application/octet-stream")}
    )


def upload(
    client: httpx.Client,
    path: Path,
    *,
    chunk_size: int,
    order: Iterable[int] | None = None,
    resend: Iterable[int] = (),
    declare_chunk_size: bool = True,
    sha256: str | None = None,
    complete: bool = True,
) -> tuple[str, httpx.Response | None]:
    """Upload `path` in chunks (in `order`, resending `resend`); return (id, complete response)."""
    data = path.read_bytes()
    total = max(1, math.ceil(len(data) / chunk_size))
    form: dict[str, Any] = {"filename": path.name, "total_chunks": total, "total_size": len(data)}
    if declare_chunk_size:
        form["chunk_size"] = chunk_size
    if sha256:
        form["sha256"] = sha256
    init = client.post("/upload/init", data=form)
    assert init.status_code == 200, init.text
    upload_id = init.json()["upload_id"]
    for index in [*(order if order is not None else range(total)), *resend]:
        piece = data[index * chunk_size : (index + 1) * chunk_size]
        sent = client.post(
            "/upload/chunk",
            data={"upload_id": upload_id, "index": index},
            files={"file": ("blob", piece, "application/octet-stream")},
        )
        assert sent.status_code == 200, sent.text
    if not complete:
        return upload_id, None
    return upload_id, client.post("/upload/complete", data={"upload_id": upload_id})


def wait_status(
    client: httpx.Client, video_id: str, states: Iterable[str] = TERMINAL, timeout: float = 180
) -> dict[str, Any]:
    """Poll the transcoding status until it is in `states`; return it."""
    wanted = set(states)
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = client.get(f"/transcode/status/{video_id}").json()
        if status.get("overall") in wanted:
            return status
        time.sleep(0.2)
    raise AssertionError(f"{video_id} not in {wanted} after {timeout} s: {status}")


def cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def ffmpeg_pids(marker: str) -> list[int]:
    """Live ffmpeg processes whose command line mentions `marker` (a storage folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if (
            state != "Z"
            and argv
            and argv[0].endswith(b"ffmpeg")
            and marker.encode() in b" ".join(argv)
        ):
            found.append(int(entry.name))
    return found
