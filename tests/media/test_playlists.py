"""Playlist text in and out, and measuring rules, without ffmpeg (see test_stitching.py for
the real encodes)."""

import subprocess
from pathlib import Path
from typing import Any

import m3u8
import pytest

from services.media.playlists import (
    AudioStats,
    IFrame,
    MeasureError,
    RenditionStats,
    avc1_codec,
    iframe_bandwidth,
    iframe_playlist,
    master_playlist,
    measure_audio,
    measure_rendition,
    media_playlist,
    read_media_playlist,
)

AUDIO = AudioStats(codec="mp4a.40.2", bandwidth=140_000, average_bandwidth=130_000, channels=2)


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


def video(name: str, width: int, height: int, **changes: Any) -> RenditionStats:
    return stats(name, width, height, audio_codec=None, **changes)


# ---- media playlists -------------------------------------------------------------------


def test_finished_media_playlist_is_a_vod_with_endlist() -> None:
    text = media_playlist([("seg_00000.ts", 2.0), ("seg_00001.ts", 1.5)], target=2, ended=True)
    assert text == (
        "#EXTM3U\n"
        "#EXT-X-VERSION:3\n"
        "#EXT-X-TARGETDURATION:2\n"
        "#EXT-X-MEDIA-SEQUENCE:0\n"
        "#EXT-X-PLAYLIST-TYPE:VOD\n"
        "#EXT-X-INDEPENDENT-SEGMENTS\n"
        "#EXTINF:2.000000,\n"
        "seg_00000.ts\n"
        "#EXTINF:1.500000,\n"
        "seg_00001.ts\n"
        "#EXT-X-ENDLIST\n"
    )


def test_growing_media_playlist_is_an_event_played_from_the_start() -> None:
    text = media_playlist([("seg_00000.ts", 2.002)], target=2, ended=False)
    assert "#EXT-X-PLAYLIST-TYPE:EVENT\n" in text
    assert "#EXT-X-START:TIME-OFFSET=0\n" in text
    assert "ENDLIST" not in text
    playlist = m3u8.loads(text)
    assert (playlist.playlist_type, playlist.is_endlist) == ("event", False)
    assert playlist.start.time_offset == 0
    assert [(s.uri, s.duration) for s in playlist.segments] == [("seg_00000.ts", 2.002)]


def test_target_duration_grows_to_cover_a_long_segment() -> None:
    segments = [("a.ts", 6.006), ("b.ts", 6.6), ("c.ts", 2.0)]
    assert "#EXT-X-TARGETDURATION:7\n" in media_playlist(segments, target=6, ended=True)
    assert "#EXT-X-TARGETDURATION:6\n" in media_playlist(segments[:1], target=6, ended=True)
    # Rounded half up, as RFC 8216 rounds: 2.5 s needs a target of 3.
    assert "#EXT-X-TARGETDURATION:3\n" in media_playlist([("a.ts", 2.5)], target=2, ended=True)


def test_empty_event_playlist_is_valid() -> None:
    playlist = m3u8.loads(media_playlist([], target=6, ended=False))
    assert (playlist.target_duration, playlist.segments) == (6, [])


def test_read_media_playlist_pairs_each_uri_with_its_extinf(tmp_path: Path) -> None:
    path = tmp_path / "playlist.m3u8"
    path.write_text(
        "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:6\n#EXT-X-PLAYLIST-TYPE:VOD\n"
        "#EXTINF:6.006000,\nseg_00000.ts\n#EXTINF:2.5,title\n\nseg_00001.ts\n#EXT-X-ENDLIST\n"
    )
    assert read_media_playlist(path) == [("seg_00000.ts", 6.006), ("seg_00001.ts", 2.5)]


def test_read_media_playlist_reads_back_what_media_playlist_writes(tmp_path: Path) -> None:
    segments = [("seg_00000.ts", 2.002), ("seg_00001.ts", 2.002), ("seg_00002.ts", 0.5)]
    (tmp_path / "p.m3u8").write_text(media_playlist(segments, target=2, ended=False))
    assert read_media_playlist(tmp_path / "p.m3u8") == segments


def test_read_media_playlist_refuses_a_file_that_is_not_m3u8(tmp_path: Path) -> None:
    path = tmp_path / "playlist.m3u8"
    path.write_text("seg_00000.ts\n")
    with pytest.raises(ValueError, match="not an m3u8"):
        read_media_playlist(path)


# ---- I-frame playlists -----------------------------------------------------------------

IFRAMES = [
    IFrame("seg_00000.ts", 0, 18_988, 11.4),
    IFrame("seg_00001.ts", 564, 15_792, 13.402),
    IFrame("seg_00002.ts", 564, 16_168, 15.404),
]


