"""Real recordings, as phones, browsers, cameras, editors and screen recorders write them,
become ladders a browser plays: every rung H.264 8-bit 4:2:0 at a profile browsers decode,
square pixels, upright, progressive, SDR, with the source's pictures, duration and display
aspect, and audio with the channels the master declares.

Each clip is rendered once with lavfi (`tests/device_clips.py`), uploaded to the one
session platform, and everything is read back over HTTP as a player gets it.
"""

import itertools
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import m3u8
import pytest

from tests.device_clips import DEVICE_CLIPS, DeviceClip, render
from tests.harness import upload, wait_status
from tests.test_hevc import download, fetch, ffprobe, upload_with_codec

CLIPS = {clip.name: clip for clip in DEVICE_CLIPS}
BROWSER_PROFILES = {"Constrained Baseline", "Main", "High"}
# What a rung may be tagged: BT.709, or the SD tags of an SD source, or nothing said.
SDR_TRANSFERS = {"bt709", "smpte170m", "bt470bg", "unknown"}
# The reference SDR rendering of an HDR source: linear light, BT.709 primaries, Möbius
# tone curve, back to BT.709 8-bit (the chain the issue names, at the rung's size).
REFERENCE_TONEMAP = (
    "zscale=t=linear:npl=100,format=gbrpf32le,zscale=p=bt709,tonemap=mobius:desat=0,"
    "zscale=t=bt709:m=bt709:r=tv,format=yuv420p"
)
# Mean absolute difference per RGB channel (0-255) a rung may show against the reference
# picture. Measured: these clips' x264 rungs stay within 0.3-3.7; a rung left in HLG is
# 40-67 off the tone-mapped reference, the panning camcorder clip left woven (combed) 9-21
# off the deinterlaced one, the next picture of the MediaRecorder clip 4-6.
MAX_PICTURE_MAD = 8.0
PICTURE = 30  # the picture compared: one second in at 30 fps (the middle one, if fewer)


@dataclass(frozen=True)
class Rung:
    """One rung as served: its segments' summed EXTINF and the segments joined in order."""

    name: str
    extinf_seconds: float
    joined: Path


@dataclass(frozen=True)
class Served:
    """A video's ladder as a player gets it over HTTP."""

    video_id: str
    rungs: list[Rung]
    audio: Path | None
    audio_channels: str | None


# ---- what a player downloads ------------------------------------------------------------


def download_ladder(client: httpx.Client, video_id: str, folder: Path) -> Served:
    """The master, every rung's segments (joined: MPEG-TS segments concatenate) and the
    audio rendition's, fetched through the gateway."""
    base = f"/stream/{video_id}"
    master = m3u8.loads(fetch(client, f"{base}/master.m3u8").decode())
    rungs = []
    for variant in master.playlists:
        name = variant.uri.split("/")[0]
        seconds, joined = _download_rendition(client, f"{base}/{name}", folder / f"{name}.ts")
        rungs.append(Rung(name, seconds, joined))
    media = [m for m in master.media if m.type == "AUDIO"]
    if not media:
        return Served(video_id, rungs, None, None)
    _, audio = _download_rendition(client, f"{base}/audio", folder / "audio.ts")
    return Served(video_id, rungs, audio, media[0].channels)


def _download_rendition(client: httpx.Client, base: str, into: Path) -> tuple[float, Path]:
    playlist = m3u8.loads(fetch(client, f"{base}/playlist.m3u8").decode())
    assert playlist.is_endlist, f"{base}: the playlist is not final"
    into.write_bytes(b"".join(fetch(client, f"{base}/{s.uri}") for s in playlist.segments))
    return sum(s.duration for s in playlist.segments), into


# ---- reading pictures and streams -------------------------------------------------------


