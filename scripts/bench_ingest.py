"""Upload ingest: a 1 GiB file in 8 MiB chunks, 4 in flight (as the page sends them), over
loopback through the gateway and straight to the upload service, in both forms of
/upload/chunk (multipart, as the page sends it, and application/octet-stream), against copying
the same file on the same disk (`cat src > dst`, and the same plus an fsync of dst, as every
chunk is fdatasync'd before it counts).

    .venv/bin/python scripts/bench_ingest.py          # standalone
    .venv/bin/python scripts/bench.py ingest          # from the benchmark runner

The file is a real video, so `complete` runs its real path (sha256 check, ffprobe, job row)
and answers 200: a generated 4 s 720p H.264 clip at 40 Mb/s with noise (incompressible
bytes) as MPEG-TS, repeated to the size and cut there. Random bytes would be refused at
`complete` as not a video. Ingest time is `init` plus every chunk; `complete` is timed on its
own for a 64 MiB and a 1 GiB upload (it must not grow with the size) beside what hashing the
whole 1 GiB file costs (what `complete` used to do). The upload service's peak RSS (VmHWM,
reset through /proc/PID/clear_refs before each upload) is read for both sizes. The platform
runs without transcoding workers (WORKERS=0), so nothing else competes for the two cores, and
every upload is deleted after it is measured. Each timing is the best of ROUNDS runs, since the
machine is shared and noisy; the baseline copies are timed the same way in the same run.

A second baseline is the least a receiver of this design can spend: `bench_receiver.py`, a
process of the standard library alone that takes the same chunks over the same loopback (no
HTTP), feeds every byte to one running sha256, writes them past the page cache and
fdatasyncs each. The upload service's CPU per GiB is printed against its own in the same run.
"""

import argparse
import hashlib
import math
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import bench_receiver  # noqa: E402

from tests.harness import Platform  # noqa: E402

MiB = 1024 * 1024
GiB = 1024 * MiB
CHUNK = 8 * MiB
IN_FLIGHT = 4  # the page's PARALLEL
BIG = GiB
SMALL = 64 * MiB
# Two of each (best, or median of two): three made the full bench overrun its 10 minutes.
ROUNDS = 2
FORMS = ("multipart", "octet-stream")
Row = Callable[[str, float | str, float | str, str], None]


@dataclass
class Ingest:
    """One measured upload: seconds for init + every chunk, for complete, and peak RSS."""

    seconds: float
    complete: float
    cpu: float  # CPU seconds of the client, the gateway and the upload service while sending
    service_cpu: float  # of these, the upload service's
    peak_rss: int


def check_space(folder: Path, need: int) -> None:
    """Stop early, with the numbers, when the disk cannot hold what the bench writes."""
    free = shutil.disk_usage(folder).free
    if free < need:
        raise SystemExit(
            f"{folder}: {free / GiB:.1f} GiB free, the ingest bench needs {need / GiB:.1f}"
        )


def make_clip(path: Path) -> Path:
    """4 s of 720p H.264 with noise at about 40 Mb/s in MPEG-TS (a stream that can repeat)."""
    video = "testsrc2=size=1280x720:rate=30:duration=4,noise=alls=40:allf=t"
    argv = ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", video, "-c:v", "libx264"]
    # ultrafast at a high bitrate: quick to make, and the noise keeps the bytes incompressible.
    argv += ["-preset", "ultrafast", "-b:v", "40M", "-pix_fmt", "yuv420p", "-f", "mpegts"]
    subprocess.run(
        [*argv, str(path)],
        check=True,
    )
    return path


def make_video(path: Path, clip: Path, size: int) -> Path:
    """`clip` repeated to exactly `size` bytes: MPEG-TS still probes as the clip's video."""
    data = clip.read_bytes()
    with path.open("wb") as out:
        written = 0
        while written < size:
            written += out.write(data[: size - written])
    return path


def sha256_file(path: Path) -> tuple[str, float]:
    """The file's sha256 and the seconds it took (the old `complete` did this every time)."""
    started = time.perf_counter()
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while piece := handle.read(8 * MiB):
            digest.update(piece)
    return digest.hexdigest(), time.perf_counter() - started


