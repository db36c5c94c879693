"""Object storage figures for scripts/bench.py (`bench.py s3`), each beside its baseline from
the same run:

- the ladder on S3: time to first playable and complete->ok with STORAGE_URL on a SeaweedFS
  bucket (tests/s3server.py), against the same source on the local folder (the ladder
  benchmark's platform run when it ran before in the same `bench.py`, else a run here);
- ingest into S3: a file uploaded through the gateway in 8 MiB chunks into the bucket (init to
  `complete`'s answer), against the S3 server's own put throughput for the same bytes with the
  same client the platform uses (S3Store.put_file: boto3, multipart).

Run alone: `.venv/bin/python scripts/bench.py s3`.
"""

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from services.core.storage.s3 import S3Store
from tests.harness import Platform, s3_env, upload
from tests.s3server import S3Server, start_s3_server

Row = Callable[[str, float | str, float | str, str], None]
# (source, work folder, extra settings) -> (first playable s, ok s, video id)
Ladder = Callable[..., tuple[float, float, str]]

INGEST_BYTES = 256 * 1024 * 1024
CHUNK = 8 * 1024 * 1024
# Two of each (best, or median of two): three made the full bench overrun its 10 minutes.
ROUNDS = 2


def run(
    work: Path,
    row: Row,
    *,
    source: Path,
    ladder: Ladder,
    local: tuple[float, float] | None = None,
) -> None:
    """Every S3 figure; `ladder` runs the platform's ladder on `source` (bench.py's);
    `local`: (first playable s, ok s) of that ladder on the local folder, when measured."""
    work.mkdir(parents=True, exist_ok=True)
    server = start_s3_server(work / "s3")
    try:
        _ladder(work, row, server, source, ladder, local)
        _ingest(work, row, server)
    finally:
        server.stop()


def _ladder(
    work: Path,
    row: Row,
    server: S3Server,
    source: Path,
    ladder: Ladder,
    local: tuple[float, float] | None,
) -> None:
    local_first, local_ok = local or ladder(source, work / "local")[:2]
    s3_first, s3_ok, _ = ladder(source, work / "on-s3", **s3_env(server))
    row("S3: first playable (s) vs local folder", s3_first, local_first, _x(s3_first, local_first))
    row("S3: complete->ok (s) vs local folder", s3_ok, local_ok, _x(s3_ok, local_ok))


def _ingest(work: Path, row: Row, server: S3Server) -> None:
    data = work / "ingest.mp4"
    with data.open("wb") as out:
        for _ in range(INGEST_BYTES // (1 << 20)):
            out.write(os.urandom(1 << 20))
    platform = Platform(work / "ingest-scratch", **s3_env(server)).start()
    try:
        with platform.client() as client:
            ours = [_through_gateway(client, data) for _ in range(ROUNDS)]
    finally:
        platform.stop()
        platform.drop()
    store = S3Store(
        server.bucket,
        "bench-put",
        endpoint_url=server.endpoint,
        access_key=server.access_key,
        secret_key=server.secret_key,
        region=server.region,
    )
    theirs = [_direct_put(store, data, work) for _ in range(ROUNDS)]
    mine, base = statistics.median(ours), statistics.median(theirs)
    row(
        "S3: ingest via gateway vs put_file (MB/s)",
        mine,
        base,
        f"{mine / base:.2f} of it" if base else "n/a",
    )


def _through_gateway(client, data: Path) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    _, done = upload(client, data, chunk_size=CHUNK)
    elapsed = time.perf_counter() - started
    # A file of random bytes is no video: `complete` stores it, then its probe refuses it.
    if done is None or done.status_code not in (200, 422):
        raise SystemExit(f"complete answered {done and done.status_code}: {done and done.text}")
    return data.stat().st_size / elapsed / 1e6


def _direct_put(store: S3Store, data: Path, work: Path) -> float:
    # put_file consumes its source (the caller's copy): a hard link of the same bytes.
    copy = work / "put-copy"
    copy.unlink(missing_ok=True)
    os.link(data, copy)
    started = time.perf_counter()
    store.put_file(f"put-{time.monotonic_ns()}", copy)
    elapsed = time.perf_counter() - started
    copy.unlink(missing_ok=True)
    return data.stat().st_size / elapsed / 1e6


def _x(ours: float, baseline: float) -> str:
    return f"{ours / baseline:.2f}x" if baseline else "n/a"
