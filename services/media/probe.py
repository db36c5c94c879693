"""ffprobe -> SourceInfo: what the uploaded file is, as the ladder and the encoder need it."""

import json
import logging
import math
import re
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from services.core.errors import NotAVideo
from services.core.redact import public_text
from services.media.demuxers import (
    UPLOAD_FORMATS,
    RemoteSource,
    Source,
    is_allowed,
    refusal,
    source_arg,
    source_input_args,
    source_name,
)

log = logging.getLogger(__name__)

# ffprobe's stderr can be a whole log; the client only needs the reason.
_MAX_REASON_CHARS = 500
# "[mov,mp4,m4a,3gp,3g2,mj2 @ 0x55d0c8e4c1c0]": the address differs on every run.
_ADDRESS = re.compile(r" @ 0x[0-9a-f]+")
# "[hls @ 0x55d0c8e4c1c0] Format not on whitelist 'mov,...'": the log context names the
# demuxer ffprobe detected and -format_whitelist refused.
_NOT_ON_WHITELIST = "Format not on whitelist"
_REFUSED_DEMUXER = re.compile(r"\[([\w,]+) @ 0x[0-9a-f]+\] " + _NOT_ON_WHITELIST)
# Absolute paths as ffmpeg prints them: quoted ('/a/b c/d'), or bare up to a space or quote.
# The file the probe was given is one, but not the only one: a demuxer may name others (an
# ffconcat entry, a playlist's segment), and none of them belongs in a public message.


# HLG (phones, broadcast) and PQ (HDR10, Dolby Vision's base layer).
HDR_TRANSFERS = ("arib-std-b67", "smpte2084")
# Top or bottom field first, in coded and display order; "progressive" and "unknown" are not.
INTERLACED_FIELD_ORDERS = ("tt", "bb", "tb", "bt")
# Subtitle codecs that are text (ffprobe's names): such streams become captions (see
# services/media/subtitles.py); bitmap ones (PGS, DVB, DVD) do not.
TEXT_SUBTITLE_CODECS = frozenset(("subrip", "srt", "ass", "ssa", "mov_text", "webvtt", "text"))
# A frame rate derived from counting packets may not exceed this (nor the stream's
# r_frame_rate): a file of a few stray packets must not ask for a 1000 fps ladder.
MAX_DERIVED_FPS = 240.0


class ProbeError(NotAVideo):
    """The file does not probe as a playable video; the message says why."""


# What an audio-only source (no picture to show) has in place of the picture's facts.
NO_VIDEO_CODEC = ""


@dataclass(frozen=True)
class SourceInfo:
    """The facts about a source that the ladder and the encoder depend on."""

    duration: float
    width: int
    height: int
    fps: float
    video_codec: str
    audio_codec: str | None
    format_name: str
    bit_rate: int | None
    # The picture's colour and scan facts as ffprobe names them ("" = not stated). Defaults,
    # because plans stored before these existed are read back with SourceInfo(**data).
    pix_fmt: str = ""
    color_transfer: str = ""
    color_primaries: str = ""
    color_space: str = ""
    color_range: str = ""
    field_order: str = ""
    # Text subtitle streams in the file: each becomes a caption (a unit of work extracts them).
    text_subtitles: int = 0

    @property
    def has_audio(self) -> bool:
        """True when the source has an audio stream to carry into every rung."""
        return self.audio_codec is not None

    @property
    def has_video(self) -> bool:
        """False for an audio-only source (sound with no picture, or only cover art)."""
        return self.video_codec != NO_VIDEO_CODEC

    @property
    def hdr(self) -> bool:
        """True for HLG or PQ pictures: they need tone mapping to look right on SDR screens."""
        return self.color_transfer in HDR_TRANSFERS

    @property
    def wide_gamut(self) -> bool:
        """True for BT.2020 primaries: their colours need converting to BT.709's."""
        return self.color_primaries == "bt2020"

    @property
    def interlaced(self) -> bool:
        """True when the source's frames are two fields each (ffprobe's field_order)."""
        return self.field_order in INTERLACED_FIELD_ORDERS


