"""Subtitle streams inside an upload: which are text (and become captions), and the ffmpeg
argv that extracts them as WebVTT.

Text subtitles are mov_text (MP4, MOV), SubRip and ASS/SSA (MKV), WebVTT (WebM): ffmpeg
decodes each to text and its WebVTT encoder writes it out, styling reduced to what WebVTT
has. Bitmap subtitles (Blu-ray PGS, DVB, DVD) are pictures, not text: they are skipped, with
the reason logged by the caller.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.media.demuxers import UPLOAD_FORMATS, Source, source_arg, source_input_args
from services.media.probe import TEXT_SUBTITLE_CODECS, ffprobe_json

BITMAP_CODECS = frozenset(
    ("hdmv_pgs_subtitle", "dvb_subtitle", "dvd_subtitle", "xsub", "dvb_teletext")
)
# Handler names writers put on every MP4 text track: a name of the tool, not of the track.
_GENERIC_HANDLERS = frozenset(("subtitlehandler", "core media text", "text", "sbtl", ""))


@dataclass(frozen=True)
class SubtitleStream:
    """One subtitle stream of a source, as ffprobe describes it."""

    index: int  # the stream's index in the file (what -map 0:N names)
    codec: str
    language: str  # the container's tag ("eng", "pt-BR"), "" when none
    title: str  # the track's title, "" when none

    @property
    def is_text(self) -> bool:
        return self.codec in TEXT_SUBTITLE_CODECS

    @property
    def is_bitmap(self) -> bool:
        return self.codec in BITMAP_CODECS


def subtitle_streams(report: dict[str, Any]) -> list[SubtitleStream]:
    """The subtitle streams of an ffprobe `-show_streams` report, in file order."""
    found = []
    for stream in report.get("streams", []):
        if stream.get("codec_type") != "subtitle":
            continue
        tags = {str(k).lower(): str(v) for k, v in (stream.get("tags") or {}).items()}
        handler = tags.get("handler_name", "")
        title = tags.get("title") or ("" if handler.lower() in _GENERIC_HANDLERS else handler)
        found.append(
            SubtitleStream(
                index=int(stream["index"]),
                codec=str(stream.get("codec_name", "unknown")),
                language=tags.get("language", ""),
                title=title,
            )
        )
    return found


def timeline_start(report: dict[str, Any]) -> float:
    """Where the played presentation starts on the file's timeline, in seconds: the first
    timestamp of the stream the main variant is encoded from (the picture, or the sound of
    an audio-only file). Its first frame is time 0 for players, so cue times count from it."""
    streams = report.get("streams", [])
    pictures = [
        s
        for s in streams
        if s.get("codec_type") == "video" and not s.get("disposition", {}).get("attached_pic")
    ]
    sounds = [s for s in streams if s.get("codec_type") == "audio"]
    for stream in (pictures or sounds)[:1]:
        try:
            return float(stream.get("start_time", 0.0))
        except (TypeError, ValueError):
            return 0.0
    return 0.0


def probe_subtitles(
    source: Source, *, ffprobe: str = "ffprobe"
) -> tuple[list[SubtitleStream], float]:
    """The subtitle streams of `source` and its `timeline_start` (read as an upload:
    allowlisted demuxers only)."""
    report = ffprobe_json(source, ["-show_streams"], ffprobe=ffprobe)
    return subtitle_streams(report), timeline_start(report)


def extract_command(
    *, ffmpeg: str, source: Source, streams: list[SubtitleStream], out_dir: Path, max_bytes: int
) -> list[str]:
    """One ffmpeg run writing each stream as `out_dir/{index}.vtt` (WebVTT): the file is
    read once whatever the number of tracks. Cue times stay the file's own (-copyts): the
    caller counts them from `timeline_start`. Each output stops at `max_bytes` (-fs): a
    longer one is then refused by the caption reader rather than filling the disk."""
    if not streams:
        raise ValueError("nothing to extract: no subtitle stream given")
    argv = [ffmpeg, "-hide_banner", "-nostdin", "-y", "-loglevel", "error", "-copyts"]
    # Only the upload's own bytes, read as an upload format (see demuxers.py); -i before an
    # absolute path, so no name is read as an option or a protocol.
    argv += [*source_input_args(source, UPLOAD_FORMATS), "-i", source_arg(source)]
    for stream in streams:
        argv += ["-map", f"0:{stream.index}", "-c:s", "webvtt", "-fs", str(max_bytes)]
        argv += ["-f", "webvtt", str(out_dir.absolute() / f"{stream.index}.vtt")]
    return argv
