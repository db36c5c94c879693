"""The produced ladder and its delivery, checked with the m3u8 package and ffprobe."""

import itertools
import json
import subprocess

import m3u8
import pytest

from tests.harness import unknown_video_id

EXPECTED_RUNGS = {
    "full": ["1080p", "720p", "480p", "360p"],
    "portrait": ["720p", "480p", "360p"],
    "small": ["360p"],
    "silent": ["720p", "480p", "360p"],
    "pal": ["720p", "480p", "360p"],
    "tiny": ["240p"],
}
SEGMENT_TARGET = 2  # the test platform runs SEGMENT_SECONDS=2 so short clips have many segments


def ffprobe_json(*args: str) -> dict:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", *args],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


def master_of(client, video_id) -> m3u8.M3U8:
    response = client.get(f"/stream/{video_id}/master.m3u8")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/vnd.apple.mpegurl"
    return m3u8.loads(response.text)


def media_of(client, video_id, rung) -> m3u8.M3U8:
    response = client.get(f"/stream/{video_id}/{rung}/playlist.m3u8")
    assert response.status_code == 200, response.text
    return m3u8.loads(response.text)


@pytest.mark.parametrize("clip", sorted(EXPECTED_RUNGS))
def test_ladder_has_the_rungs_the_source_allows(client, transcoded, clip):
    video_id = transcoded[clip]
    master = master_of(client, video_id)
    rungs = [p.uri.split("/")[0] for p in master.playlists]
    assert rungs == EXPECTED_RUNGS[clip]
    assert client.get(f"/stream/{video_id}/qualities").json()["qualities"] == rungs
    assert client.get(f"/videos/{video_id}").json()["qualities"] == rungs


@pytest.mark.parametrize("clip", sorted(EXPECTED_RUNGS))
def test_segments_are_short_start_on_keyframes_and_align_across_rungs(
    client, transcoded, platform, clip
):
    video_id = transcoded[clip]
    files = platform.files(video_id)
    boundaries = {}
    for rung in EXPECTED_RUNGS[clip]:
        media = media_of(client, video_id, rung)
        assert media.playlist_type == "vod" and media.is_endlist
        durations = [s.duration for s in media.segments]
        assert all(d <= SEGMENT_TARGET + 0.5 for d in durations), durations
        boundaries[rung] = [round(d, 3) for d in durations]
        for seg in media.segments:
            path = files / "hls" / video_id / rung / seg.uri
            frame = ffprobe_json(
                "-select_streams",
                "v:0",
                "-read_intervals",
                "%+#1",
                "-show_entries",
                "frame=key_frame,pict_type",
                str(path),
            )["frames"][0]
            assert frame["key_frame"] == 1 and frame["pict_type"] == "I", (rung, seg.uri)
    assert len({tuple(b) for b in boundaries.values()}) == 1, boundaries
    probe = ffprobe_json("-show_format", str(files / "originals" / video_id / "source"))
    total = sum(next(iter(boundaries.values())))
    assert abs(total - float(probe["format"]["duration"])) < 0.1


@pytest.mark.parametrize("clip", sorted(EXPECTED_RUNGS))
def test_master_attributes_match_what_ffprobe_measures(client, transcoded, platform, clip):
    video_id = transcoded[clip]
    files = platform.files(video_id)
    master = master_of(client, video_id)
    text = client.get(f"/stream/{video_id}/master.m3u8").text
    assert "#EXT-X-INDEPENDENT-SEGMENTS" in text
    has_audio = clip != "silent"
    audio = _audio_rendition(client, video_id, platform, master) if has_audio else None
    assert bool(master.media) == has_audio
    for variant in master.playlists:
        rung = variant.uri.split("/")[0]
        folder = files / "hls" / video_id / rung
        first = sorted(folder.glob("seg_*.ts"))[0]
        streams = ffprobe_json("-show_streams", str(first))["streams"]
        video = next(s for s in streams if s["codec_type"] == "video")
        info = variant.stream_info
        assert info.resolution == (video["width"], video["height"])
        num, den = (int(x) for x in video["r_frame_rate"].split("/"))
        assert abs(info.frame_rate - num / den) < 0.01
        assert info.codecs.startswith("avc1.")
        assert ("mp4a.40.2" in info.codecs) == has_audio
        assert (info.audio == "audio") == has_audio
        _assert_bandwidth_matches_segments(client, video_id, rung, folder, info, audio)


def _audio_rendition(client, video_id, platform, master):
    (media,) = master.media
    assert media.type == "AUDIO" and media.group_id == "audio" and media.uri
    folder = platform.files(video_id) / "hls" / video_id / "audio"
    streams = ffprobe_json("-show_streams", str(sorted(folder.glob("seg_*.ts"))[0]))["streams"]
    assert [s["codec_type"] for s in streams] == ["audio"]
    assert streams[0]["codec_name"] == "aac" and streams[0]["channels"] == 2
    return _rates(client, video_id, "audio", folder)


def _rates(client, video_id, rendition, folder):
    """(peak, average) bit rate; the peak as RFC 8216 4.3.4.2 defines it: the largest rate of
    any run of consecutive segments lasting 0.5 to 1.5 target durations."""
    media = media_of(client, video_id, rendition)
    sizes = [(folder / s.uri).stat().st_size for s in media.segments]
    durations = [s.duration for s in media.segments]
    average = sum(sizes) * 8 / sum(durations)
    target = media.target_duration
    runs = [
        sum(sizes[i:j]) * 8 / sum(durations[i:j])
        for i in range(len(sizes))
        for j in range(i + 1, len(sizes) + 1)
        if 0.5 * target <= sum(durations[i:j]) <= 1.5 * target
    ]
    return max([*runs, average]), average


