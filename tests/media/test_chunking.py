import itertools
import math
from typing import Any

import pytest

from services.media.chunking import TimeChunk, split_chunks


def spans(duration: float, **kwargs: Any) -> list[tuple[float, float | None]]:
    options = {"segment_seconds": 2, "chunk_segments": 3} | kwargs
    chunks = split_chunks(duration, **options)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    return [(c.start, c.end) for c in chunks]


def test_first_chunk_is_one_segment_then_chunk_segments_each() -> None:
    assert spans(20) == [(0, 2), (2, 8), (8, 14), (14, None)]


def test_first_chunk_length_can_be_chosen() -> None:
    assert spans(20, first_chunk_segments=2) == [(0, 4), (4, 10), (10, 16), (16, None)]


def test_last_chunk_runs_to_the_end_of_the_source() -> None:
    chunks = split_chunks(100.0, segment_seconds=6, chunk_segments=5)
    assert [c.end for c in chunks].count(None) == 1
    assert chunks[-1].end is None
    assert all(a.end == b.start for a, b in itertools.pairwise(chunks))


def test_a_remainder_shorter_than_one_segment_joins_the_chunk_before() -> None:
    assert spans(14.5) == [(0, 2), (2, 8), (8, None)]
    assert spans(15.99) == [(0, 2), (2, 8), (8, None)]
    # 10.01 s at 30000/1001 fps: the hundredth of a second is not a chunk of its own.
    assert spans(10.01, chunk_segments=2) == [(0, 2), (2, 6), (6, None)]


def test_a_remainder_of_a_whole_segment_is_a_chunk_of_its_own() -> None:
    assert spans(16) == [(0, 2), (2, 8), (8, 14), (14, None)]


def test_source_no_longer_than_the_first_chunk_is_one_chunk() -> None:
    for duration in (0.04, 1.0, 2.0, 3.99):
        assert spans(duration) == [(0, None)]


def test_boundaries_are_multiples_of_the_segment_duration() -> None:
    chunks = split_chunks(3600.0, segment_seconds=6, chunk_segments=10, first_chunk_segments=1)
    assert all(c.start % 6 == 0 for c in chunks)
    assert [c.start for c in chunks[:3]] == [0, 6, 66]
    assert len(chunks) == 1 + math.ceil((3600 - 6) / 60)


def test_first_segment_counts_segments_before_the_chunk() -> None:
    chunks = split_chunks(20, segment_seconds=2, chunk_segments=3)
    assert [c.first_segment(2) for c in chunks] == [0, 1, 4, 7]
    assert TimeChunk(index=5, start=66.0, end=None).first_segment(6) == 11


@pytest.mark.parametrize(
    "duration, options",
    [
        (0, {}),
        (-1, {}),
        (math.nan, {}),
        (math.inf, {}),
        (10, {"segment_seconds": 0}),
        (10, {"chunk_segments": 0}),
        (10, {"first_chunk_segments": -1}),
    ],
)
def test_arguments_must_be_positive(duration: float, options: dict[str, int]) -> None:
    arguments = {"segment_seconds": 2, "chunk_segments": 3} | options
    with pytest.raises(ValueError):
        split_chunks(duration, **arguments)


# ---- the short opening -------------------------------------------------------------------


def test_a_short_opening_is_a_chunk_of_its_own_and_the_grid_runs_on_from_its_end() -> None:
    chunks = split_chunks(
        40, segment_seconds=6, chunk_segments=3, first_chunk_segments=1, opening_seconds=2
    )
    assert [(c.start, c.end) for c in chunks] == [(0, 2), (2, 8), (8, 26), (26, None)]
    assert [c.first_segment(6, 2) for c in chunks] == [0, 1, 2, 5]


def test_a_fractional_opening_is_a_chunk_of_its_own_and_numbering_runs_on() -> None:
    chunks = split_chunks(
        40, segment_seconds=6, chunk_segments=3, first_chunk_segments=1, opening_seconds=0.5
    )
    assert [(c.start, c.end) for c in chunks] == [(0, 0.5), (0.5, 6.5), (6.5, 24.5), (24.5, None)]
    assert [c.first_segment(6, 0.5) for c in chunks] == [0, 1, 2, 5]
    # The same rule for what stands alone: a whole segment must follow it.
    assert spans(6.4, segment_seconds=6, opening_seconds=0.5) == [(0, None)]
    assert spans(6.5, segment_seconds=6, opening_seconds=0.5) == [(0, 0.5), (0.5, None)]


def test_an_opening_no_shorter_than_a_segment_is_no_opening() -> None:
    for opening in (0, 2, 3):
        assert spans(20, opening_seconds=opening) == spans(20)


def test_the_opening_stands_alone_only_before_a_whole_segment() -> None:
    # 2 s + 5.9 s: the rest is shorter than a segment, so the video is one chunk.
    assert spans(7.9, segment_seconds=6, opening_seconds=2) == [(0, None)]
    assert spans(8, segment_seconds=6, opening_seconds=2) == [(0, 2), (2, None)]


def test_first_segment_without_an_opening_ignores_the_opening_argument() -> None:
    # An opening as long as a segment is none: numbering is by whole segments.
    assert TimeChunk(index=3, start=18.0, end=None).first_segment(6, 6) == 3
    assert TimeChunk(index=3, start=18.0, end=None).first_segment(6, 0) == 3


def test_a_negative_opening_is_refused() -> None:
    with pytest.raises(ValueError, match="opening_seconds"):
        split_chunks(20, segment_seconds=6, chunk_segments=3, opening_seconds=-1)
