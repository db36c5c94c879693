"""Benchmarks, each figure printed beside its baseline measured in the same run, as a ratio.

    .venv/bin/python scripts/bench.py            # every benchmark
    .venv/bin/python scripts/bench.py ladder     # only the ladder / first-playable / ok one
    .venv/bin/python scripts/bench.py --quick    # the short subset (QUICK)
    .venv/bin/python scripts/bench.py --chart bench.png --json bench.json   # also a picture

First the tools the chosen benchmarks use are installed when missing, in the background while
their sources are generated (`prepare`). Before each benchmark a progress line says which it
is, how long the run has taken and about how long is left (from each benchmark's usual
duration on the 2-core machine, corrected by how the run has gone so far).

ladder: a generated 30 s 1920x1080 30 fps H.264 source (~10 Mb/s, stereo AAC) through the
platform from `complete` to `ok`, against the reference system's way: four ffmpeg processes
in parallel, one per rung, each decoding the source itself (`-preset faster`, main profile,
the seed ladder, 6 s segments). Reports wall times, their ratio, SSIM per rung for both
against the source scaled to that rung, time to first playable and time to ok.

runs (only when named, about 4.5 min): complete->ok with one ffmpeg on across chunks (the
default) against an ffmpeg per chunk (CHUNK_RUNS=false), alternating, with the floor.

idle (only when named, about 2 min): the CPU an idle platform takes at the default
POLL_SECONDS against the 0.25 s poll of before, alternating.
"""

import argparse
import json
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_table import HEADER, ROWS, row  # noqa: E402

from services.core.settings import Settings  # noqa: E402
from services.media.chunking import TimeChunk  # noqa: E402
from services.media.ffmpeg_args import video_chunk_command  # noqa: E402
from services.media.ladder import SEED_LADDER, Rendition, plan_ladder  # noqa: E402
from services.media.plan import encode_options  # noqa: E402
from services.media.probe import probe  # noqa: E402
from tests.clips import render  # noqa: E402
from tests.harness import TEST_SETTINGS, Platform, upload  # noqa: E402

SOURCE_SECONDS = 30
SOURCE_FPS = 30
CHUNK = 8 * 1024 * 1024