def time_copy(source: Path, target: Path, *, sync: bool) -> tuple[float, float]:
    """(seconds, CPU seconds) of `cat source > target`, then `sync target` (an fsync of it)
    if asked."""
    target.unlink(missing_ok=True)
    cpu = _children_cpu()
    started = time.perf_counter()
    subprocess.run(["sh", "-c", 'cat "$1" > "$2"', "sh", str(source), str(target)], check=True)
    if sync:
        subprocess.run(["sync", str(target)], check=True)
    elapsed = time.perf_counter() - started
    target.unlink()
    return elapsed, _children_cpu() - cpu


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_pids(platform: Platform, name: str) -> list[int]:
    """The server process of `name` (uvicorn or granian, found by its port) and every process
    under it (granian serves from worker processes)."""
    port = str(platform.ports[name]).encode()
    parents: dict[int, int] = {}
    root = None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            parents[int(entry.name)] = int(
                (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
            )
        except OSError:
            continue
        server = any(s in b" ".join(argv) for s in (b"uvicorn", b"granian"))
        if server and port in argv and (root is None or int(entry.name) < root):
            root = int(entry.name)
    if root is None:
        raise SystemExit(f"no process serves {name} on port {port.decode()}")
    tree = [root]
    for pid in tree:  # grows as children are found
        tree += [child for child, parent in parents.items() if parent == pid]
    return tree


def tree_cpu(pids: list[int]) -> float:
    return sum(process_cpu(pid) for pid in pids)


def memory(pids: list[int], key: str) -> int:
    """VmRSS or VmHWM (peak) of the processes, added up, in bytes."""
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            field, _, value = line.partition(":")
            if field == key:
                total += int(value.split()[0]) * 1024
    return total


def reset_peak(pids: list[int]) -> None:
    """Start VmHWM again from the current RSS (Linux >= 4.0: clear_refs 5)."""
    for pid in pids:
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def upload(
    client: httpx.Client,
    path: Path,
    digest: str,
    *,
    form: str,
    service: list[int],
    others: list[int],
) -> tuple[Ingest, str]:
    """Upload `path` in CHUNK chunks, IN_FLIGHT at a time, in `form`; (measures, video id)."""
    size = path.stat().st_size
    total = math.ceil(size / CHUNK)
    declaration = {
        "filename": path.name,
        "total_chunks": total,
        "total_size": size,
        "chunk_size": CHUNK,
        "sha256": digest,
    }
    fd = os.open(path, os.O_RDONLY)
    reset_peak(service)
    cpu, service_cpu = time.process_time() + tree_cpu(service + others), tree_cpu(service)
    try:
        started = time.perf_counter()
        init = client.post("/upload/init", data=declaration)
        init.raise_for_status()
        upload_id = init.json()["upload_id"]
        send = _sender(client, fd, upload_id, form)
        with ThreadPoolExecutor(max_workers=IN_FLIGHT) as pool:
            list(pool.map(send, range(total)))
        sent = time.perf_counter()
        cpu = time.process_time() + tree_cpu(service + others) - cpu
        service_cpu = tree_cpu(service) - service_cpu
        done = client.post("/upload/complete", data={"upload_id": upload_id})
        completed = time.perf_counter()
    finally:
        os.close(fd)
    if done.status_code != 200:
        raise SystemExit(f"complete answered {done.status_code}: {done.text[:300]}")
    peak = memory(service, "VmHWM")
    ingest = Ingest(sent - started, completed - sent, cpu, service_cpu, peak)
    return ingest, upload_id


def _sender(client: httpx.Client, fd: int, upload_id: str, form: str) -> Callable[[int], None]:
    def send(index: int) -> None:
        piece = os.pread(fd, CHUNK, index * CHUNK)
        if form == "multipart":
            response = client.post(
                "/upload/chunk",
                data={"upload_id": upload_id, "index": index},
                files={"file": ("blob", piece, "application/octet-stream")},
            )
        else:
            response = client.post(
                "/upload/chunk",
                params={"upload_id": upload_id, "index": index},
                content=piece,
                headers={"Content-Type": "application/octet-stream"},
            )
        if response.status_code != 200:
            raise SystemExit(f"chunk {index} answered {response.status_code}: {response.text}")

    return send


def minimal_ingest(path: Path, target: Path) -> tuple[float, float, float]:
    """(seconds, the receiver's user and system CPU seconds) of sending `path` to the minimal
    receiver (bench_receiver.py), CHUNK by CHUNK over IN_FLIGHT connections (the client sends
    with sendfile; its cost is not counted)."""
    receiver_script = Path(__file__).with_name("bench_receiver.py")
    argv = [sys.executable, str(receiver_script), str(target), str(CHUNK), str(IN_FLIGHT)]
    receiver = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert receiver.stdout is not None
    try:
        port = int(receiver.stdout.readline())
        size = path.stat().st_size
        indexes = iter(range(math.ceil(size / CHUNK)))
        take = threading.Lock()
        fd = os.open(path, os.O_RDONLY)

        def send() -> None:
            with socket.create_connection(("127.0.0.1", port)) as conn:
                while True:
                    with take:
                        index = next(indexes, None)
                    if index is None:
                        return
                    offset = index * CHUNK
                    length = min(CHUNK, size - offset)
                    conn.sendall(bench_receiver.HEADER.pack(offset, length))
                    sent = 0
                    while sent < length:
                        sent += os.sendfile(conn.fileno(), fd, offset + sent, length - sent)
                    if conn.recv(1) != b"k":
                        raise SystemExit("the minimal receiver stopped answering")

        started = time.perf_counter()
        try:
            with ThreadPoolExecutor(max_workers=IN_FLIGHT) as pool:
                for future in [pool.submit(send) for _ in range(IN_FLIGHT)]:
                    future.result()
        finally:
            os.close(fd)
        elapsed = time.perf_counter() - started
        user, system = map(float, receiver.stdout.readline().split())
    finally:
        receiver.wait(timeout=60)
        target.unlink(missing_ok=True)
    return elapsed, user, system


def best_upload(
    platform: Platform, path: Path, digest: str, *, form: str, direct: bool, rounds: int
) -> list[Ingest]:
    """`rounds` uploads of `path`, each deleted once measured."""
    base = platform.service_url("upload") if direct else platform.url
    runs = []
    with httpx.Client(base_url=base, timeout=300) as client, platform.client() as admin:
        for _ in range(rounds):
            # Found again each time: the launcher restarts a server that died.
            service, gateway = server_pids(platform, "upload"), server_pids(platform, "gateway")
            ingest, video_id = upload(
                client, path, digest, form=form, service=service, others=gateway
            )
            admin.delete(f"/admin/videos/{video_id}").raise_for_status()
            runs.append(ingest)
    return runs


def run(work: Path, row: Row, *, size: int = BIG, rounds: int = ROUNDS) -> None:
    """The ingest benchmark: prints its rows through `row`; leaves no large file behind."""
    work.mkdir(parents=True, exist_ok=True)
    # Source, one copy or upload at a time, and the 1 GiB the platform keeps free.
    check_space(work, 2 * size + SMALL + GiB + GiB // 2)
    try:
        clip = make_clip(work / "clip.ts")
        big = make_video(work / "ingest-1g.ts", clip, size)
        small = make_video(work / "ingest-64m.ts", clip, SMALL)
        _measure(work, big, small, row, rounds)
    finally:
        for name in ("clip.ts", "ingest-1g.ts", "ingest-64m.ts", "copy.bin"):
            (work / name).unlink(missing_ok=True)
        shutil.rmtree(work / "storage", ignore_errors=True)


def _measure(work: Path, big: Path, small: Path, row: Row, rounds: int) -> None:
    big_sha, hash_seconds = sha256_file(big)
    small_sha, _ = sha256_file(small)
    copy = work / "copy.bin"
    cat = min(time_copy(big, copy, sync=False) for _ in range(rounds))
    cat_sync = min(time_copy(big, copy, sync=True) for _ in range(rounds))
    minimal = min(minimal_ingest(big, copy) for _ in range(rounds))
    platform = Platform(work / "storage", WORKERS="0").start()
    cached = Platform(work / "storage-cached", WORKERS="0", DIRECT_IO="false").start()
    try:
        idle = memory(server_pids(platform, "upload"), "VmRSS")
        ingests = {
            (form, direct): best_upload(
                platform, big, big_sha, form=form, direct=direct, rounds=rounds
            )
            for direct in (False, True)
            for form in FORMS
        }
        smalls = best_upload(
            platform, small, small_sha, form="multipart", direct=False, rounds=4 * rounds
        )
        writes = _alternate(platform, cached, big, big_sha, rounds)
    finally:
        platform.drop()
        cached.drop()
    _report(row, cat, cat_sync, ingests, smalls, hash_seconds, idle, big.stat().st_size)
    _report_minimal(row, minimal, ingests, cat_sync[0], big.stat().st_size)
    _report_writes(row, writes, big.stat().st_size)


def _alternate(
    platform: Platform, cached: Platform, path: Path, digest: str, rounds: int
) -> tuple[list[Ingest], list[Ingest]]:
    """Raw uploads straight to `platform` (chunks written past the page cache) and to `cached`
    (DIRECT_IO=false), taking turns so both meet the machine in the same states."""
    direct: list[Ingest] = []
    buffered: list[Ingest] = []
    for _ in range(rounds):
        for target, runs in ((platform, direct), (cached, buffered)):
            runs += best_upload(target, path, digest, form="octet-stream", direct=True, rounds=1)
    return direct, buffered


def _report_minimal(
    row: Row,
    minimal: tuple[float, float, float],
    ingests: dict[tuple[str, bool], list[Ingest]],
    durable: float,
    size: int,
) -> None:
    """The minimal receiver's rate and CPU per GiB, and the upload service's against it."""
    seconds, user, system = minimal
    mbps, cpu = size / 1e6 / seconds, (user + system) * GiB / size
    synced = size / 1e6 / durable
    row("ingest, minimal receiver (MB/s) / cat + fsync", mbps, synced, _pct(mbps, synced))
    row("  its CPU s/GiB: user (sha256 ...) / system", user * GiB / size, system * GiB / size, "")
    for form in FORMS:
        best = min(ingests[(form, True)], key=lambda r: r.seconds)
        alone = best.service_cpu * GiB / size
        name = form.replace("-stream", "")
        row(f"upload svc CPU s/GiB, direct {name} / minimal", alone, cpu, f"{alone / cpu:.2f}x")


def _report_writes(row: Row, writes: tuple[list[Ingest], list[Ingest]], size: int) -> None:
    """The upload service's CPU per GiB and the rate, O_DIRECT against the page cache (means)."""
    cpu = [statistics.mean(r.service_cpu for r in runs) * GiB / size for runs in writes]
    rate = [size / 1e6 / statistics.mean(r.seconds for r in runs) for runs in writes]
    row("  upload svc CPU s/GiB: O_DIRECT / page cache", cpu[0], cpu[1], f"{cpu[0] / cpu[1]:.2f}x")
    row("  direct raw (MB/s): O_DIRECT / page cache", rate[0], rate[1], f"{rate[0] / rate[1]:.2f}x")


def _report(
    row: Row,
    cat: tuple[float, float],
    cat_sync: tuple[float, float],
    ingests: dict[tuple[str, bool], list[Ingest]],
    smalls: list[Ingest],
    hash_seconds: float,
    idle: int,
    size: int,
) -> None:
    gib = f"{size / GiB:g} GiB"
    rate = lambda seconds: size / 1e6 / seconds  # noqa: E731
    per_gib = lambda cpu: cpu * GiB / size  # noqa: E731
    raw, durable = rate(cat[0]), rate(cat_sync[0])
    row(f"cat {gib} (MB/s) / cat + fsync", raw, durable, f"{raw / durable:.2f}x")
    for (form, direct), runs in ingests.items():
        best = min(runs, key=lambda r: r.seconds)
        mbps = rate(best.seconds)
        name = f"{'direct' if direct else 'gateway'} {form.replace('-stream', '')}"
        row(f"ingest {name} (MB/s) / cat + fsync", mbps, durable, _pct(mbps, durable))
        row(f"ingest {name} (MB/s) / cat", mbps, raw, _pct(mbps, raw))
        cpu, alone, base = per_gib(best.cpu), per_gib(best.service_cpu), per_gib(cat_sync[1])
        row("  CPU s/GiB, client+gateway+upload / cat+fsync", cpu, base, f"{cpu / base:.1f}x")
        row("  CPU s/GiB, upload service alone / cat+fsync", alone, base, f"{alone / base:.1f}x")
    bigs = [r.complete for runs in ingests.values() for r in runs]
    small_runs = [r.complete for r in smalls]
    big, small = statistics.median(bigs), statistics.median(small_runs)
    row(f"complete, median (s): {gib} / 64 MiB", big, small, f"{big / small:.2f}x")
    row(
        f"complete, best (s): {gib} / 64 MiB",
        min(bigs),
        min(small_runs),
        f"{min(bigs) / min(small_runs):.2f}x",
    )
    row(
        f"complete {gib} (s) / sha256 of the file",
        big,
        hash_seconds,
        f"{hash_seconds / big:.1f}x less",
    )
    big_peak = max(r.peak_rss for runs in ingests.values() for r in runs) / 1e6
    small_peak = max(r.peak_rss for r in smalls) / 1e6
    row(
        f"upload svc peak RSS (MB): {gib} / 64 MiB",
        big_peak,
        small_peak,
        f"{big_peak / small_peak:.2f}x",
    )
    row(
        "upload svc peak RSS (MB) / idle RSS",
        big_peak,
        idle / 1e6,
        f"+{big_peak - idle / 1e6:.0f} MB",
    )


def _pct(ours: float, baseline: float) -> str:
    return f"{100 * ours / baseline:.0f}%"


def _print_row(figure: str, ours: float | str, baseline: float | str, ratio: str) -> None:
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    print(f"{figure:<46} {fmt(ours):>12} {fmt(baseline):>12} {ratio:>10}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--mib", type=int, default=BIG // MiB, help="size of the big file")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="runs of each timing")
    args = parser.parse_args()
    print(f"{'figure':<46} {'platform':>12} {'baseline':>12} {'ratio':>10}")
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        run(Path(tmp), _print_row, size=args.mib * MiB, rounds=args.rounds)


if __name__ == "__main__":
    main()
