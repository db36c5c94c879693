import asyncio
import json
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import m3u8
import pytest

from services.media.ffmpeg_args import EncodeOptions, ladder_command
from services.media.ladder import Rendition, plan_ladder
from services.media.playlists import (
    MeasureError,
    RenditionStats,
    avc1_codec,
    master_playlist,
    measure_rendition,
    read_media_playlist,
)
from services.media.probe import SourceInfo, probe
from services.media.runner import run_ffmpeg

SEGMENT_SECONDS = 2
# Apple's limit: no segment longer than the target duration + 0.5 s.
MAX_SEGMENT_SECONDS = SEGMENT_SECONDS + 0.5
# H.264 profile_idc by the profile name ffprobe prints.
PROFILE_IDC = {"Constrained Baseline": 0x42, "Baseline": 0x42, "Main": 0x4D, "High": 0x64}


@dataclass(frozen=True)
class Ladder:
    """One source encoded into HLS: what went in and where it came out."""

    info: SourceInfo
    renditions: list[Rendition]
    out_dir: Path
    master: m3u8.M3U8

    def rung_dir(self, name: str) -> Path:
        return self.out_dir / name

    def segments(self, name: str) -> list[Path]:
        return [self.rung_dir(name) / uri for uri, _ in self.extinfs(name)]

    def extinfs(self, name: str) -> list[tuple[str, float]]:
        return read_media_playlist(self.rung_dir(name) / "playlist.m3u8")


def encode(source: Path, out_dir: Path) -> Ladder:
    """Encode `source` the way the worker does, at test speed, and write its master."""
    info = probe(source)
    renditions = plan_ladder(info.width, info.height)
    for rendition in renditions:
        (out_dir / rendition.name).mkdir(parents=True)
    options = EncodeOptions(preset="ultrafast", segment_seconds=SEGMENT_SECONDS, keyframe_seconds=2)
    argv = ladder_command(
        ffmpeg="ffmpeg",
        source=source,
        info=info,
        renditions=renditions,
        out_dir=out_dir,
        options=options,
    )
    asyncio.run(run_ffmpeg(argv))
    stats = [measure_rendition(out_dir / r.name) for r in renditions]
    return Ladder(info, renditions, out_dir, m3u8.loads(master_playlist(stats)))


