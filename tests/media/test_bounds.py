"""Bounds from a source's own facts: duration, pixels a frame, frame rate, and bytes enough for
the duration its header claims. Pure, plus the real duration bomb through ffprobe."""

from dataclasses import replace
from pathlib import Path

import pytest

from services.core.settings import Settings
from services.media.bounds import MIN_BYTES_PER_SECOND, BeyondLimits, check_source
from services.media.chunking import split_chunks
from services.media.plan import make_plan
from services.media.probe import SourceInfo, probe
from tests.clips import make_duration_bomb

DEFAULTS = Settings()
# A two-hour 4K60 film of 20 GB: well inside every bound.
FILM = SourceInfo(
    duration=7200.0,
    width=3840,
    height=2160,
    fps=60.0,
    video_codec="hevc",
    audio_codec="aac",
    format_name="mov,mp4,m4a,3gp,3g2,mj2",
    bit_rate=22_000_000,
)
FILM_BYTES = 20 * 1024**3


def source(**changes: object) -> SourceInfo:
    return replace(FILM, **changes)  # type: ignore[arg-type]


def refusal(info: SourceInfo, settings: Settings = DEFAULTS, size: int | None = FILM_BYTES) -> str:
    with pytest.raises(BeyondLimits) as caught:
        check_source(info, settings, size=size)
    assert caught.value.status == 422 and caught.value.code == "beyond_limits"
    return caught.value.detail


def test_the_defaults_are_12_hours_8k_and_240_fps() -> None:
    assert DEFAULTS.max_duration_seconds == 12 * 3600
    assert DEFAULTS.max_frame_pixels == 7680 * 4320
    assert DEFAULTS.max_frame_rate == 240


def test_a_long_4k60_film_is_within_every_bound() -> None:
    check_source(source(), DEFAULTS, size=FILM_BYTES)


def test_twelve_hours_are_accepted_and_a_second_more_is_refused_with_the_limit() -> None:
    check_source(source(duration=12 * 3600.0), DEFAULTS, size=FILM_BYTES)
    detail = refusal(source(duration=12 * 3600.0 + 1))
    assert "43,201 s" in detail and "12 h" in detail and "MAX_DURATION_SECONDS" in detail


def test_the_duration_limit_is_a_setting() -> None:
    detail = refusal(source(duration=91.0), Settings(max_duration_seconds=90))
    assert "the limit is 1.5 min" in detail


@pytest.mark.parametrize(("width", "height"), [(7680, 4320), (4320, 7680), (8192, 4050)])
def test_8k_frames_either_way_up_are_accepted(width: int, height: int) -> None:
    check_source(source(width=width, height=height), DEFAULTS, size=FILM_BYTES)


def test_a_frame_over_8k_is_refused_with_the_limit() -> None:
    detail = refusal(source(width=7680, height=4322))
    assert "7680x4322" in detail and "33,177,600 pixels" in detail
    assert "MAX_FRAME_PIXELS" in detail


def test_240_fps_is_accepted_and_more_is_refused_with_the_limit() -> None:
    check_source(source(fps=240.0), DEFAULTS, size=FILM_BYTES)
    detail = refusal(source(fps=1000.0))
    assert "1000 frames per second" in detail and "240 (MAX_FRAME_RATE)" in detail


def test_a_duration_the_files_bytes_cannot_hold_is_refused() -> None:
    # 5 KB claiming ten hours: 0.14 bytes a second.
    detail = refusal(source(duration=36_000.0, bit_rate=None), size=5_000)
    assert "5,000 bytes cannot hold" in detail and "36,000 s" in detail


def test_a_sparse_but_real_file_is_accepted() -> None:
    # The sparsest real encoding measured (1 fps black, no sound) is 18 B/s; far above the floor.
    hour = 3600.0
    check_source(source(duration=hour, bit_rate=18 * 8), DEFAULTS, size=18 * 3600)
    assert MIN_BYTES_PER_SECOND * 9 <= 18


def test_a_bit_rate_too_low_for_any_recording_is_refused_without_the_size() -> None:
    detail = refusal(source(duration=600.0, bit_rate=8), size=None)
    assert "bit rate of 8 bit/s cannot hold" in detail


def test_planning_refuses_a_claim_past_the_bound_before_cutting_anything() -> None:
    with pytest.raises(BeyondLimits, match="MAX_DURATION_SECONDS"):
        make_plan(source(duration=1e12), DEFAULTS)


def test_chunks_are_counted_before_they_are_cut() -> None:
    with pytest.raises(ValueError, match="more than"):
        split_chunks(1e12, segment_seconds=2, chunk_segments=2)


@pytest.mark.parametrize("duration", [0.5, 2.0, 3.9, 4.0, 5.99, 6.0, 100.0, 43_200.0])
def test_the_count_bound_is_exact(duration: float) -> None:
    options = {"segment_seconds": 2, "chunk_segments": 2}
    count = len(split_chunks(duration, **options))
    assert len(split_chunks(duration, max_chunks=count, **options)) == count
    with pytest.raises(ValueError):
        split_chunks(duration, max_chunks=count - 1, **options)


def test_twelve_hours_plan_within_the_chunk_bound_at_the_finest_settings() -> None:
    finest = Settings(segment_seconds=1, chunk_segments=1, first_chunk_segments=1)
    _, chunks = make_plan(source(duration=12 * 3600.0), finest)
    assert len(chunks) == 12 * 3600 + 1  # the audio, then one chunk a second


# --- the real bomb --------------------------------------------------------------------------


def test_the_duration_bomb_probes_as_ten_to_the_twelve_seconds_and_is_refused(
    tmp_path: Path,
) -> None:
    bomb = make_duration_bomb(tmp_path / "bomb.mkv", claimed_ms=1e15)
    info = probe(bomb)
    assert info.duration == pytest.approx(1e12)
    detail = refusal(info, size=bomb.stat().st_size)
    assert "1,000,000,000,000 s" in detail and "12 h" in detail


def test_a_small_file_claiming_ten_hours_is_refused_for_its_size(tmp_path: Path) -> None:
    bomb = make_duration_bomb(tmp_path / "ten-hours.mkv", claimed_ms=36e6)
    info = probe(bomb)
    assert info.duration == pytest.approx(36_000)
    detail = refusal(info, size=bomb.stat().st_size)
    assert "cannot hold" in detail