def test_iframe_playlist_text_is_exactly_the_hls_shape() -> None:
    assert iframe_playlist(IFRAMES, end_time=16.4, ended=True) == (
        "#EXTM3U\n"
        "#EXT-X-VERSION:4\n"
        "#EXT-X-TARGETDURATION:3\n"
        "#EXT-X-MEDIA-SEQUENCE:0\n"
        "#EXT-X-PLAYLIST-TYPE:VOD\n"
        "#EXT-X-I-FRAMES-ONLY\n"
        "#EXTINF:2.002000,\n"
        "#EXT-X-BYTERANGE:18988@0\n"
        "seg_00000.ts\n"
        "#EXTINF:2.002000,\n"
        "#EXT-X-BYTERANGE:15792@564\n"
        "seg_00001.ts\n"
        "#EXTINF:0.996000,\n"
        "#EXT-X-BYTERANGE:16168@564\n"
        "seg_00002.ts\n"
        "#EXT-X-ENDLIST\n"
    )


def test_growing_iframe_playlist_parses_as_an_event() -> None:
    playlist = m3u8.loads(iframe_playlist(IFRAMES[:2], end_time=15.404, ended=False))
    assert playlist.is_i_frames_only
    assert (playlist.playlist_type, playlist.is_endlist) == ("event", False)
    assert [s.byterange for s in playlist.segments] == ["18988@0", "15792@564"]
    assert [s.duration for s in playlist.segments] == [2.002, 2.002]


def test_iframe_target_duration_is_rounded_up() -> None:
    whole = [IFrame("a.ts", 0, 100, 10.0), IFrame("b.ts", 0, 100, 12.0)]
    assert "#EXT-X-TARGETDURATION:2\n" in iframe_playlist(whole, end_time=14.0, ended=True)
    assert "#EXT-X-TARGETDURATION:3\n" in iframe_playlist(whole, end_time=14.1, ended=True)


def test_keyframes_must_come_in_time_order_before_the_end() -> None:
    with pytest.raises(ValueError):
        iframe_playlist(IFRAMES, end_time=15.404, ended=True)
    with pytest.raises(ValueError):
        iframe_playlist(IFRAMES[::-1], end_time=20.0, ended=True)


def segment_files(folder: Path, sizes: dict[str, int]) -> Path:
    for name, size in sizes.items():
        (folder / name).write_bytes(b"\x47" * size)
    return folder


def test_iframe_bandwidth_is_the_densest_keyframe_rate(tmp_path: Path) -> None:
    folder = segment_files(tmp_path, {"a.ts": 100_000, "b.ts": 100_000})
    iframes = [IFrame("a.ts", 0, 20_000, 10.0), IFrame("b.ts", 188, 30_000, 12.0)]
    assert iframe_bandwidth(folder, iframes, 14.0) == 120_000  # 30000 bytes * 8 / 2 s


def test_a_short_last_keyframe_does_not_pose_as_the_peak(tmp_path: Path) -> None:
    folder = segment_files(tmp_path, {"a.ts": 100_000, "b.ts": 100_000})
    iframes = [IFrame("a.ts", 0, 20_000, 10.0), IFrame("b.ts", 0, 20_000, 12.0)]
    # Alone, the last one would be 20000 * 8 / 0.1 s = 1.6 Mb/s; with the one before it
    # (2.1 s, within 0.5 to 1.5 target durations) it is what a player really fetches.
    assert iframe_bandwidth(folder, iframes, 12.1) == 152_381


def test_iframe_ranges_outside_their_segment_are_refused(tmp_path: Path) -> None:
    folder = segment_files(tmp_path, {"a.ts": 1000})
    with pytest.raises(MeasureError, match="outside"):
        iframe_bandwidth(folder, [IFrame("a.ts", 900, 188, 10.0)], 12.0)
    with pytest.raises(MeasureError, match="unreadable"):
        iframe_bandwidth(folder, [IFrame("missing.ts", 0, 188, 10.0)], 12.0)
    with pytest.raises(MeasureError):
        iframe_bandwidth(folder, [], 12.0)


# ---- the master playlist ---------------------------------------------------------------


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


def test_master_with_audio_and_iframes_is_exactly_the_hls_shape() -> None:
    rungs = [video("360p", 640, 360, bandwidth=1_000_000, average_bandwidth=900_000)]
    text = master_playlist(rungs, audio=AUDIO, iframe_bandwidths={"360p": 80_000})
    assert text == (
        "#EXTM3U\n"
        "#EXT-X-VERSION:4\n"
        "#EXT-X-INDEPENDENT-SEGMENTS\n"
        '#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="audio",NAME="Audio",LANGUAGE="und",DEFAULT=YES,'
        'AUTOSELECT=YES,CHANNELS="2",URI="audio/playlist.m3u8"\n'
        '#EXT-X-STREAM-INF:BANDWIDTH=1140000,AVERAGE-BANDWIDTH=1030000,CODECS="avc1.64001f,'
        'mp4a.40.2",RESOLUTION=640x360,FRAME-RATE=30.000,AUDIO="audio"\n'
        "360p/playlist.m3u8\n"
        '#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=80000,CODECS="avc1.64001f",RESOLUTION=640x360,'
        'URI="360p/iframes.m3u8"\n'
    )


