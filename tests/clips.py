"""Tiny test clips rendered with lavfi, so no media file is ever committed."""

import subprocess
from pathlib import Path


def make_clip(
    path: Path, *, width: int, height: int, seconds: float, fps: float = 30, audio: bool = True
) -> Path:
    """Render an H.264 (+ stereo 48 kHz AAC) mp4 test pattern at `path` and return it."""
    argv = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
    argv += ["-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={fps}:duration={seconds}"]
    if audio:
        argv += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}"]
        argv += ["-map", "0:v", "-map", "1:a", "-c:a", "aac", "-ac", "2", "-ar", "48000"]
    # ultrafast: the clips only need to exist, quickly.
    argv += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)]
    subprocess.run(argv, check=True, capture_output=True, timeout=60)
    return path