# Generated sources are kept here between runs, named by what made them: the ffmpeg command
# and ffmpeg's version. Making them takes about 70 s of a full run on 2 cores (35 s the 1080p
# source, 36 s the 4K HEVC one), none of it measured. BENCH_CACHE moves the folder;
# --no-cache (SOURCE_CACHE None) makes every source afresh.
SOURCE_CACHE: Path | None = Path(
    os.environ.get("BENCH_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "video-platform-bench"
)


def make_source(path: Path) -> Path:
    """A SOURCE_SECONDS 1080p30 H.264 source at about 10 Mb/s with stereo AAC (noise keeps it
    honest)."""
    seconds = SOURCE_SECONDS
    video = f"testsrc2=size=1920x1080:rate={SOURCE_FPS}:duration={seconds},noise=alls=12:allf=t"
    audio = f"sine=frequency=440:sample_rate=48000:duration={seconds}"
    argv = ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", video, "-f", "lavfi", "-i", audio]
    argv += ["-c:v", "libx264", "-preset", "veryfast", "-b:v", "10M", "-maxrate", "10M"]
    argv += ["-bufsize", "20M", "-pix_fmt", "yuv420p", "-c:a", "aac", "-ac", "2", "-b:a", "192k"]
    return render(argv, path, SOURCE_CACHE)


def reference_ladder(source: Path, out: Path) -> float:
    """The reference system's way: one ffmpeg per rung, in parallel; returns wall seconds."""
    audio = {r.name: r.audio_kbps for r in SEED_LADDER}
    procs = []
    started = time.monotonic()
    for r in plan_ladder(1920, 1080):
        folder = out / r.name
        folder.mkdir(parents=True)
        procs.append(
            subprocess.Popen(
                [
                    "ffmpeg",
                    "-v",
                    "error",
                    "-y",
                    "-i",
                    str(source),
                    "-vf",
                    f"scale={r.width}:{r.height}",
                    "-c:v",
                    "libx264",
                    "-profile:v",
                    "main",
                    "-preset",
                    "faster",
                    "-b:v",
                    f"{r.video_kbps}k",
                    "-maxrate",
                    f"{r.maxrate_kbps}k",
                    "-bufsize",
                    f"{r.bufsize_kbps}k",
                    "-g",
                    "48",
                    "-keyint_min",
                    "48",
                    "-sc_threshold",
                    "0",
                    "-force_key_frames",
                    "expr:gte(t,n_forced*6)",
                    "-c:a",
                    "aac",
                    "-b:a",
                    f"{audio[r.name]}k",
                    "-ac",
                    "2",
                    "-f",
                    "hls",
                    "-hls_time",
                    "6",
                    "-hls_playlist_type",
                    "vod",
                    "-hls_flags",
                    "independent_segments",
                    "-hls_segment_filename",
                    str(folder / "seg_%05d.ts"),
                    str(folder / "playlist.m3u8"),
                ]
            )
        )
    for proc in procs:
        if proc.wait() != 0:
            raise SystemExit("the reference ladder's ffmpeg failed")
    return time.monotonic() - started


def ssim_frames(renditions: list[Path], source: Path, rung: Rendition) -> list[list[float]]:
    """Each frame's SSIM (ffmpeg's "All") of each of `renditions` (a rung's HLS output
    folders: the platform's, the reference's) against the source scaled to the rung's size,
    frame by frame from each one's first frame. Its mean is what ffmpeg prints for the
    whole; any span (the opening, the rest) is a slice of the same list, so one pass serves
    every figure."""
    return ladders_ssim_frames([(rung, renditions)], source)[0]


def ladders_ssim_frames(
    rungs: list[tuple[Rendition, list[Path]]], source: Path
) -> list[list[list[float]]]:
    """`ssim_frames` for several rungs at once, [rung][rendition], in one ffmpeg: the source
    is decoded once for them all and scaled once per rung. (Measured on the bench's ladder:
    18.2 s for the four rungs of two ladders, against 26.4 s as an ffmpeg per rung, two at a
    time, each decoding the source; the same SSIM to the eighth decimal.)"""
    with tempfile.TemporaryDirectory(prefix="ssim-") as tmp:
        argv = ["ffmpeg", "-v", "error", "-nostats"]
        graph: list[str] = []
        outputs: list[str] = []
        stats: list[list[Path]] = []
        inputs = sum(len(folders) for _, folders in rungs)
        sources = "".join(f"[src{r}]" for r in range(len(rungs)))
        graph.append(f"[{inputs}:v]setpts=PTS-STARTPTS,split={len(rungs)}{sources}")
        for r, (rung, folders) in enumerate(rungs):
            scaled = "".join(f"[s{r}_{n}]" for n in range(len(folders)))
            graph.append(f"[src{r}]scale={rung.width}:{rung.height},split={len(folders)}{scaled}")
            stats.append([Path(tmp) / f"{r}-{n}.ssim" for n in range(len(folders))])
            for n, folder in enumerate(folders):
                k = len(outputs)
                argv += ["-i", str(folder / "playlist.m3u8")]
                graph.append(
                    f"[{k}:v]setpts=PTS-STARTPTS[r{k}];"
                    f"[r{k}][s{r}_{n}]ssim=stats_file={stats[r][n]}[o{k}]"
                )
                outputs.append(f"[o{k}]")
        argv += ["-i", str(source), "-filter_complex", ";".join(graph)]
        for output in outputs:
            argv += ["-map", output, "-f", "null", "-"]
        subprocess.run(argv, capture_output=True, text=True, check=True)
        frames = [
            [[float(v) for v in re.findall(r"All:([0-9.]+)", f.read_text())] for f in files]
            for files in stats
        ]
    for (rung, _), per_rung in zip(rungs, frames, strict=True):
        if not all(per_rung):
            raise SystemExit(f"no SSIM for {rung.name}")
    return frames


def production_platform(work: Path, **env: str) -> Platform:
    """The platform with its production settings: every setting the test harness changes
    for speed (presets, segments, chunks, the opening, polling, leases) back at its default."""
    defaults = {
        name: str(Settings.model_fields[name.lower()].default)
        for name in TEST_SETTINGS
        if name.lower() in Settings.model_fields
    }
    return Platform(work / "storage", **{**defaults, **env})


@contextmanager
def platform_client(work: Path, **env: str) -> Iterator[tuple[Platform, httpx.Client]]:
    """A fresh real platform with the production settings (`env` over them, e.g.
    STORAGE_URL) and a client of it, stopped and dropped afterwards."""
    platform = production_platform(work, **env).start()
    try:
        with platform.client() as client:
            yield platform, client
    finally:
        platform.stop()
        platform.drop()


def platform_ladder(source: Path, work: Path, **env: str) -> tuple[float, float, str]:
    """(first playable s, ok s, video id): `source` uploaded to a fresh real platform
    (`env`: settings over the production ones)."""
    with platform_client(work, **env) as (platform, client):
        return _ladder_on(platform, client, source)[:3]


def first_playables(source: Path, work: Path, runs: int, **env: str) -> list[float]:
    """`runs` first-playable times of `source` on one fresh real platform."""
    with platform_client(work, **env) as (platform, client):
        return _playables_on(platform, client, source, runs)


def _ladder_on(
    platform: Platform, client: httpx.Client, source: Path
) -> tuple[float, float, str, float]:
    """(first playable s, ok s, video id, CPU-s) of `source` uploaded through `client`: the
    CPU seconds `platform` spent from `complete`'s answer until the job was seen `ok`: the
    launcher and every process below it (see platform_cpu_parts)."""
    marks: list[dict[str, float]] = []
    video_id, first, answered = _until_playable(
        client, source, lambda: marks.append(platform_cpu_parts(platform))
    )
    ok = _ready_after(client, video_id, answered)
    after = platform_cpu_parts(platform)
    spent = {k: v - marks[0].get(k, 0.0) for k, v in after.items()}
    shown = sorted(((v, k) for k, v in spent.items() if v >= 0.05), reverse=True)
    print("  CPU-s by part, complete->ok: " + ", ".join(f"{k} {v:.2f}" for v, k in shown))
    return first, ok, video_id, sum(spent.values())


def platform_cpu_parts(platform: Platform) -> dict[str, float]:
    """The CPU seconds the platform's processes have used, by part: for each process the
    launcher started (a service or the gateway, named by its app), its Python (itself and its
    own worker processes) under its name and the programs it ran (ffmpeg, ffprobe: running,
    or finished and reaped) under "<name> ffmpeg"; the launcher's own under "launcher"."""
    stats: dict[int, tuple[str, list[str]]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                head, _, tail = (entry / "stat").read_text().rpartition(")")
                stats[int(entry.name)] = (head.partition("(")[2], tail.split())
            except OSError:
                continue  # ended since the listing
    children: dict[int, list[int]] = {}
    for pid, (_, fields) in stats.items():
        children.setdefault(int(fields[1]), []).append(pid)
    tick = os.sysconf("SC_CLK_TCK")

    def cpu(pid: int, first: int) -> float:  # first 11: utime, stime; 13: cutime, cstime
        return sum(int(v) for v in stats[pid][1][first : first + 2]) / tick if pid in stats else 0

    launcher = platform.process.pid if platform.process else None
    if launcher is None:
        return {}
    parts = {"launcher": cpu(launcher, 11) + cpu(launcher, 13)}
    for pid in children.get(launcher, []):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            argv = ""
        match = re.search(r"services\.(\w+)\.app|gateway\.app", argv)
        name = (match.group(1) or "gateway") if match else f"pid {pid}"
        # What the service reaped counts as the programs it ran (a granian server's reaped
        # workers would count there too; they end only when it stops).
        python, programs = cpu(pid, 11), cpu(pid, 13)
        todo = list(children.get(pid, []))
        while todo:
            child = todo.pop()
            if stats.get(child, ("", []))[0].startswith(("ffmpeg", "ffprobe")):
                programs += cpu(child, 11) + cpu(child, 13)
                continue
            python += cpu(child, 11)
            programs += cpu(child, 13)
            todo += children.get(child, [])
        parts[name] = parts.get(name, 0.0) + python
        parts[f"{name} ffmpeg"] = parts.get(f"{name} ffmpeg", 0.0) + programs
    return parts


def _until_playable(
    client: httpx.Client, source: Path, at_complete: Callable[[], object] | None = None
) -> tuple[str, float, float]:
    """Upload `source` through `client` and wait until it is playable: (video id, seconds
    from `complete`'s answer to playable, the wall clock at that answer). `at_complete` is
    called right after that answer."""
    video_id, done = upload(client, source, chunk_size=CHUNK)
    completed, answered = time.monotonic(), time.time()
    if at_complete is not None:
        at_complete()
    assert done is not None and done.status_code == 200, done.text
    return video_id, _first_playable(client, video_id) - completed, answered


def _playables_on(platform: Platform, client: httpx.Client, source: Path, runs: int) -> list[float]:
    """`runs` times the seconds from `complete`'s answer to every rung's first segment and
    the audio being servable, one upload after another. Once playable, an upload's job is
    stopped, its units released and the video deleted; each upload starts once no ffmpeg
    runs on the platform (no encode, poster or storyboard left), so each run has the
    machine to itself as on a fresh platform (one platform for every run instead of one
    each: about 4.6 s of start and stop saved a run)."""
    times = []
    for _ in range(runs):
        if leaked := platform.wait_no_ffmpeg(timeout=30):
            raise SystemExit(f"ffmpeg still running after 30 s: {leaked}")
        video_id, first, _ = _until_playable(client, source)
        times.append(first)
        stopped = client.post(f"/admin/videos/{video_id}/stop")
        # 409: the job has already ended (a short video can be done by now).
        if stopped.status_code == 409:
            print(f"  (not stopped: {stopped.json()})", flush=True)
        else:
            stopped.raise_for_status()
        while any(
            c["status"] == "running"
            for c in client.get(f"/admin/videos/{video_id}/status").json()["chunks"]
        ):
            time.sleep(0.1)
        client.delete(f"/admin/videos/{video_id}").raise_for_status()
    return times


# How often the wait for `ok` asks. When the video became ready is read afterwards from its
# trail (the platform's own record, video.ready), so a slow ask loses no precision; asking
# every 50 ms instead cost the gateway and the transcoding service about 3 CPU-s per ladder
# (measured with psutil around one run), a core and a half-second of the encode's two.
OK_POLL = 0.5


def _ready_after(client, video_id: str, answered: float) -> float:  # type: ignore[no-untyped-def]
    """Seconds from `answered` (the wall clock at complete's answer) to the video.ready entry
    of the video's trail, once the job is ok."""
    while client.get(f"/transcode/status/{video_id}").json()["overall"] != "ok":
        time.sleep(OK_POLL)
    trail = client.get(f"/admin/videos/{video_id}/events").json()["events"]
    ready = [e["at"] for e in trail if e["kind"] == "video.ready"]
    if not ready:
        raise SystemExit(f"video {video_id} is ok without a video.ready entry in its trail")
    return datetime.fromisoformat(ready[-1]).timestamp() - answered


# How often the first-playable check asks: every ask is a request through the gateway and
# the streaming service, on the same two cores as the encode it waits for (at 20 ms they
# took about a third of a core); 50 ms at most adds to what is measured.
POLL = 0.05


def _first_playable(client, video_id: str) -> float:  # type: ignore[no-untyped-def]
    """When the master and the first segment of every rung and of the audio can be fetched."""
    while True:
        master = client.get(f"/stream/{video_id}/master.m3u8")
        if master.status_code == 200:
            # Rungs are listed as URIs on lines of their own; the audio in a URI="..." attribute.
            rungs = [ln for ln in master.text.splitlines() if ln.endswith("/playlist.m3u8")]
            rungs += re.findall(r'URI="([^"]+/playlist\.m3u8)"', master.text)
            if rungs and all(_first_segment(client, video_id, uri) for uri in rungs):
                return time.monotonic()
        time.sleep(POLL)


def _first_segment(client, video_id: str, uri: str) -> bool:  # type: ignore[no-untyped-def]
    playlist = client.get(f"/stream/{video_id}/{uri}")
    names = [ln for ln in playlist.text.splitlines() if ln and not ln.startswith("#")]
    if playlist.status_code != 200 or not names:
        return False
    rung = uri.split("/")[0]
    return bool(client.get(f"/stream/{video_id}/{rung}/{names[0]}").status_code == 200)


# The ladder benchmark's source and its local (first playable s, ok s), for the S3 one.
LADDER_RUN: dict = {}

# First-playable runs (the first is the whole ladder's run): the median and the largest.
PLAYABLE_RUNS = 5


def bench_ladder(work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    source = make_source(work / "source.mp4")
    size_mbit = source.stat().st_size * 8 / 1e6
    print(f"source: {SOURCE_SECONDS} s 1920x1080 30 fps, {size_mbit / SOURCE_SECONDS:.1f} Mb/s")
    baseline = reference_ladder(source, work / "reference")
    with platform_client(work) as (platform, client):
        first, wall, video_id, cpu = _ladder_on(platform, client, source)
        firsts = [first, *_playables_on(platform, client, source, PLAYABLE_RUNS - 1)]
    LADDER_RUN.update(source=source, local=(first, wall))
    row(
        "ladder wall time, complete->ok, 1 video worker (s)",
        wall,
        baseline,
        f"{baseline / wall:.2f}x faster",
    )
    median, worst = statistics.median(firsts), max(firsts)
    print(f"first playable, {PLAYABLE_RUNS} runs (s): {', '.join(f'{f:.2f}' for f in firsts)}")
    row("first playable, median of 5 (s)", median, baseline, f"{baseline / median:.1f}x")
    row("first playable, p95 (largest of 5) (s)", worst, baseline, f"{baseline / worst:.1f}x")
    floor, floor_cpu = floor_ladder(source, work / "floor")
    row("floor: one ffmpeg, the same settings (s)", wall, floor, f"{floor / wall:.2f} of it")
    # Wall times measured a minute apart move with the machine (on the shared 2-core one
    # the floor took 33.2-43.4 s within an hour); the CPU seconds each took move far less.
    row(
        "  the same in CPU-s (every process of the platform)",
        cpu,
        floor_cpu,
        f"{floor_cpu / cpu:.2f} of it",
    )
    two = platform_ladder(source, work / "two", WORKERS="2")[1]
    row("complete->ok, 2 video workers (s)", two, baseline, f"{baseline / two:.2f}x")
    ours = work / "storage" / "hls" / video_id
    rungs = plan_ladder(1920, 1080)
    frames = ladders_ssim_frames(
        [(r, [ours / r.name, work / "reference" / r.name]) for r in rungs], source
    )
    for rung, (mine, theirs) in zip(rungs, frames, strict=True):
        a, b = statistics.fmean(mine), statistics.fmean(theirs)
        row(f"SSIM {rung.name} (platform vs reference)", a, b, f"{a - b:+.4f}")
    opening_ssim(rungs, frames)


# Rounds of the runs benchmark: each one ladder with runs, one without (alternating which goes
# first) and one floor.
RUNS_ROUNDS = 3


def bench_runs(work: Path) -> None:
    """complete->ok with CHUNK_RUNS (one ffmpeg on across chunks, the default) against an
    ffmpeg per chunk, RUNS_ROUNDS alternating rounds on the ladder's source, each against the
    floor measured in its round: medians."""
    work.mkdir(parents=True, exist_ok=True)
    source = make_source(work / "source.mp4")
    times: dict[str, list[float]] = {"runs": [], "per chunk": [], "floor": []}
    settings = {"runs": {}, "per chunk": {"CHUNK_RUNS": "false"}}
    for round_ in range(RUNS_ROUNDS):
        order = ["runs", "per chunk"] if round_ % 2 == 0 else ["per chunk", "runs"]
        for name in order:
            wall = platform_ladder(source, work / f"{round_}-{name}", **settings[name])[1]
            times[name].append(wall)
        times["floor"].append(floor_ladder(source, work / f"{round_}-floor")[0])
        print(", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
    runs, per_chunk, floor = (statistics.median(times[k]) for k in ("runs", "per chunk", "floor"))
    row(
        f"complete->ok with runs, median of {RUNS_ROUNDS} (s)",
        runs,
        per_chunk,
        f"{per_chunk / runs:.3f}x faster than an ffmpeg per chunk",
    )
    row(
        f"the floor, median of {RUNS_ROUNDS} (s): with runs / an ffmpeg per chunk",
        runs,
        floor,
        f"{floor / runs:.3f} / {floor / per_chunk:.3f} of it",
    )


def floor_ladder(source: Path, out: Path) -> tuple[float, float]:
    """Wall and CPU seconds of one uninterrupted ffmpeg at the platform's encoder settings:
    every rung from one decode of the whole file, no chunks, no opening, no audio (the
    platform's own command for a single chunk). What the chunked ladder's overhead is
    measured against."""
    options = replace(encode_options(Settings()), opening_seconds=0)
    info = probe(source)
    renditions = plan_ladder(info.width, info.height)
    for rendition in renditions:
        (out / rendition.name).mkdir(parents=True)
    argv = video_chunk_command(
        ffmpeg="ffmpeg",
        source=source,
        info=info,
        renditions=renditions,
        out_dir=out,
        options=options,
        chunk=TimeChunk(index=0, start=0.0, end=None),
    )
    started, before = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return time.monotonic() - started, cpu


def opening_ssim(rungs: list[Rendition], frames: list[list[list[float]]]) -> None:
    """Each rung's SSIM over the opening segment beside its SSIM over the rest, for the
    platform (goal: the opening at most 0.01 below) and, on the same frames, for the
    reference's continuous encode (how much of a gap the content itself makes). `frames`:
    per rung, the platform's and the reference's per-frame SSIM."""
    opening = Settings().opening_seconds
    count = round(opening * SOURCE_FPS)
    for rung, (mine, theirs) in zip(rungs, frames, strict=True):
        head, rest = statistics.fmean(mine[:count]), statistics.fmean(mine[count:])
        ref_head, ref_rest = statistics.fmean(theirs[:count]), statistics.fmean(theirs[count:])
        row(f"SSIM {rung.name} opening {opening:g} s vs rest", head, rest, f"{head - rest:+.4f}")
        row(
            f"  reference {rung.name}, same seconds (opening vs rest)",
            ref_head,
            ref_rest,
            f"{ref_head - ref_rest:+.4f}",
        )


def make_4k_hevc_source(path: Path, seconds: int = 9) -> Path:
    """A 3840x2160 30 fps HEVC Main 10 (10-bit) source with stereo AAC, as phones record."""
    video = f"testsrc2=size=3840x2160:rate=30:duration={seconds},noise=alls=12:allf=t"
    audio = f"sine=frequency=440:sample_rate=48000:duration={seconds}"
    argv = ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", video, "-f", "lavfi", "-i", audio]
    argv += ["-c:v", "libx265", "-preset", "ultrafast", "-pix_fmt", "yuv420p10le"]
    argv += ["-b:v", "20M", "-x265-params", "log-level=error", "-tag:v", "hvc1"]
    argv += ["-c:a", "aac", "-ac", "2"]
    return render(argv, path, SOURCE_CACHE)


# The baseline without the opening is one whole encode of the source: three runs of it
# measured 16.84, 16.91 and 16.84 s (and 17.42, 17.30, 16.93 in another bench), so one run
# is taken (about 34 s of the full bench saved).
WITHOUT_OPENING_RUNS = 1


def bench_playable_4k(work: Path) -> None:
    """First playable for a 4K HEVC 10-bit source (goal <= 5 s), median of 3, beside the
    same platform without the short opening (OPENING_SECONDS=0, WITHOUT_OPENING_RUNS)."""
    work.mkdir(parents=True, exist_ok=True)
    source = make_4k_hevc_source(work / "source4k.mp4")
    ours = first_playables(source, work / "open", 3)
    without = first_playables(source, work / "none", WITHOUT_OPENING_RUNS, OPENING_SECONDS="0")
    print(f"4K first playable (s): {ours} ; without the opening: {without}")
    a, b = statistics.median(ours), statistics.median(without)
    row("first playable, 4K HEVC 10-bit, median of 3 (s)", a, b, f"{b / a:.1f}x")


# The resume benchmark's source: 15 one-segment chunks are enough to kill mid-job.
RESUME_SECONDS = 15


def bench_resume(work: Path) -> None:
    """kill -9 of the process running ffmpeg mid-job: how much work is done again."""
    work.mkdir(parents=True, exist_ok=True)
    # The ladder's source cut at RESUME_SECONDS (the same frames, copied: no encode).
    whole = LADDER_RUN.get("source") or make_source(work / "whole.mp4")
    source = work / "source.mp4"
    argv = ["ffmpeg", "-v", "error", "-y", "-i", str(whole), "-t", str(RESUME_SECONDS)]
    subprocess.run([*argv, "-c", "copy", str(source)], check=True)
    platform = production_platform(work, CHUNK_SEGMENTS="1").start()
    try:
        with platform.client() as client:
            video_id, _ = upload(client, source, chunk_size=CHUNK)
            chunks = _wait_chunks(client, video_id, lambda cs: _done(cs) >= 2 and _held(cs))
            done_at_kill = sum(
                _seconds(c) for c in chunks if c["status"] == "done" and c["kind"] == "video"
            )
            pid = int(
                next(c["worker"] for c in chunks if c["status"] == "running").rsplit(":", 1)[1]
            )
            os.kill(pid, signal.SIGKILL)
            # The gateway answers 502 until the launcher has restarted the service.
            while client.get(f"/transcode/status/{video_id}").json().get("overall") != "ok":
                time.sleep(0.2)
            final = client.get(f"/admin/videos/{video_id}/status").json()["chunks"]
    finally:
        platform.drop()
    video = [c for c in final if c["kind"] == "video"]
    redone = sum((c["encodes"] - 1) * _seconds(c) for c in video)
    repeated = sum(c["encodes"] - 1 for c in final)
    in_flight = sum(1 for c in chunks if c["status"] == "running")
    row("encodes repeated after kill -9 (chunks)", float(repeated), float(in_flight), "in flight")
    row(
        "video seconds encoded again after kill -9",
        redone,
        done_at_kill + redone,
        "restart-from-zero",
    )


def _wait_chunks(client, video_id, predicate):  # type: ignore[no-untyped-def]
    while True:
        chunks = client.get(f"/admin/videos/{video_id}/status").json()["chunks"]
        if predicate(chunks):
            return chunks
        time.sleep(0.05)


def _done(chunks) -> int:  # type: ignore[no-untyped-def]
    return sum(1 for c in chunks if c["kind"] == "video" and c["status"] == "done")


def _held(chunks) -> bool:  # type: ignore[no-untyped-def]
    return any(c["status"] == "running" and c["kind"] == "video" for c in chunks)


def _seconds(chunk) -> float:  # type: ignore[no-untyped-def]
    return float((chunk["end"] if chunk["end"] is not None else RESUME_SECONDS) - chunk["start"])


def bench_viewers(work: Path) -> None:
    """Concurrent HLS viewers at p99 < 100 ms, against nginx (scripts/bench_viewers.py)."""
    from bench_viewers import run  # scripts/ is on sys.path when bench.py runs as a script

    run(work, row, alone=False)


def bench_ingest(work: Path) -> None:
    """1 GiB uploaded in 8 MiB chunks against `cat src > dst` (scripts/bench_ingest.py)."""
    from bench_ingest import run

    run(work, row)


def bench_serving(work: Path) -> None:
    """A 3 MB segment and a playlist under wrk -c50, against nginx (scripts/bench_serving.py)."""
    from bench_serving import run

    run(work, row)


def bench_s3(work: Path) -> None:
    """The ladder and ingest on S3 (SeaweedFS) against the local folder and the S3 server's
    own put throughput (scripts/bench_s3.py). After the ladder benchmark in the same run, the
    S3 ladder encodes its source and is compared with its local run (not a second one)."""
    from bench_s3 import run

    work.mkdir(parents=True, exist_ok=True)
    source = LADDER_RUN.get("source") or make_source(work / "source.mp4")
    run(work, row, source=source, ladder=platform_ladder, local=LADDER_RUN.get("local"))


def bench_yield(work: Path) -> None:
    """Viewers' segment p99 while two encodes run, at nice 0 and at ENCODE_NICE, against idle
    (scripts/bench_yield.py)."""
    from bench_yield import run

    run(work, row)


# The idle benchmark: rounds (each one platform of each poll, alternating which goes first),
# the seconds each platform settles after it starts, the seconds it is measured over, and the
# poll it is compared with (POLL_SECONDS's default before rings reached other machines).
IDLE_ROUNDS = 2
IDLE_SETTLE_SECONDS = 5.0
IDLE_SECONDS = 20.0
IDLE_BEFORE_POLL = "0.25"


def bench_idle(work: Path) -> None:
    """What a platform with nothing to do costs: the CPU its processes take, at the default
    POLL_SECONDS against the 0.25 s poll it had before, in alternating rounds: medians, in
    per cent of one core (the transcoding service alone, then every process)."""
    work.mkdir(parents=True, exist_ok=True)
    polls = {"default": {}, "before": {"POLL_SECONDS": IDLE_BEFORE_POLL}}
    shares: dict[str, list[tuple[float, float]]] = {name: [] for name in polls}
    for round_ in range(IDLE_ROUNDS):
        for name in list(polls) if round_ % 2 == 0 else list(polls)[::-1]:
            with platform_client(work / f"{round_}-{name}", **polls[name]) as (platform, _):
                time.sleep(IDLE_SETTLE_SECONDS)
                before, started = platform_cpu_parts(platform), time.monotonic()
                time.sleep(IDLE_SECONDS)
                after, seconds = platform_cpu_parts(platform), time.monotonic() - started
            spent = {k: v - before.get(k, 0.0) for k, v in after.items()}
            service = spent.get("transcoding", 0.0) + spent.get("transcoding ffmpeg", 0.0)
            shares[name].append((100 * service / seconds, 100 * sum(spent.values()) / seconds))
    poll = Settings.model_fields["poll_seconds"].default
    for index, what in enumerate(("the transcoding service", "every process")):
        ours = statistics.median(share[index] for share in shares["default"])
        theirs = statistics.median(share[index] for share in shares["before"])
        row(
            f"idle, {what} (% of a core): poll {poll:g} s / {IDLE_BEFORE_POLL} s",
            ours,
            theirs,
            f"{ours / theirs:.2f}x" if theirs else "-",
        )


# Usual seconds of each benchmark on the 2-core development machine, for the progress lines:
# a run with its sources in the cache (a first run makes them: about 70 s more).
USUAL_SECONDS = {
    "ladder": 180,
    "playable4k": 40,
    "resume": 25,
    "viewers": 95,
    "ingest": 50,
    "serving": 80,
    "s3": 55,
    "yield": 40,
    "runs": 270,
    "idle": 120,
}
# What each benchmark needs before it measures: Debian's wrk and nginx-light, the `bench`
# extra (locust), the generated sources (the ladder's is also the resume and S3 ones').
NEEDS_APT = {"serving", "viewers", "yield"}
NEEDS_LOCUST = {"viewers"}
NEEDS_SOURCE = {"ladder", "resume", "s3", "runs"}


def prepare(names: list[str], work: Path, chart: bool) -> None:
    """A first run's set-up, all before the first measurement: what is missing is installed
    in the background (the package mirrors and the disk) while the sources are generated
    into the cache (the cores), instead of each on its own in the middle of the run. With
    everything there already (or --no-cache), only the installs are checked."""
    from bench_chart import require_matplotlib
    from bench_serving import install_tools
    from bench_viewers import locust_command

    chosen = set(names)
    installs = [install_tools] if chosen & NEEDS_APT else []
    # The bench extra brings locust and matplotlib at once: one pip run for either.
    if chosen & NEEDS_LOCUST:
        installs.append(locust_command)
    elif chart:
        installs.append(require_matplotlib)
    with ThreadPoolExecutor(max_workers=max(1, len(installs))) as pool:
        installing = [pool.submit(install) for install in installs]
        if SOURCE_CACHE is not None:
            if chosen & NEEDS_SOURCE:
                make_source(work / "source.mp4")
            if "playable4k" in chosen:
                make_4k_hevc_source(work / "source4k.mp4")
        for install in installing:
            install.result()


# --quick: the figures that need no long encode.
QUICK = ["yield", "serving"]
# --quick also measures each wrk run over this window instead of 10 s (the subset in about
# 2 minutes; the full run keeps 10 s), and leaves out the serving benchmark's API answer.
QUICK_WRK = "5s"

BENCHMARKS = {
    "ladder": bench_ladder,
    "playable4k": bench_playable_4k,
    "resume": bench_resume,
    "viewers": bench_viewers,
    "ingest": bench_ingest,
    "serving": bench_serving,
    "s3": bench_s3,
    "yield": bench_yield,
}
# Run only when named: the ladder benchmark's 1-worker figure already runs with the defaults;
# the idle one is a setting's cost, not a goal's figure (the full run stays under 10 min).
ON_REQUEST = {"runs": bench_runs, "idle": bench_idle}


def main() -> None:
    global SOURCE_CACHE
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "names",
        nargs="*",
        help=f"benchmarks to run: {', '.join(BENCHMARKS)} (every one by default); "
        f"named only: {', '.join(ON_REQUEST)}",
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"only {', '.join(QUICK)}, wrk over {QUICK_WRK}"
    )
    parser.add_argument("--json", type=Path, help="also write the table to this file")
    parser.add_argument("--chart", type=Path, help="also draw the table as a PNG here")
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help=f"make the generated sources afresh instead of taking them from {SOURCE_CACHE}",
    )
    args = parser.parse_args()
    if args.no_cache:
        SOURCE_CACHE = None
    unknown = set(args.names) - set(BENCHMARKS) - set(ON_REQUEST)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    names = args.names or (QUICK if args.quick else list(BENCHMARKS))
    if args.quick:
        import bench_serving
        import bench_yield

        bench_serving.DURATION = bench_yield.DURATION = QUICK_WRK
        # Three more wrk windows would take the subset past its two minutes.
        bench_serving.API = False
    print(HEADER)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        prepare(names, Path(tmp) / "prepare", chart=args.chart is not None)
        ready = time.monotonic()
        print(f"ready in {ready - started:.0f} s", flush=True)
        for done, name in enumerate(names):
            now = time.monotonic()
            progress(names, done, now - started, now - ready)
            {**BENCHMARKS, **ON_REQUEST}[name](Path(tmp) / name)
    took = time.monotonic() - started
    print(f"[{len(names)}/{len(names)}] done in {took / 60:.1f} min", flush=True)
    if args.json:
        args.json.write_text(json.dumps(ROWS, indent=2))
    if args.chart:
        from bench_chart import draw

        title = f"scripts/bench.py {' '.join(names)} ({took / 60:.1f} min)"
        print(f"chart: {draw(ROWS, args.chart, title)}", flush=True)


def progress(names: list[str], done: int, elapsed: float, measuring: float) -> None:
    """One line before benchmark `done`: which, time so far, about how long is left (the
    usual durations, scaled by how the finished ones, `measuring` seconds since `prepare`,
    compared with theirs)."""
    usual_done = sum(USUAL_SECONDS[n] for n in names[:done])
    pace = measuring / usual_done if usual_done else 1.0
    left = pace * sum(USUAL_SECONDS[n] for n in names[done:])
    print(
        f"[{done + 1}/{len(names)}] {names[done]}: {elapsed / 60:.1f} min so far, about "
        f"{left / 60:.1f} min left",
        flush=True,
    )


if __name__ == "__main__":
    main()
