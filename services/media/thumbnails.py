"""Pure builders for the player's pictures: the poster and the storyboard (seek previews).

- `poster_command`: one JPEG frame from about a tenth into the source, at the top rung's size
  (its long side capped at POSTER_MAX_SIDE).
- `storyboard_command`: one sprite JPEG of small tiles, one every `interval` seconds, laid out
  in a grid; `storyboard_vtt` maps each time range to its tile (`storyboard.jpg#xywh=x,y,w,h`),
  which is how players (video.js, JW Player, Vidstack) read seek previews.

Both decode keyframes only (`-skip_frame nokey`): the decoder then skips every other frame,
so a poster costs one frame's decoding and the storyboard one frame per keyframe interval.
The storyboard is read from the lowest rung, whose keyframes are forced every
`keyframe_seconds` on the source's timeline: with an interval that is a multiple of it, every
tile is the frame at exactly its cue's start. Nothing here runs a process.
"""

import math
from dataclasses import dataclass
from pathlib import Path

from services.media.demuxers import (
    HLS_FORMATS,
    UPLOAD_FORMATS,
    Source,
    input_args,
    source_arg,
    source_input_args,
)
from services.media.ffmpeg_args import DEINTERLACE, converts_to_bt709, to_bt709_filters
from services.media.probe import SourceInfo

# A poster fills the player before playback starts; past 1280 px it only costs bytes.
POSTER_MAX_SIDE = 1280
# Where the poster is taken from: the opening frames are often black or a title card.
POSTER_FRACTION = 0.1
# A tile's long side, in pixels: the size of seek previews on YouTube and video.js.
TILE_LONG_SIDE = 160
# One sprite for the whole video, kept to a few hundred KB: longer videos get wider intervals.
MAX_TILES = 200
COLUMNS = 10
# Finer than this shows the same picture in neighbouring tiles.
MIN_INTERVAL_SECONDS = 2
# JPEG quality on ffmpeg's 2 (best) to 31 scale: the poster is looked at, the tiles glanced at.
POSTER_QUALITY = 3
TILE_QUALITY = 5


def fit_within(width: int, height: int, longest: int) -> tuple[int, int]:
    """`width` x `height` scaled down (never up) so its long side is at most `longest`, even."""
    if width < 2 or height < 2:
        raise ValueError(f"cannot fit a {width}x{height} picture")
    scale = min(1.0, longest / max(width, height))
    return _even(width * scale), _even(height * scale)


def poster_size(top_width: int, top_height: int) -> tuple[int, int]:
    """The poster's size for a ladder whose top rung is `top_width` x `top_height`."""
    return fit_within(top_width, top_height, POSTER_MAX_SIDE)


def poster_time(duration: float) -> float:
    """Where the poster is taken: a tenth of the way in."""
    return max(0.0, duration * POSTER_FRACTION)


def poster_command(
    *,
    ffmpeg: str,
    source: Source,
    at: float,
    width: int,
    height: int,
    out: Path,
    keyframes_only: bool = True,
    info: SourceInfo | None = None,
) -> list[str]:
    """One ffmpeg run writing the keyframe at or before `at` seconds of `source` as a JPEG.

    `keyframes_only=False` decodes every frame: for the rare stream whose keyframes are not
    flagged (intra refresh), where the keyframes-only run writes nothing. With the source's
    `info`, the picture is deinterlaced and tone-mapped as the rungs are.
    """
    argv = [ffmpeg, "-hide_banner", "-nostdin", "-y", "-loglevel", "error"]
    if keyframes_only:
        # Only keyframes are decoded: one decoded frame, whatever the source's codec and size.
        argv += ["-skip_frame", "nokey"]
    # Only the upload's own bytes, as one of the upload formats (see demuxers.py). Input seek
    # to the keyframe at or before `at` (-noaccurate_seek: no decoding up to `at`).
    argv += [*source_input_args(source, UPLOAD_FORMATS), "-ss", f"{at:.3f}", "-noaccurate_seek"]
    argv += ["-i", source_arg(source)]
    filters = ",".join(poster_filters(info, width, height))
    argv += ["-map", "0:v:0", "-an", "-sn", "-dn", "-vf", filters]
    argv += ["-frames:v", "1", "-q:v", str(POSTER_QUALITY)]
    return [*argv, "-f", "image2", "-update", "1", str(out.absolute())]


