"""Tiny test clips rendered with lavfi, so no media file is ever committed."""

import fcntl
import functools
import hashlib
import json
import os
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any


@functools.cache
def _version(ffmpeg: str) -> str:
    return subprocess.run(
        [ffmpeg, "-version"], check=True, capture_output=True, text=True
    ).stdout.splitlines()[0]


def render(argv: list[str], path: Path, cache: Path | None, **run: Any) -> Path:
    """`path` made by ffmpeg `argv` (its output file left off; `run`: subprocess.run's
    options), and returned.

    With `cache` (a folder), it is copied from there when the same command and the same
    ffmpeg made it before: the test clips in make test's fresh TEST_CLIP_CACHE (each rendered
    once per make test, not once per pytest run), the bench's sources in its own folder kept
    between runs. A file is written under another name and renamed when whole, so a failed or
    interrupted render leaves nothing to be taken; the lock makes a second process that asks
    for a file being made wait for it, not make it again."""
    if cache is None:
        subprocess.run([*argv, str(path)], check=True, **run)
        return path
    key = hashlib.sha256(json.dumps([_version(argv[0]), argv]).encode()).hexdigest()[:32]
    cached = cache / f"{key}{path.suffix}"
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not cached.exists():
            partial = cache / f"{key}.partial{path.suffix}"
            try:
                subprocess.run([*argv, str(partial)], check=True, **run)
                partial.replace(cached)
            finally:
                partial.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cached, path)
    return path


def _clip(argv: list[str], path: Path) -> Path:
    """A test clip: `render`ed quietly, from TEST_CLIP_CACHE when it is set."""
    folder = os.environ.get("TEST_CLIP_CACHE")
    cache = Path(folder) if folder else None
    return render(argv, path, cache, capture_output=True, timeout=60)


def make_clip(
    path: Path,
    *,
    width: int,
    height: int,
    seconds: float,
    fps: float = 30,
    audio: bool = True,
    noise: int = 0,
    pattern: str = "testsrc2",
) -> Path:
    """Render an H.264 (+ stereo 48 kHz AAC) mp4 test pattern at `path` and return it; with
    `noise` (a strength, 1-100), grain that changes every frame: footage that needs every
    bit a rung's cap allows, where the plain pattern is easy to compress. `pattern`: lavfi's
    moving testsrc2, or its still testsrc (a counter ticking on a fixed picture: a slide)."""
    argv = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
    video = f"{pattern}=size={width}x{height}:rate={fps}:duration={seconds}"
    if noise:
        video += f",noise=alls={noise}:allf=t"
    argv += ["-f", "lavfi", "-i", video]
    if audio:
        argv += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}"]
        argv += ["-map", "0:v", "-map", "1:a", "-c:a", "aac", "-ac", "2", "-ar", "48000"]
    # ultrafast: the clips only need to exist, quickly.
    argv += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    return _clip(argv, path)


def make_audio_clip(
    path: Path,
    *,
    seconds: float,
    encoder: list[str],
    channels: int = 2,
    sample_rate: int = 48000,
    cover: bool = False,
) -> Path:
    """Render a sine tone with `encoder` (e.g. ["-c:a", "flac"]) at `path`, audio only; with
    `cover`, a one-picture cover art stream (attached_pic) as music files carry it."""
    argv = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
    tone = f"sine=frequency=440:sample_rate={sample_rate}:duration={seconds}"
    argv += ["-f", "lavfi", "-i", tone]
    if cover:
        argv += ["-f", "lavfi", "-i", "color=c=orange:s=64x64:d=1"]
        argv += ["-map", "0:a", "-map", "1:v", "-frames:v", "1", "-c:v", "mjpeg"]
        argv += ["-disposition:v:0", "attached_pic"]
    argv += ["-ac", str(channels), "-ar", str(sample_rate), *encoder]
    return _clip(argv, path)


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


def write_srt(path: Path, cues: list[tuple[float, float, str]]) -> Path:
    """An SRT file of `cues` (start and end seconds, text) at `path`."""

    def stamp(seconds: float) -> str:
        minutes, millis = divmod(round(seconds * 1000), 60000)
        return f"{minutes // 60:02d}:{minutes % 60:02d}:{millis // 1000:02d},{millis % 1000:03d}"

    blocks = [
        f"{number}\n{stamp(start)} --> {stamp(end)}\n{text}\n"
        for number, (start, end, text) in enumerate(cues, start=1)
    ]
    path.write_text("\n".join(blocks), encoding="utf-8")
    return path


def make_subtitled_clip(
    path: Path,
    *,
    seconds: float,
    tracks: list[tuple[Path, str, str, str]],
    width: int = 320,
    height: int = 240,
) -> Path:
    """A test pattern with a tone and the subtitle `tracks` (SRT file, codec such as subrip,
    ass or mov_text, language tag, title), muxed into `path` (MKV, MP4...) by ffmpeg."""
    argv = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
    argv += ["-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate=30:duration={seconds}"]
    argv += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}"]
    for srt, _, _, _ in tracks:
        argv += ["-i", str(srt)]
    argv += ["-map", "0:v", "-map", "1:a"]
    for number in range(len(tracks)):
        argv += ["-map", f"{number + 2}:s"]
    if path.suffix == ".webm":  # WebM takes VP9 and Opus only
        argv += ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8"]
        argv += ["-c:a", "libopus"]
    else:
        argv += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
        argv += ["-c:a", "aac"]
    argv += ["-ac", "2", "-ar", "48000"]
    for number, (_, codec, language, title) in enumerate(tracks):
        argv += [f"-c:s:{number}", codec, f"-metadata:s:s:{number}", f"language={language}"]
        if title:
            argv += [f"-metadata:s:s:{number}", f"title={title}"]
    subprocess.run([*argv, str(path)], check=True, capture_output=True, timeout=60)
    return path
