"""Pure chunk planning: cut a source's timeline into chunks that each ffmpeg encodes alone.

Every boundary is a multiple of the segment duration, so a chunk writes whole segments
and its segment numbers follow on from the chunk before it.
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

    def first_segment(self, segment_seconds: int) -> int:
        """The global number of this chunk's first segment."""
        return round(self.start / segment_seconds)


def split_chunks(
    duration: float,
    *,
    segment_seconds: int,
    chunk_segments: int,
    first_chunk_segments: int = 1,
    max_chunks: int = MAX_CHUNKS,
) -> list[TimeChunk]:
    """Chunks covering `duration` seconds: a short first chunk, then `chunk_segments` each.

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
    # A short first chunk finishes early, so the video is playable within seconds.
    starts = [0]
    start = first_chunk_segments * segment_seconds
    step = chunk_segments * segment_seconds
    # Counted before any is cut: the loop below runs once per chunk.
    count = 1 + max(0, math.floor((duration - segment_seconds - start) / step) + 1)
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
