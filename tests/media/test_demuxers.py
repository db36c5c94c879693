"""Only what was uploaded is read: which demuxers may open a file, said in every argv builder,
and what a refused file is, in words."""

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from services.media.chunking import TimeChunk
from services.media.demuxers import (
    HLS_FORMATS,
    SEGMENT_FORMATS,
    UPLOAD_FORMATS,
    RemoteSource,
    describe,
    input_args,
    is_allowed,
    refusal,
    source_arg,
    source_input_args,
    source_name,
)
from services.media.ffmpeg_args import EncodeOptions, audio_command, video_chunk_command
from services.media.ladder import plan_ladder
from services.media.probe import ProbeError, SourceInfo, ffprobe_command, probe, without_paths
from services.media.remux import rung_mp4_command
from services.media.thumbnails import Storyboard, poster_command, storyboard_command

SOURCE = Path("/srv/originals/abc/source")
PLAYLIST = Path("/srv/hls/abc/360p/playlist.m3u8")
AUDIO = Path("/srv/hls/abc/audio/playlist.m3u8")
INFO = SourceInfo(
    duration=30.0,
    width=1280,
    height=720,
    fps=30.0,
    video_codec="h264",
    audio_codec="aac",
    format_name="mov,mp4,m4a,3gp,3g2,mj2",
    bit_rate=2_000_000,
)


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", *args], check=True, timeout=60)


# --- the argv builders ----------------------------------------------------------------------

BUILDERS: dict[str, tuple[Callable[[], list[str]], tuple[str, ...]]] = {
    "ffprobe of an upload": (
        lambda: ffprobe_command(SOURCE, ["-show_format"], formats=UPLOAD_FORMATS),
        UPLOAD_FORMATS,
    ),
    "video chunk": (
        lambda: video_chunk_command(
            ffmpeg="ffmpeg",
            source=SOURCE,
            info=INFO,
            renditions=plan_ladder(INFO.width, INFO.height),
            out_dir=Path("/srv/hls/abc"),
            options=EncodeOptions(),
            chunk=TimeChunk(index=1, start=6.0, end=12.0),
        ),
        UPLOAD_FORMATS,
    ),
    "audio": (
        lambda: audio_command(
            ffmpeg="ffmpeg",
            source=SOURCE,
            audio_kbps=128,
            out_dir=Path("/srv/hls/abc"),
            options=EncodeOptions(),
        ),
        UPLOAD_FORMATS,
    ),
    "poster": (
        lambda: poster_command(
            ffmpeg="ffmpeg", source=SOURCE, at=3.0, width=640, height=360, out=Path("/o.jpg")
        ),
        UPLOAD_FORMATS,
    ),
    "storyboard": (
        lambda: storyboard_command(
            ffmpeg="ffmpeg",
            playlist=PLAYLIST,
            board=Storyboard(interval=2, count=15, columns=10, tile_width=160, tile_height=90),
            out=Path("/o.jpg"),
        ),
        HLS_FORMATS,
    ),
    "rung download": (
        lambda: rung_mp4_command(
            ffmpeg="ffmpeg", video_playlist=PLAYLIST, audio_playlist=AUDIO, out=Path("/o.mp4")
        ),
        HLS_FORMATS,
    ),
}


@pytest.mark.parametrize("name", BUILDERS)
def test_every_input_names_its_demuxers_and_only_the_file_protocol_before_its_i(name):
    build, formats = BUILDERS[name]
    argv = build()
    inputs = [i for i, arg in enumerate(argv) if arg == "-i"]
    assert inputs, argv
    previous = 0
    for at in inputs:
        # Input options hold for the next -i only: each input gets its own whitelists.
        options = argv[previous:at]
        assert options.count("-format_whitelist") == 1, (name, options)
        assert options[options.index("-format_whitelist") + 1] == ",".join(formats)
        assert options[options.index("-protocol_whitelist") + 1] == "file"
        previous = at + 1


