"""Subtitle streams inside uploads: text ones counted by the probe and planned as a captions
unit, bitmap ones skipped, the extraction argv, and where the played timeline starts."""

import subprocess
from pathlib import Path

import pytest

from services.core.settings import Settings
from services.media.captions import Cue, read_captions, shifted
from services.media.demuxers import UPLOAD_FORMATS, input_args
from services.media.plan import CAPTIONS, CAPTIONS_INDEX, make_plan
from services.media.probe import probe
from services.media.subtitles import (
    SubtitleStream,
    extract_command,
    probe_subtitles,
    subtitle_streams,
    timeline_start,
)
from tests.clips import make_clip, make_subtitled_clip, write_srt

LIMITS = {"max_bytes": 100_000, "max_cues": 100}
REPORT = {
    "streams": [
        {"index": 0, "codec_type": "video", "codec_name": "h264", "start_time": "0.021000"},
        {"index": 1, "codec_type": "audio", "codec_name": "aac", "start_time": "0.000000"},
        {
            "index": 2,
            "codec_type": "subtitle",
            "codec_name": "subrip",
            "tags": {"language": "eng", "title": "English SDH"},
        },
        {
            "index": 3,
            "codec_type": "subtitle",
            "codec_name": "mov_text",
            "tags": {"language": "fre", "handler_name": "SubtitleHandler"},
        },
        {"index": 4, "codec_type": "subtitle", "codec_name": "hdmv_pgs_subtitle"},
        {
            "index": 5,
            "codec_type": "subtitle",
            "codec_name": "mov_text",
            "tags": {"HANDLER_NAME": "Commentary"},
        },
    ]
}


def test_subtitle_streams_are_read_with_language_and_title():
    streams = subtitle_streams(REPORT)
    assert [(s.index, s.codec, s.language, s.title) for s in streams] == [
        (2, "subrip", "eng", "English SDH"),
        # A writer's generic handler name is not a title; a real one is.
        (3, "mov_text", "fre", ""),
        (4, "hdmv_pgs_subtitle", "", ""),
        (5, "mov_text", "", "Commentary"),
    ]
    assert [s.is_text for s in streams] == [True, True, False, True]
    assert [s.is_bitmap for s in streams] == [False, False, True, False]


def test_the_timeline_starts_at_the_picture_or_for_sound_alone_at_the_sound():
    assert timeline_start(REPORT) == 0.021
    cover = {"codec_type": "video", "start_time": "5", "disposition": {"attached_pic": 1}}
    sound = {"codec_type": "audio", "start_time": "0.5"}
    assert timeline_start({"streams": [cover, sound]}) == 0.5
    assert timeline_start({"streams": []}) == 0.0


def test_one_ffmpeg_extracts_every_stream_reading_only_the_upload(tmp_path: Path):
    streams = [SubtitleStream(2, "subrip", "eng", ""), SubtitleStream(3, "ass", "", "")]
    argv = extract_command(
        ffmpeg="ffmpeg", source=Path("-x.mkv"), streams=streams, out_dir=tmp_path, max_bytes=99
    )
    source = str(Path("-x.mkv").absolute())
    head = argv[: argv.index("-i")]
    assert "-copyts" in head
    assert head[-len(input_args(UPLOAD_FORMATS)) :] == input_args(UPLOAD_FORMATS)
    assert argv[argv.index("-i") + 1] == source
    tail = argv[argv.index(source) + 1 :]
    assert tail == [
        *["-map", "0:2", "-c:s", "webvtt", "-fs", "99", "-f", "webvtt", str(tmp_path / "2.vtt")],
        *["-map", "0:3", "-c:s", "webvtt", "-fs", "99", "-f", "webvtt", str(tmp_path / "3.vtt")],
    ]


def test_a_source_with_text_subtitles_is_planned_with_a_captions_unit_last(tmp_path: Path):
    srt = write_srt(tmp_path / "a.srt", [(0.5, 1.0, "hi")])
    tracks = [(srt, "subrip", "eng", "One"), (srt, "ass", "por", "")]
    clip = make_subtitled_clip(tmp_path / "a.mkv", seconds=2, tracks=tracks)
    info = probe(clip)
    assert info.text_subtitles == 2
    streams, start = probe_subtitles(clip)
    assert [(s.codec, s.language, s.title) for s in streams] == [
        ("subrip", "eng", "One"),
        ("ass", "por", ""),
    ]
    assert 0 <= start < 0.1
    settings = Settings(storage_dir=tmp_path, segment_seconds=2, chunk_segments=1)
    _, specs = make_plan(info, settings)
    assert (specs[-1].index, specs[-1].kind) == (CAPTIONS_INDEX, CAPTIONS)
    assert [s.kind for s in specs].count(CAPTIONS) == 1


def test_a_source_without_subtitles_has_no_captions_unit(tmp_path: Path):
    info = probe(make_clip(tmp_path / "plain.mp4", width=160, height=120, seconds=1))
    assert info.text_subtitles == 0
    _, specs = make_plan(info, Settings(storage_dir=tmp_path))
    assert CAPTIONS not in [s.kind for s in specs]


@pytest.mark.parametrize(
    ("name", "codec"),
    [("a.mp4", "mov_text"), ("a.mkv", "subrip"), ("a.mkv", "ass"), ("a.webm", "webvtt")],
)
def test_every_text_format_is_extracted_as_webvtt_on_the_file_timeline(
    tmp_path: Path, name: str, codec: str
):
    srt = write_srt(tmp_path / "a.srt", [(0.5, 1.25, "One")])
    clip = make_subtitled_clip(tmp_path / name, seconds=2, tracks=[(srt, codec, "", "")])
    streams, start = probe_subtitles(clip)
    assert [s.codec for s in streams] == [codec]
    argv = extract_command(
        ffmpeg="ffmpeg", source=clip, streams=streams, out_dir=tmp_path, max_bytes=10_000
    )
    subprocess.run(argv, check=True, capture_output=True, timeout=60)
    cues = read_captions((tmp_path / f"{streams[0].index}.vtt").read_bytes(), **LIMITS).cues
    # Counted from the first frame, the cue is where the SRT put it.
    assert shifted(cues, round(start * 1000)) == [Cue(500, 1250, "One")]
