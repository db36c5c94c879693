"""m3u8 in and out: read media playlists, measure what was produced, write the playlists.

Every attribute of the master playlist is measured from the segments on disk, never
assumed from the ladder: x264 may encode a lower profile than asked for (ultrafast gives
Constrained Baseline even with `-profile:v high`), and a rung's real bitrate is what it is.

The media playlists are written here too, not by ffmpeg: each chunk's ffmpeg writes only
its own segments, and `media_playlist` stitches them into one continuous list, first as a
growing EVENT playlist, finally as a VOD. `index_iframes` + `iframe_playlist` add the
I-frame playlist that players use for scrubbing thumbnails and fast seeking.

Versions (RFC 8216, section 7): a media playlist needs 3 (decimal EXTINF), or 7 for
fMP4 segments (EXT-X-MAP, as Apple's authoring spec asks for fMP4); an I-frame playlist
needs 4 (EXT-X-BYTERANGE, EXT-X-I-FRAMES-ONLY); the master says 4 when it lists I-frame
playlists, else 3.

The HEVC ladder's segments are fMP4: each rung (and the audio) has an init segment, named
by `init`, that its segments are measured and played with.
"""

import math
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.core import layout
from services.media import fmp4
from services.media.demuxers import SEGMENT_FORMATS, input_args
from services.media.h264 import MAX_FPS, SpsError, find_sps, parse_sps
from services.media.mpegts import (
    STREAM_H264,
    VideoUnit,
    first_video_pes,
    read_head,
    stream_types,
    ts_video_units,
)
from services.media.probe import ProbeError, ffprobe_json, frame_rate

AUDIO_GROUP = "audio"
# HLS audio object types (RFC 6381) by the AAC profile name ffprobe prints.
AAC_CODECS = {"LC": "mp4a.40.2", "HE-AAC": "mp4a.40.5", "HE-AACv2": "mp4a.40.29"}
# The video codec each kind of segment must carry, as ffprobe names it.
_TS_VIDEO, _FMP4_VIDEO = "h264", "hevc"
FMP4_VERSION = 7


class MeasureError(RuntimeError):
    """A produced rendition cannot be measured: missing, empty or unreadable segments."""


@dataclass(frozen=True)
class RenditionStats:
    """What one encoded rung really is, as the master playlist must declare it."""

    name: str
    width: int
    height: int
    fps: float
    video_codec: str
    audio_codec: str | None
    bandwidth: int
    average_bandwidth: int

    @property
    def codecs(self) -> str:
        """The CODECS attribute: video, then audio when the rung has any."""
        return ",".join(c for c in (self.video_codec, self.audio_codec) if c)


@dataclass(frozen=True)
class AudioStats:
    """What the audio rendition really is, as the master playlist must declare it."""

    codec: str
    bandwidth: int
    average_bandwidth: int
    channels: int


@dataclass(frozen=True)
class IFrame:
    """One keyframe: its segment's file name, its byte range there, and its PTS in seconds.

    The time is stream time, as in the segment (chunk offset and mux delay included).
    """

    uri: str
    offset: int
    length: int
    time: float


# ---- media playlists -------------------------------------------------------------------


def read_media_playlist(path: Path) -> list[tuple[str, float]]:
    """The (segment uri, EXTINF duration) pairs of a media playlist, in order."""
    return parse_media_playlist(path.read_text(encoding="utf-8"), name=str(path))


def parse_media_playlist(text: str, *, name: str) -> list[tuple[str, float]]:
    """The (segment uri, EXTINF duration) pairs of the media playlist `text` (called `name`
    in errors), in order."""
    lines = [line.strip() for line in text.splitlines()]
    if not lines or lines[0] != "#EXTM3U":
        raise ValueError(f"{name} is not an m3u8 playlist")
    segments = []
    duration: float | None = None
    for line in lines:
        if line.startswith("#EXTINF:"):
            duration = float(line.removeprefix("#EXTINF:").split(",", 1)[0])
        elif line and not line.startswith("#") and duration is not None:
            segments.append((line, duration))
            duration = None
    return segments