def test_input_args_are_the_two_whitelists() -> None:
    assert input_args(("mov", "matroska")) == [
        *("-protocol_whitelist", "file"),
        *("-format_whitelist", "mov,matroska"),
    ]
    with pytest.raises(ValueError):
        input_args(())


def test_reading_our_own_output_needs_no_upload_format_but_its_own() -> None:
    assert set(SEGMENT_FORMATS) <= set(HLS_FORMATS) == {"hls", "mpegts", "mov"}


# --- the lists and the words ----------------------------------------------------------------


@pytest.mark.parametrize(
    "format_name",
    ["mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "mpegts", "mpeg", "avi", "asf", "mxf", "ogg"],
)
def test_containers_are_allowed_by_any_of_their_aliases(format_name: str) -> None:
    assert is_allowed(format_name)


@pytest.mark.parametrize(
    "format_name", ["hls", "dash", "concat", "imf", "image2", "png_pipe", "srt", "tty", "lavfi"]
)
def test_files_that_name_other_files_and_non_media_are_not_allowed(format_name: str) -> None:
    assert not is_allowed(format_name)


@pytest.mark.parametrize(
    ("format_name", "words"),
    [
        ("hls", "an HLS playlist"),
        ("dash", "a DASH manifest"),
        ("concat", "an ffconcat list"),
        ("image2", "an image"),
        ("png_pipe", "an image"),
        ("jpeg_pipe", "an image"),
        ("srt", "a subtitle file"),
        ("webvtt", "a subtitle file"),
        ("tty", "a text file"),
        ("h264", "a raw H.264 stream without a container"),
        ("sdp", "an SDP session description"),
        ("vqf", "a file in the vqf format"),
    ],
)
def test_a_refused_format_is_named_in_words(format_name: str, words: str) -> None:
    assert describe(format_name) == words
    assert f"it is {words}" in refusal(format_name)
    assert "upload the video file itself" in refusal(format_name)


def test_a_playlist_is_said_to_name_other_files() -> None:
    assert "names other files" in refusal("hls")
    assert "names other files" not in refusal("png_pipe")


def test_an_unknown_refused_format_still_reads_as_a_sentence() -> None:
    assert refusal(None).startswith("it is in a format the platform does not accept; upload")


# --- real files -----------------------------------------------------------------------------

# (file name, ffmpeg output options): what cameras, phones, editors and browsers write.
DEVICE_FILES = [
    ("phone.mp4", ["-c:v", "libx264", "-c:a", "aac"]),
    ("camera.mov", ["-c:v", "libx264", "-c:a", "aac"]),
    ("old-phone.3gp", ["-c:v", "libx264", "-c:a", "aac", "-ar", "16000", "-ac", "1"]),
    ("browser.webm", ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-c:a", "libopus"]),
    ("obs.mkv", ["-c:v", "libx264", "-c:a", "aac"]),
    ("avchd.m2ts", ["-c:v", "libx264", "-c:a", "ac3"]),
    ("dvd.mpg", ["-c:v", "mpeg2video", "-c:a", "mp2"]),
    ("old.avi", ["-c:v", "mjpeg", "-c:a", "pcm_s16le"]),
    ("stream.flv", ["-c:v", "libx264", "-c:a", "aac"]),
    ("windows.wmv", ["-c:v", "wmv2", "-c:a", "wmav2"]),
    ("broadcast.mxf", ["-c:v", "mpeg2video", "-c:a", "pcm_s16le", "-ar", "48000"]),
    ("free.ogv", ["-c:v", "libtheora", "-c:a", "libvorbis"]),
]


@pytest.mark.parametrize(("name", "output"), DEVICE_FILES)
def test_containers_that_devices_write_probe_as_videos(name, output, tmp_path: Path) -> None:
    path = tmp_path / name
    ffmpeg(
        *("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=1"),
        *("-f", "lavfi", "-i", "sine=duration=1:sample_rate=48000"),
        *("-pix_fmt", "yuv420p", *output, "-shortest", str(path)),
    )
    info = probe(path)
    assert (info.width, info.height) == (320, 240)
    assert is_allowed(info.format_name)


def test_an_hls_playlist_naming_a_real_video_is_refused_as_one(tmp_path: Path) -> None:
    segment = tmp_path / "real.ts"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:duration=1", str(segment))
    playlist = tmp_path / "source"
    playlist.write_text(
        f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\n{segment}\n#EXT-X-ENDLIST\n"
    )
    with pytest.raises(ProbeError, match="it is an HLS playlist, which names other files"):
        probe(playlist)


def test_a_subtitle_file_is_refused_as_one(tmp_path: Path) -> None:
    path = tmp_path / "source"
    path.write_text("1\n00:00:01,000 --> 00:00:02,000\nhello\n\n2\n00:00:03,000 --> 00:00:04,000\n")
    with pytest.raises(ProbeError, match="it is a subtitle file"):
        probe(path)


def test_a_format_off_the_list_is_refused_even_when_ffprobe_ignores_the_whitelist(
    tmp_path: Path,
) -> None:
    """The second line: the reported format_name is checked whatever ffprobe let through."""
    segment = tmp_path / "real.ts"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:duration=1", str(segment))
    playlist = tmp_path / "source"
    playlist.write_text(
        f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\n{segment}\n#EXT-X-ENDLIST\n"
    )
    # An ffprobe that drops -format_whitelist (an older or differently built one).
    lax = tmp_path / "lax-ffprobe"
    lax.write_text(
        f"#!{sys.executable}\n"
        "import os, sys\n"
        "args = sys.argv[1:]\n"
        "at = args.index('-format_whitelist')\n"
        "del args[at:at + 2]\n"
        "os.execvp('ffprobe', ['ffprobe', *args])\n"
    )
    lax.chmod(0o755)
    with pytest.raises(ProbeError, match="it is an HLS playlist"):
        probe(playlist, ffprobe=str(lax))


# --- no server path in a public reason ------------------------------------------------------


def test_a_reason_keeps_no_absolute_path_of_any_file(tmp_path: Path) -> None:
    # concat's refusal names the file an ffconcat list asked for: another file than ours.
    listed = tmp_path / "secret folder" / "secret.mp4"
    text = (
        f"[concat] Unsafe file name '{listed}'; {tmp_path}/source: Operation not permitted; "
        "rate 30000/1001, N/A, ../../hls/x/720p/playlist.m3u8"
    )
    cleaned = without_paths(text)
    assert str(tmp_path) not in cleaned
    assert cleaned == (
        "[concat] Unsafe file name 'secret.mp4'; source: Operation not permitted; "
        "rate 30000/1001, N/A, ../../hls/x/720p/playlist.m3u8"
    )


def test_a_remote_source_opens_over_http_only_and_reconnects() -> None:
    source = RemoteSource("https://bucket.example/originals/x/source?X-Amz-Signature=s3cr3t")
    argv = source_input_args(source, UPLOAD_FORMATS)
    assert argv[argv.index("-protocol_whitelist") + 1] == "https,http,tls,tcp"
    assert "file" not in argv[argv.index("-protocol_whitelist") + 1].split(",")
    assert argv[argv.index("-reconnect") + 1] == "1"
    assert source_arg(source) == source.url and source_name(source) == "source"


def test_a_local_source_opens_as_a_file_only() -> None:
    argv = source_input_args(Path("/srv/media/source"), UPLOAD_FORMATS)
    assert argv[argv.index("-protocol_whitelist") + 1] == "file"
    assert "-reconnect" not in argv


def test_a_remote_source_must_be_an_http_url() -> None:
    with pytest.raises(ValueError):
        RemoteSource("file:///etc/passwd")