def poster_filters(info: SourceInfo | None, width: int, height: int) -> list[str]:
    """The poster's picture as the rungs show it, at `width` x `height` with square pixels.

    The scale applies the source's pixel aspect (autorotate has turned it upright).
    """
    filters = [DEINTERLACE] if info is not None and info.interlaced else []
    if info is not None and converts_to_bt709(info):
        filters += to_bt709_filters(info, width, height, jpeg=True)
    else:
        filters.append(f"scale={width}:{height}")
    return [*filters, "setsar=1"]


@dataclass(frozen=True)
class Storyboard:
    """The layout of a storyboard sprite: `count` tiles of one size, `columns` per row."""

    interval: int
    count: int
    columns: int
    tile_width: int
    tile_height: int

    @property
    def rows(self) -> int:
        return math.ceil(self.count / self.columns)

    @property
    def width(self) -> int:
        """The sprite's width in pixels."""
        return self.columns * self.tile_width

    @property
    def height(self) -> int:
        """The sprite's height in pixels."""
        return self.rows * self.tile_height

    def tile(self, index: int) -> tuple[int, int, int, int]:
        """Tile `index`'s x, y, width and height in the sprite."""
        row, column = divmod(index, self.columns)
        return column * self.tile_width, row * self.tile_height, self.tile_width, self.tile_height


def plan_storyboard(
    duration: float, width: int, height: int, *, keyframe_seconds: int
) -> Storyboard:
    """The storyboard of a `duration`-second video whose frames are `width` x `height`."""
    if duration <= 0:
        raise ValueError(f"a storyboard needs a positive duration, not {duration}")
    step = max(1, keyframe_seconds)
    # A whole number of keyframe intervals, so every tile is a keyframe at its cue's start.
    intervals = max(math.ceil(MIN_INTERVAL_SECONDS / step), math.ceil(duration / MAX_TILES / step))
    interval = intervals * step
    count = max(1, math.ceil(duration / interval))
    tile_width, tile_height = fit_within(width, height, TILE_LONG_SIDE)
    return Storyboard(interval, count, min(COLUMNS, count), tile_width, tile_height)


def storyboard_command(*, ffmpeg: str, playlist: Path, board: Storyboard, out: Path) -> list[str]:
    """One ffmpeg run writing `board`'s sprite from a rung's media playlist."""
    argv = [ffmpeg, "-hide_banner", "-nostdin", "-y", "-loglevel", "error"]
    # Our own playlist and its segments, and nothing else.
    argv += [*input_args(HLS_FORMATS), "-skip_frame", "nokey", "-i", str(playlist.absolute())]
    # round=up: slot k shows the last frame at or before k * interval (the keyframe there),
    # and the slots end with the input, so there is one per cue.
    graph = f"fps=1/{board.interval}:round=up,"
    graph += f"scale={board.tile_width}:{board.tile_height},setsar=1,"
    # The tile filter writes the grid once it is full, or at the end with what it has.
    graph += f"tile={board.columns}x{board.rows}"
    argv += ["-map", "0:v:0", "-an", "-sn", "-dn", "-vf", graph]
    argv += ["-frames:v", "1", "-q:v", str(TILE_QUALITY)]
    return [*argv, "-f", "image2", "-update", "1", str(out.absolute())]


def storyboard_vtt(board: Storyboard, duration: float, image: str) -> str:
    """The WebVTT map of `board`: cue k covers [k * interval, next) and names tile k of `image`.

    The cues run on without a gap from 0 to `duration`; `image` is a URI relative to the VTT.
    """
    lines = ["WEBVTT", ""]
    for index in range(board.count):
        start = index * board.interval
        end = min((index + 1) * board.interval, duration)
        x, y, w, h = board.tile(index)
        lines += [f"{_timestamp(start)} --> {_timestamp(end)}", f"{image}#xywh={x},{y},{w},{h}", ""]
    return "\n".join(lines)


def add_token_to_vtt(text: str, token: str) -> str:
    """Carry a playback token in every tile URI of a storyboard map (`x.jpg?token=..#xywh=`)."""
    lines = []
    for line in text.splitlines():
        uri, hash_mark, fragment = line.partition("#")
        if hash_mark and "-->" not in line and "?" not in uri:
            line = f"{uri}?token={token}#{fragment}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def _timestamp(seconds: float) -> str:
    """WebVTT's hh:mm:ss.ttt."""
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    return f"{hours:02d}:{minutes:02d}:{millis // 1000:02d}.{millis % 1000:03d}"


def _even(value: float) -> int:
    """The even number nearest `value` (ties up), at least 2: JPEG's 4:2:0 wants even sizes."""
    return max(2, math.floor(value / 2 + 0.5) * 2)