def media_playlist(
    segments: Sequence[tuple[str, float]], *, target: int, ended: bool, init: str | None = None
) -> str:
    """A media playlist of (uri, seconds) segments: a growing EVENT, or the final VOD.

    `init` names the init segment of fMP4 segments (one EXT-X-MAP for all of them).
    """
    # A segment that rounds above the target would make the playlist invalid [RFC 8216 4.3.3.1].
    target = max([target, *(_nearest(seconds) for _, seconds in segments)])
    version = 3 if init is None else FMP4_VERSION
    lines = _header(version=version, target=target, ended=ended, tag="#EXT-X-INDEPENDENT-SEGMENTS")
    if init is not None:
        lines.append(f'#EXT-X-MAP:URI="{init}"')
    for uri, seconds in segments:
        lines += [f"#EXTINF:{seconds:.6f},", uri]
    return _footer(lines, ended)


def _nearest(seconds: float) -> int:
    """Rounded half up, as RFC 8216 rounds EXTINF (Python's round() would make 2.5 -> 2)."""
    return math.floor(seconds + 0.5)


def _header(*, version: int, target: int, ended: bool, tag: str) -> list[str]:
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{version}", f"#EXT-X-TARGETDURATION:{target}"]
    lines += ["#EXT-X-MEDIA-SEQUENCE:0", f"#EXT-X-PLAYLIST-TYPE:{'VOD' if ended else 'EVENT'}"]
    lines.append(tag)
    if not ended:
        # Players treat an EVENT playlist as live and would start near its end.
        lines.append("#EXT-X-START:TIME-OFFSET=0")
    return lines


def _footer(lines: list[str], ended: bool) -> str:
    return "\n".join([*lines, "#EXT-X-ENDLIST"] if ended else lines) + "\n"


# ---- I-frame playlists -----------------------------------------------------------------


def index_iframes(segment: Path, *, ffprobe: str = "ffprobe") -> list[IFrame]:
    """The keyframes of one video-only MPEG-TS segment, with the byte range of each.

    A range runs from the TS packet where the keyframe's PES starts to the TS packet where
    the next video packet's PES starts (the file's end for the last packet). The segment's
    first video packet's range starts at offset 0, so it carries the PAT and PMT a player
    needs; a later keyframe's does not, as RFC 8216 (4.3.3.6) allows since the segment
    itself begins with them.

    Read in Python from the TS packets (each chunk's rungs are indexed as the chunk
    finishes, on the way to the first publish: no process to start); ffprobe when the file
    is not laid out as the muxer writes it.
    """
    try:
        data = segment.read_bytes()
    except OSError as exc:
        raise MeasureError(f"{segment}: cannot index its keyframes: {exc}") from exc
    units = ts_video_units(data)
    if units is None:
        units = _probed_units(segment, ffprobe)
    ends = [unit.offset for unit in units[1:]] + [len(data)]
    iframes = []
    for index, (unit, end) in enumerate(zip(units, ends, strict=True)):
        if unit.key and unit.pts is not None:
            start = 0 if index == 0 else unit.offset
            iframes.append(IFrame(segment.name, start, end - start, unit.pts))
    if not iframes:
        raise MeasureError(f"{segment} has no video keyframe")
    return iframes


def _probed_units(segment: Path, ffprobe: str) -> list[VideoUnit]:
    show = ["-select_streams", "v:0", "-show_entries", "packet=pts_time,pos,flags"]
    try:
        report = ffprobe_json(segment, show, ffprobe=ffprobe, formats=SEGMENT_FORMATS)
    except ProbeError as exc:
        raise MeasureError(f"{segment}: cannot index its keyframes: {exc}") from exc
    return [
        VideoUnit(
            int(p["pos"]),
            "K" in p.get("flags", ""),
            float(p["pts_time"]) if "pts_time" in p else None,
        )
        for p in report.get("packets", [])
    ]


