"""The pure builders of the poster, the storyboard and the rung MP4: sizes, layouts, WebVTT
cues and argv lists, checked without running ffmpeg."""

import itertools
import re
from pathlib import Path

import pytest

from services.media.probe import SourceInfo
from services.media.remux import rung_mp4_command
from services.media.thumbnails import (
    MAX_TILES,
    Storyboard,
    add_token_to_vtt,
    fit_within,
    plan_storyboard,
    poster_command,
    poster_filters,
    poster_time,
    storyboard_command,
    storyboard_vtt,
)

CUE = re.compile(r"(\d\d):(\d\d):(\d\d)\.(\d{3}) --> (\d\d):(\d\d):(\d\d)\.(\d{3})")


def seconds(h: str, m: str, s: str, ms: str) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def cues(text: str) -> list[tuple[float, float, str]]:
    """(start, end, uri) of every cue of a WebVTT file."""
    lines = text.splitlines()
    assert lines[0] == "WEBVTT"
    found = []
    for i, line in enumerate(lines):
        match = CUE.fullmatch(line)
        if match:
            parts = match.groups()
            found.append((seconds(*parts[:4]), seconds(*parts[4:]), lines[i + 1]))
    return found


@pytest.mark.parametrize(
    ("size", "longest", "expected"),
    [
        ((1920, 1080), 1280, (1280, 720)),
        ((720, 1280), 1280, (720, 1280)),  # already within: never upscaled
        ((1080, 1920), 1280, (720, 1280)),
        ((640, 360), 1280, (640, 360)),
        ((1920, 1080), 160, (160, 90)),
        ((720, 1280), 160, (90, 160)),
        ((320, 240), 160, (160, 120)),
        ((854, 480), 160, (160, 90)),
    ],
)
def test_fit_within_keeps_the_aspect_with_even_sizes(size, longest, expected):
    assert fit_within(*size, longest) == expected


def test_poster_is_taken_a_tenth_in():
    assert poster_time(30.0) == pytest.approx(3.0)
    assert poster_time(0.0) == 0.0


@pytest.mark.parametrize(
    ("duration", "keyframe", "interval", "count"),
    [
        (30.0, 2, 2, 15),
        (29.5, 2, 2, 15),
        (4.0, 2, 2, 2),
        (1.0, 2, 2, 1),
        (20.0, 1, 2, 10),  # never finer than 2 s
        (30.0, 3, 3, 10),  # a whole number of keyframe intervals
        (600.0, 2, 4, 150),
        (7200.0, 2, 36, 200),  # two hours: still one sprite of MAX_TILES tiles
        (7201.0, 2, 38, 190),
    ],
)
def test_storyboard_interval_is_whole_keyframe_intervals_and_tiles_are_bounded(
    duration, keyframe, interval, count
):
    board = plan_storyboard(duration, 1920, 1080, keyframe_seconds=keyframe)
    assert (board.interval, board.count) == (interval, count)
    assert board.interval % keyframe == 0
    assert board.count <= MAX_TILES
    assert (board.count - 1) * board.interval < duration <= board.count * board.interval


def test_storyboard_grid_holds_every_tile():
    board = plan_storyboard(30.0, 1920, 1080, keyframe_seconds=2)
    assert (board.columns, board.rows) == (10, 2)
    assert (board.width, board.height) == (1600, 180)
    assert board.tile(0) == (0, 0, 160, 90)
    assert board.tile(9) == (1440, 0, 160, 90)
    assert board.tile(14) == (640, 90, 160, 90)
    short = plan_storyboard(4.0, 720, 1280, keyframe_seconds=2)
    assert (short.columns, short.rows, short.width, short.height) == (2, 1, 180, 160)


def test_storyboard_needs_a_duration():
    with pytest.raises(ValueError, match="positive duration"):
        plan_storyboard(0.0, 1920, 1080, keyframe_seconds=2)


@pytest.mark.parametrize("duration", [1.0, 4.0, 29.97, 30.0, 3601.5, 7200.0])
def test_vtt_cues_cover_the_whole_duration_without_gaps(duration):
    board = plan_storyboard(duration, 1280, 720, keyframe_seconds=2)
    found = cues(storyboard_vtt(board, duration, "storyboard.jpg"))
    assert len(found) == board.count
    assert found[0][0] == 0.0
    assert found[-1][1] == pytest.approx(duration, abs=0.001)
    for (_, end, _), (start, _, _) in itertools.pairwise(found):
        assert start == end
    for index, (start, end, uri) in enumerate(found):
        assert end > start
        x, y, w, h = board.tile(index)
        assert uri == f"storyboard.jpg#xywh={x},{y},{w},{h}"
        assert x + w <= board.width and y + h <= board.height


def test_vtt_timestamps_are_hours_minutes_seconds_millis():
    board = Storyboard(interval=3600, count=2, columns=2, tile_width=160, tile_height=90)
    text = storyboard_vtt(board, 3600 + 62.5, "s.jpg")
    assert "00:00:00.000 --> 01:00:00.000" in text
    assert "01:00:00.000 --> 01:01:02.500" in text


