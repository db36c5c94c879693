import shutil
import subprocess
from pathlib import Path

import pytest

from services.core.errors import NotAVideo
from services.media.probe import (
    MAX_DERIVED_FPS,
    ProbeError,
    SourceInfo,
    StreamTiming,
    frame_rate,
    probe,
)


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", *args], check=True, timeout=60)


def test_full_clip_is_described(clips: dict[str, Path]) -> None:
    info = probe(clips["full"])
    assert (info.width, info.height) == (1920, 1080)
    assert info.fps == pytest.approx(30)
    assert info.duration == pytest.approx(4, abs=0.1)
    assert (info.video_codec, info.audio_codec) == ("h264", "aac")
    assert info.has_audio
    assert "mp4" in info.format_name
    assert info.bit_rate and info.bit_rate > 0


def test_portrait_clip_keeps_its_orientation(clips: dict[str, Path]) -> None:
    info = probe(clips["portrait"])
    assert (info.width, info.height) == (720, 1280)


def test_pal_clip_reports_25_fps(clips: dict[str, Path]) -> None:
    assert probe(clips["pal"]).fps == pytest.approx(25)


def test_clip_without_audio_has_no_audio_codec(clips: dict[str, Path]) -> None:
    info = probe(clips["silent"])
    assert info.audio_codec is None
    assert not info.has_audio


def test_text_file_is_not_a_video_and_says_why(clips: dict[str, Path]) -> None:
    with pytest.raises(ProbeError, match="Invalid data found"):
        probe(clips["text"])


def test_truncated_file_is_not_a_video_and_says_why(clips: dict[str, Path]) -> None:
    with pytest.raises(ProbeError, match="moov atom not found"):
        probe(clips["truncated"])


def test_probe_error_is_the_catalogue_not_a_video_error(clips: dict[str, Path]) -> None:
    with pytest.raises(NotAVideo) as caught:
        probe(clips["text"])
    assert caught.value.status == 422
    assert caught.value.code == "not_a_video"


def test_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ProbeError, match="No such file"):
        probe(tmp_path / "source")


def test_audio_only_file_is_described_without_a_picture(tmp_path: Path) -> None:
    path = tmp_path / "sound.m4a"
    ffmpeg("-f", "lavfi", "-i", "sine=duration=1.5", "-c:a", "aac", str(path))
    info = probe(path)
    assert not info.has_video and info.has_audio
    assert (info.width, info.height, info.fps, info.video_codec) == (0, 0, 0.0, "")
    assert info.audio_codec == "aac"
    assert info.duration == pytest.approx(1.5, abs=0.05)


def test_cover_art_is_not_a_video_stream(tmp_path: Path) -> None:
    path = tmp_path / "song.m4a"
    ffmpeg(
        *("-f", "lavfi", "-i", "sine=duration=1"),
        *("-f", "lavfi", "-i", "color=c=red:s=64x64:d=1"),
        *("-map", "0:a", "-map", "1:v", "-frames:v", "1", "-c:a", "aac", "-c:v", "mjpeg"),
        *("-disposition:v:0", "attached_pic", str(path)),
    )
    info = probe(path)
    assert not info.has_video
    assert info.audio_codec == "aac"


def test_file_with_neither_video_nor_audio_is_not_a_video(tmp_path: Path) -> None:
    subtitles = tmp_path / "words.srt"
    subtitles.write_text("1\n00:00:00,000 --> 00:00:01,000\nhello\n", encoding="utf-8")
    path = tmp_path / "words.mkv"
    ffmpeg("-i", str(subtitles), "-c:s", "srt", str(path))
    with pytest.raises(ProbeError, match="no video or audio stream"):
        probe(path)


