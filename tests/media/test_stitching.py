"""Chunked encoding end to end: chunks + audio with real ffmpeg, stitched by the publisher's
own `write_presentation` (no settings, no database).

The clips are 10 s at 30, 25 and 30000/1001 fps, cut into a 0.5 s opening and then chunks
[0.5, 2.5), [2.5, 6.5), [6.5, end) of 2 s segments (the short opening is a chunk of its own, encoded
with its own preset and rate control, and must be as seamless as any other chunk; at
25 and 29.97 fps its end falls between two frames). superfast, unlike ultrafast, makes B-frames
(as production's veryfast does): the case where chunk timestamps can overlap.
"""

import asyncio
import itertools
import json
import math
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import m3u8
import pytest

from services.core import layout
from services.core.storage import Storage
from services.media.chunking import TimeChunk, split_chunks
from services.media.ffmpeg_args import (
    CAPPED_CRF,
    FIXED,
    OPENING_BUDGET_SECONDS,
    TS_OVERHEAD,
    EncodeOptions,
    audio_bitrate,
    audio_command,
    video_chunk_command,
)
from services.media.ladder import Rendition, plan_ladder
from services.media.mpegts import ts_video_units
from services.media.plan import Plan
from services.media.playlists import (
    IFrame,
    iframe_playlist,
    index_iframes,
    measure_audio,
    measure_rendition,
    media_playlist,
    read_media_playlist,
)
from services.media.probe import SourceInfo, probe
from services.media.runner import run_ffmpeg
from services.transcoding.stitch import index_chunk_iframes, write_presentation
from tests.clips import make_clip

SEGMENT_SECONDS = 2
# The `stitched` clips' short opening segment: the default, half a second, which at 25 fps
# ends between frames (12.5 frames), at 29.97 fps too.
OPENING_SECONDS = 0.5
# How full x264's VBV buffer starts for the opening (vbv-init in its options, else x264's
# default 0.9).
X264_VBV_INIT = float(
    dict(p.split("=", 1) for p in EncodeOptions().opening_x264_params.split(":") if "=" in p).get(
        "vbv-init", 0.9
    )
)
# Apple's limit: no segment longer than the target duration + 0.5 s.
MAX_SEGMENT_SECONDS = SEGMENT_SECONDS + 0.5
# MPEG-TS clock ticks per second; one AAC frame is 1024 samples at 48 kHz.
TICKS = 90_000
AAC_FRAME_TICKS = 1024 * TICKS // 48_000
# H.264 profile_idc by the profile name ffprobe prints.
PROFILE_IDC = {"Constrained Baseline": 0x42, "Baseline": 0x42, "Main": 0x4D, "High": 0x64}
VIDEO_ID = "5717c4ed" * 4
FRAME_RATES = {"30": Fraction(30), "25": Fraction(25), "29.97": Fraction(30000, 1001)}
# Grain strength of the clip the capped-CRF ladder is checked on where it meets its cap.
NOISE = 16


@dataclass(frozen=True)
class Stitched:
    """One source encoded in chunks and stitched: what went in and where it came out."""

    info: SourceInfo
    renditions: list[Rendition]
    chunks: list[TimeChunk]
    out_dir: Path
    master: m3u8.M3U8
    source: Path

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.renditions]

    def extinfs(self, name: str) -> list[tuple[str, float]]:
        return read_media_playlist(self.out_dir / name / layout.PLAYLIST)

    def segments(self, name: str) -> list[Path]:
        return [self.out_dir / name / uri for uri, _ in self.extinfs(name)]

    def chunk_segments(self, name: str, chunk: TimeChunk) -> list[Path]:
        playlist = self.out_dir / name / layout.chunk_playlist(chunk.index)
        return [self.out_dir / name / uri for uri, _ in read_media_playlist(playlist)]


