"""The layout names every file of a video from validated ids, and the patterns that check
names clients send are the ones the files are named with."""

import re

import pytest

from services.core import layout
from services.core.errors import InvalidInput
from services.core.layout import VideoLayout

VIDEO = "0123456789abcdef0123456789abcdef"
CAPTION = "0123456789abcdef"


@pytest.fixture
def video() -> VideoLayout:
    return VideoLayout.of(VIDEO)


def test_every_file_of_a_video_lies_under_its_two_prefixes(video: VideoLayout) -> None:
    keys = [
        video.source,
        video.caption_source(CAPTION),
        video.master,
        video.complete,
        video.master_lock,
        video.attempt_file(3, 1, "720p", layout.chunk_playlist(3)),
        video.playlist("720p"),
        video.rung_file("audio", layout.AUDIO_RUN_PLAYLIST),
        video.segment("360p", "seg_00012.ts"),
        video.poster,
        video.storyboard_image,
        video.storyboard_vtt,
        video.download("1080p"),
        video.caption_file(CAPTION, "seg_00000.vtt"),
    ]
    for key in keys:
        assert key.startswith((video.originals, video.hls)), key
        assert not key.startswith("/") and "//" not in key and ".." not in key


def test_keys_are_the_documented_ones(video: VideoLayout) -> None:
    assert video.source == f"originals/{VIDEO}/source"
    assert video.master == f"hls/{VIDEO}/master.m3u8"
    assert video.playlist("720p") == f"hls/{VIDEO}/720p/playlist.m3u8"
    assert video.attempt(3, 1) == f"hls/{VIDEO}/.work/00003-1/"
    assert video.download("audio") == f"hls/{VIDEO}/downloads/audio.m4a"
    assert video.download("480p") == f"hls/{VIDEO}/downloads/480p.mp4"
    assert video.caption_source(CAPTION) == f"originals/{VIDEO}/captions/{CAPTION}.vtt"
    assert video.caption(CAPTION) == f"hls/{VIDEO}/captions/{CAPTION}/"


@pytest.mark.parametrize("bad", ["", "../" + VIDEO, VIDEO.upper(), VIDEO + "/x", VIDEO[:-1]])
def test_a_malformed_video_id_builds_no_layout(bad: str) -> None:
    with pytest.raises(InvalidInput, match="not a video id"):
        VideoLayout.of(bad)


@pytest.mark.parametrize("rung", ["../x", "720", "720p/..", "AUDIO", ""])
def test_a_malformed_rung_names_no_folder(video: VideoLayout, rung: str) -> None:
    with pytest.raises(InvalidInput):
        video.rung(rung)


@pytest.mark.parametrize("name", ["../master.m3u8", "a/b", ".complete", "", "x\x00"])
def test_a_rung_file_is_one_plain_name(video: VideoLayout, name: str) -> None:
    with pytest.raises(ValueError):
        video.rung_file("720p", name)


def test_the_segment_check_accepts_exactly_the_names_ffmpeg_is_told_to_write() -> None:
    for fmp4 in (False, True):
        pattern = layout.segment_pattern(fmp4=fmp4)
        for index in (0, 7, 99999):
            assert layout.segment(pattern % index) == pattern % index
    assert layout.segment(layout.INIT) == layout.INIT
    assert layout.segment(layout.IFRAMES) == layout.IFRAMES
    for bad in ("seg_1.ts", "seg_000001.ts", "seg_00001.mp4", layout.chunk_playlist(0), "../x"):
        with pytest.raises(InvalidInput, match="not a segment name"):
            layout.segment(bad)


def test_the_caption_file_check_accepts_the_names_captions_are_written_with() -> None:
    assert layout.caption_file(layout.caption_segment(3)) == "seg_00003.vtt"
    assert layout.caption_file(layout.PLAYLIST) == layout.PLAYLIST
    with pytest.raises(InvalidInput, match="not a caption file"):
        layout.caption_file("seg_00003.ts")


def test_chunk_files_never_match_what_is_served() -> None:
    """What a chunk's encode leaves for stitching is never served as a segment."""
    for name in (layout.chunk_playlist(4), layout.chunk_init(4), layout.chunk_iframes(4)):
        assert not layout.SEGMENT_RE.fullmatch(name)
    assert re.fullmatch(r"chunk_00004\.m3u8", layout.chunk_playlist(4))


def test_negative_chunks_have_no_attempt_folder(video: VideoLayout) -> None:
    with pytest.raises(ValueError):
        video.attempt(-1, 0)
