"""The HEVC ladder on the real platform: chosen per upload (or by DEFAULT_CODEC), encoded in
chunks with libx265 into fMP4, stitched behind one init segment and played over HTTP.

Everything a player would get is fetched through the gateway and read with ffprobe; the CODECS
string is derived again, independently, from the SPS in the segments (ffmpeg's
trace_headers), not from the init segment the platform reads it from.
"""

import itertools
import json
import re
import subprocess
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import httpx
import m3u8
import pytest

from tests.clips import make_clip
from tests.harness import Platform, wait_status

SEGMENT_SECONDS = 2  # the harness's SEGMENT_SECONDS
FPS = 30
CLIP_SECONDS = 8  # chunks [0, 2), [2, 6), [6, 8) with the harness's chunk settings
AAC_FRAME_SECONDS = 1024 / 48_000
RUNGS = ["720p", "480p", "360p"]


# ---- uploading -------------------------------------------------------------------------


def upload_with_codec(client: httpx.Client, path: Path, codec: str | None) -> str:
    """Upload `path` in one chunk, asking for `codec` at init; return the video id."""
    form: dict[str, Any] = {"filename": path.name, "total_chunks": 1}
    if codec is not None:
        form["codec"] = codec
    init = client.post("/upload/init", data=form)
    assert init.status_code == 200, init.text
    video_id: str = init.json()["upload_id"]
    sent = client.post(
        "/upload/chunk",
        data={"upload_id": video_id, "index": 0},
        files={"file": ("blob", path.read_bytes(), "application/octet-stream")},
    )
    assert sent.status_code == 200, sent.text
    done = client.post("/upload/complete", data={"upload_id": video_id})
    assert done.status_code == 200, done.text
    return video_id


# ---- what a player downloads ------------------------------------------------------------


@dataclass(frozen=True)
class Rendition:
    """One media playlist as served, with its init segment and segments saved to disk."""

    name: str
    playlist: m3u8.M3U8
    init: Path
    segments: list[Path]

    @property
    def extinfs(self) -> list[float]:
        return [s.duration for s in self.playlist.segments]

    def joined(self, into: Path, segments: list[Path] | None = None) -> Path:
        """The init segment and `segments` (default: all) byte after byte, as MSE gets them."""
        chosen = self.segments if segments is None else segments
        into.write_bytes(b"".join(p.read_bytes() for p in [self.init, *chosen]))
        return into


@dataclass(frozen=True)
class Ladder:
    video_id: str
    master: m3u8.M3U8
    renditions: dict[str, Rendition]
    folder: Path

    def stream_inf(self, name: str) -> Any:
        (variant,) = [v for v in self.master.playlists if v.uri == f"{name}/playlist.m3u8"]
        return variant.stream_info


def download(client: httpx.Client, video_id: str, folder: Path) -> Ladder:
    """The master, every media playlist, init segment and segment, fetched over HTTP."""
    base = f"/stream/{video_id}"
    master = m3u8.loads(fetch(client, f"{base}/master.m3u8").decode())
    names = [v.uri.split("/")[0] for v in master.playlists] + ["audio"]
    renditions = {}
    for name in names:
        playlist = m3u8.loads(fetch(client, f"{base}/{name}/playlist.m3u8").decode())
        (folder / name).mkdir(parents=True)
        paths = []
        for uri in [playlist.segment_map[0].uri, *(s.uri for s in playlist.segments)]:
            path = folder / name / uri
            path.write_bytes(fetch(client, f"{base}/{name}/{uri}"))
            paths.append(path)
        renditions[name] = Rendition(name, playlist, paths[0], paths[1:])
    return Ladder(video_id, master, renditions, folder)


def fetch(client: httpx.Client, path: str) -> bytes:
    response = client.get(path)
    assert response.status_code == 200, (path, response.text)
    return response.content


def ffprobe(path: Path | str, *args: str) -> dict[str, Any]:
    argv = ["ffprobe", "-v", "error", "-print_format", "json", *args, str(path)]
    done = subprocess.run(argv, capture_output=True, check=True, timeout=120)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def video_stream(path: Path) -> dict[str, Any]:
    (stream,) = ffprobe(path, "-show_streams", "-select_streams", "v")["streams"]
    return dict(stream)


def packets(path: Path, stream: str = "v:0") -> list[dict[str, Any]]:
    found = ffprobe(path, "-select_streams", stream, "-show_entries", "packet=pts,dts,flags")
    return list(found["packets"])