def encode(
    root: Path,
    source: Path,
    *,
    preset: str,
    keyframe_seconds: int = 2,
    opening_seconds: float = 0,
    rate_control: str = FIXED,
    segment_seconds: int = SEGMENT_SECONDS,
) -> Stitched:
    """Encode `source` in chunks plus its audio, the way the worker does (each chunk's
    keyframes indexed as it finishes), then stitch it with the publisher's own code."""
    info = probe(source)
    renditions = plan_ladder(info.width, info.height)
    chunks = split_chunks(
        info.duration,
        segment_seconds=segment_seconds,
        chunk_segments=2,
        opening_seconds=opening_seconds,
    )
    options = EncodeOptions(
        preset=preset,
        segment_seconds=segment_seconds,
        keyframe_seconds=keyframe_seconds,
        opening_seconds=opening_seconds,
        rate_control=rate_control,
    )
    storage = Storage(root)
    out_dir = storage.hls_dir(VIDEO_ID)
    folders = [r.name for r in renditions] + ([layout.AUDIO] if info.has_audio else [])
    for folder in folders:
        storage.rung_dir(VIDEO_ID, folder).mkdir(parents=True)
    common: dict[str, Any] = {"ffmpeg": "ffmpeg", "source": source, "out_dir": out_dir}
    commands = [
        video_chunk_command(**common, info=info, renditions=renditions, options=options, chunk=c)
        for c in chunks
    ]
    audio_kbps = audio_bitrate(renditions) if info.has_audio else None
    if audio_kbps is not None:
        commands.append(audio_command(**common, audio_kbps=audio_kbps, options=options))
    asyncio.run(run_all(commands))
    for rendition, chunk in itertools.product(renditions, chunks):
        index_chunk_iframes(
            storage.rung_file(VIDEO_ID, rendition.name, layout.chunk_playlist(chunk.index)),
            storage.rung_file(VIDEO_ID, rendition.name, layout.chunk_iframes(chunk.index)),
            ffprobe="ffprobe",
        )
    plan = Plan(info=info, renditions=renditions, options=options, audio_kbps=audio_kbps)
    write_presentation(storage, VIDEO_ID, plan, len(chunks), final=True)
    master = storage.master_path(VIDEO_ID).read_text()
    return Stitched(info, renditions, chunks, out_dir, m3u8.loads(master), source)


async def run_all(commands: list[list[str]]) -> None:
    await asyncio.gather(*(run_ffmpeg(argv) for argv in commands))


def chunk_extinfs(rung: Path, chunks: int) -> list[tuple[str, float]]:
    return [s for i in range(chunks) for s in read_media_playlist(rung / layout.chunk_playlist(i))]


def rung_iframes(rung: Path, segments: list[tuple[str, float]]) -> tuple[list[IFrame], float]:
    """The rung's keyframes and the stream time where its last segment ends."""
    iframes = [f for uri, _ in segments for f in index_iframes(rung / uri)]
    return iframes, iframes[0].time + sum(seconds for _, seconds in segments)


@dataclass(frozen=True)
class Case:
    """One `stitched` encode: the clip's frame rate, the ladder's rate control, the clip's
    grain (0: none) and lavfi pattern (moving testsrc2, or still testsrc: a slide)."""

    rate: str
    rate_control: str = FIXED
    noise: int = 0
    pattern: str = "testsrc2"

    @property
    def name(self) -> str:
        noisy = f"-noise{self.noise}" if self.noise else ""
        return f"{self.rate}fps-{self.rate_control}-{self.pattern}{noisy}"


# Footage that needs far less than any rung's average bit rate, and footage that needs more,
# each laddered both ways.
EASY = Case("30", pattern="testsrc")
HARD = Case("30", noise=NOISE)
EASY_CAPPED = replace(EASY, rate_control=CAPPED_CRF)
HARD_CAPPED = replace(HARD, rate_control=CAPPED_CRF)
CASES = [Case(rate) for rate in FRAME_RATES] + [EASY, EASY_CAPPED, HARD, HARD_CAPPED]


@pytest.fixture(scope="session")
def encoded(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Case], Stitched]:
    """`Case` -> its clip (854x480, 10 s) encoded with a 0.5 s opening and stitched, once."""
    done: dict[Case, Stitched] = {}

    def get(case: Case) -> Stitched:
        if case not in done:
            folder = tmp_path_factory.mktemp(f"chunked{case.name}")
            rate = float(FRAME_RATES[case.rate])
            path = folder / "source.mp4"
            source = make_clip(
                path,
                width=854,
                height=480,
                seconds=10,
                fps=rate,
                noise=case.noise,
                pattern=case.pattern,
            )
            done[case] = encode(
                folder / "storage",
                source,
                preset="superfast",
                opening_seconds=OPENING_SECONDS,
                rate_control=case.rate_control,
            )
        return done[case]

    return get


@pytest.fixture(scope="module", params=CASES, ids=lambda case: case.name)
def stitched(request: pytest.FixtureRequest, encoded: Callable[[Case], Stitched]) -> Stitched:
    return encoded(request.param)