def test_master_with_audio_parses_with_the_group_on_every_variant() -> None:
    rungs = [video("720p", 1280, 720), video("360p", 640, 360, bandwidth=1_000_000)]
    iframes = {"720p": 300_000, "360p": 90_000}
    master = m3u8.loads(master_playlist(rungs, audio=AUDIO, iframe_bandwidths=iframes))
    assert [(m.type, m.group_id, m.channels) for m in master.media] == [("AUDIO", "audio", "2")]
    assert [v.stream_info.audio for v in master.playlists] == ["audio", "audio"]
    assert [v.stream_info.codecs for v in master.playlists] == ["avc1.64001f,mp4a.40.2"] * 2
    assert [p.uri for p in master.iframe_playlists] == ["720p/iframes.m3u8", "360p/iframes.m3u8"]
    assert [p.iframe_stream_info.bandwidth for p in master.iframe_playlists] == [300_000, 90_000]


def test_only_rungs_with_an_iframe_rate_get_an_iframe_playlist() -> None:
    rungs = [video("720p", 1280, 720), video("360p", 640, 360)]
    text = master_playlist(rungs, iframe_bandwidths={"360p": 90_000, "1080p": 1})
    assert text.count("#EXT-X-I-FRAME-STREAM-INF:") == 1
    assert 'URI="360p/iframes.m3u8"' in text and "1080p" not in text
    assert "#EXT-X-VERSION:3\n" in master_playlist(rungs, iframe_bandwidths={})


def test_frame_rate_is_written_with_three_decimals() -> None:
    assert "FRAME-RATE=29.970" in master_playlist([stats("720p", 1280, 720, fps=30000 / 1001)])


def test_rung_without_audio_declares_only_video() -> None:
    assert stats("720p", 1280, 720, audio_codec=None).codecs == "avc1.64001f"
    text = master_playlist([video("720p", 1280, 720)])
    assert 'CODECS="avc1.64001f",' in text and "AUDIO=" not in text and "EXT-X-MEDIA" not in text


def test_audio_only_master_has_the_audio_as_its_one_variant() -> None:
    text = master_playlist([], audio=AUDIO)
    assert text == (
        "#EXTM3U\n"
        "#EXT-X-VERSION:3\n"
        "#EXT-X-INDEPENDENT-SEGMENTS\n"
        '#EXT-X-STREAM-INF:BANDWIDTH=140000,AVERAGE-BANDWIDTH=130000,CODECS="mp4a.40.2"\n'
        "audio/playlist.m3u8\n"
    )
    master = m3u8.loads(text)
    assert [p.uri for p in master.playlists] == ["audio/playlist.m3u8"]
    assert not master.media and not master.iframe_playlists


# ---- measuring -------------------------------------------------------------------------


def test_measuring_a_playlist_without_segments_fails(tmp_path: Path) -> None:
    (tmp_path / "playlist.m3u8").write_text("#EXTM3U\n#EXT-X-ENDLIST\n")
    with pytest.raises(MeasureError, match="no segments"):
        measure_rendition(tmp_path)
    with pytest.raises(MeasureError, match="no segments"):
        measure_audio(tmp_path)


def test_measuring_a_missing_segment_fails(tmp_path: Path) -> None:
    (tmp_path / "playlist.m3u8").write_text(media_playlist([("seg.ts", 2.0)], target=2, ended=True))
    with pytest.raises(MeasureError):
        measure_audio(tmp_path)


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


def test_the_first_video_pes_of_a_segment_carries_the_sps_ffmpeg_finds(tmp_path: Path) -> None:
    """CODECS is read from the segment's first PES without a process; it must name what
    ffmpeg's own extraction of the first access unit names."""
    from services.media.mpegts import first_video_pes, read_head
    from services.media.playlists import _first_access_unit

    segment = tmp_path / "seg.ts"
    for preset, size in (("ultrafast", "320x240"), ("superfast", "1280x720")):
        lavfi = f"testsrc2=size={size}:rate=30:d=1"
        encode = ["-c:v", "libx264", "-preset", preset, "-profile:v", "high", "-f", "mpegts"]
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", lavfi, *encode, str(segment)],
            check=True,
        )
        head = read_head(segment)
        assert head is not None
        pes = first_video_pes(head)
        assert pes is not None
        assert avc1_codec(pes) == avc1_codec(_first_access_unit(segment, "ffmpeg"))
    assert read_head(tmp_path / "missing.ts") is None
    assert first_video_pes(b"\x00" * 4096) is None


def test_a_packet_whose_payload_is_cut_short_by_its_adaptation_field_is_skipped(
    tmp_path: Path,
) -> None:
    from services.media.mpegts import first_video_pes, ts_video_units

    # Payload-unit start, adaptation field + payload, the adaptation field filling all but
    # three bytes: the payload is "00 00 01" with no stream id to read.
    header = bytes([0x47, 0x41, 0x00, 0x30, 188 - 4 - 1 - 3])
    packet = header + b"\xff" * (188 - 4 - 1 - 3) + b"\x00\x00\x01"
    assert len(packet) == 188
    assert first_video_pes(packet * 4) is None
    assert ts_video_units(packet * 4) is None