def box_types(path: Path) -> list[str]:
    """The top-level box types of an MP4 file."""
    data, offset, types = path.read_bytes(), 0, []
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset : offset + 4], "big")
        types.append(data[offset + 4 : offset + 8].decode("latin-1"))
        assert size >= 8, f"{path}: a box of size {size}"
        offset += size
    assert offset == len(data), f"{path}: the last box is cut short"
    return types


# ---- CODECS, derived from the bitstream --------------------------------------------------

TRACE_LINE = re.compile(r"\]\s+\d+\s+(\w+)(?:\[(\d+)\])?\s+([01]+) = (\d+)$")
CONSTRAINT_BITS = 48


def sps_profile_tier_level(joined: Path) -> list[tuple[str, int | None, str]]:
    """(syntax element, index, bits) of the first SPS's profile_tier_level, as ffmpeg's
    trace_headers bitstream filter parses it from the stream itself."""
    argv = ["ffmpeg", "-hide_banner", "-nostdin", "-i", str(joined), "-map", "0:v:0"]
    argv += ["-c", "copy", "-bsf:v", "trace_headers", "-frames:v", "1", "-f", "null", "-"]
    trace = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stderr
    lines = trace.split("Sequence Parameter Set", 1)[1].splitlines()
    elements = []
    for line in lines:
        found = TRACE_LINE.search(line.strip())
        if found:
            name, index, bits, _ = found.groups()
            elements.append((name, int(index) if index else None, bits))
            if name == "general_level_idc":
                return elements
    raise AssertionError(f"no general_level_idc in the SPS of {joined}")


def codecs_from_sps(joined: Path) -> str:
    """`hvc1.<space><profile>.<compatibility>.<tier><level>.<constraints>` (ISO/IEC 14496-15
    E.3) built from the SPS fields."""
    fields = sps_profile_tier_level(joined)
    value = {name: int(bits, 2) for name, index, bits in fields if index is None}
    compatibility = sum(
        int(bits) << index
        for name, index, bits in fields
        if name == "general_profile_compatibility_flag" and index is not None
    )
    # The 48 bits from general_progressive_source_flag up to general_level_idc.
    start = next(i for i, f in enumerate(fields) if f[0] == "general_progressive_source_flag")
    bits = "".join(b for _, _, b in fields[start:-1])
    assert len(bits) == CONSTRAINT_BITS, bits
    constraints = [int(bits[i : i + 8], 2) for i in range(0, CONSTRAINT_BITS, 8)]
    while constraints and constraints[-1] == 0:
        constraints.pop()
    space = "ABC"[value["general_profile_space"] - 1] if value["general_profile_space"] else ""
    tier = "H" if value["general_tier_flag"] else "L"
    parts = ["hvc1", f"{space}{value['general_profile_idc']}", f"{compatibility:X}"]
    parts.append(f"{tier}{value['general_level_idc']}")
    return ".".join(parts + [f"{c:02X}" for c in constraints])


# ---- fixtures --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hevc_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 s of 720p with stereo audio: three chunks, so two chunk boundaries."""
    folder = tmp_path_factory.mktemp("hevc-clip")
    return make_clip(folder / "hevc.mp4", width=1280, height=720, seconds=CLIP_SECONDS, fps=FPS)


@pytest.fixture(scope="module")
def small_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hevc-small")
    return make_clip(folder / "small.mp4", width=320, height=180, seconds=2)


@dataclass(frozen=True)
class Growing:
    """A rung's playlist as seen while the video was still encoding, and its init segment."""

    playlist: m3u8.M3U8
    init_status: int
    init_type: str


@pytest.fixture(scope="module")
def hevc_upload(client: httpx.Client, hevc_clip: Path) -> tuple[str, list[Growing]]:
    """The clip uploaded as HEVC and encoded to `ok`, and what its 720p playlist looked like
    whenever it was polled as a growing (EVENT) playlist meanwhile."""
    video_id = upload_with_codec(client, hevc_clip, "hevc")
    seen = []
    deadline = time.monotonic() + 300
    while (status := client.get(f"/transcode/status/{video_id}").json())["overall"] != "ok":
        assert status["overall"] in ("queued", "running") and time.monotonic() < deadline, status
        response = client.get(f"/stream/{video_id}/720p/playlist.m3u8")
        if response.status_code == 200 and not (playlist := m3u8.loads(response.text)).is_endlist:
            init = client.get(f"/stream/{video_id}/720p/init.mp4")
            seen.append(Growing(playlist, init.status_code, init.headers["content-type"]))
        time.sleep(0.1)
    return video_id, seen


