"""ffprobe -> SourceInfo: what the uploaded file is, as the ladder and the encoder need it."""

import json
import logging
import math
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path, PurePosixPath
from typing import Any

from services.core.errors import NotAVideo
from services.media.demuxers import UPLOAD_FORMATS, input_args, is_allowed, refusal

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
_QUOTED_PATH = re.compile(r"(['\"])(/[^'\"\n]*)\1")
_BARE_PATH = re.compile(r"(?<![\w.~/-])/[^\s'\"]+")


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

    @property
    def has_audio(self) -> bool:
        """True when the source has an audio stream to carry into every rung."""
        return self.audio_codec is not None

    @property
    def has_video(self) -> bool:
        """False for an audio-only source (sound with no picture, or only cover art)."""
        return self.video_codec != NO_VIDEO_CODEC


def probe(path: Path, *, ffprobe: str = "ffprobe", timeout: float = 60) -> SourceInfo:
    """Describe the video at `path`, or raise ProbeError saying why it is not one."""
    data = ffprobe_json(path, ["-show_format", "-show_streams"], ffprobe=ffprobe, timeout=timeout)
    _check_format(data)
    return _source_info(data)


def ffprobe_command(
    path: Path, show: Sequence[str], *, ffprobe: str = "ffprobe", formats: Sequence[str]
) -> list[str]:
    """The ffprobe argv reporting `show` on `path` as JSON, read only as one of `formats`."""
    # -i keeps a name such as "-x.mp4" from being read as an option; an absolute path
    # keeps a name such as "http:x" from being read as a protocol.
    argv = [ffprobe, "-v", "error", "-print_format", "json", *show, *input_args(formats)]
    return [*argv, "-i", str(path.absolute())]


def ffprobe_json(
    path: Path,
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
        log.info("ffprobe refused %s: %s", path, done.stderr.decode("utf-8", "replace").strip())
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


def _reason(stderr: bytes, path: Path) -> str:
    """ffprobe's complaint as one line, without paths (ours or any other) or addresses."""
    text = stderr.decode("utf-8", errors="replace").replace(str(path.absolute()), path.name)
    lines = [_ADDRESS.sub("", line).strip() for line in text.splitlines() if line.strip()]
    return without_paths("; ".join(lines))[-_MAX_REASON_CHARS:]


def without_paths(text: str) -> str:
    """`text` with every absolute path cut down to its last part ('/srv/x/a.mp4' -> 'a.mp4')."""
    text = _QUOTED_PATH.sub(lambda m: m[1] + PurePosixPath(m[2]).name + m[1], text)
    return _BARE_PATH.sub(lambda m: PurePosixPath(m[0]).name, text)


def _source_info(data: dict[str, Any]) -> SourceInfo:
    streams: list[dict[str, Any]] = data.get("streams", [])
    fmt: dict[str, Any] = data.get("format", {})
    video = _first_video(streams)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    if video is None:
        if audio is None:
            raise ProbeError("no video or audio stream: there is nothing to play")
        return _audio_only(fmt, audio)
    width, height = _display_size(video)
    return SourceInfo(
        duration=_duration(fmt, video),
        width=width,
        height=height,
        fps=frame_rate(video),
        video_codec=str(video.get("codec_name", "unknown")),
        audio_codec=str(audio.get("codec_name", "unknown")) if audio else None,
        format_name=str(fmt.get("format_name", "unknown")),
        bit_rate=_int_or_none(fmt.get("bit_rate")),
    )


def _audio_only(fmt: dict[str, Any], audio: dict[str, Any]) -> SourceInfo:
    """A source with sound and no picture: no size, no frame rate, no video codec."""
    return SourceInfo(
        # The audio stream stands in for the video one where the container has no duration.
        duration=_duration(fmt, audio),
        width=0,
        height=0,
        fps=0.0,
        video_codec=NO_VIDEO_CODEC,
        audio_codec=str(audio.get("codec_name", "unknown")),
        format_name=str(fmt.get("format_name", "unknown")),
        bit_rate=_int_or_none(fmt.get("bit_rate")),
    )


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


def _duration(fmt: dict[str, Any], video: dict[str, Any]) -> float:
    for candidate in (fmt.get("duration"), video.get("duration")):
        seconds = _float_or_none(candidate)
        if seconds is not None and seconds > 0:
            return seconds
    raise ProbeError("the video has no duration (zero length or unknown)")


def frame_rate(video: dict[str, Any]) -> float:
    """A video stream's frame rate: average, else the container's nominal rate."""
    for key in ("avg_frame_rate", "r_frame_rate"):
        rate = _fraction(video.get(key))
        if rate:
            return float(rate)
    raise ProbeError("the video stream has no frame rate")


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