def iframe_playlist(iframes: Sequence[IFrame], *, end_time: float, ended: bool) -> str:
    """The I-frame playlist of one rung; `end_time` is where its last segment ends."""
    durations = _iframe_durations(iframes, end_time)
    lines = _header(
        version=4, target=_iframe_target(durations), ended=ended, tag="#EXT-X-I-FRAMES-ONLY"
    )
    for iframe, seconds in zip(iframes, durations, strict=True):
        lines += [f"#EXTINF:{seconds:.6f},", f"#EXT-X-BYTERANGE:{iframe.length}@{iframe.offset}"]
        lines.append(iframe.uri)
    return _footer(lines, ended)


def _iframe_durations(iframes: Sequence[IFrame], end_time: float) -> list[float]:
    """Each keyframe lasts until the next one; the last until `end_time`."""
    times = [iframe.time for iframe in iframes]
    durations = [b - a for a, b in zip(times, [*times[1:], end_time], strict=True)]
    if any(seconds <= 0 for seconds in durations):
        raise ValueError("keyframe times must increase and end before end_time")
    return durations


def _iframe_target(durations: Sequence[float]) -> int:
    # Rounded up (at the precision EXTINF is written with) so no entry exceeds it.
    return max([1, *(math.ceil(round(seconds, 6)) for seconds in durations)])


# ---- measuring -------------------------------------------------------------------------

# The size in bytes of a file of the folder measured, by name (KeyError or OSError: none).
# Given when the folder holds only what ffprobe reads (a mirror of a rung kept in a bucket).
Sizes = Callable[[str], int]


def measure_rendition(
    rung_dir: Path,
    *,
    ffprobe: str = "ffprobe",
    ffmpeg: str = "ffmpeg",
    init: str | None = None,
    sizes: Sizes | None = None,
) -> RenditionStats:
    """Measure the rung in `rung_dir` from its playlist and segments (H.264 in MPEG-TS, or
    HEVC in fMP4 with the init segment `init`); segment sizes from `sizes` when given (the
    folder then needs only the playlist, the first segment and the init segment)."""
    segments = _listed_segments(rung_dir)
    first = rung_dir / segments[0][0]
    peak, average = _bandwidths(rung_dir, segments, sizes)
    picture = _ts_picture(first) if init is None else None
    if picture is not None:
        width, height, fps, codec = picture
        return RenditionStats(rung_dir.name, width, height, fps, codec, None, peak, average)
    streams = _segment_streams(first, ffprobe, init)
    video = next((s for s in streams if s.get("codec_type") == "video"), None)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    expected = _TS_VIDEO if init is None else _FMP4_VIDEO
    if video is None or video.get("codec_name") != expected:
        raise MeasureError(f"{first} has no {expected} video stream")
    return RenditionStats(
        name=rung_dir.name,
        width=int(video["width"]),
        height=int(video["height"]),
        fps=frame_rate(video),
        video_codec=_video_codec(first, ffmpeg, rung_dir / init if init else None),
        audio_codec=_audio_codec(audio) if audio else None,
        bandwidth=peak,
        average_bandwidth=average,
    )


def _ts_picture(first: Path) -> tuple[int, int, float, str] | None:
    """A video-only H.264 segment's picture size, frame rate and CODECS, from its program map
    and its first access unit's SPS: no process to start (the first master, written as the
    opening chunk is published, waits for this). None when the segment is anything else or
    its SPS gives no frame rate: ffprobe reads it then."""
    head = read_head(first)
    if head is None or stream_types(head) != [STREAM_H264]:
        return None
    pes = first_video_pes(head)
    if pes is None:
        return None
    try:
        nal = find_sps(pes)
        sps = parse_sps(nal)  # reads past the first three bytes avc1 names, or raises
    except SpsError:
        return None
    if sps.fps is None or not 0 < sps.fps <= MAX_FPS:
        return None
    return sps.width, sps.height, sps.fps, _avc1(nal)