@pytest.fixture(scope="module")
def hevc_id(hevc_upload: tuple[str, list[Growing]]) -> str:
    return hevc_upload[0]


@pytest.fixture(scope="module")
def ladder(client: httpx.Client, hevc_id: str, tmp_path_factory: pytest.TempPathFactory) -> Ladder:
    return download(client, hevc_id, tmp_path_factory.mktemp("hevc-ladder"))


# ---- the ladder ------------------------------------------------------------------------


def test_the_hevc_ladder_probes_as_hvc1_with_the_declared_codecs(ladder: Ladder) -> None:
    assert [v.uri for v in ladder.master.playlists] == [f"{r}/playlist.m3u8" for r in RUNGS]
    for name in RUNGS:
        rendition = ladder.renditions[name]
        joined = rendition.joined(ladder.folder / f"{name}.mp4", rendition.segments[:1])
        stream = video_stream(joined)
        assert (stream["codec_name"], stream["codec_tag_string"]) == ("hevc", "hvc1")
        assert stream["profile"] == "Main"
        video, audio = ladder.stream_inf(name).codecs.split(",")
        assert video == codecs_from_sps(joined), name
        assert video == f"hvc1.1.6.L{stream['level']}.90"
        assert audio == "mp4a.40.2"


def test_rungs_are_fmp4_segments_behind_one_ext_x_map(ladder: Ladder) -> None:
    for name, rendition in ladder.renditions.items():
        playlist = rendition.playlist
        assert playlist.version >= 7, name
        assert [m.uri for m in playlist.segment_map] == ["init.mp4"]
        assert (playlist.playlist_type, playlist.is_endlist) == ("vod", True)
        assert "DISCONTINUITY" not in playlist.dumps()
        assert [s.uri for s in playlist.segments] == [
            f"seg_{i:05d}.m4s" for i in range(len(playlist.segments))
        ]
        assert box_types(rendition.init)[:2] == ["ftyp", "moov"]
        for segment in rendition.segments:
            assert "moof" in box_types(segment) and "mdat" in box_types(segment), segment


def test_a_growing_hevc_playlist_plays_from_its_init_segment_while_encoding(
    hevc_upload: tuple[str, list[Growing]],
) -> None:
    _, seen = hevc_upload
    assert seen, "the video was playable before it was complete"
    for growing in seen:
        assert growing.playlist.playlist_type == "event"
        assert [m.uri for m in growing.playlist.segment_map] == ["init.mp4"]
        assert (growing.init_status, growing.init_type) == (200, "video/mp4")
    counts = [len(g.playlist.segments) for g in seen]
    assert counts == sorted(counts) and counts[0] < CLIP_SECONDS // SEGMENT_SECONDS