def rgb_frame(source: Path, size: tuple[int, int], index: int, chain: str = "") -> bytes:
    """Picture number `index` of `source` as raw RGB at `size`, after `chain`.

    ffmpeg's own autorotate turns a phone clip upright: the picture a player shows. Counted
    by number, not time: a rung shows every picture of the source once, while their times
    may differ by the source's jitter (MediaRecorder's).
    """
    pick = f"select=eq(n\\,{index}),scale={size[0]}:{size[1]}"
    argv = ["ffmpeg", "-v", "error", "-nostdin", "-i", str(source), "-frames:v", "1"]
    argv += ["-vf", f"{chain},{pick}" if chain else pick, "-fps_mode", "passthrough"]
    argv += ["-pix_fmt", "rgb24", "-f", "rawvideo", "pipe:1"]
    frame = subprocess.run(argv, capture_output=True, check=True, timeout=60).stdout
    assert len(frame) == size[0] * size[1] * 3, f"{source}: no picture {index}"
    return frame


def mean_abs_diff(a: bytes, b: bytes) -> list[float]:
    """Mean absolute difference of two RGB24 pictures, per channel (R, G, B)."""
    pixels = len(a) // 3
    return [
        sum(abs(x - y) for x, y in zip(a[c::3], b[c::3], strict=True)) / pixels for c in range(3)
    ]


def reference_chain(clip: DeviceClip) -> str:
    """How the test renders the source's picture as a browser should show it."""
    if clip.name == "hlg":
        return REFERENCE_TONEMAP
    if clip.name == "mpeg2_interlaced":
        return "bwdif=mode=send_frame"
    return ""


def video_stream(path: Path) -> dict[str, Any]:
    """The first video stream of `path`, with its packets counted."""
    found = ffprobe(path, "-count_packets", "-show_streams", "-select_streams", "v:0")
    return dict(found["streams"][0])


def display_aspect(source: Path) -> float:
    """The source's shown width / height: pixel aspect applied, then the rotation."""
    stream = video_stream(source)
    num, _, den = str(stream.get("sample_aspect_ratio", "1:1")).partition(":")
    sar = int(num) / int(den) if num.isdigit() and den.isdigit() and int(num) > 0 else 1.0
    aspect = stream["width"] * sar / stream["height"]
    sides = stream.get("side_data_list", [])
    turned = any(abs(side.get("rotation", 0)) in (90, 270) for side in sides)
    return 1 / aspect if turned else aspect


def frame_times(path: Path) -> list[float]:
    """The presentation times of the video packets of `path`, in order."""
    found = ffprobe(path, "-select_streams", "v:0", "-show_entries", "packet=pts_time")
    return sorted(float(p["pts_time"]) for p in found["packets"])


# ---- fixtures --------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def module_clock() -> Iterator[None]:
    """Prints how long this file took, clips, uploads and checks (it runs twice in `make
    test`); set up before the module's other fixtures, as autouse ones of its scope are."""
    started = time.monotonic()
    yield
    print(f"\ntests/test_recordings.py took {time.monotonic() - started:.1f} s")


@pytest.fixture(scope="module")
def device_clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every device clip, rendered once."""
    folder = tmp_path_factory.mktemp("device-clips")
    return {clip.name: render(clip, folder) for clip in DEVICE_CLIPS}


@pytest.fixture(scope="module")
def device_uploads(client: httpx.Client, device_clips: dict[str, Path]) -> dict[str, Any]:
    """Every clip uploaded and waited for: name -> (video id, complete response, status)."""
    started = time.monotonic()
    sent = {name: upload(client, path, chunk_size=1 << 20) for name, path in device_clips.items()}
    results = {}
    for name, (video_id, done) in sent.items():
        assert done is not None
        results[name] = (video_id, done, wait_status(client, video_id, timeout=300))
    took = time.monotonic() - started
    print(f"\n{len(results)} device clips uploaded and transcoded in {took:.1f} s")
    return results


@pytest.fixture(scope="module")
def served(
    client: httpx.Client, device_uploads: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Served]:
    """Each clip that reached `ok`, its ladder downloaded."""
    ladders = {}
    for name, (video_id, done, status) in device_uploads.items():
        if done.status_code == 200 and status["overall"] == "ok":
            ladders[name] = download_ladder(client, video_id, tmp_path_factory.mktemp(name))
    return ladders


def ladder_of(name: str, device_uploads: dict[str, Any], served: dict[str, Served]) -> Served:
    """The clip's ladder, once its upload was accepted and its job reached `ok`."""
    _, done, status = device_uploads[name]
    assert done.status_code == 200, f"{name}: complete answered {done.status_code} {done.text}"
    assert status["overall"] == "ok", f"{name}: {status}"
    return served[name]