def probe(path: Source, *, ffprobe: str = "ffprobe", timeout: float = 60) -> SourceInfo:
    """Describe the video at `path` (a file, or a remote object), or raise ProbeError saying
    why it is not one."""
    data = ffprobe_json(path, ["-show_format", "-show_streams"], ffprobe=ffprobe, timeout=timeout)
    _check_format(data)
    timing = None
    if _header_lacks_timing(data):
        # Live-written files (MediaRecorder's WebM, recordings cut off mid-way) carry no
        # duration, and often no average frame rate: the video's packets say both.
        timed = _timed_stream(data.get("streams", []))
        assert timed is not None  # _header_lacks_timing found one
        select = f"{int(timed['index'])}"
        timing = scan_packets(path, select=select, ffprobe=ffprobe, timeout=timeout)
    return _source_info(data, timing)


def ffprobe_command(
    path: Source, show: Sequence[str], *, ffprobe: str = "ffprobe", formats: Sequence[str]
) -> list[str]:
    """The ffprobe argv reporting `show` on `path` as JSON, read only as one of `formats`."""
    # -i keeps a name such as "-x.mp4" from being read as an option; an absolute path
    # keeps a name such as "http:x" from being read as a protocol.
    argv = [ffprobe, "-v", "error", "-print_format", "json", *show]
    return [*argv, *source_input_args(path, formats), "-i", source_arg(path)]


def ffprobe_json(
    path: Source,
    show: list[str],
    *,
    ffprobe: str = "ffprobe",
    timeout: float = 60,
    formats: Sequence[str] = UPLOAD_FORMATS,
) -> dict[str, Any]:
    """Run ffprobe with the `show` options on `path` and return its parsed JSON report.

    Only the demuxers in `formats` may read it (see `demuxers.py`); a file of another format
    is a ProbeError that says what the file is.
    """
    argv = ffprobe_command(path, show, ffprobe=ffprobe, formats=formats)
    try:
        done = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ProbeError(f"ffprobe gave no answer within {timeout:g} s") from exc
    if done.returncode != 0:
        # The whole text, paths and all, stays in the service log; the client gets `_reason`.
        # (A remote source's URL carries a signature: its name stands for it.)
        log.info(
            "ffprobe refused %s: %s",
            source_name(path) if isinstance(path, RemoteSource) else path,
            _hidden(done.stderr, path),
        )
        raise ProbeError(
            _refused_format(done.stderr)
            or _reason(done.stderr, path)
            or f"ffprobe exited with code {done.returncode}"
        )
    try:
        data: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        raise ProbeError("ffprobe printed no readable report") from exc
    return data


def _refused_format(stderr: bytes) -> str | None:
    """The refusal of a file whose demuxer is not on the whitelist, naming what it is."""
    text = stderr.decode("utf-8", errors="replace")
    if _NOT_ON_WHITELIST not in text:
        return None
    found = _REFUSED_DEMUXER.search(text)
    return refusal(found.group(1) if found else None)


def _check_format(data: dict[str, Any]) -> None:
    """Refuse a report whose format is not an upload format, whatever ffprobe let through."""
    name = str(data.get("format", {}).get("format_name", ""))
    if not is_allowed(name, UPLOAD_FORMATS):
        raise ProbeError(refusal(name or None))


def _hidden(stderr: bytes, path: Source) -> str:
    """ffprobe's output with the source named by its name (never its path or signed URL)."""
    return stderr.decode("utf-8", errors="replace").replace(source_arg(path), source_name(path))


def _reason(stderr: bytes, path: Source) -> str:
    """ffprobe's complaint as one line, without paths (ours or any other) or addresses."""
    text = _hidden(stderr, path)
    lines = [_ADDRESS.sub("", line).strip() for line in text.splitlines() if line.strip()]
    return without_paths("; ".join(lines))[-_MAX_REASON_CHARS:]


def without_paths(text: str) -> str:
    """`text` with every absolute path cut down to its last part ('/srv/x/a.mp4' -> 'a.mp4')."""
    return public_text(text, every_path=True, limit=len(text) + 1)


def _source_info(data: dict[str, Any], timing: "StreamTiming | None" = None) -> SourceInfo:
    """`timing`: the video stream's packets, scanned when the header lacks the timing."""
    streams: list[dict[str, Any]] = data.get("streams", [])
    fmt: dict[str, Any] = data.get("format", {})
    video = _first_video(streams)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    if video is None:
        if audio is None:
            raise ProbeError("no video or audio stream: there is nothing to play")
        return _audio_only(fmt, audio, timing, streams)
    width, height = _display_size(video)
    return SourceInfo(
        duration=_duration(fmt, video, timing),
        width=width,
        height=height,
        fps=frame_rate(video, timing),
        video_codec=str(video.get("codec_name", "unknown")),
        audio_codec=str(audio.get("codec_name", "unknown")) if audio else None,
        format_name=str(fmt.get("format_name", "unknown")),
        bit_rate=_int_or_none(fmt.get("bit_rate")),
        text_subtitles=_text_subtitles(streams),
        **_picture_facts(video),
    )