def test_rotated_video_reports_its_display_size(clips: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "rotated.mp4"
    ffmpeg("-i", str(clips["small"]), "-c", "copy", "-metadata:s:v", "rotate=90", str(path))
    info = probe(path)
    assert (info.width, info.height) == (360, 640)


def test_non_square_pixels_are_stretched_to_display_width(tmp_path: Path) -> None:
    path = tmp_path / "anamorphic.mp4"
    ffmpeg(
        *("-f", "lavfi", "-i", "testsrc2=size=640x480:rate=25:duration=1"),
        *("-vf", "setsar=4/3", "-c:v", "libx264", "-preset", "ultrafast", str(path)),
    )
    info = probe(path)
    assert (info.width, info.height) == (853, 480)


def test_file_name_starting_with_a_dash_is_not_an_option(
    clips: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(clips["tiny"], tmp_path / "-y.mp4")
    monkeypatch.chdir(tmp_path)
    info = probe(Path("-y.mp4"))
    assert (info.width, info.height) == (320, 240)


def test_still_image_is_refused_as_an_image(tmp_path: Path) -> None:
    path = tmp_path / "source"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x64", "-frames:v", "1", "-f", "image2", str(path))
    with pytest.raises(ProbeError, match="it is an image, which the platform does not accept"):
        probe(path)


# ---- files whose header does not say how long they are ----------------------------------


def live_webm(path: Path, seconds: float) -> Path:
    """VP9/Opus WebM written to a pipe, as MediaRecorder writes it: the muxer cannot seek
    back, so the header has no Duration and there are no Cues."""
    argv = ["ffmpeg", "-v", "error", "-nostdin", "-y"]
    argv += ["-f", "lavfi", "-i", f"testsrc2=size=160x120:rate=30:duration={seconds}"]
    argv += ["-f", "lavfi", "-i", f"sine=sample_rate=48000:duration={seconds}"]
    argv += ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-c:a", "libopus"]
    with path.open("wb") as out:
        subprocess.run([*argv, "-f", "webm", "pipe:1"], check=True, stdout=out, timeout=60)
    return path


def test_webm_written_live_gets_its_duration_from_its_packets(tmp_path: Path) -> None:
    path = live_webm(tmp_path / "recording.webm", 3)
    header = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", path],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert header.strip() == "N/A"  # the premise: nothing in the header says how long
    assert b"\x1c\x53\xbb\x6b" not in path.read_bytes()  # nor any Cues element
    info = probe(path)
    assert info.duration == pytest.approx(3, abs=0.05)
    assert info.fps == pytest.approx(30)
    assert (info.video_codec, info.audio_codec) == ("vp9", "opus")


def test_packet_timing_ends_one_spacing_after_the_last_packet_without_durations() -> None:
    timing = StreamTiming()
    for n in range(90):
        timing.add(0.007 + n / 30, None)  # MediaRecorder states no packet durations
    assert timing.stop == pytest.approx(0.007 + 3)
    assert timing.rate == pytest.approx(30)


def test_packet_timing_uses_stated_durations() -> None:
    timing = StreamTiming()
    for n in range(50):
        timing.add(n * 0.02, 0.02)
    assert timing.stop == pytest.approx(1.0)


def test_a_clock_rate_is_replaced_by_the_counted_rate() -> None:
    # MediaRecorder: r_frame_rate is its 1 ms clock, avg_frame_rate unknown.
    video = {"avg_frame_rate": "0/0", "r_frame_rate": "1000/1"}
    timing = StreamTiming()
    for n in range(240):
        timing.add(n / 24, None)
    assert frame_rate(video, timing) == pytest.approx(24)
    assert frame_rate({"avg_frame_rate": "25/1", "r_frame_rate": "50/1"}, timing) == 25


def test_a_counted_rate_never_exceeds_the_nominal_rate() -> None:
    timing = StreamTiming()
    for n in range(100):
        timing.add(n / 1000, None)  # a burst of packets 1 ms apart
    assert frame_rate({"avg_frame_rate": "0/0", "r_frame_rate": "30/1"}, timing) == 30
    assert frame_rate({"avg_frame_rate": "0/0"}, timing) == MAX_DERIVED_FPS


# ---- colour and scan facts --------------------------------------------------------------


def test_hlg_clip_reports_its_colour_facts(tmp_path: Path) -> None:
    path = tmp_path / "hlg.mov"
    ffmpeg(
        *("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=30:duration=1"),
        *("-vf", "format=yuv420p10le", "-c:v", "libx265", "-preset", "ultrafast"),
        *("-x265-params", "log-level=error", "-color_primaries", "bt2020"),
        *("-color_trc", "arib-std-b67", "-colorspace", "bt2020nc", str(path)),
    )
    info = probe(path)
    assert (info.pix_fmt, info.color_transfer) == ("yuv420p10le", "arib-std-b67")
    assert (info.color_primaries, info.color_space) == ("bt2020", "bt2020nc")
    assert info.hdr and info.wide_gamut and not info.interlaced


def test_sdr_clip_is_not_hdr_and_unknown_tags_are_empty(clips: dict[str, Path]) -> None:
    info = probe(clips["tiny"])
    assert not info.hdr and not info.wide_gamut
    assert info.color_transfer in ("", "bt709")
    assert info.field_order in ("", "progressive")


def test_interlaced_mpeg2_reports_its_field_order(tmp_path: Path) -> None:
    path = tmp_path / "camcorder.ts"
    ffmpeg(
        *("-f", "lavfi", "-i", "testsrc2=size=720x576:rate=25:duration=1"),
        *("-c:v", "mpeg2video", "-flags", "+ilme+ildct", "-top", "1", str(path)),
    )
    info = probe(path)
    assert info.field_order == "tt" and info.interlaced


def test_plans_stored_before_the_colour_facts_read_back() -> None:
    stored = {
        "duration": 3.0,
        "width": 320,
        "height": 240,
        "fps": 30.0,
        "video_codec": "h264",
        "audio_codec": None,
        "format_name": "mp4",
        "bit_rate": None,
    }
    info = SourceInfo(**stored)
    assert (info.color_transfer, info.field_order, info.pix_fmt) == ("", "", "")
    assert not info.hdr and not info.interlaced
