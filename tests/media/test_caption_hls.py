"""A caption as an HLS SUBTITLES rendition: segments on the video's grid, the master's
EXT-X-MEDIA lines (checked with the m3u8 package), and the timestamp that cue time 0 maps to,
measured on real H.264 MPEG-TS and HEVC fMP4 segments."""

import re
import subprocess
from pathlib import Path

import m3u8
import pytest

from services.core.settings import Settings
from services.media.caption_hls import (
    MPEGTS_WRAP,
    Track,
    media_zero,
    rendition_files,
    strip_subtitles,
    with_subtitles,
)
from services.media.captions import Cue
from services.media.chunking import TimeChunk
from services.media.ffmpeg_args import TS_OFFSET_SECONDS, video_chunk_command
from services.media.plan import make_plan
from services.media.playlists import AudioStats, RenditionStats, master_playlist
from services.media.probe import probe
from tests.clips import make_clip

CUES = [Cue(500, 1500, "a"), Cue(1800, 4200, "b"), Cue(6100, 7000, "past the end")]
# What the MPEG-TS muxer adds to every timestamp (its default delay, 0.7 s twice).
MUX_DELAY_SECONDS = 1.4


def rung(name: str, width: int, height: int) -> RenditionStats:
    return RenditionStats(name, width, height, 30.0, "avc1.64001f", None, 900_000, 800_000)


MASTER = master_playlist(
    [rung("720p", 1280, 720), rung("360p", 640, 360)],
    audio=AudioStats("mp4a.40.2", 130_000, 128_000, 2),
    iframe_bandwidths={"720p": 90_000, "360p": 40_000},
)
TRACKS = [
    Track("a" * 16, "en", "English"),
    Track("b" * 16, "pt-BR", 'Português "BR"', default=True),
    Track("c" * 16, "en", "English", default=True),
]


def cue_times(text: str) -> list[str]:
    return re.findall(r"^(\S+ --> \S+)", text, re.M)


def test_segments_follow_the_video_grid_and_repeat_cues_that_cross_it():
    files = rendition_files(CUES, duration=5.0, segment_seconds=2, mpegts=1026000)
    playlist = m3u8.loads(files["playlist.m3u8"])
    assert playlist.is_endlist and playlist.playlist_type == "vod"
    assert [(s.uri, s.duration) for s in playlist.segments] == [
        ("seg_00000.vtt", 2.0),
        ("seg_00001.vtt", 2.0),
        ("seg_00002.vtt", 1.0),
    ]
    assert cue_times(files["seg_00000.vtt"]) == [
        "00:00:00.500 --> 00:00:01.500",
        "00:00:01.800 --> 00:00:04.200",
    ]
    assert cue_times(files["seg_00001.vtt"]) == ["00:00:01.800 --> 00:00:04.200"]
    # A cue past the video's end is in no segment.
    assert cue_times(files["seg_00002.vtt"]) == ["00:00:01.800 --> 00:00:04.200"]
    for name in ("seg_00000.vtt", "seg_00001.vtt", "seg_00002.vtt"):
        assert files[name].startswith(
            "WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:1026000,LOCAL:00:00:00.000\n\n"
        )


def test_a_timestamp_past_33_bits_wraps_as_the_muxer_wraps_it():
    files = rendition_files(CUES, duration=1.0, segment_seconds=2, mpegts=MPEGTS_WRAP + 5)
    assert "MPEGTS:5," in files["seg_00000.vtt"]


def test_a_duration_a_hair_over_the_grid_gets_no_extra_segment():
    assert len(rendition_files(CUES, duration=4.0000004, segment_seconds=2, mpegts=0)) == 3
    with pytest.raises(ValueError):
        rendition_files(CUES, duration=0, segment_seconds=2, mpegts=0)


def test_the_master_lists_each_caption_in_one_subtitles_group():
    master = m3u8.loads(with_subtitles(MASTER, TRACKS))
    subtitles = [m for m in master.media if m.type == "SUBTITLES"]
    assert [(m.group_id, m.language, m.name, m.default, m.autoselect) for m in subtitles] == [
        ("subs", "en", "English", "NO", "YES"),
        ("subs", "pt-BR", "Português 'BR'", "YES", "YES"),
        # NAMEs are unique in a group; only the first default one is DEFAULT=YES.
        ("subs", "en", "English (2)", "NO", "YES"),
    ]
    assert [m.uri for m in subtitles] == [f"captions/{t.caption_id}/playlist.m3u8" for t in TRACKS]
    assert [p.stream_info.subtitles for p in master.playlists] == ["subs", "subs"]
    assert [p.stream_info.audio for p in master.playlists] == ["audio", "audio"]
    # The I-frame playlists take no SUBTITLES attribute (RFC 8216 4.3.4.3).
    assert len(master.iframe_playlists) == 2
    assert "SUBTITLES" not in "".join(
        line for line in with_subtitles(MASTER, TRACKS).splitlines() if "I-FRAME" in line
    )


def test_rewriting_the_master_replaces_its_subtitles_and_removing_them_restores_it():
    once = with_subtitles(MASTER, TRACKS)
    assert with_subtitles(once, TRACKS) == once
    assert with_subtitles(once, TRACKS[:1]).count("TYPE=SUBTITLES") == 1
    assert with_subtitles(once, []) == MASTER
    assert strip_subtitles(once) == MASTER


def test_an_audio_only_master_gets_subtitles_on_its_one_variant():
    master = master_playlist([], audio=AudioStats("mp4a.40.2", 130_000, 128_000, 2))
    parsed = m3u8.loads(with_subtitles(master, TRACKS[:1]))
    assert [p.stream_info.subtitles for p in parsed.playlists] == ["subs"]


@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_cue_time_zero_is_the_first_frame_of_the_first_segment(tmp_path: Path, codec: str):
    source = make_clip(tmp_path / "clip.mp4", width=320, height=240, seconds=2)
    info = probe(source)
    settings = Settings(storage_dir=tmp_path, segment_seconds=2, default_codec=codec)
    plan, _ = make_plan(info, settings, codec=codec)
    out = tmp_path / "hls"
    (out / plan.renditions[0].name).mkdir(parents=True)
    argv = video_chunk_command(
        ffmpeg="ffmpeg",
        source=source,
        info=info,
        renditions=plan.renditions[:1],
        out_dir=out,
        options=plan.options,
        chunk=TimeChunk(0, 0.0, None),
    )
    subprocess.run(argv, check=True, capture_output=True, timeout=120)
    folder = out / plan.renditions[0].name
    if codec == "h264":
        # MPEG-TS: the offset every chunk gets, plus the muxer's delay.
        zero = media_zero(folder / "seg_00000.ts")
        assert zero == round((TS_OFFSET_SECONDS + MUX_DELAY_SECONDS) * 90_000)
    else:
        # fMP4: the offset alone, as the fragments' own timestamps give it.
        zero = media_zero(folder / "seg_00000.m4s", init=folder / "init_00000.mp4")
        assert zero == TS_OFFSET_SECONDS * 90_000
