"""Pure ladder policy: which renditions a source of a given display size gets."""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True)
class Rung:
    """One preset of the ladder: `height` is the short side; bitrates in kb/s."""

    name: str
    height: int
    video_kbps: int
    maxrate_kbps: int
    bufsize_kbps: int
    audio_kbps: int


SEED_LADDER: tuple[Rung, ...] = (
    Rung("1080p", 1080, 5800, 6400, 9600, 192),
    Rung("720p", 720, 3500, 3900, 5800, 160),
    Rung("480p", 480, 1600, 1900, 3000, 128),
    Rung("360p", 360, 900, 1100, 2200, 96),
)


@dataclass(frozen=True)
class Rendition:
    """One rung as it will be encoded for one source: exact frame size and bitrates."""

    name: str
    width: int
    height: int
    video_kbps: int
    maxrate_kbps: int
    bufsize_kbps: int
    audio_kbps: int


def plan_ladder(width: int, height: int, ladder: Sequence[Rung] = SEED_LADDER) -> list[Rendition]:
    """The renditions for a `width` x `height` (display size) source, highest first."""
    if min(width, height) < 2 or not ladder:
        raise ValueError(f"cannot ladder a {width}x{height} source with {len(ladder)} rungs")
    short = min(width, height)
    renditions = []
    for rung in sorted(ladder, key=lambda r: r.height, reverse=True):
        if rung.height > short:
            continue  # never upscale: it costs bits and shows nothing the source lacks
        renditions.append(_fit(rung, width, height))
    if not renditions:
        # A source below the lowest rung must still play: one rung at its own size.
        lowest = min(ladder, key=lambda r: r.height)
        renditions.append(_own_size(lowest, width, height))
    return renditions


def _fit(rung: Rung, width: int, height: int) -> Rendition:
    """`rung` scaled so the source's short side is the rung height, aspect ratio kept."""
    long_side = _even(Fraction(max(width, height) * rung.height, min(width, height)))
    size = (long_side, rung.height) if width >= height else (rung.height, long_side)
    return _rendition(rung, rung.name, *size)


def _own_size(rung: Rung, width: int, height: int) -> Rendition:
    """`rung`'s bitrates at the source's own size, rounded down to even."""
    width, height = width - width % 2, height - height % 2
    # Rung names are validated as [0-9]{3,4}p, so a sub-100 px source is zero-padded.
    return _rendition(rung, f"{min(width, height):03d}p", width, height)


def _rendition(rung: Rung, name: str, width: int, height: int) -> Rendition:
    return Rendition(
        name=name,
        width=width,
        height=height,
        video_kbps=rung.video_kbps,
        maxrate_kbps=rung.maxrate_kbps,
        bufsize_kbps=rung.bufsize_kbps,
        audio_kbps=rung.audio_kbps,
    )


def _even(value: Fraction) -> int:
    """The even number nearest `value` (ties up), at least 2: yuv420p needs even sizes."""
    return max(2, math.floor(value / 2 + Fraction(1, 2)) * 2)