# ---- the matrix ------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CLIPS))
def test_device_recording_becomes_a_ladder_a_browser_plays(
    name: str,
    device_clips: dict[str, Path],
    device_uploads: dict[str, Any],
    served: dict[str, Served],
) -> None:
    clip, source = CLIPS[name], device_clips[name]
    ladder = ladder_of(name, device_uploads, served)
    assert ladder.rungs, f"{name}: no rung in the master"
    for rung in ladder.rungs:
        stream = video_stream(rung.joined)
        _check_decodable(f"{name} {rung.name}", stream)
        _check_shape(f"{name} {rung.name}", stream, source)
        _check_timeline(f"{name} {rung.name}", clip, rung, source)
        _check_picture(f"{name} {rung.name}", clip, rung, stream, source)
    _check_audio(name, clip, ladder)


def _check_decodable(where: str, stream: dict[str, Any]) -> None:
    """H.264 8-bit 4:2:0 at a profile every browser decodes, progressive, SDR."""
    assert stream["codec_name"] == "h264" and stream["pix_fmt"] == "yuv420p", (where, stream)
    assert stream["profile"] in BROWSER_PROFILES, (where, stream["profile"])
    assert stream.get("field_order", "progressive") in ("progressive", "unknown"), (where, stream)
    assert stream.get("color_transfer", "unknown") in SDR_TRANSFERS, (where, stream)


def _check_shape(where: str, stream: dict[str, Any], source: Path) -> None:
    """Square pixels, upright with no display matrix left, the source's display aspect."""
    assert stream.get("sample_aspect_ratio", "1:1") in ("1:1", "0:1"), (where, stream)
    assert not stream.get("side_data_list"), f"{where}: display matrix left: {stream}"
    # The rung's size (even numbers near the display size) keeps the display aspect.
    width, height, aspect = stream["width"], stream["height"], display_aspect(source)
    assert abs(width - height * aspect) <= 2, (where, width, height, aspect)


def _check_timeline(where: str, clip: DeviceClip, rung: Rung, source: Path) -> None:
    """Every picture of the source once, in order, no gap, over the source's duration."""
    times, source_times = frame_times(rung.joined), frame_times(source)
    # None lost or doubled at a chunk boundary.
    assert len(times) == len(source_times), (where, len(times), len(source_times))
    frame = clip.seconds / len(source_times)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # MediaRecorder's jitter (a few ms) aside, one frame apart across every chunk boundary.
    assert all(0 < gap < 1.6 * frame for gap in gaps), (where, min(gaps), max(gaps))
    # The segments add up to the clip's length within two frames: the last frame's length
    # is a guess in files that state none (MediaRecorder's), and MPEG-TS rounds to 90 kHz.
    print(f"{where}: {rung.extinf_seconds:.3f} s of {clip.seconds} s, {len(times)} pictures")
    assert abs(rung.extinf_seconds - clip.seconds) <= 2 * frame, (where, rung.extinf_seconds)