def _audio_only(
    fmt: dict[str, Any],
    audio: dict[str, Any],
    timing: "StreamTiming | None",
    streams: list[dict[str, Any]],
) -> SourceInfo:
    """A source with sound and no picture: no size, no frame rate, no video codec."""
    return SourceInfo(
        # The audio stream stands in for the video one where the container has no duration.
        duration=_duration(fmt, audio, timing),
        width=0,
        height=0,
        fps=0.0,
        video_codec=NO_VIDEO_CODEC,
        audio_codec=str(audio.get("codec_name", "unknown")),
        format_name=str(fmt.get("format_name", "unknown")),
        bit_rate=_int_or_none(fmt.get("bit_rate")),
        text_subtitles=_text_subtitles(streams),
    )


def _text_subtitles(streams: list[dict[str, Any]]) -> int:
    """How many of the streams are text subtitles (captions to extract)."""
    return sum(
        1
        for s in streams
        if s.get("codec_type") == "subtitle" and s.get("codec_name") in TEXT_SUBTITLE_CODECS
    )


def _picture_facts(video: dict[str, Any]) -> dict[str, str]:
    """pix_fmt, colour tags and field order as ffprobe names them; "" when not stated."""
    keys = ("pix_fmt", "color_transfer", "color_primaries", "color_space", "color_range")
    facts = {key: str(video.get(key, "")) for key in (*keys, "field_order")}
    return {
        key: "" if value in ("unknown", "unspecified") else value for key, value in facts.items()
    }