def measure_audio(
    audio_dir: Path,
    *,
    ffprobe: str = "ffprobe",
    init: str | None = None,
    sizes: Sizes | None = None,
) -> AudioStats:
    """Measure the audio rendition in `audio_dir` from its playlist and segments (with the
    init segment `init` for fMP4); segment sizes from `sizes` when given."""
    segments = _listed_segments(audio_dir)
    first = audio_dir / segments[0][0]
    streams = _segment_streams(first, ffprobe, init)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    if audio is None:
        raise MeasureError(f"{first} has no audio stream")
    peak, average = _bandwidths(audio_dir, segments, sizes)
    return AudioStats(
        codec=_audio_codec(audio),
        bandwidth=peak,
        average_bandwidth=average,
        channels=int(audio.get("channels") or 2),
    )


def iframe_bandwidth(
    rung_dir: Path, iframes: Sequence[IFrame], end_time: float, *, sizes: Sizes | None = None
) -> int:
    """The peak bit rate of a rung's I-frame playlist (its BANDWIDTH), in bits per second;
    segment sizes from `sizes` when given, else from the files in `rung_dir`."""
    if not iframes:
        raise MeasureError(f"{rung_dir} has no keyframes to measure")
    _check_ranges(rung_dir, iframes, sizes or _file_sizes(rung_dir))
    durations = _iframe_durations(iframes, end_time)
    lengths = [iframe.length for iframe in iframes]
    return _peak_rate(lengths, durations, target=_iframe_target(durations))


def _file_sizes(folder: Path) -> Sizes:
    return lambda name: (folder / name).stat().st_size


def _check_ranges(rung_dir: Path, iframes: Sequence[IFrame], size_of: Sizes) -> None:
    """Every byte range lies inside its segment: a wrong range would be served as a 416."""
    sizes: dict[str, int] = {}
    for iframe in iframes:
        try:
            if iframe.uri not in sizes:
                sizes[iframe.uri] = size_of(iframe.uri)
            size = sizes[iframe.uri]
        except (OSError, KeyError) as exc:
            raise MeasureError(f"{rung_dir}: a keyframe's segment is unreadable: {exc}") from exc
        if iframe.offset < 0 or iframe.length <= 0 or iframe.offset + iframe.length > size:
            raise MeasureError(f"{rung_dir / iframe.uri}: range {iframe} is outside the file")


def _listed_segments(folder: Path) -> list[tuple[str, float]]:
    segments = read_media_playlist(folder / layout.PLAYLIST)
    if not segments:
        raise MeasureError(f"{folder / layout.PLAYLIST} lists no segments")
    return segments


def _bandwidths(
    folder: Path, segments: list[tuple[str, float]], size_of: Sizes | None
) -> tuple[int, int]:
    """(peak, average) bits per second of the segments listed in `folder`'s playlist."""
    size = size_of or _file_sizes(folder)
    try:
        sizes = [size(uri) for uri, _ in segments]
    except (OSError, KeyError) as exc:
        raise MeasureError(f"{folder}: a listed segment is unreadable: {exc}") from exc
    durations = [seconds for _, seconds in segments]
    total_seconds = sum(durations)
    if total_seconds <= 0:
        raise MeasureError(f"{folder} has segments but no duration")
    target = max([1, *(_nearest(seconds) for seconds in durations)])
    # Rounded up so the declared rate is never below the measured one.
    return _peak_rate(sizes, durations, target=target), math.ceil(sum(sizes) * 8 / total_seconds)


def _peak_rate(sizes: Sequence[int], durations: Sequence[float], *, target: int) -> int:
    """The peak segment bit rate as RFC 8216 (4.3.4.2) defines it, rounded up.

    The densest run of consecutive segments lasting 0.5 to 1.5 target durations: a short
    last segment (the audio often ends with a 21 ms one, all headers and one AAC frame)
    counts together with the one before it instead of posing as a peak. Never below the
    average, which that short segment can nudge above every run.
    """
    peak = sum(sizes) * 8 / sum(durations)
    for first in range(len(sizes)):
        bits, seconds = 0.0, 0.0
        for size, duration in zip(sizes[first:], durations[first:], strict=True):
            bits, seconds = bits + size * 8, seconds + duration
            if seconds >= target / 2:
                break
        if target / 2 <= seconds <= target * 1.5:
            peak = max(peak, bits / seconds)
    return math.ceil(peak)