def _assert_bandwidth_matches_segments(client, video_id, rung, folder, info, audio):
    peak, average = _rates(client, video_id, rung, folder)
    if audio:
        peak, average = peak + audio[0], average + audio[1]
    assert abs(info.average_bandwidth - average) / average < 0.10
    assert abs(info.bandwidth - peak) / peak < 0.10


def _packet_times(paths, stream):
    times = []
    for path in paths:
        packets = ffprobe_json(
            "-select_streams", stream, "-show_entries", "packet=pts_time,duration_time", str(path)
        )["packets"]
        times += sorted(float(p["pts_time"]) for p in packets)
    return times


@pytest.mark.parametrize("clip", ["full", "pal"])
def test_stitched_chunks_run_on_without_gaps_or_overlaps(client, transcoded, platform, clip):
    video_id = transcoded[clip]
    files = platform.files(video_id)
    status = client.get(f"/admin/videos/{video_id}/status").json()
    assert sum(1 for c in status["chunks"] if c["kind"] == "video") >= 2, "a multi-chunk job"
    folder = files / "hls" / video_id
    frame = 1 / (25 if clip == "pal" else 30)
    for rung in EXPECTED_RUNGS[clip]:
        media = media_of(client, video_id, rung)
        assert (
            "#EXT-X-DISCONTINUITY"
            not in client.get(f"/stream/{video_id}/{rung}/playlist.m3u8").text
        )
        times = _packet_times([folder / rung / s.uri for s in media.segments], "v:0")
        steps = [b - a for a, b in itertools.pairwise(times)]
        assert all(abs(step - frame) < 0.002 for step in steps), (rung, sorted(set(steps)))
    audio = media_of(client, video_id, "audio")
    times = _packet_times([folder / "audio" / s.uri for s in audio.segments], "a:0")
    steps = {round(b - a, 4) for a, b in itertools.pairwise(times)}
    assert steps == {round(1024 / 48000, 4)}, steps


@pytest.mark.parametrize("clip", ["full", "small"])
def test_every_rung_has_an_iframe_playlist(client, transcoded, platform, clip):
    video_id = transcoded[clip]
    files = platform.files(video_id)
    master = master_of(client, video_id)
    assert len(master.iframe_playlists) == len(master.playlists)
    for entry in master.iframe_playlists:
        response = client.get(f"/stream/{video_id}/{entry.uri}")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/vnd.apple.mpegurl"
        iframes = m3u8.loads(response.text)
        assert iframes.is_i_frames_only and iframes.is_endlist
        rung = entry.uri.split("/")[0]
        for segment in iframes.segments:
            length, offset = (int(x) for x in segment.byterange.split("@"))
            data = (files / "hls" / video_id / rung / segment.uri).read_bytes()
            assert data[offset] == 0x47 and length % 188 == 0


def test_rungs_keep_the_aspect_ratio_with_even_sizes(client, transcoded):
    sizes = {
        p.uri.split("/")[0]: p.stream_info.resolution
        for p in master_of(client, transcoded["portrait"]).playlists
    }
    assert sizes == {"720p": (720, 1280), "480p": (480, 854), "360p": (360, 640)}
    full = {
        p.uri.split("/")[0]: p.stream_info.resolution
        for p in master_of(client, transcoded["full"]).playlists
    }
    assert full["480p"] == (854, 480)


def test_segments_and_playlists_carry_delivery_headers(client, transcoded):
    video_id = transcoded["small"]
    segment = client.get(f"/stream/{video_id}/360p/seg_00000.ts")
    assert segment.status_code == 200
    assert segment.headers["content-type"] == "video/mp2t"
    assert "immutable" in segment.headers["cache-control"]
    ranged = client.get(f"/stream/{video_id}/360p/seg_00000.ts", headers={"Range": "bytes=0-187"})
    assert ranged.status_code == 206 and len(ranged.content) == 188
    assert ranged.content[0] == 0x47  # MPEG-TS sync byte
    etag = segment.headers["etag"]
    cached = client.get(f"/stream/{video_id}/360p/seg_00000.ts", headers={"If-None-Match": etag})
    assert cached.status_code == 304


def test_original_is_served_whole_and_by_byte_range(client, transcoded, clips):
    video_id = transcoded["small"]
    whole = client.get(f"/stream/{video_id}/original")
    assert whole.status_code == 200
    assert whole.content == clips["small"].read_bytes()
    part = client.get(f"/stream/{video_id}/original", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206
    assert part.content == clips["small"].read_bytes()[100:200]
    assert part.headers["content-range"].startswith("bytes 100-199/")
    beyond = client.get(f"/stream/{video_id}/original", headers={"Range": "bytes=999999999-"})
    assert beyond.status_code == 416


def test_generic_asset_path_serves_files_below_the_video_only(client, transcoded):
    video_id = transcoded["small"]
    ok = client.get(f"/stream/{video_id}/360p/playlist.m3u8")
    assert ok.status_code == 200
    assert client.get(f"/stream/{video_id}/master.m3u8").status_code == 200
    for bad in ("%2e%2e/%2e%2e/videos.db", "..%2f..%2fvideos.db", "360p/../../../videos.db"):
        response = client.get(f"/stream/{video_id}/{bad}")
        assert response.status_code in (400, 404), (bad, response.status_code)


def test_unknown_video_quality_and_segment_are_clear_4xx(client, transcoded):
    video_id = transcoded["small"]
    assert client.get(f"/stream/{unknown_video_id()}/master.m3u8").status_code == 404
    assert client.get("/stream/not-an-id/master.m3u8").status_code == 400
    assert client.get(f"/stream/{video_id}/1080p/playlist.m3u8").status_code == 404
    bad = client.get(f"/stream/{video_id}/360p/passwd")
    assert bad.status_code == 400 and "segment" in bad.json()["detail"]