def _check_picture(
    where: str, clip: DeviceClip, rung: Rung, stream: dict[str, Any], source: Path
) -> None:
    """The rung shows the source's picture (turned upright, deinterlaced, tone-mapped)."""
    size = (stream["width"], stream["height"])
    index = min(PICTURE, int(stream["nb_read_packets"]) // 2)
    reference = rgb_frame(source, size, index, reference_chain(clip))
    mad = mean_abs_diff(rgb_frame(rung.joined, size, index), reference)
    print(f"{where}: picture MAD per channel {[round(m, 2) for m in mad]}")
    assert max(mad) < MAX_PICTURE_MAD, (where, mad)


def _check_audio(name: str, clip: DeviceClip, ladder: Served) -> None:
    """One audio rendition whose channels are the ones the master declares."""
    if not clip.audio_channels:
        assert ladder.audio is None
        return
    assert ladder.audio is not None, f"{name}: the master has no audio rendition"
    (stream,) = ffprobe(ladder.audio, "-show_streams", "-select_streams", "a")["streams"]
    assert ladder.audio_channels == str(stream["channels"]), (name, ladder.audio_channels, stream)


# ---- HDR from phones ---------------------------------------------------------------------


def test_hlg_phone_clip_is_tone_mapped_to_bt709_8_bit_on_every_rung(
    device_clips: dict[str, Path], device_uploads: dict[str, Any], served: dict[str, Served]
) -> None:
    source = device_clips["hlg"]
    assert video_stream(source)["color_transfer"] == "arib-std-b67"
    for rung in ladder_of("hlg", device_uploads, served).rungs:
        stream = video_stream(rung.joined)
        assert (stream["codec_name"], stream["pix_fmt"]) == ("h264", "yuv420p")
        tags = [stream.get(k) for k in ("color_transfer", "color_primaries", "color_space")]
        assert tags == ["bt709"] * 3, (rung.name, tags)
        _assert_tone_mapped(rung.name, rung.joined, source, (stream["width"], stream["height"]))


def _assert_tone_mapped(name: str, rung: Path, source: Path, size: tuple[int, int]) -> None:
    """The rung's picture is near the reference tone map, and the bound tells it from the
    HLG picture shown as it is (what every rung was before tone mapping)."""
    picture = rgb_frame(rung, size, PICTURE)
    mapped = mean_abs_diff(picture, rgb_frame(source, size, PICTURE, REFERENCE_TONEMAP))
    untouched = rgb_frame(source, size, PICTURE)
    wrong = mean_abs_diff(untouched, rgb_frame(source, size, PICTURE, REFERENCE_TONEMAP))
    print(f"hlg {name}: MAD to the reference tone map {[round(m, 2) for m in mapped]}")
    print(f"hlg {name}: the same, not tone-mapped {[round(m, 2) for m in wrong]}")
    assert max(mapped) < MAX_PICTURE_MAD, (name, mapped)
    assert min(wrong) > MAX_PICTURE_MAD, (name, wrong)


def test_hlg_phone_clip_gets_a_tone_mapped_poster(
    client: httpx.Client,
    device_clips: dict[str, Path],
    device_uploads: dict[str, Any],
    served: dict[str, Served],
    tmp_path: Path,
) -> None:
    video_id = ladder_of("hlg", device_uploads, served).video_id
    poster = tmp_path / "poster.jpg"
    poster.write_bytes(fetch(client, f"/stream/{video_id}/poster.jpg"))
    stream = video_stream(poster)
    size = (stream["width"], stream["height"])
    shown = rgb_frame(poster, size, 0)
    # The poster is a keyframe near a tenth in: the nearest of the first pictures.
    source = device_clips["hlg"]
    mapped = min(
        (mean_abs_diff(shown, rgb_frame(source, size, n, REFERENCE_TONEMAP)) for n in range(12)),
        key=max,
    )
    print(f"hlg poster: MAD to the reference tone map {[round(m, 2) for m in mapped]}")
    assert max(mapped) < MAX_PICTURE_MAD


def test_hlg_phone_clip_on_the_hevc_ladder_is_tone_mapped_main_8_bit(
    client: httpx.Client, device_clips: dict[str, Path], tmp_path: Path
) -> None:
    # The HEVC ladder is SDR too (see _hevc_args): one look on every screen, no VIDEO-RANGE.
    source = device_clips["hlg"]
    video_id = upload_with_codec(client, source, "hevc")
    assert wait_status(client, video_id, timeout=300)["overall"] == "ok"
    ladder = download(client, video_id, tmp_path)
    assert "VIDEO-RANGE" not in fetch(client, f"/stream/{video_id}/master.m3u8").decode()
    for name, rendition in ladder.renditions.items():
        if name == "audio":
            continue
        joined = rendition.joined(tmp_path / f"{name}.mp4")
        stream = video_stream(joined)
        assert (stream["codec_name"], stream["profile"], stream["pix_fmt"]) == (
            "hevc",
            "Main",
            "yuv420p",
        )
        assert stream.get("color_transfer") == "bt709", (name, stream)
        _assert_tone_mapped(name, joined, source, (stream["width"], stream["height"]))
