"""m3u8 in and out: read media playlists, measure what was produced, write the master.

Every attribute of the master playlist is measured from the segments on disk, never
assumed from the ladder: x264 may encode a lower profile than asked for (ultrafast gives
Constrained Baseline even with `-profile:v high`), and a rung's real bitrate is what it is.
"""

import math
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.media.probe import ProbeError, ffprobe_json, frame_rate

PLAYLIST_NAME = "playlist.m3u8"
# HLS audio object types (RFC 6381) by the AAC profile name ffprobe prints.
AAC_CODECS = {"LC": "mp4a.40.2", "HE-AAC": "mp4a.40.5", "HE-AACv2": "mp4a.40.29"}
_SPS_NAL_TYPE = 7


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


def read_media_playlist(path: Path) -> list[tuple[str, float]]:
    """The (segment uri, EXTINF duration) pairs of a media playlist, in order."""
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    if not lines or lines[0] != "#EXTM3U":
        raise ValueError(f"{path} is not an m3u8 playlist")
    segments = []
    duration: float | None = None
    for line in lines:
        if line.startswith("#EXTINF:"):
            duration = float(line.removeprefix("#EXTINF:").split(",", 1)[0])
        elif line and not line.startswith("#") and duration is not None:
            segments.append((line, duration))
            duration = None
    return segments


def measure_rendition(
    rung_dir: Path, *, ffprobe: str = "ffprobe", ffmpeg: str = "ffmpeg"
) -> RenditionStats:
    """Measure the rung in `rung_dir` from its playlist and segments."""
    segments = read_media_playlist(rung_dir / PLAYLIST_NAME)
    if not segments:
        raise MeasureError(f"{rung_dir / PLAYLIST_NAME} lists no segments")
    first = rung_dir / segments[0][0]
    video, audio = _probe_segment(first, ffprobe)
    peak, average = _bandwidths(rung_dir, segments)
    return RenditionStats(
        name=rung_dir.name,
        width=int(video["width"]),
        height=int(video["height"]),
        fps=frame_rate(video),
        video_codec=avc1_codec(_first_access_unit(first, ffmpeg)),
        audio_codec=_audio_codec(audio) if audio else None,
        bandwidth=peak,
        average_bandwidth=average,
    )


def master_playlist(stats: Sequence[RenditionStats]) -> str:
    """The multivariant playlist text for `stats`, highest rung first."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for rung in sorted(stats, key=lambda s: (s.width * s.height, s.bandwidth), reverse=True):
        lines.append(_stream_inf(rung))
        lines.append(f"{rung.name}/{PLAYLIST_NAME}")
    return "\n".join(lines) + "\n"


def _stream_inf(rung: RenditionStats) -> str:
    attributes = [
        f"BANDWIDTH={rung.bandwidth}",
        f"AVERAGE-BANDWIDTH={rung.average_bandwidth}",
        f'CODECS="{rung.codecs}"',
        f"RESOLUTION={rung.width}x{rung.height}",
        f"FRAME-RATE={rung.fps:.3f}",
    ]
    return "#EXT-X-STREAM-INF:" + ",".join(attributes)


def _bandwidths(rung_dir: Path, segments: list[tuple[str, float]]) -> tuple[int, int]:
    """(peak, average) bits per second: the peak is the densest single segment."""
    try:
        sizes = [(rung_dir / uri).stat().st_size for uri, _ in segments]
    except OSError as exc:
        raise MeasureError(f"{rung_dir}: a listed segment is unreadable: {exc}") from exc
    total_seconds = sum(seconds for _, seconds in segments)
    if total_seconds <= 0:
        raise MeasureError(f"{rung_dir} has segments but no duration")
    # Rounded up so the declared rate is never below the measured one.
    rates = [size * 8 / s for size, (_, s) in zip(sizes, segments, strict=True) if s > 0]
    return math.ceil(max(rates)), math.ceil(sum(sizes) * 8 / total_seconds)


def _probe_segment(segment: Path, ffprobe: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The first video and the first audio stream of a segment (audio may be absent)."""
    try:
        streams = ffprobe_json(segment, ["-show_streams"], ffprobe=ffprobe).get("streams", [])
    except ProbeError as exc:
        raise MeasureError(f"{segment}: {exc.detail}") from exc
    video = next((s for s in streams if s.get("codec_type") == "video"), None)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    if video is None or video.get("codec_name") != "h264":
        raise MeasureError(f"{segment} has no H.264 video stream")
    return video, audio


def _audio_codec(stream: dict[str, Any]) -> str:
    if stream.get("codec_name") != "aac":
        raise MeasureError(f"cannot name audio codec {stream.get('codec_name')!r} in CODECS")
    return AAC_CODECS.get(str(stream.get("profile")), AAC_CODECS["LC"])


def _first_access_unit(segment: Path, ffmpeg: str) -> bytes:
    """The first access unit of `segment` as a raw H.264 Annex-B byte stream."""
    argv = [ffmpeg, "-v", "error", "-nostdin", "-i", str(segment.absolute())]
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
    start = annexb.find(b"\x00\x00\x01")
    while start != -1 and start + 6 < len(annexb):
        if annexb[start + 3] & 0x1F == _SPS_NAL_TYPE:
            # profile_idc is never 0, so no emulation-prevention byte can sit in these three.
            profile, constraints, level = annexb[start + 4 : start + 7]
            return f"avc1.{profile:02x}{constraints:02x}{level:02x}"
        start = annexb.find(b"\x00\x00\x01", start + 3)
    raise MeasureError("no sequence parameter set (SPS) in the H.264 stream")