def _segment_streams(segment: Path, ffprobe: str, init: str | None) -> list[dict[str, Any]]:
    """ffprobe's streams of a segment; an fMP4 segment is read after its init segment."""
    if init is None:
        return _streams(segment, ffprobe)
    try:
        with fmp4.joined(segment.parent / init, segment) as whole:
            return _streams(whole, ffprobe)
    except (fmp4.Fmp4Error, OSError) as exc:
        raise MeasureError(f"{segment}: cannot read it with {init}: {exc}") from exc


def _video_codec(first: Path, ffmpeg: str, init: Path | None) -> str:
    """The CODECS entry of a rung: from the SPS of its first segment (H.264), or from the
    decoder configuration in its init segment (HEVC)."""
    if init is None:
        # Read from the segment's first video PES; ffmpeg's extraction when the segment is
        # not laid out as the muxer writes it.
        head = read_head(first)
        pes = first_video_pes(head) if head is not None else None
        if pes is not None:
            try:
                return avc1_codec(pes)
            except MeasureError:
                pass  # no SPS where the muxer puts it: ffmpeg's own reading below
        return avc1_codec(_first_access_unit(first, ffmpeg))
    try:
        return fmp4.init_codec(init)
    except fmp4.Fmp4Error as exc:
        raise MeasureError(f"{init}: {exc}") from exc


def _streams(segment: Path, ffprobe: str) -> list[dict[str, Any]]:
    try:
        data = ffprobe_json(segment, ["-show_streams"], ffprobe=ffprobe, formats=SEGMENT_FORMATS)
    except ProbeError as exc:
        raise MeasureError(f"{segment}: {exc.detail}") from exc
    streams: list[dict[str, Any]] = data.get("streams", [])
    return streams


def _audio_codec(stream: dict[str, Any]) -> str:
    if stream.get("codec_name") != "aac":
        raise MeasureError(f"cannot name audio codec {stream.get('codec_name')!r} in CODECS")
    return AAC_CODECS.get(str(stream.get("profile")), AAC_CODECS["LC"])


def _first_access_unit(segment: Path, ffmpeg: str) -> bytes:
    """The first access unit of `segment` as a raw H.264 Annex-B byte stream."""
    argv = [ffmpeg, "-v", "error", "-nostdin", *input_args(SEGMENT_FORMATS)]
    argv += ["-i", str(segment.absolute())]
    # Copy (no decode) the first video frame; Annex-B keeps the SPS inline with start codes.
    argv += ["-map", "0:v:0", "-c", "copy", "-bsf:v", "h264_mp4toannexb"]
    argv += ["-frames:v", "1", "-f", "h264", "pipe:1"]
    done = subprocess.run(argv, capture_output=True, timeout=60, check=False)
    if done.returncode != 0:
        reason = done.stderr.decode("utf-8", errors="replace").strip()[-500:]
        raise MeasureError(f"{segment}: cannot extract the H.264 stream: {reason}")
    return done.stdout


def avc1_codec(annexb: bytes) -> str:
    """RFC 6381 `avc1.PPCCLL` from the first SPS in an Annex-B H.264 byte stream."""
    try:
        nal = find_sps(annexb)
    except SpsError as exc:
        raise MeasureError(str(exc)) from exc
    if len(nal) < 4:
        raise MeasureError("the sequence parameter set (SPS) ends early")
    return _avc1(nal)


def _avc1(nal: bytes) -> str:
    """`avc1.PPCCLL` of an SPS NAL unit (header byte first) at least four bytes long."""
    # profile_idc is never 0, so no emulation-prevention byte can sit in these three.
    profile, constraints, level = nal[1:4]
    return f"avc1.{profile:02x}{constraints:02x}{level:02x}"


