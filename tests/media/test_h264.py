"""The SPS reader against ffprobe on real x264 streams (picture size, cropping, frame rate),
and the MPEG-TS reading the first master relies on."""

import subprocess
from pathlib import Path
from typing import Any

import pytest

from services.media.h264 import Sps, SpsError, find_sps, parse_sps
from services.media.mpegts import (
    STREAM_AAC_ADTS,
    STREAM_H264,
    first_video_pes,
    read_head,
    stream_types,
)
from services.media.playlists import measure_rendition, media_playlist
from tests.media.test_stitching import ffprobe

# (lavfi size, rate, extra ffmpeg arguments): x264's SPS in the shapes it takes.
ENCODES = {
    "ultrafast-poc2": ("640x360", "30", ["-preset", "ultrafast"]),
    "high-bframes": ("1280x720", "30000/1001", ["-preset", "veryfast"]),
    "cropped-odd": ("853x479", "25", ["-preset", "superfast"]),
    "film": ("854x480", "24000/1001", ["-preset", "ultrafast", "-x264-params", "bframes=3"]),
    "yuv444-cqm": (
        "320x240",
        "60",
        ["-pix_fmt", "yuv444p", "-preset", "superfast", "-x264-params", "cqm=jvt"],
    ),
    "interlaced": ("720x576", "25", ["-preset", "superfast", "-x264-params", "interlaced=1"]),
    "sar-vui": ("720x480", "15", ["-preset", "ultrafast", "-vf", "setsar=32/27"]),
}


def encode(path: Path, size: str, rate: str, extra: list[str], audio: bool = False) -> Path:
    inputs = ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:d=0.5"]
    if audio:
        inputs += ["-f", "lavfi", "-i", "sine=d=0.5"]
    args = ["ffmpeg", "-v", "error", "-y", *inputs, "-c:v", "libx264", *extra]
    subprocess.run(
        [*args, *(["-c:a", "aac"] if audio else []), "-f", "mpegts", str(path)], check=True
    )
    return path


def probed(path: Path) -> dict[str, Any]:
    stream: dict[str, Any] = ffprobe(path, "-select_streams", "v:0", "-show_streams")["streams"][0]
    return stream


def sps_of(path: Path) -> Sps:
    head = read_head(path)
    assert head is not None
    pes = first_video_pes(head)
    assert pes is not None
    return parse_sps(find_sps(pes))


@pytest.mark.parametrize("name", list(ENCODES))
def test_the_sps_gives_the_size_and_rate_ffprobe_reads(name: str, tmp_path: Path) -> None:
    size, rate, extra = ENCODES[name]
    path = encode(tmp_path / "s.ts", size, rate, extra)
    sps, stream = sps_of(path), probed(path)
    assert (sps.width, sps.height) == (stream["width"], stream["height"])
    num, den = (int(n) for n in str(stream["avg_frame_rate"]).split("/"))
    assert sps.fps == pytest.approx(num / den, abs=1e-9)


def test_a_segment_measures_the_same_read_in_python_as_by_ffprobe(tmp_path: Path) -> None:
    """measure_rendition reads a video-only segment in Python; with an audio stream beside
    the video it asks ffprobe: both name the same picture, rate and CODECS."""
    rungs = {}
    for name, audio in (("python", False), ("ffprobe", True)):
        folder = tmp_path / name
        folder.mkdir()
        encode(folder / "seg_00000.ts", "1280x720", "30000/1001", ["-preset", "veryfast"], audio)
        (folder / "playlist.m3u8").write_text(
            media_playlist([("seg_00000.ts", 0.5)], target=1, ended=True)
        )
        rungs[name] = measure_rendition(folder)
    python, probe = rungs["python"], rungs["ffprobe"]
    assert (python.audio_codec, probe.audio_codec) == (None, "mp4a.40.2")
    picture = (python.width, python.height, python.fps, python.video_codec)
    assert picture == (probe.width, probe.height, pytest.approx(probe.fps), probe.video_codec)


def test_the_program_map_lists_each_stream_type(tmp_path: Path) -> None:
    video = encode(tmp_path / "v.ts", "320x240", "30", ["-preset", "ultrafast"])
    both = encode(tmp_path / "av.ts", "320x240", "30", ["-preset", "ultrafast"], audio=True)
    assert stream_types(read_head(video) or b"") == [STREAM_H264]
    assert stream_types(read_head(both) or b"") == [STREAM_H264, STREAM_AAC_ADTS]
    assert stream_types(b"\x47" + b"\x00" * 187) is None  # no PAT
    assert stream_types(b"junk") is None


def test_an_sps_cut_short_or_missing_is_refused_not_misread() -> None:
    with pytest.raises(SpsError, match="ends early"):
        parse_sps(find_sps(b"\x00\x00\x01\x67\x64\x00"))
    with pytest.raises(SpsError, match="no sequence parameter set"):
        find_sps(b"\x00\x00\x01\x09\xf0\x00\x00\x01\x68\xef")


def ue(value: int) -> str:
    code = bin(value + 1)[2:]
    return "0" * (len(code) - 1) + code


def baseline_sps(vui: str) -> bytes:
    """A Baseline SPS for 320x240 built bit by bit (7.3.2.1.1), with `vui` after its flag."""
    bits = "01000010" + "00000000" + "00011110"  # profile 66, constraints, level 3.0
    bits += ue(0) + ue(0) + ue(2) + ue(1) + "0"  # id, frame_num, POC type 2, refs, gaps
    bits += ue(320 // 16 - 1) + ue(240 // 16 - 1) + "1" + "1" + "0"  # size, frames, 8x8, crop
    bits += vui + "1"  # the RBSP stop bit
    bits += "0" * (-len(bits) % 8)
    return b"\x67" + int(bits, 2).to_bytes(len(bits) // 8, "big")


def test_an_sps_without_timing_gives_no_rate() -> None:
    assert parse_sps(baseline_sps("0")) == Sps(320, 240, None)
    no_timing = "1" + "0" * 5  # VUI present: no SAR, overscan, signal, chroma loc, timing
    assert parse_sps(baseline_sps(no_timing)) == Sps(320, 240, None)
    timing = "1" + "0" * 4 + "1" + format(1001, "032b") + format(48000, "032b") + "1"
    assert parse_sps(baseline_sps(timing)) == Sps(320, 240, pytest.approx(48000 / 2002))
