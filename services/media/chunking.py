"""Pure chunk planning: cut a source's timeline into chunks that each ffmpeg encodes alone.

Every boundary lies on the segment grid, so a chunk writes whole segments and its segment
numbers follow on from the chunk before it. The grid is one segment every `segment_seconds`
from 0 or, with a short opening, the opening segment [0, opening) and then one segment every
`segment_seconds` from the opening's end: the opening is a chunk of its own, encoded in a
second or so, and the video plays while the rest is still being encoded (HLS allows a
segment shorter than the target duration).
"""

import math
from dataclasses import dataclass

# The most chunks one plan may have: 12 h (MAX_DURATION_SECONDS' default) cut as finely as the
# settings allow, 1-s segments one per chunk, is 43,200. The bound keeps a plan's cost, and its
# rows, independent of whatever duration a source claims, should a claim ever get past the
# checks before planning.
MAX_CHUNKS = 50_000


@dataclass(frozen=True)
class TimeChunk:
    """One chunk of the source timeline: [start, end) in seconds; end None = to the end."""

    index: int
    start: float
    end: float | None

    def first_segment(self, segment_seconds: int, opening_seconds: float = 0) -> int:
        """The global number of this chunk's first segment (on the grid of `split_chunks`
        with the same `segment_seconds` and `opening_seconds`)."""
        opening = opening_length(segment_seconds, opening_seconds)
        if opening == 0 or self.start < opening:
            return round(self.start / segment_seconds)
        return 1 + round((self.start - opening) / segment_seconds)


def opening_length(segment_seconds: int, opening_seconds: float) -> float:
    """The opening segment's length in seconds (a fraction of one, such as 0.5, is fine), or
    0 when there is no short opening (none asked for, or one no shorter than a whole
    segment)."""
    return opening_seconds if 0 < opening_seconds < segment_seconds else 0


def split_chunks(
    duration: float,
    *,
    segment_seconds: int,
    chunk_segments: int,
    first_chunk_segments: int = 1,
    opening_seconds: float = 0,
    max_chunks: int = MAX_CHUNKS,
) -> list[TimeChunk]:
    """Chunks covering `duration` seconds: the opening (when `opening_seconds` is shorter than
    a segment and the rest is at least a segment long), a short first chunk, then
    `chunk_segments` each.

    ValueError, before any is cut, when there would be more than `max_chunks`.
    """
    for name, value in (
        ("duration", duration),
        ("segment_seconds", segment_seconds),
        ("chunk_segments", chunk_segments),
        ("first_chunk_segments", first_chunk_segments),
    ):
        # "not >" also refuses NaN; an endless duration would never stop cutting.
        if not value > 0 or not math.isfinite(value):
            raise ValueError(f"{name} must be a positive number, not {value!r}")
    if opening_seconds < 0 or not math.isfinite(opening_seconds):
        raise ValueError(f"opening_seconds must be 0 or more, not {opening_seconds!r}")
    # A short first chunk finishes early, so the video is playable within seconds; a short
    # opening before it, sooner still. The opening stands alone only when at least one
    # whole segment follows it (a shorter rest would be a chunk of its own for a sliver).
    opening = opening_length(segment_seconds, opening_seconds)
    if opening and duration - opening < segment_seconds:
        opening = 0
    starts: list[float] = [0.0, opening] if opening else [0.0]
    start = opening + first_chunk_segments * segment_seconds
    step = chunk_segments * segment_seconds
    # Counted before any is cut: the loop below runs once per chunk.
    count = len(starts) + max(0, math.floor((duration - segment_seconds - start) / step) + 1)
    if count > max_chunks:
        raise ValueError(f"{duration:g} s would be {count} chunks, more than {max_chunks}")
    # A remainder shorter than one segment joins the chunk before: a chunk that short would
    # cost a whole ffmpeg start-up for a sliver of video.
    while duration - start >= segment_seconds:
        starts.append(start)
        start += step
    ends: list[float | None] = [float(s) for s in starts[1:]]
    return [
        TimeChunk(index, float(s), end)
        for index, (s, end) in enumerate(zip(starts, [*ends, None], strict=True))
    ]