def test_token_goes_into_every_tile_uri_before_the_fragment():
    board = plan_storyboard(6.0, 1280, 720, keyframe_seconds=2)
    signed = add_token_to_vtt(storyboard_vtt(board, 6.0, "storyboard.jpg"), "123.abc")
    uris = [uri for _, _, uri in cues(signed)]
    assert uris == [
        f"storyboard.jpg?token=123.abc#xywh={x},{y},{w},{h}"
        for x, y, w, h in (board.tile(i) for i in range(board.count))
    ]
    assert "WEBVTT" in signed.splitlines()[0]


def test_poster_command_seeks_to_a_keyframe_and_writes_one_jpeg():
    argv = poster_command(
        ffmpeg="ffmpeg",
        source=Path("/s/originals/a/source"),
        at=3.0,
        width=1280,
        height=720,
        out=Path("/s/hls/a/.poster.tmp.jpg"),
    )
    # Decoder and seek options are input options: they come before -i.
    before_input = argv[: argv.index("-i")]
    assert "-skip_frame" in before_input and "-noaccurate_seek" in before_input
    assert before_input[before_input.index("-ss") + 1] == "3.000"
    assert argv[argv.index("-i") + 1] == "/s/originals/a/source"
    assert argv[argv.index("-vf") + 1] == "scale=1280:720,setsar=1"
    assert argv[argv.index("-frames:v") + 1] == "1"
    assert argv[-3:] == ["-update", "1", "/s/hls/a/.poster.tmp.jpg"]
    every = poster_command(
        ffmpeg="ffmpeg",
        source=Path("/s/src"),
        at=0.0,
        width=2,
        height=2,
        out=Path("/s/p.jpg"),
        keyframes_only=False,
    )
    assert "-skip_frame" not in every


def test_an_hdr_interlaced_source_gets_a_poster_as_its_rungs_show_it():
    info = SourceInfo(
        duration=3.0,
        width=1024,
        height=576,
        fps=25.0,
        video_codec="hevc",
        audio_codec=None,
        format_name="mpegts",
        bit_rate=None,
        color_transfer="smpte2084",
        color_primaries="bt2020",
        field_order="tt",
    )
    filters = poster_filters(info, 1024, 576)
    assert filters[0].startswith("bwdif=")
    assert filters[1].startswith("zscale=w=1024:h=576:") and "tonemap=mobius:desat=0" in filters
    # JPEG's YUV is BT.601 full range, whatever the video's was.
    assert filters[-3:-1] == ["zscale=t=bt709:m=bt470bg:r=pc", "format=yuvj420p"]
    assert filters[-1] == "setsar=1"
    assert poster_filters(None, 640, 360) == ["scale=640:360", "setsar=1"]


def test_storyboard_command_samples_keyframes_into_one_grid():
    board = plan_storyboard(30.0, 640, 360, keyframe_seconds=2)
    argv = storyboard_command(
        ffmpeg="ffmpeg",
        playlist=Path("/s/hls/a/360p/playlist.m3u8"),
        board=board,
        out=Path("/o.jpg"),
    )
    assert argv[argv.index("-i") - 2 : argv.index("-i")] == ["-skip_frame", "nokey"]
    assert argv[argv.index("-vf") + 1] == "fps=1/2:round=up,scale=160:90,setsar=1,tile=10x2"
    assert argv[-1] == "/o.jpg"


def test_rung_mp4_is_a_stream_copy_with_the_index_first():
    argv = rung_mp4_command(
        ffmpeg="ffmpeg",
        video_playlist=Path("/s/hls/a/720p/playlist.m3u8"),
        audio_playlist=Path("/s/hls/a/audio/playlist.m3u8"),
        out=Path("/s/hls/a/downloads/.720p.tmp.mp4"),
    )
    assert argv.count("-i") == 2
    assert argv[argv.index("-c") + 1] == "copy"
    assert "-c:v" not in argv and "-c:a" not in argv  # nothing is encoded
    assert argv[argv.index("-bsf:a") + 1] == "aac_adtstoasc"
    assert argv[argv.index("-movflags") + 1] == "+faststart"
    maps = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-map"]
    assert maps == ["0:v:0", "1:a:0"]
    silent = rung_mp4_command(
        ffmpeg="ffmpeg",
        video_playlist=Path("/v.m3u8"),
        audio_playlist=None,
        out=Path("/o.mp4"),
    )
    assert silent.count("-i") == 1 and "-bsf:a" not in silent and "1:a:0" not in silent


def test_audio_of_an_audio_only_video_is_copied_alone():
    argv = rung_mp4_command(
        ffmpeg="ffmpeg",
        video_playlist=None,
        audio_playlist=Path("/s/hls/a/audio/playlist.m3u8"),
        out=Path("/s/hls/a/downloads/.audio.tmp.m4a"),
    )
    assert argv.count("-i") == 1 and argv[argv.index("-i") + 1] == "/s/hls/a/audio/playlist.m3u8"
    maps = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-map"]
    assert maps == ["0:a:0"]
    assert argv[argv.index("-c") + 1] == "copy"
    assert argv[argv.index("-bsf:a") + 1] == "aac_adtstoasc"
    with pytest.raises(ValueError, match="a rung or the audio"):
        rung_mp4_command(ffmpeg="ffmpeg", video_playlist=None, audio_playlist=None, out=Path("/o"))
