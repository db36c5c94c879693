import shutil
import subprocess
from pathlib import Path

import pytest

from services.core.errors import NotAVideo
from services.media.probe import ProbeError, probe


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