@pytest.fixture(scope="module")
def full(clips: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Stitched:
    return encode(tmp_path_factory.mktemp("full"), clips["full"], preset="ultrafast")


@pytest.fixture(scope="module")
def silent(clips: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Stitched:
    return encode(tmp_path_factory.mktemp("silent"), clips["silent"], preset="ultrafast")


def ffprobe(path: Path, *args: str) -> dict[str, Any]:
    argv = ["ffprobe", "-v", "error", "-print_format", "json", *args, str(path)]
    done = subprocess.run(argv, capture_output=True, check=True, timeout=60)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def packets(path: Path, stream: str = "v:0") -> list[dict[str, Any]]:
    entries = "packet=pts,dts,pts_time,flags"
    found: list[dict[str, Any]] = ffprobe(
        path, "-select_streams", stream, "-show_entries", entries
    )["packets"]
    return found


def streams(segment: Path, kind: str) -> list[dict[str, Any]]:
    return [s for s in ffprobe(segment, "-show_streams")["streams"] if s["codec_type"] == kind]


def first_video_frame(segment: Path) -> dict[str, Any]:
    frames = ffprobe(
        segment,
        *("-select_streams", "v:0", "-read_intervals", "%+#1"),
        *("-show_entries", "frame=key_frame,pict_type"),
    )["frames"]
    return dict(frames[0])


def concatenated(files: list[Path], into: Path) -> Path:
    """The segments byte after byte, as a player's demuxer receives them."""
    into.write_bytes(b"".join(path.read_bytes() for path in files))
    return into


def frame_ticks(info: SourceInfo) -> int:
    return round(TICKS / info.fps)


def pts_range(files: list[Path]) -> tuple[int, int]:
    pts = [int(p["pts"]) for path in files for p in packets(path)]
    return min(pts), max(pts)


# ---- segments --------------------------------------------------------------------------


def test_segments_are_numbered_globally_without_gaps_or_duplicates(stitched: Stitched) -> None:
    for name in stitched.names:
        uris = [uri for uri, _ in stitched.extinfs(name)]
        assert uris == [f"seg_{i:05d}.ts" for i in range(len(uris))]
        on_disk = sorted(p.name for p in (stitched.out_dir / name).glob("seg_*"))
        assert on_disk == uris  # and no .tmp left behind


def test_each_chunk_writes_the_segments_its_start_number_promises(stitched: Stitched) -> None:
    opening, step = OPENING_SECONDS, SEGMENT_SECONDS
    assert [(c.start, c.end) for c in stitched.chunks] == [
        (0, opening),
        (opening, opening + step),
        (opening + step, opening + 3 * step),
        (opening + 3 * step, None),
    ]
    for name in stitched.names:
        for chunk in stitched.chunks:
            names = [p.name for p in stitched.chunk_segments(name, chunk)]
            first = chunk.first_segment(SEGMENT_SECONDS, OPENING_SECONDS)
            assert names == [f"seg_{first + i:05d}.ts" for i in range(len(names))]
            if chunk.end is not None:
                assert len(names) == math.ceil((chunk.end - chunk.start) / SEGMENT_SECONDS)


def test_the_opening_is_one_short_segment_and_the_grid_runs_on_from_its_end(
    stitched: Stitched,
) -> None:
    frame = 1 / stitched.info.fps
    for name in stitched.names:
        durations = [seconds for _, seconds in stitched.extinfs(name)]
        # The opening ends at the first frame at or after its end; 2 s segments follow.
        assert durations[0] == pytest.approx(OPENING_SECONDS, abs=frame)
        assert durations[1:-1] == pytest.approx([SEGMENT_SECONDS] * (len(durations) - 2), abs=frame)


def test_the_opening_keeps_within_the_rungs_bit_rate_cap(stitched: Stitched) -> None:
    """The opening's capped CRF spends at most what the rung's VBV allows: the buffer's
    starting fill (x264's default, 90 %) plus the maxrate over its duration (MPEG-TS packets
    add a few per cent)."""
    for rung in stitched.renditions:
        uri, seconds = stitched.extinfs(rung.name)[0]
        bits = (stitched.out_dir / rung.name / uri).stat().st_size * 8
        allowed = (X264_VBV_INIT * rung.bufsize_kbps + rung.maxrate_kbps * seconds) * 1000
        assert bits <= allowed * 1.1, (rung.name, bits, allowed)


def test_every_segment_starts_with_a_keyframe(stitched: Stitched) -> None:
    for name in stitched.names:
        for segment in stitched.segments(name):
            frame = first_video_frame(segment)
            assert (frame["key_frame"], frame["pict_type"]) == (1, "I"), segment


def test_segment_boundaries_are_equal_across_rungs(stitched: Stitched) -> None:
    assert len(stitched.renditions) == 2
    assert len({tuple(stitched.extinfs(name)) for name in stitched.names}) == 1


def test_extinf_sum_is_the_source_duration_within_one_frame(stitched: Stitched) -> None:
    for name in stitched.names:
        total = sum(seconds for _, seconds in stitched.extinfs(name))
        assert total == pytest.approx(stitched.info.duration, abs=1 / stitched.info.fps)


def test_no_segment_is_longer_than_target_plus_half_a_second(stitched: Stitched) -> None:
    for name in stitched.names:
        assert max(seconds for _, seconds in stitched.extinfs(name)) <= MAX_SEGMENT_SECONDS


def test_rung_segments_carry_no_audio(stitched: Stitched) -> None:
    for name in stitched.names:
        for segment in stitched.segments(name):
            assert streams(segment, "audio") == []


# ---- timestamps ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def late(tmp_path_factory: pytest.TempPathFactory) -> Stitched:
    """20 s at 30000/1001 fps: the chunk from 18 s starts 0.54 frame after its first frame.

    That is where ffmpeg's default frame-rate mode duplicated the chunk's first frame over
    the previous chunk's last one, and where an offset of exactly start + 10 s put it late.
    """
    folder = tmp_path_factory.mktemp("late")
    source = make_clip(folder / "source.mp4", width=320, height=180, seconds=20, fps=30000 / 1001)
    return encode(folder / "storage", source, preset="superfast")


def assert_frames_one_apart(stitched: Stitched) -> None:
    """The concatenated rungs: every frame once, one frame duration apart, DTS rising."""
    step = frame_ticks(stitched.info)
    for name in stitched.names:
        joined = concatenated(stitched.segments(name), stitched.out_dir / f"{name}.ts")
        found = packets(joined)
        pts = sorted(int(p["pts"]) for p in found)
        dts = [int(p["dts"]) for p in found]
        assert len(pts) == round(stitched.info.duration * stitched.info.fps)
        assert {b - a for a, b in itertools.pairwise(pts)} == {step}, name
        assert all(a < b for a, b in itertools.pairwise(dts)), name


def assert_chunks_one_frame_apart(stitched: Stitched) -> None:
    """Each chunk's first frame comes one frame after the previous chunk's last."""
    step = frame_ticks(stitched.info)
    for name in stitched.names:
        ranges = [pts_range(stitched.chunk_segments(name, c)) for c in stitched.chunks]
        for (_, last), (first, _) in itertools.pairwise(ranges):
            assert first - last == step, (name, ranges)


def test_video_timestamps_run_on_across_chunks_one_frame_apart(stitched: Stitched) -> None:
    assert_frames_one_apart(stitched)


def test_each_chunk_starts_one_frame_after_the_last_frame_of_the_one_before(
    stitched: Stitched,
) -> None:
    assert_chunks_one_frame_apart(stitched)


def test_a_chunk_starting_between_frames_keeps_its_frames_at_their_source_times(
    late: Stitched,
) -> None:
    assert [c.start for c in late.chunks] == [0, 2, 6, 10, 14, 18]
    assert_frames_one_apart(late)
    assert_chunks_one_frame_apart(late)
    (name,) = late.names
    first, _ = pts_range(late.chunk_segments(name, late.chunks[0]))
    start, _ = pts_range(late.chunk_segments(name, late.chunks[-1]))
    # Frame 540 (18.018 s, the first at or after 18 s) is 540 frames after frame 0.
    assert start - first == 540 * 3003


def test_audio_timestamps_are_continuous(stitched: Stitched) -> None:
    audio = stitched.out_dir / layout.AUDIO
    joined = concatenated(
        [audio / uri for uri, _ in read_media_playlist(audio / layout.AUDIO_RUN_PLAYLIST)],
        stitched.out_dir / "audio.ts",
    )
    pts = [int(p["pts"]) for p in packets(joined, "a:0")]
    assert {b - a for a, b in itertools.pairwise(pts)} == {AAC_FRAME_TICKS}


def test_audio_starts_with_the_video(stitched: Stitched) -> None:
    (video, _), audio = stitched.extinfs(stitched.names[0])[0], stitched.out_dir / layout.AUDIO
    video_start = int(packets(stitched.out_dir / stitched.names[0] / video)[0]["pts"])
    audio_start = int(packets(audio / "seg_00000.ts", "a:0")[0]["pts"])
    # The AAC encoder's one frame of priming comes first: the first real sample meets frame 0.
    assert abs(audio_start - video_start) <= 0.05 * TICKS
    assert audio_start + AAC_FRAME_TICKS == video_start


# ---- playlists -------------------------------------------------------------------------


def test_stitched_playlists_parse_as_complete_vod_playlists(stitched: Stitched) -> None:
    for folder in [*stitched.names, layout.AUDIO]:
        playlist = m3u8.load(str(stitched.out_dir / folder / layout.PLAYLIST))
        assert (playlist.playlist_type, playlist.is_endlist) == ("vod", True)
        assert playlist.version == 3 and playlist.media_sequence == 0
        assert playlist.target_duration == SEGMENT_SECONDS
        assert playlist.is_independent_segments and playlist.start is None
        assert "DISCONTINUITY" not in playlist.dumps()


def test_growing_playlists_are_events_that_start_at_the_beginning(full: Stitched) -> None:
    rung = full.out_dir / full.names[0]
    segments = chunk_extinfs(rung, 1)
    playlist = m3u8.loads(media_playlist(segments, target=2, ended=False))
    assert (playlist.playlist_type, playlist.is_endlist) == ("event", False)
    assert playlist.start.time_offset == 0
    assert [s.uri for s in playlist.segments] == ["seg_00000.ts"]
    iframes, end_time = rung_iframes(rung, segments)
    playlist = m3u8.loads(iframe_playlist(iframes, end_time=end_time, ended=False))
    assert (playlist.playlist_type, playlist.is_endlist) == ("event", False)
    assert playlist.is_i_frames_only and len(playlist.segments) == 1


def test_iframe_playlists_list_one_keyframe_per_segment(stitched: Stitched) -> None:
    for name in stitched.names:
        playlist = m3u8.load(str(stitched.out_dir / name / layout.IFRAMES))
        assert playlist.is_i_frames_only and playlist.version == 4
        assert (playlist.playlist_type, playlist.is_endlist) == ("vod", True)
        assert [s.uri for s in playlist.segments] == [u for u, _ in stitched.extinfs(name)]
        assert [s.duration for s in playlist.segments] == pytest.approx(
            [seconds for _, seconds in stitched.extinfs(name)], abs=1e-5
        )
        assert playlist.target_duration >= max(s.duration for s in playlist.segments)


def test_iframe_byte_ranges_hold_exactly_one_keyframe(stitched: Stitched, tmp_path: Path) -> None:
    playlist = m3u8.load(str(stitched.out_dir / stitched.names[-1] / layout.IFRAMES))
    for index, segment in enumerate(playlist.segments):
        length, offset = (int(n) for n in segment.byterange.split("@"))
        data = (stitched.out_dir / stitched.names[-1] / segment.uri).read_bytes()
        extract = data[offset : offset + length]
        assert extract[0] == 0x47 and length % 188 == 0
        (tmp_path / f"{index}.ts").write_bytes(extract)
        (frame,) = packets(tmp_path / f"{index}.ts")
        assert "K" in frame["flags"]
        decoded = first_video_frame(tmp_path / f"{index}.ts")
        assert (decoded["key_frame"], decoded["pict_type"]) == (1, "I")


def test_master_offers_one_audio_rendition_to_every_rung(stitched: Stitched) -> None:
    (audio,) = stitched.master.media
    assert (audio.type, audio.group_id, audio.uri) == ("AUDIO", "audio", "audio/playlist.m3u8")
    assert (audio.default, audio.autoselect, audio.channels) == ("YES", "YES", "2")
    for variant in stitched.master.playlists:
        assert variant.stream_info.audio == "audio"
        video, sound = variant.stream_info.codecs.split(",")
        assert video.startswith("avc1.") and sound == "mp4a.40.2"


def test_master_bandwidth_covers_video_and_audio(stitched: Stitched) -> None:
    audio = measure_audio(stitched.out_dir / layout.AUDIO)
    infs = stream_infs(stitched)
    for name in stitched.names:
        video = measure_rendition(stitched.out_dir / name)
        assert infs[name].bandwidth == video.bandwidth + audio.bandwidth
        assert infs[name].average_bandwidth == video.average_bandwidth + audio.average_bandwidth


def test_the_peak_is_at_most_twice_the_average(stitched: Stitched) -> None:
    """HLS authoring spec [1.30], for every rate control: a peak that is the opening alone
    (capped CRF with a full buffer) would break it; it counts with the segment after it."""
    for name, inf in stream_infs(stitched).items():
        assert inf.average_bandwidth <= inf.bandwidth <= 2 * inf.average_bandwidth, name


def test_master_lists_an_iframe_playlist_per_rung(stitched: Stitched) -> None:
    assert stitched.master.version == 4
    iframes = stitched.master.iframe_playlists
    assert [p.uri for p in iframes] == [f"{name}/iframes.m3u8" for name in stitched.names]
    for playlist, variant in zip(iframes, stitched.master.playlists, strict=True):
        info = playlist.iframe_stream_info
        assert info.codecs == variant.stream_info.codecs.split(",")[0]
        assert info.resolution == variant.stream_info.resolution
        # Only keyframes: a fraction of the rung's own rate.
        assert 0 < info.bandwidth < variant.stream_info.bandwidth


# ---- rate control: capped CRF beside the fixed ladder, on the same clips ----------------


def rung_bytes(stitched: Stitched, name: str) -> int:
    return sum(path.stat().st_size for path in stitched.segments(name))


def rung_ssim(
    stitched: Stitched,
    rung: Rendition,
    into: Path,
    segments: list[Path] | None = None,
    start: float = 0.0,
) -> float:
    """SSIM of the rung's `segments` (all of them by default), end to end, against the
    source from `start` s on scaled to the rung, frame by frame from the first of each."""
    segments = stitched.segments(rung.name) if segments is None else segments
    joined = concatenated(segments, into / f"{rung.name}-{start:g}.ts")
    graph = (
        f"[1:v]trim=start={start},setpts=PTS-STARTPTS,scale={rung.width}:{rung.height}[ref];"
        "[0:v]setpts=PTS-STARTPTS[out];[out][ref]ssim=eof_action=endall"
    )
    argv = ["ffmpeg", "-nostdin", "-i", str(joined), "-i", str(stitched.source), "-lavfi", graph]
    result = subprocess.run([*argv, "-f", "null", "-"], capture_output=True, text=True, check=True)
    return float(result.stderr.rsplit("All:", 1)[1].split()[0])


def test_capped_crf_spends_far_less_than_the_fixed_ladder_on_easy_footage(
    encoded: Callable[[Case], Stitched], tmp_path: Path
) -> None:
    """A still picture with a ticking counter (a slide, a screen) needs far less than any
    rung's average bit rate: the fixed ladder spends it anyway, capped CRF spends what the
    picture needs, at the same SSIM."""
    fixed, capped = encoded(EASY), encoded(EASY_CAPPED)
    for rung in fixed.renditions:
        ratio = rung_bytes(capped, rung.name) / rung_bytes(fixed, rung.name)
        assert ratio <= 0.8, (rung.name, ratio)
        change = rung_ssim(capped, rung, tmp_path) - rung_ssim(fixed, rung, tmp_path)
        assert change >= -0.002, (rung.name, change)


def test_capped_crf_meets_its_cap_on_hard_footage_and_no_segment_passes_the_rungs_maxrate(
    encoded: Callable[[Case], Stitched], tmp_path: Path
) -> None:
    """Grain that changes every frame wants more than the cap at CRF 18: the cap, not the
    quality, decides. Every segment after the opening stays under the rung's maxrate (the
    seed ladder's cap, counted with MPEG-TS's own bytes), and the ladder costs about what
    the fixed one does, at an SSIM as good."""
    fixed, capped = encoded(HARD), encoded(HARD_CAPPED)
    for rung in capped.renditions:
        uris = capped.extinfs(rung.name)
        rates = [
            (capped.out_dir / rung.name / uri).stat().st_size * 8 / seconds / 1000
            for uri, seconds in uris[1:]
        ]
        assert max(rates) <= rung.maxrate_kbps, (rung.name, rates)
        # Held at the cap: about the rung's average bit rate, as the fixed ladder spends.
        assert sum(rates) / len(rates) >= 0.85 * rung.video_kbps, (rung.name, rates)
        change = rung_ssim(capped, rung, tmp_path) - rung_ssim(fixed, rung, tmp_path)
        assert change >= -0.002, (rung.name, change)


# ---- the half-second opening at production's segment length ---------------------------


# Production's defaults (Settings: OPENING_SECONDS, SEGMENT_SECONDS).
PRODUCTION_OPENING_SECONDS = 0.5
PRODUCTION_SEGMENT_SECONDS = 6


@pytest.fixture(scope="module")
def production_opening(tmp_path_factory: pytest.TempPathFactory) -> Stitched:
    """The default opening (half a second) before 6 s segments, as production cuts them, on
    grain that wants more bits than any rung's cap (854x480, 8 s: the opening and one
    chunk)."""
    folder = tmp_path_factory.mktemp("production-opening")
    source = make_clip(folder / "grain.mp4", width=854, height=480, seconds=8, noise=NOISE)
    return encode(
        folder / "storage",
        source,
        preset="superfast",
        opening_seconds=PRODUCTION_OPENING_SECONDS,
        segment_seconds=PRODUCTION_SEGMENT_SECONDS,
    )


def test_a_half_second_opening_keeps_a_second_s_budget_and_its_rung_s_quality(
    production_opening: Stitched, tmp_path: Path
) -> None:
    """The first frames cost the most: held to the rung's own buffer, half a second of grain
    came out well below the rest of its rung. The opening keeps a one-second opening's
    budget (the rung's buffer + 1 s at its maxrate, MPEG-TS on top), spends more than its
    own buffer would allow, and is no more than 0.01 SSIM below the rest of its rung."""
    stitched = production_opening
    assert [(c.start, c.end) for c in stitched.chunks] == [(0, 0.5), (0.5, None)]
    for rung in stitched.renditions:
        (first, seconds), *_ = stitched.extinfs(rung.name)
        assert seconds == pytest.approx(0.5, abs=1 / stitched.info.fps)
        bits = (stitched.out_dir / rung.name / first).stat().st_size * 8
        own = (rung.bufsize_kbps + rung.maxrate_kbps * seconds) * 1000
        budget = (rung.bufsize_kbps + rung.maxrate_kbps * OPENING_BUDGET_SECONDS) * 1000
        assert own < bits <= budget * TS_OVERHEAD, (rung.name, bits, own, budget)
        segments = stitched.segments(rung.name)
        opening = rung_ssim(stitched, rung, tmp_path, segments[:1])
        rest = rung_ssim(stitched, rung, tmp_path, segments[1:], seconds)
        assert opening >= rest - 0.01, (rung.name, opening, rest)


def test_a_half_second_opening_keeps_the_peak_within_twice_the_average(
    production_opening: Stitched,
) -> None:
    """[1.30] with the opening's larger buffer: the peak window (at least half the target)
    counts it with the segment after it."""
    for name, inf in stream_infs(production_opening).items():
        assert inf.average_bandwidth <= inf.bandwidth <= 2 * inf.average_bandwidth, name


# ---- the full HD clip: every rung, measured --------------------------------------------


def stream_infs(stitched: Stitched) -> dict[str, Any]:
    """Each rung's EXT-X-STREAM-INF attributes, by rung name."""
    return {v.uri.split("/")[0]: v.stream_info for v in stitched.master.playlists}


def test_every_rung_is_in_the_master_highest_first(full: Stitched) -> None:
    assert [v.uri for v in full.master.playlists] == [
        f"{name}/playlist.m3u8" for name in ("1080p", "720p", "480p", "360p")
    ]
    assert full.master.is_independent_segments
    assert [(c.start, c.end) for c in full.chunks] == [(0, 2), (2, None)]


def test_master_resolution_and_frame_rate_match_ffprobe(full: Stitched) -> None:
    infs = stream_infs(full)
    for rendition in full.renditions:
        (video,) = streams(full.segments(rendition.name)[-1], "video")
        inf = infs[rendition.name]
        assert inf.resolution == (video["width"], video["height"])
        assert inf.resolution == (rendition.width, rendition.height)
        assert inf.frame_rate == pytest.approx(float(Fraction(video["r_frame_rate"])), abs=0.001)


def test_master_codecs_match_the_profile_and_level_ffprobe_reads(full: Stitched) -> None:
    for name, inf in stream_infs(full).items():
        (video,) = streams(full.segments(name)[0], "video")
        avc1 = inf.codecs.split(",")[0]
        assert avc1.startswith("avc1.") and len(avc1) == len("avc1.640028")
        assert int(avc1[5:7], 16) == PROFILE_IDC[video["profile"]], name
        assert int(avc1[9:11], 16) == video["level"], name


def test_codecs_declare_the_profile_x264_really_used(full: Stitched) -> None:
    # Asked for High, but ultrafast turns off CABAC and 8x8dct: x264 writes Constrained
    # Baseline into the SPS, and that is what CODECS must say.
    for inf in stream_infs(full).values():
        assert inf.codecs.startswith("avc1.42c0")


def test_measured_bandwidths_match_ffprobe(full: Stitched) -> None:
    folders = [*full.names, layout.AUDIO]
    for folder in folders:
        measured = [ffprobe(p, "-show_format")["format"] for p in full_segments(full, folder)]
        bits = [int(f["size"]) * 8 for f in measured]
        seconds = [float(f["duration"]) for f in measured]
        stats = (
            measure_audio(full.out_dir / folder)
            if folder == layout.AUDIO
            else measure_rendition(full.out_dir / folder)
        )
        assert stats.average_bandwidth == pytest.approx(sum(bits) / sum(seconds), rel=0.10)
        # Segments of at least one second: the audio's last one can be a single AAC frame.
        dense = [b / s for b, s in zip(bits, seconds, strict=True) if s >= SEGMENT_SECONDS / 2]
        assert stats.bandwidth == pytest.approx(max(dense), rel=0.10), folder
        assert stats.bandwidth <= 2 * stats.average_bandwidth


def full_segments(stitched: Stitched, folder: str) -> list[Path]:
    return [
        stitched.out_dir / folder / uri
        for uri, _ in read_media_playlist(stitched.out_dir / folder / layout.PLAYLIST)
    ]


def test_audio_rendition_is_stereo_aac_within_the_spec(full: Stitched) -> None:
    for segment in full_segments(full, layout.AUDIO):
        (audio,) = streams(segment, "audio")
        assert (audio["codec_name"], audio["profile"]) == ("aac", "LC")
        assert (audio["channels"], audio["sample_rate"]) == (2, "48000")
        assert streams(segment, "video") == []
    stats = measure_audio(full.out_dir / layout.AUDIO)
    assert (stats.codec, stats.channels) == ("mp4a.40.2", 2)
    # The spec's 160 kb/s is the AAC itself; the segments add MPEG-TS and PES headers.
    joined = concatenated(full_segments(full, layout.AUDIO), full.out_dir / "audio.ts")
    sizes = ffprobe(joined, "-select_streams", "a:0", "-show_entries", "packet=size")["packets"]
    assert sum(int(p["size"]) for p in sizes) * 8 / full.info.duration <= 160_000 * 1.02


def test_silent_clip_has_no_audio_rendition_and_declares_none(silent: Stitched) -> None:
    assert silent.names == ["720p", "480p", "360p"]
    assert not (silent.out_dir / layout.AUDIO).exists()
    assert silent.master.media == []
    for variant in silent.master.playlists:
        assert variant.stream_info.audio is None
        assert "mp4a" not in variant.stream_info.codecs and "," not in variant.stream_info.codecs
    assert len(silent.master.iframe_playlists) == 3


# ---- several keyframes per segment -----------------------------------------------------


@pytest.fixture(scope="module")
def two_keyframes(clips: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Stitched:
    """The 2 s clip with a keyframe every second: two keyframes in each 2 s segment."""
    out_dir = tmp_path_factory.mktemp("keyframes")
    return encode(out_dir, clips["tiny"], preset="ultrafast", keyframe_seconds=1)


def test_later_keyframes_of_a_segment_start_at_their_own_pes(
    two_keyframes: Stitched, tmp_path: Path
) -> None:
    (segment,) = two_keyframes.segments("240p")
    first, second = index_iframes(segment)
    positions = [
        int(p["pos"])
        for p in ffprobe(segment, "-show_entries", "packet=pos,flags", "-select_streams", "v:0")[
            "packets"
        ]
    ]
    assert first.offset == 0 and first.length == positions[1]
    assert second.offset in positions and second.offset % 188 == 0
    assert second.time == pytest.approx(first.time + 1, abs=0.001)
    data = segment.read_bytes()
    extract = data[second.offset : second.offset + second.length]
    # A TS packet with payload_unit_start set: a PES (the keyframe's) starts right here.
    assert extract[0] == 0x47 and extract[1] & 0x40
    # With the segment's PAT and PMT in front, as a player reads it, it decodes alone.
    (tmp_path / "frame.ts").write_bytes(data[: positions[0]] + extract)
    (frame,) = packets(tmp_path / "frame.ts")
    assert "K" in frame["flags"]
    assert float(frame["pts_time"]) == pytest.approx(second.time)


def probed_units(segment: Path) -> list[tuple[int, bool, float]]:
    return [
        (int(p["pos"]), "K" in p["flags"], float(p["pts_time"]))
        for p in ffprobe(
            segment, "-show_entries", "packet=pos,flags,pts_time", "-select_streams", "v:0"
        )["packets"]
    ]


def test_the_python_packet_reading_finds_what_ffprobe_finds(
    stitched: Stitched, two_keyframes: Stitched
) -> None:
    """Keyframes are indexed from the TS packets in Python (no process per segment): every
    video PES's offset, keyframe flag and PTS must be what ffprobe reads, on every segment
    of every rung, the opening's included, and with several keyframes in a segment."""
    segments = [
        s
        for fixture in (stitched, two_keyframes)
        for n in fixture.names
        for s in fixture.segments(n)
    ]
    keyframes = 0
    for segment in segments:
        units = ts_video_units(segment.read_bytes())
        assert units is not None
        read = [(u.offset, u.key, u.pts) for u in units]
        expected = probed_units(segment)
        assert [(o, k) for o, k, _ in read] == [(o, k) for o, k, _ in expected]
        assert [t for *_, t in read] == pytest.approx([t for *_, t in expected], abs=1e-6)
        keyframes += sum(k for _, k, _ in read)
    assert keyframes > len(segments)  # the two-keyframe segments were among them


def test_a_segment_not_laid_out_as_the_muxer_writes_it_is_indexed_by_ffprobe(
    two_keyframes: Stitched, tmp_path: Path
) -> None:
    (segment,) = two_keyframes.segments("240p")
    # A stray byte in front: no longer whole packets from offset 0, but ffprobe resyncs.
    shifted = tmp_path / segment.name
    shifted.write_bytes(b"\x00" + segment.read_bytes())
    assert ts_video_units(shifted.read_bytes()) is None
    frames = index_iframes(shifted)
    assert [f.time for f in frames] == pytest.approx([f.time for f in index_iframes(segment)])
    assert [f.offset for f in frames][1:] == [f.offset + 1 for f in index_iframes(segment)][1:]