def test_segment_durations_are_equal_across_rungs_and_sum_to_the_duration(
    ladder: Ladder,
) -> None:
    timelines = {tuple(ladder.renditions[name].extinfs) for name in RUNGS}
    assert len(timelines) == 1, timelines
    (timeline,) = timelines
    assert timeline == (SEGMENT_SECONDS,) * (CLIP_SECONDS // SEGMENT_SECONDS)
    assert sum(timeline) == pytest.approx(CLIP_SECONDS, abs=1 / FPS)


def test_every_segment_starts_with_an_idr_at_the_same_time_in_every_rung(
    ladder: Ladder,
) -> None:
    starts = {}
    for name in RUNGS:
        rendition = ladder.renditions[name]
        firsts = []
        for index, segment in enumerate(rendition.segments):
            joined = rendition.joined(ladder.folder / f"{name}-{index}.mp4", [segment])
            first = min(packets(joined), key=lambda p: int(p["pts"]))
            assert "K" in first["flags"], (name, segment)
            firsts.append(int(first["pts"]))
        starts[name] = firsts
    assert len({tuple(s) for s in starts.values()}) == 1, starts


def test_timestamps_run_on_across_chunk_boundaries_one_frame_apart(
    client: httpx.Client, ladder: Ladder
) -> None:
    chunks = client.get(f"/admin/videos/{ladder.video_id}/status").json()["chunks"]
    starts = sorted(c["start"] for c in chunks if c["kind"] == "video")
    assert starts == [0, 2, 6], "three chunks, two boundaries"
    boundaries = [round(start / SEGMENT_SECONDS) for start in starts[1:]]
    for name in RUNGS:
        rendition = ladder.renditions[name]
        whole = rendition.joined(ladder.folder / f"{name}-all.mp4")
        step = frame_ticks(whole)
        found = packets(whole)
        pts = sorted(int(p["pts"]) for p in found)
        assert len(pts) == CLIP_SECONDS * FPS, name
        assert {b - a for a, b in itertools.pairwise(pts)} == {step}, name
        assert all(a < b for a, b in itertools.pairwise(int(p["dts"]) for p in found)), name
        for segment in boundaries:
            # The first frame of a chunk comes one frame after the last one of the chunk before.
            before = rendition.joined(
                ladder.folder / "before.mp4", [rendition.segments[segment - 1]]
            )
            after = rendition.joined(ladder.folder / "after.mp4", [rendition.segments[segment]])
            last = max(int(p["pts"]) for p in packets(before))
            first = min(int(p["pts"]) for p in packets(after))
            assert first - last == step, (name, segment)


def frame_ticks(path: Path) -> int:
    base = Fraction(video_stream(path)["time_base"])
    ticks = 1 / (base * FPS)
    assert ticks.denominator == 1, base
    return int(ticks)


def test_every_chunk_wrote_the_same_init_segment(platform: Platform, ladder: Ladder) -> None:
    files = platform.files(ladder.video_id)
    for name in RUNGS:
        folder = files / "hls" / ladder.video_id / name
        inits = sorted(folder.glob("init_*.mp4"))
        assert [p.name for p in inits] == [f"init_{i:05d}.mp4" for i in range(3)]
        published = (folder / "init.mp4").read_bytes()
        assert all(p.read_bytes() == published for p in inits), name
        assert ladder.renditions[name].init.read_bytes() == published
        assert not list(folder.glob(".probe-*")), "measuring leaves no file behind"


def test_audio_is_an_fmp4_aac_rendition_that_starts_with_the_video(ladder: Ladder) -> None:
    audio = ladder.renditions["audio"]
    whole = audio.joined(ladder.folder / "audio-all.mp4")
    (stream,) = ffprobe(whole, "-show_streams")["streams"]
    assert (stream["codec_name"], stream["profile"], stream["channels"]) == ("aac", "LC", 2)
    found = [int(p["pts"]) for p in packets(whole, "a:0")]
    assert {b - a for a, b in itertools.pairwise(found)} == {1024}
    video = ladder.renditions[RUNGS[0]].joined(ladder.folder / "video-all.mp4")
    video_start = float(ffprobe(video, "-show_streams")["streams"][0]["start_time"])
    audio_start = float(stream["start_time"])
    # The AAC encoder's one frame of priming comes first: the first real sample meets frame 0.
    assert audio_start + AAC_FRAME_SECONDS == pytest.approx(video_start, abs=1e-4)
    (media,) = ladder.master.media
    assert (media.type, media.uri) == ("AUDIO", "audio/playlist.m3u8")


def test_master_declares_what_was_measured(ladder: Ladder) -> None:
    sizes = {"720p": (1280, 720), "480p": (854, 480), "360p": (640, 360)}
    rates = []
    for name in RUNGS:
        inf = ladder.stream_inf(name)
        rendition = ladder.renditions[name]
        stream = video_stream(rendition.joined(ladder.folder / f"{name}-m.mp4"))
        assert inf.resolution == sizes[name] == (stream["width"], stream["height"])
        assert inf.frame_rate == pytest.approx(float(Fraction(stream["r_frame_rate"])), abs=0.001)
        audio = ladder.renditions["audio"]
        video_bits = sum(p.stat().st_size for p in rendition.segments) * 8
        audio_bits = sum(p.stat().st_size for p in audio.segments) * 8
        average = (video_bits + audio_bits) / CLIP_SECONDS
        assert inf.average_bandwidth == pytest.approx(average, rel=0.05), name
        assert inf.average_bandwidth <= inf.bandwidth <= 2 * inf.average_bandwidth
        rates.append(inf.bandwidth)
    assert rates == sorted(rates, reverse=True)
    # No I-frame playlists for fMP4 rungs (see the README): the master lists none.
    assert ladder.master.iframe_playlists == []


# ---- delivery --------------------------------------------------------------------------


def test_streaming_serves_init_and_media_segments_with_their_types(
    client: httpx.Client, hevc_id: str
) -> None:
    base = f"/stream/{hevc_id}/480p"
    init = client.get(f"{base}/init.mp4")
    assert (init.status_code, init.headers["content-type"]) == (200, "video/mp4")
    segment = client.get(f"{base}/seg_00000.m4s")
    assert (segment.status_code, segment.headers["content-type"]) == (200, "video/iso.segment")
    for response in (init, segment):
        assert "immutable" in response.headers["cache-control"]
    part = client.get(f"{base}/seg_00000.m4s", headers={"Range": "bytes=0-7"})
    assert (part.status_code, part.content) == (206, segment.content[:8])
    audio = client.get(f"/stream/{hevc_id}/audio/init.mp4")
    assert (audio.status_code, audio.headers["content-type"]) == (200, "video/mp4")
    # A chunk's own init segment is the platform's business, not a player's.
    assert client.get(f"{base}/init_00001.mp4").status_code in (400, 404, 422)


def test_ffmpeg_plays_the_ladder_through_the_streaming_service(
    platform: Platform, hevc_id: str
) -> None:
    base = f"{platform.url}/stream/{hevc_id}"
    argv = ["ffprobe", "-v", "error", "-count_frames", "-print_format", "json"]
    argv += ["-show_entries", "stream=codec_name,nb_read_frames"]
    for rendition in (f"{base}/360p/playlist.m3u8", f"{base}/audio/playlist.m3u8"):
        done = subprocess.run(
            [*argv, rendition], capture_output=True, text=True, check=True, timeout=120
        )
        (stream,) = json.loads(done.stdout)["streams"]
        if "audio" in rendition:
            assert stream["codec_name"] == "aac"
            assert int(stream["nb_read_frames"]) >= CLIP_SECONDS * 48_000 // 1024
        else:
            assert stream["codec_name"] == "hevc"
            assert int(stream["nb_read_frames"]) == CLIP_SECONDS * FPS


# ---- choosing the codec ----------------------------------------------------------------


@pytest.mark.parametrize("codec", ["vp9", "H265", "hevc ", "x" * 17])
def test_an_unknown_codec_is_refused_at_init_with_what_to_send(
    client: httpx.Client, codec: str
) -> None:
    response = client.post(
        "/upload/init", data={"filename": "a.mp4", "total_chunks": 1, "codec": codec}
    )
    assert 400 <= response.status_code < 500, response.text
    body = response.json()
    assert body["error"] and "codec" in body["detail"]


def test_without_a_codec_the_ladder_is_h264_in_mpegts(
    client: httpx.Client, small_clip: Path
) -> None:
    video_id = upload_with_codec(client, small_clip, "")
    assert wait_status(client, video_id)["overall"] == "ok"
    master = m3u8.loads(client.get(f"/stream/{video_id}/master.m3u8").text)
    (variant,) = master.playlists
    assert variant.stream_info.codecs.startswith("avc1.")
    media = m3u8.loads(client.get(f"/stream/{video_id}/{variant.uri}").text)
    assert media.segment_map == [] and media.segments[0].uri.endswith(".ts")
    client.delete(f"/admin/videos/{video_id}")


def test_starting_over_keeps_the_hevc_ladder(client: httpx.Client, small_clip: Path) -> None:
    video_id = upload_with_codec(client, small_clip, "hevc")
    assert wait_status(client, video_id)["overall"] == "ok"
    restart = client.post("/transcode/start", json={"upload_id": video_id})
    assert restart.status_code == 200, restart.text
    assert wait_status(client, video_id)["overall"] == "ok"
    master = m3u8.loads(client.get(f"/stream/{video_id}/master.m3u8").text)
    assert master.playlists[0].stream_info.codecs.startswith("hvc1.")
    client.delete(f"/admin/videos/{video_id}")


def test_default_codec_setting_makes_hevc_the_ladder_of_uploads_that_do_not_choose(
    tmp_path: Path, small_clip: Path
) -> None:
    platform = Platform(tmp_path / "storage", DEFAULT_CODEC="hevc").start()
    try:
        with platform.client() as client:
            chosen = upload_with_codec(client, small_clip, None)
            explicit = upload_with_codec(client, small_clip, "h264")
            codecs = {}
            for video_id in (chosen, explicit):
                assert wait_status(client, video_id)["overall"] == "ok"
                master = m3u8.loads(client.get(f"/stream/{video_id}/master.m3u8").text)
                codecs[video_id] = master.playlists[0].stream_info.codecs.split(".")[0]
    finally:
        platform.drop()
    assert codecs == {chosen: "hvc1", explicit: "avc1"}
