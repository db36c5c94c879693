"""A caption as an HLS SUBTITLES rendition: WebVTT segments on the video's segment grid,
their media playlist, and the master's `EXT-X-MEDIA:TYPE=SUBTITLES` lines.

Timing. A player places the video by its media timestamps, and those do not start at 0:
every chunk is shifted by TS_OFFSET_SECONDS (ffmpeg_args.py), and the MPEG-TS muxer adds its
1.4 s delay on top, so the first frame of an H.264 rung is at 11.4 s (90 kHz: 1026000) and
that of an fMP4 HEVC rung at 10 s. Each WebVTT segment says which media timestamp its cue
time 0 is with `X-TIMESTAMP-MAP=MPEGTS:<that>,LOCAL:00:00:00.000` (RFC 8216 3.5), so a cue
at 00:00:01.000 shows one second after the first frame. hls.js takes the first fragment's
lowest PTS as time 0 (initPTS) and maps cues by the difference; Safari maps them onto the
same timeline natively; for fMP4 the MPEGTS value is the same presentation time scaled to
90 kHz. The value is measured from the first segment of the main variant (`media_zero`),
not assumed: whatever the muxer did, cue time 0 is the first picture.

Segments. A cue goes into every segment it overlaps (the usual practice: a player that
starts or seeks into the middle of a long cue still shows it); players drop the repeats.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from services.core import layout
from services.media import fmp4
from services.media.captions import Cue, cue_block
from services.media.demuxers import SEGMENT_FORMATS
from services.media.playlists import MeasureError, media_playlist
from services.media.probe import ProbeError, ffprobe_json

GROUP = "subs"
MPEGTS_CLOCK = 90_000
# PES timestamps are 33 bits: a value past it wraps, as the muxer's own do.
MPEGTS_WRAP = 2**33
# Packets read from a segment's start to find its lowest timestamp (B-frames come after
# their reference, so the lowest is among the first few).
FIRST_PACKETS = 32
_MEDIA_PREFIX = "#EXT-X-MEDIA:TYPE=SUBTITLES,"
_SUBTITLES_ATTRIBUTE = f',SUBTITLES="{GROUP}"'
_STREAM_INF = "#EXT-X-STREAM-INF:"


@dataclass(frozen=True)
class Track:
    """What the master says of one caption: its folder, language, name and default-ness."""

    caption_id: str
    language: str
    name: str
    default: bool = False


def rendition_files(
    cues: Sequence[Cue], *, duration: float, segment_seconds: int, mpegts: int
) -> dict[str, str]:
    """Every file of a caption's rendition, by name: its segments and its VOD playlist.

    The segments follow the video's grid (one every `segment_seconds`, the last one ending
    at `duration`); cues past the end are in no segment.
    """
    bounds = _grid(duration, segment_seconds)
    files = {
        layout.caption_segment(index): segment_text(inside, mpegts)
        for index, inside in enumerate(_by_segment(cues, bounds))
    }
    listed = [(layout.caption_segment(i), end - start) for i, (start, end) in enumerate(bounds)]
    files[layout.PLAYLIST] = media_playlist(listed, target=segment_seconds, ended=True)
    return files


def _grid(duration: float, segment_seconds: int) -> list[tuple[float, float]]:
    """(start, end) seconds of each segment; a millisecond of slack keeps 4.0000001 s of
    video from getting a segment of its own."""
    if duration <= 0 or segment_seconds <= 0:
        raise ValueError("a caption rendition needs a positive duration and segment length")
    count = max(1, math.ceil(duration / segment_seconds - 0.001))
    starts = [index * segment_seconds for index in range(count)]
    return [(start, min(start + segment_seconds, duration)) for start in starts]


def _by_segment(cues: Sequence[Cue], bounds: list[tuple[float, float]]) -> list[list[Cue]]:
    """The cues overlapping each segment, in order. One pass over the cues (they come in the
    order they start), keeping those still running: 20,000 cues over a 12-hour grid stay
    linear rather than cues x segments."""
    found: list[list[Cue]] = []
    running: list[Cue] = []
    next_cue = 0
    for start, end in bounds:
        begin, finish = round(start * 1000), round(end * 1000)
        while next_cue < len(cues) and cues[next_cue].start < finish:
            running.append(cues[next_cue])
            next_cue += 1
        running = [cue for cue in running if cue.end > begin]
        found.append(list(running))
    return found


def segment_text(cues: Sequence[Cue], mpegts: int) -> str:
    """One WebVTT segment: the timestamp map, then its cues (times from the video's start)."""
    header = f"WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:{mpegts % MPEGTS_WRAP},LOCAL:00:00:00.000\n\n"
    return header + "".join(cue_block(cue) for cue in cues)


# ---- the master ------------------------------------------------------------------------


def subtitle_media(tracks: Sequence[Track]) -> list[str]:
    """The master's EXT-X-MEDIA lines for `tracks`: NAMEs made unique within the group (as
    RFC 8216 4.3.4.1.1 requires), DEFAULT=YES on the first default one only."""
    lines: list[str] = []
    names: set[str] = set()
    default_seen = False
    for track in tracks:
        name = _unique(_attribute_text(track.name) or track.language, names)
        names.add(name)
        default = track.default and not default_seen
        default_seen = default_seen or default
        attributes = [
            f'GROUP-ID="{GROUP}"',
            f'LANGUAGE="{track.language}"',
            f'NAME="{name}"',
            f"DEFAULT={'YES' if default else 'NO'}",
            # A player may turn it on by itself to match the viewer's language settings.
            "AUTOSELECT=YES",
            f'URI="captions/{track.caption_id}/{layout.PLAYLIST}"',
        ]
        lines.append(_MEDIA_PREFIX + ",".join(attributes))
    return lines


def _attribute_text(text: str) -> str:
    """Text as a quoted-string attribute may hold it: no double quote, no line break."""
    return " ".join(text.replace('"', "'").split())


def _unique(name: str, taken: set[str]) -> str:
    if name not in taken:
        return name
    number = 2
    while f"{name} ({number})" in taken:
        number += 1
    return f"{name} ({number})"


def strip_subtitles(master: str) -> str:
    """The master without any SUBTITLES rendition (as the publisher writes it)."""
    lines = [line for line in master.splitlines() if not line.startswith(_MEDIA_PREFIX)]
    return "\n".join(line.replace(_SUBTITLES_ATTRIBUTE, "") for line in lines) + "\n"


def with_subtitles(master: str, tracks: Sequence[Track]) -> str:
    """The master with exactly `tracks` as its SUBTITLES group: their EXT-X-MEDIA lines
    before the first variant, and every variant (EXT-X-STREAM-INF) naming the group."""
    lines = strip_subtitles(master).splitlines()
    if not tracks:
        return "\n".join(lines) + "\n"
    first = next((i for i, line in enumerate(lines) if line.startswith(_STREAM_INF)), None)
    if first is None:
        raise ValueError("the master has no variant (EXT-X-STREAM-INF) to give subtitles")
    lines[first:first] = subtitle_media(tracks)
    out = [line + _SUBTITLES_ATTRIBUTE if line.startswith(_STREAM_INF) else line for line in lines]
    return "\n".join(out) + "\n"


# ---- the timestamp map -----------------------------------------------------------------


def media_zero(segment: Path, *, init: Path | None = None, ffprobe: str = "ffprobe") -> int:
    """The lowest presentation timestamp near the start of `segment` (an fMP4 one read after
    `init`), at 90 kHz: the MPEGTS value cue time 0 maps to."""
    show = ["-show_entries", "packet=pts_time", "-read_intervals", f"%+#{FIRST_PACKETS}"]
    try:
        if init is None:
            report = ffprobe_json(segment, show, ffprobe=ffprobe, formats=SEGMENT_FORMATS)
        else:
            with fmp4.joined(init, segment) as whole:
                report = ffprobe_json(whole, show, ffprobe=ffprobe, formats=SEGMENT_FORMATS)
    except (ProbeError, fmp4.Fmp4Error, OSError) as exc:
        raise MeasureError(f"{segment}: cannot read its first timestamps: {exc}") from exc
    times = [float(p["pts_time"]) for p in report.get("packets", []) if _number(p.get("pts_time"))]
    if not times:
        raise MeasureError(f"{segment} has no timestamped packet")
    return round(min(times) * MPEGTS_CLOCK) % MPEGTS_WRAP


def _number(value: object) -> bool:
    try:
        return value is not None and math.isfinite(float(str(value)))
    except ValueError:
        return False
