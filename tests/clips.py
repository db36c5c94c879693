"""Tiny test clips rendered with lavfi, so no media file is ever committed."""

import struct
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


# EBML ids of Matroska's Segment Info element and of the Duration float inside it.
_MKV_INFO = bytes.fromhex("1549a966")
_MKV_DURATION = bytes.fromhex("4489")


def make_duration_bomb(path: Path, *, claimed_ms: float) -> Path:
    """A tiny real MKV (one second of 64x48 video) whose header claims `claimed_ms` ms.

    The Segment Info's Duration (EBML id 0x4489, an 8-byte float counted in TimecodeScale
    units, 1 ms by default) is overwritten: the frames stay, only the claim changes.
    """
    real = path.with_name(f"real-{path.name}")
    argv = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
    argv += ["-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:duration=1"]
    argv += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(real)]
    subprocess.run(argv, check=True, capture_output=True, timeout=60)
    data = bytearray(real.read_bytes())
    at = data.find(_MKV_DURATION, data.index(_MKV_INFO))
    if at < 0 or data[at + 2] != 0x88:
        raise AssertionError("ffmpeg wrote no 8-byte Segment Duration to patch")
    data[at + 3 : at + 11] = struct.pack(">d", claimed_ms)
    path.write_bytes(bytes(data))
    real.unlink()
    return path
