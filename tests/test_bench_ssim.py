"""The ladder benchmark's SSIM (scripts/bench.py): every rung of every ladder in one ffmpeg
gives each rendition the frames and the figures it gets measured alone, and tells a worse
rendition from a better one (a pass that paired the wrong inputs would not)."""

import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from bench import ladders_ssim_frames, ssim_frames  # noqa: E402

from services.media.ladder import Rendition  # noqa: E402

SOURCE = "testsrc2=size=640x360:rate=25:duration=2,noise=alls=20:allf=t"
RUNGS = [
    Rendition("360p", 640, 360, video_kbps=800, maxrate_kbps=856, bufsize_kbps=1200, audio_kbps=96),
    Rendition("180p", 320, 180, video_kbps=200, maxrate_kbps=214, bufsize_kbps=300, audio_kbps=64),
]


def hls(source: Path, rung: Rendition, out: Path, crf: int) -> Path:
    """`source` at `rung`'s size and x264 CRF `crf`, as an HLS folder like a ladder's rung."""
    out.mkdir(parents=True)
    argv = ["ffmpeg", "-v", "error", "-y", "-i", str(source), "-an"]
    argv += ["-vf", f"scale={rung.width}:{rung.height}", "-c:v", "libx264", "-preset"]
    argv += ["ultrafast", "-crf", str(crf), "-f", "hls", "-hls_time", "1"]
    argv += ["-hls_playlist_type", "vod", str(out / "playlist.m3u8")]
    subprocess.run(argv, check=True)
    return out


def test_one_pass_over_every_rung_matches_a_pass_per_rung(tmp_path: Path) -> None:
    source = tmp_path / "source.mp4"
    argv = ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", SOURCE, "-c:v", "libx264"]
    subprocess.run([*argv, "-preset", "ultrafast", "-crf", "10", str(source)], check=True)
    ladders = {
        rung.name: [
            hls(source, rung, tmp_path / f"{name}-{rung.name}", crf)
            for name, crf in (("good", 18), ("poor", 51))
        ]
        for rung in RUNGS
    }
    together = ladders_ssim_frames([(rung, ladders[rung.name]) for rung in RUNGS], source)
    for rung, frames in zip(RUNGS, together, strict=True):
        alone = ssim_frames(ladders[rung.name], source, rung)
        assert [len(each) for each in frames] == [50, 50]
        for mine, its in zip(frames, alone, strict=True):
            # The same frames paired; the ssim filter's slice threads may move the last digit.
            assert mine == pytest.approx(its, abs=1e-6)
        good, poor = (statistics.fmean(each) for each in frames)
        assert good > poor + 0.02, (rung.name, good, poor)
