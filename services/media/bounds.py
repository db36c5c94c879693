"""Bounds on what a source claims about itself: how long it lasts, how many pixels a frame has,
how many frames a second, and whether its bytes can hold the duration its header claims.

A header is only a claim: 5 KB of MKV can say it lasts 10^12 s, and a job's plan cuts the
claimed timeline into chunks, one database row each. So a source past the bounds is refused
(a 422 whose message gives the limit) before anything is planned for it.
"""

from services.core.settings import Settings
from services.media.probe import ProbeError, SourceInfo

# The fewest bytes a second of a real recording takes. The sparsest real file we could make,
# 1 fps of a black 320x240 frame in H.264 with x264's default 250-frame GOP and no sound, takes
# 18 B/s in MP4 and 22 B/s in MKV (container overhead and skipped frames); any sound at all
# costs 600 B/s or more (AMR-NB at 4.75 kb/s, the leanest codec a phone records). 2 B/s is 9x
# below the sparsest video: only a header claiming time that its file does not contain (the
# duration bomb: 5 KB claiming 10^12 s) falls below it.
MIN_BYTES_PER_SECOND = 2


class BeyondLimits(ProbeError):
    """The source claims more than the platform accepts; the message gives the limit."""

    code = "beyond_limits"


def check_source(info: SourceInfo, settings: Settings, *, size: int | None = None) -> None:
    """Raise BeyondLimits when `info` (of a file of `size` bytes, if known) is past a bound."""
    _check_duration(info.duration, settings.max_duration_seconds)
    _check_pixels(info.width, info.height, settings.max_frame_pixels)
    if info.fps > settings.max_frame_rate:
        raise BeyondLimits(
            f"it claims {info.fps:g} frames per second; the limit is "
            f"{settings.max_frame_rate:g} (MAX_FRAME_RATE): export it at a lower frame rate"
        )
    _check_density(info, size)


def _check_duration(seconds: float, limit: float) -> None:
    if seconds > limit:
        raise BeyondLimits(
            f"it claims to last {_claimed(seconds)}; the limit is {_span(limit)} "
            f"(MAX_DURATION_SECONDS={limit:g}): split it into shorter parts"
        )


def _check_pixels(width: int, height: int, limit: int) -> None:
    if width * height > limit:
        raise BeyondLimits(
            f"its frames are {width}x{height} ({width * height:,} pixels); the limit is "
            f"{limit:,} pixels a frame (MAX_FRAME_PIXELS; 8K is 7680x4320): scale it down"
        )


def _check_density(info: SourceInfo, size: int | None) -> None:
    """Refuse a duration that the file's size, or the bit rate ffprobe read, cannot hold."""
    if size is not None and size < MIN_BYTES_PER_SECOND * info.duration:
        raise _too_sparse(info.duration, f"{size:,} bytes")
    if info.bit_rate is not None and info.bit_rate < MIN_BYTES_PER_SECOND * 8:
        raise _too_sparse(info.duration, f"bit rate of {info.bit_rate} bit/s")


def _too_sparse(seconds: float, held: str) -> BeyondLimits:
    return BeyondLimits(
        f"its header claims it lasts {_claimed(seconds)}, but its {held} cannot hold that "
        f"(under {MIN_BYTES_PER_SECOND} bytes a second): the file is damaged or its header "
        "is wrong; export it again"
    )


def _claimed(seconds: float) -> str:
    """A claimed duration as it is, however absurd: '1,000,000,000,000 s'."""
    return f"{seconds:,.0f} s" if seconds >= 10 else f"{seconds:g} s"


def _span(seconds: float) -> str:
    """A limit as people say it: '12 h', '90 min', '45 s'."""
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    if seconds >= 60:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"