@pytest.fixture(scope="module")
def full(clips: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Ladder:
    return encode(clips["full"], tmp_path_factory.mktemp("full"))


@pytest.fixture(scope="module")
def pal(clips: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Ladder:
    return encode(clips["pal"], tmp_path_factory.mktemp("pal"))


@pytest.fixture(scope="module")
def silent(clips: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Ladder:
    return encode(clips["silent"], tmp_path_factory.mktemp("silent"))


def ffprobe(path: Path, *args: str) -> dict[str, Any]:
    argv = ["ffprobe", "-v", "error", "-print_format", "json", *args, str(path)]
    done = subprocess.run(argv, capture_output=True, check=True, timeout=60)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def streams(segment: Path, kind: str) -> list[dict[str, Any]]:
    found = ffprobe(segment, "-show_streams")["streams"]
    return [s for s in found if s["codec_type"] == kind]


def first_video_frame(segment: Path) -> dict[str, Any]:
    frames = ffprobe(
        segment,
        *("-select_streams", "v:0", "-read_intervals", "%+#1"),
        *("-show_entries", "frame=key_frame,pict_type"),
    )["frames"]
    return dict(frames[0])


def stream_infs(ladder: Ladder) -> dict[str, Any]:
    """Each rung's EXT-X-STREAM-INF attributes, by rung name."""
    return {variant.uri.split("/")[0]: variant.stream_info for variant in ladder.master.playlists}


# ---- the encoded ladder ----------------------------------------------------------------


def test_every_rung_playlist_is_a_complete_vod_playlist(full: Ladder) -> None:
    target_durations = set()
    for rendition in full.renditions:
        playlist = m3u8.load(str(full.rung_dir(rendition.name) / "playlist.m3u8"))
        assert playlist.playlist_type == "vod"
        assert playlist.is_endlist
        assert [s.uri for s in playlist.segments] == [u for u, _ in full.extinfs(rendition.name)]
        target_durations.add(playlist.target_duration)
    assert target_durations == {SEGMENT_SECONDS}


def test_every_rung_is_in_the_master_highest_first(full: Ladder) -> None:
    assert [v.uri for v in full.master.playlists] == [
        f"{name}/playlist.m3u8" for name in ("1080p", "720p", "480p", "360p")
    ]
    assert full.master.is_independent_segments


def test_no_segment_is_longer_than_target_plus_half_a_second(full: Ladder) -> None:
    for rendition in full.renditions:
        durations = [seconds for _, seconds in full.extinfs(rendition.name)]
        assert durations and max(durations) <= MAX_SEGMENT_SECONDS, rendition.name


def test_segment_boundaries_are_equal_across_rungs(full: Ladder) -> None:
    boundaries = {tuple(full.extinfs(r.name)) for r in full.renditions}
    assert len(boundaries) == 1


def test_25_fps_segment_boundaries_are_equal_across_rungs(pal: Ladder) -> None:
    boundaries = {tuple(pal.extinfs(r.name)) for r in pal.renditions}
    assert len(boundaries) == 1
    assert len(pal.renditions) == 3
    (extinfs,) = boundaries
    assert all(seconds <= MAX_SEGMENT_SECONDS for _, seconds in extinfs)


def test_extinf_sum_is_the_source_duration_within_one_frame(full: Ladder, pal: Ladder) -> None:
    for ladder in (full, pal):
        for rendition in ladder.renditions:
            total = sum(seconds for _, seconds in ladder.extinfs(rendition.name))
            assert total == pytest.approx(ladder.info.duration, abs=1 / ladder.info.fps)


def test_every_segment_starts_with_a_keyframe(full: Ladder, pal: Ladder) -> None:
    for ladder in (full, pal):
        for rendition in ladder.renditions:
            for segment in ladder.segments(rendition.name):
                frame = first_video_frame(segment)
                assert (frame["key_frame"], frame["pict_type"]) == (1, "I"), segment


def test_master_resolution_and_frame_rate_match_ffprobe(full: Ladder) -> None:
    infs = stream_infs(full)
    for rendition in full.renditions:
        (video,) = streams(full.segments(rendition.name)[0], "video")
        inf = infs[rendition.name]
        assert inf.resolution == (video["width"], video["height"])
        assert inf.resolution == (rendition.width, rendition.height)
        assert inf.frame_rate == pytest.approx(float(Fraction(video["r_frame_rate"])), abs=0.001)


def test_master_codecs_match_the_profile_and_level_ffprobe_reads(full: Ladder) -> None:
    for name, inf in stream_infs(full).items():
        (video,) = streams(full.segments(name)[0], "video")
        avc1 = inf.codecs.split(",")[0]
        assert avc1.startswith("avc1.") and len(avc1) == len("avc1.640028")
        assert int(avc1[5:7], 16) == PROFILE_IDC[video["profile"]], name
        assert int(avc1[9:11], 16) == video["level"], name


def test_codecs_declare_the_profile_x264_really_used(full: Ladder) -> None:
    # Asked for High, but ultrafast turns off CABAC and 8x8dct: x264 writes Constrained
    # Baseline into the SPS, and that is what CODECS must say.
    for inf in stream_infs(full).values():
        assert inf.codecs.startswith("avc1.42c0")


def test_master_bandwidths_match_the_measured_bitrates(full: Ladder) -> None:
    infs = stream_infs(full)
    for rendition in full.renditions:
        measured = [
            ffprobe(segment, "-show_format")["format"] for segment in full.segments(rendition.name)
        ]
        bits = [int(f["size"]) * 8 for f in measured]
        seconds = [float(f["duration"]) for f in measured]
        average = sum(bits) / sum(seconds)
        peak = max(b / s for b, s in zip(bits, seconds, strict=True))
        inf = infs[rendition.name]
        assert inf.average_bandwidth == pytest.approx(average, rel=0.10), rendition.name
        assert inf.bandwidth == pytest.approx(peak, rel=0.10), rendition.name
        assert inf.bandwidth <= 2 * inf.average_bandwidth


def test_every_rung_of_the_full_clip_carries_stereo_aac(full: Ladder) -> None:
    infs = stream_infs(full)
    for rendition in full.renditions:
        for segment in full.segments(rendition.name):
            (audio,) = streams(segment, "audio")
            assert (audio["codec_name"], audio["profile"]) == ("aac", "LC")
            assert (audio["channels"], audio["sample_rate"]) == (2, "48000")
        assert infs[rendition.name].codecs.endswith(",mp4a.40.2")


def test_silent_clip_has_no_audio_and_declares_none(silent: Ladder) -> None:
    assert [r.name for r in silent.renditions] == ["720p", "480p", "360p"]
    for name, inf in stream_infs(silent).items():
        for segment in silent.segments(name):
            assert streams(segment, "audio") == []
            assert len(streams(segment, "video")) == 1
        assert "mp4a" not in inf.codecs and "," not in inf.codecs


# ---- parsing and writing, no ffmpeg ----------------------------------------------------


def stats(name: str, width: int, height: int, **changes: Any) -> RenditionStats:
    values: dict[str, Any] = {
        "name": name,
        "width": width,
        "height": height,
        "fps": 30.0,
        "video_codec": "avc1.64001f",
        "audio_codec": "mp4a.40.2",
        "bandwidth": 4_000_000,
        "average_bandwidth": 3_500_000,
    }
    return RenditionStats(**(values | changes))


def test_master_playlist_text_is_exactly_the_hls_shape() -> None:
    text = master_playlist([stats("360p", 640, 360, bandwidth=1_100_000), stats("720p", 1280, 720)])
    assert text == (
        "#EXTM3U\n"
        "#EXT-X-VERSION:3\n"
        "#EXT-X-INDEPENDENT-SEGMENTS\n"
        '#EXT-X-STREAM-INF:BANDWIDTH=4000000,AVERAGE-BANDWIDTH=3500000,CODECS="avc1.64001f,'
        'mp4a.40.2",RESOLUTION=1280x720,FRAME-RATE=30.000\n'
        "720p/playlist.m3u8\n"
        '#EXT-X-STREAM-INF:BANDWIDTH=1100000,AVERAGE-BANDWIDTH=3500000,CODECS="avc1.64001f,'
        'mp4a.40.2",RESOLUTION=640x360,FRAME-RATE=30.000\n'
        "360p/playlist.m3u8\n"
    )


def test_frame_rate_is_written_with_three_decimals() -> None:
    assert "FRAME-RATE=29.970" in master_playlist([stats("720p", 1280, 720, fps=30000 / 1001)])


def test_rung_without_audio_declares_only_video() -> None:
    assert stats("720p", 1280, 720, audio_codec=None).codecs == "avc1.64001f"
    assert 'CODECS="avc1.64001f",' in master_playlist([stats("720p", 1280, 720, audio_codec=None)])


def test_read_media_playlist_pairs_each_uri_with_its_extinf(tmp_path: Path) -> None:
    path = tmp_path / "playlist.m3u8"
    path.write_text(
        "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:6\n#EXT-X-PLAYLIST-TYPE:VOD\n"
        "#EXTINF:6.006000,\nseg_00000.ts\n#EXTINF:2.5,title\n\nseg_00001.ts\n#EXT-X-ENDLIST\n"
    )
    assert read_media_playlist(path) == [("seg_00000.ts", 6.006), ("seg_00001.ts", 2.5)]


def test_read_media_playlist_refuses_a_file_that_is_not_m3u8(tmp_path: Path) -> None:
    path = tmp_path / "playlist.m3u8"
    path.write_text("seg_00000.ts\n")
    with pytest.raises(ValueError, match="not an m3u8"):
        read_media_playlist(path)


def test_measuring_a_playlist_without_segments_fails(tmp_path: Path) -> None:
    (tmp_path / "playlist.m3u8").write_text("#EXTM3U\n#EXT-X-ENDLIST\n")
    with pytest.raises(MeasureError, match="no segments"):
        measure_rendition(tmp_path)


def test_avc1_codec_reads_profile_constraints_and_level_from_the_sps() -> None:
    access_unit = (
        b"\x00\x00\x00\x01\x09\xf0"  # access unit delimiter
        b"\x00\x00\x00\x01\x67\x64\x00\x1f\xac\xd9"  # SPS: High, no constraints, level 3.1
        b"\x00\x00\x01\x68\xef\x8f"  # PPS
    )
    assert avc1_codec(access_unit) == "avc1.64001f"
    assert avc1_codec(b"\x00\x00\x01\x67\x42\xc0\x1e\xda") == "avc1.42c01e"


def test_avc1_codec_without_an_sps_fails() -> None:
    with pytest.raises(MeasureError, match="SPS"):
        avc1_codec(b"\x00\x00\x00\x01\x09\xf0\x00\x00\x01\x68\xef\x8f")