# ---- the master playlist ---------------------------------------------------------------


def master_playlist(
    stats: Sequence[RenditionStats],
    *,
    audio: AudioStats | None = None,
    iframe_bandwidths: Mapping[str, int] | None = None,
) -> str:
    """The multivariant playlist for `stats`, highest rung first.

    With `audio`, every variant plays the one audio rendition (an EXT-X-MEDIA group) and
    declares its codec and bit rate too: BANDWIDTH covers all renditions a variant plays.
    With `audio` and no rungs (an audio-only source), the audio is the one variant.
    `iframe_bandwidths` (rung name -> bits per second) adds each rung's I-frame playlist.
    """
    rungs = sorted(stats, key=lambda s: (s.width * s.height, s.bandwidth), reverse=True)
    given = iframe_bandwidths or {}
    iframes = {rung.name: given[rung.name] for rung in rungs if rung.name in given}
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{4 if iframes else 3}", "#EXT-X-INDEPENDENT-SEGMENTS"]
    if not rungs and audio is not None:
        lines += [_audio_stream_inf(audio), f"{layout.AUDIO}/{layout.PLAYLIST}"]
        return "\n".join(lines) + "\n"
    if audio is not None:
        lines.append(_audio_media(audio))
    for rung in rungs:
        lines += [_stream_inf(rung, audio), f"{rung.name}/{layout.PLAYLIST}"]
    lines += [
        _iframe_stream_inf(rung, iframes[rung.name]) for rung in rungs if rung.name in iframes
    ]
    return "\n".join(lines) + "\n"


def _audio_media(audio: AudioStats) -> str:
    attributes = [
        "TYPE=AUDIO",
        f'GROUP-ID="{AUDIO_GROUP}"',
        'NAME="Audio"',
        'LANGUAGE="und"',
        "DEFAULT=YES",
        "AUTOSELECT=YES",
        f'CHANNELS="{audio.channels}"',
        f'URI="{layout.AUDIO}/{layout.PLAYLIST}"',
    ]
    return "#EXT-X-MEDIA:" + ",".join(attributes)


def _stream_inf(rung: RenditionStats, audio: AudioStats | None) -> str:
    bandwidth, average, codecs = rung.bandwidth, rung.average_bandwidth, rung.codecs
    if audio is not None:
        bandwidth, average = bandwidth + audio.bandwidth, average + audio.average_bandwidth
        codecs = f"{rung.video_codec},{audio.codec}"
    attributes = [
        f"BANDWIDTH={bandwidth}",
        f"AVERAGE-BANDWIDTH={average}",
        f'CODECS="{codecs}"',
        f"RESOLUTION={rung.width}x{rung.height}",
        f"FRAME-RATE={rung.fps:.3f}",
    ]
    if audio is not None:
        attributes.append(f'AUDIO="{AUDIO_GROUP}"')
    return "#EXT-X-STREAM-INF:" + ",".join(attributes)


def _audio_stream_inf(audio: AudioStats) -> str:
    """The lone variant of an audio-only master: no picture, so no RESOLUTION or FRAME-RATE
    (RFC 8216 4.3.4.2 asks for them only where there is video)."""
    attributes = [
        f"BANDWIDTH={audio.bandwidth}",
        f"AVERAGE-BANDWIDTH={audio.average_bandwidth}",
        f'CODECS="{audio.codec}"',
    ]
    return "#EXT-X-STREAM-INF:" + ",".join(attributes)


def _iframe_stream_inf(rung: RenditionStats, bandwidth: int) -> str:
    attributes = [
        f"BANDWIDTH={bandwidth}",
        f'CODECS="{rung.video_codec}"',
        f"RESOLUTION={rung.width}x{rung.height}",
        f'URI="{rung.name}/{layout.IFRAMES}"',
    ]
    return "#EXT-X-I-FRAME-STREAM-INF:" + ",".join(attributes)
