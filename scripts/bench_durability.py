"""What durability costs: a small transcode by a real worker, with the fsyncs and without.

    .venv/bin/python scripts/bench_durability.py [--dir FOLDER] [--rounds N]

A generated 12 s 1280x720 clip is transcoded by one in-process worker (SQLite, x264
ultrafast, 2 s segments, one segment per chunk: many small units, the case where a per-unit
cost shows most). Each round runs it twice, once as shipped and once with os.fsync made a
no-op, in alternating order. Printed: the median time of the worker's `_finish` step (check,
index, make durable, record, publish) per unit, the time spent inside os.fsync, and the
whole transcode's wall time. FOLDER should be on the disk the storage lives on (a tmpfs
makes fsync free); the default is the system's temporary folder.
"""

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.core import jobs  # noqa: E402
from services.core.db import init_db, session_scope  # noqa: E402
from services.core.models import Job, Status, Video  # noqa: E402
from services.core.settings import Settings  # noqa: E402
from services.core.storage import Storage  # noqa: E402
from services.transcoding.worker import Worker  # noqa: E402

VIDEO_ID = "b" * 32


def make_clip(path: Path) -> Path:
    """12 s of 1280x720 30 fps H.264 with stereo AAC."""
    video = ["-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30:duration=12"]
    audio = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=12"]
    codecs = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac"]
    subprocess.run(["ffmpeg", "-v", "error", "-y", *video, *audio, *codecs, str(path)], check=True)
    return path


class Timings:
    """Durations of the worker's `_finish` calls and of every os.fsync, from any thread."""

    def __init__(self, sync: bool) -> None:
        self.finish: list[float] = []
        self.fsync_seconds = 0.0
        self.fsyncs = 0
        real_finish, real_fsync = Worker._finish, os.fsync

        def finish(worker: Worker, *args: Any) -> None:
            started = time.perf_counter()
            real_finish(worker, *args)
            self.finish.append(time.perf_counter() - started)

        def fsync(fd: int) -> None:
            started = time.perf_counter()
            if sync:
                real_fsync(fd)
            self.fsync_seconds += time.perf_counter() - started
            self.fsyncs += 1

        self.patches: list[Any] = [
            mock.patch.object(Worker, "_finish", finish),
            mock.patch("os.fsync", fsync),
        ]


def transcode(folder: Path, clip: Path, *, sync: bool) -> tuple[float, Timings]:
    """Wall time of one transcode from a queued job to `ok`, and what was timed on the way."""
    settings = Settings(
        storage_dir=folder,
        database_url="",
        x264_preset="ultrafast",
        segment_seconds=2,
        keyframe_seconds=2,
        chunk_segments=1,
        poll_seconds=0.05,
    )
    init_db(settings)
    storage = Storage(folder)
    storage.ensure_layout()
    storage.original_dir(VIDEO_ID).mkdir(parents=True)
    shutil.copyfile(clip, storage.source_path(VIDEO_ID))
    with session_scope(settings) as session:
        session.add(Video(id=VIDEO_ID, filename="clip.mp4", status=Status.UPLOADING, qualities=[]))
        session.flush()
        jobs.enqueue(session, video_id=VIDEO_ID)
    timings = Timings(sync)
    for patch in timings.patches:
        patch.start()
    try:
        started = time.perf_counter()
        asyncio.run(_until_ok(Worker(settings), settings))
        return time.perf_counter() - started, timings
    finally:
        for patch in timings.patches:
            patch.stop()


async def _until_ok(worker: Worker, settings: Settings) -> None:
    while True:
        await worker.run_once()
        with session_scope(settings) as session:
            job = session.get(Job, VIDEO_ID)
            assert job is not None and job.status != Status.FAILED, job and job.error
            if job.status == Status.OK:
                break
    await worker.settle()
    others = asyncio.all_tasks() - {asyncio.current_task()}
    await asyncio.gather(*others)  # the poster and storyboard made beside


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-durability-", dir=args.dir))
    try:
        clip = make_clip(work / "clip.mp4")
        results: dict[bool, list[tuple[float, Timings]]] = {True: [], False: []}
        runs = 0
        for round_ in range(args.rounds):
            for sync in (True, False) if round_ % 2 == 0 else (False, True):
                runs += 1  # a folder (and database) of its own each time
                results[sync].append(transcode(work / f"storage-{runs}", clip, sync=sync))
        report(results, _filesystem(work))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(results: dict[bool, list[tuple[float, Timings]]], where: str) -> None:
    median: Callable[[list[float]], float] = statistics.median
    print(f"storage on {where}; {len(results[True])} rounds; medians")
    print(
        f"{'':<24} {'finish/unit ms':>15} {'fsync total ms':>15} {'fsyncs':>7} {'transcode s':>12}"
    )
    for sync, label in ((True, "with fsync"), (False, "fsync a no-op")):
        runs = results[sync]
        finish = median([median(t.finish) for _, t in runs]) * 1000
        fsync = median([t.fsync_seconds for _, t in runs]) * 1000
        count = int(median([float(t.fsyncs) for _, t in runs]))
        wall = median([w for w, _ in runs])
        print(f"{label:<24} {finish:>15.1f} {fsync:>15.1f} {count:>7} {wall:>12.2f}")


def _filesystem(folder: Path) -> str:
    done = subprocess.run(
        ["df", "--output=fstype,source", str(folder)], capture_output=True, text=True, check=False
    )
    return " ".join(done.stdout.split()[2:]) or "unknown"


if __name__ == "__main__":
    main()