def _first_video(streams: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The first video stream that is a picture to play (None when there is none)."""
    for stream in streams:
        # Cover art is a one-picture "video" stream; it is not something to play.
        cover = stream.get("disposition", {}).get("attached_pic") == 1
        if stream.get("codec_type") == "video" and not cover:
            if not stream.get("width") or not stream.get("height"):
                raise ProbeError("the video stream has no picture size")
            return stream
    return None


def _display_size(stream: dict[str, Any]) -> tuple[int, int]:
    """The size a player shows: stored size stretched by the pixel aspect, then rotated."""
    width, height = int(stream["width"]), int(stream["height"])
    sar = _fraction(stream.get("sample_aspect_ratio"))
    if sar and sar != 1:
        width = round(width * sar)
    if _rotation(stream) % 180 == 90:
        width, height = height, width
    return width, height


def _rotation(stream: dict[str, Any]) -> int:
    for side in stream.get("side_data_list", []):
        if "rotation" in side:
            return abs(round(_float_or_none(side["rotation"]) or 0))
    # Older ffprobe builds report rotation only as a tag.
    return abs(round(_float_or_none(stream.get("tags", {}).get("rotate")) or 0))


def _header_duration(fmt: dict[str, Any], video: dict[str, Any]) -> float | None:
    for candidate in (fmt.get("duration"), video.get("duration")):
        seconds = _float_or_none(candidate)
        if seconds is not None and seconds > 0:
            return seconds
    return None


def _timed_stream(streams: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The stream whose packets time the source: the picture, else (audio only) the sound."""
    video = _first_video(streams)
    if video is not None:
        return video
    return next((s for s in streams if s.get("codec_type") == "audio"), None)


def _header_lacks_timing(data: dict[str, Any]) -> bool:
    """Whether the header leaves the duration or the video's average frame rate unsaid."""
    try:
        timed = _timed_stream(data.get("streams", []))
    except ProbeError:
        return False  # a picture with no size: _source_info says so
    if timed is None:
        return False  # nothing to time: _source_info says so
    no_duration = _header_duration(data.get("format", {}), timed) is None
    no_rate = timed.get("codec_type") == "video" and not _fraction(timed.get("avg_frame_rate"))
    return no_duration or no_rate


def _duration(fmt: dict[str, Any], video: dict[str, Any], timing: "StreamTiming | None") -> float:
    seconds = _header_duration(fmt, video)
    # One packet is a still picture (an image file probes as a one-frame "video"), not a
    # recording whose header went unwritten.
    if seconds is None and timing is not None and timing.count > 1:
        # From the file's start (where a chunk's -ss counts from) to the video's end.
        start = min(timing.first, _float_or_none(fmt.get("start_time")) or timing.first)
        seconds = timing.stop - start if timing.stop > start else None
    if seconds is None:
        raise ProbeError("the video has no duration (zero length or unknown)")
    return seconds


def frame_rate(video: dict[str, Any], timing: "StreamTiming | None" = None) -> float:
    """A video stream's frame rate: the average; else its packets counted over their span
    (`timing`, capped by the nominal rate); else the container's nominal rate."""
    average = _fraction(video.get("avg_frame_rate"))
    if average:
        return float(average)
    nominal = _fraction(video.get("r_frame_rate"))
    counted = timing.rate if timing is not None else None
    if counted:
        # MediaRecorder's WebM says 1000/1 (its clock), not a rate: the packets know better.
        return min(counted, float(nominal) if nominal else MAX_DERIVED_FPS, MAX_DERIVED_FPS)
    if nominal:
        return float(nominal)
    raise ProbeError("the video stream has no frame rate")


# ---- timing from the packets, for files whose header does not say it ------------------


@dataclass
class StreamTiming:
    """One stream's packets: how many, the first start, and where the last one ends."""

    count: int = 0
    first: float = math.inf
    last: float = -math.inf
    # The latest pts + duration, over packets that state a duration.
    end: float = -math.inf

    def add(self, pts: float, duration: float | None) -> None:
        """Count one packet at `pts` lasting `duration` seconds (None: not stated)."""
        self.count += 1
        self.first, self.last = min(self.first, pts), max(self.last, pts)
        if duration is not None:
            self.end = max(self.end, pts + duration)

    @property
    def stop(self) -> float:
        """Where the stream ends: the last packet's end, or (durations unstated, as in
        MediaRecorder's video) its start plus the mean packet spacing."""
        spacing = (self.last - self.first) / (self.count - 1) if self.count > 1 else 0.0
        return max(self.end, self.last + spacing)

    @property
    def rate(self) -> float | None:
        """Packets per second over the stream's span; None for fewer than two packets."""
        span = self.stop - self.first
        return self.count / span if self.count > 1 and span > 0 else None


def scan_packets(
    path: Source, *, select: str = "v:0", ffprobe: str = "ffprobe", timeout: float = 60
) -> StreamTiming:
    """The timing of the packets of stream `select`, read one by one (demuxing only, nothing
    is decoded); ProbeError when that takes over `timeout` s."""
    argv = [ffprobe, "-v", "error", "-select_streams", select]
    argv += ["-show_entries", "packet=pts_time,duration_time", "-of", "csv=p=0"]
    # The same demuxers and protocol as the probe itself: only the file named is read.
    argv += [*source_input_args(path, UPLOAD_FORMATS), "-i", source_arg(path)]
    timing = StreamTiming()
    # Read line by line: a long file has millions of packets, and only the sums are kept.
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as process:
        timer = threading.Timer(timeout, process.kill)
        timer.start()
        try:
            assert process.stdout is not None
            for line in process.stdout:
                _add_packet(timing, line)
        finally:
            timer.cancel()
    if process.returncode < 0:
        raise ProbeError(f"reading the packets for a duration took over {timeout:g} s")
    return timing


def _add_packet(timing: StreamTiming, line: bytes) -> None:
    """One csv line, 'pts_time,duration_time[,side data...]', into `timing`."""
    fields = line.split(b",", 2)
    pts = _float_or_none(fields[0].decode("ascii", errors="replace"))
    if pts is None or len(fields) < 2:
        return  # a packet without a timestamp cannot place the end
    timing.add(pts, _float_or_none(fields[1].decode("ascii", errors="replace")))


def _fraction(value: object) -> Fraction | None:
    """'30000/1001' or '4:3' as a positive Fraction; None for missing, '0/0' or 'N/A'."""
    if not isinstance(value, str):
        return None
    num, _, den = value.replace(":", "/").partition("/")
    try:
        numerator, denominator = int(num), int(den or 1)
    except ValueError:
        return None
    return Fraction(numerator, denominator) if numerator > 0 and denominator > 0 else None


def _float_or_none(value: object) -> float | None:
    """ffprobe prints numbers as strings and "N/A" when it does not know."""
    if not isinstance(value, str | int | float):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _int_or_none(value: object) -> int | None:
    number = _float_or_none(value)
    return int(number) if number is not None else None
