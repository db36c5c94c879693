import re

import pytest

from services.media.ladder import SEED_LADDER, Rendition, Rung, plan_ladder


def sizes(renditions: list[Rendition]) -> list[tuple[str, int, int]]:
    return [(r.name, r.width, r.height) for r in renditions]


def test_seed_ladder_matches_the_reference_presets() -> None:
    assert [
        (r.name, r.height, r.video_kbps, r.maxrate_kbps, r.bufsize_kbps, r.audio_kbps)
        for r in SEED_LADDER
    ] == [
        ("1080p", 1080, 5800, 6400, 9600, 192),
        ("720p", 720, 3500, 3900, 5800, 160),
        ("480p", 480, 1600, 1900, 3000, 128),
        ("360p", 360, 900, 1100, 2200, 96),
    ]


def test_full_hd_source_gets_every_rung_highest_first() -> None:
    assert sizes(plan_ladder(1920, 1080)) == [
        ("1080p", 1920, 1080),
        ("720p", 1280, 720),
        ("480p", 854, 480),
        ("360p", 640, 360),
    ]


def test_rung_bitrates_come_from_the_ladder() -> None:
    top = plan_ladder(1920, 1080)[0]
    assert (top.video_kbps, top.maxrate_kbps, top.bufsize_kbps, top.audio_kbps) == (
        5800,
        6400,
        9600,
        192,
    )


def test_rungs_taller_than_the_source_are_skipped() -> None:
    assert [r.name for r in plan_ladder(1280, 720)] == ["720p", "480p", "360p"]


def test_larger_than_top_rung_source_is_scaled_down() -> None:
    assert sizes(plan_ladder(3840, 2160))[0] == ("1080p", 1920, 1080)


def test_portrait_source_is_laddered_by_its_short_side() -> None:
    assert sizes(plan_ladder(1080, 1920)) == [
        ("1080p", 1080, 1920),
        ("720p", 720, 1280),
        ("480p", 480, 854),
        ("360p", 360, 640),
    ]


def test_four_by_three_source_keeps_its_aspect_ratio() -> None:
    assert sizes(plan_ladder(1440, 1080)) == [
        ("1080p", 1440, 1080),
        ("720p", 960, 720),
        ("480p", 640, 480),
        ("360p", 480, 360),
    ]


def test_source_at_the_lowest_rung_gets_only_that_rung() -> None:
    assert sizes(plan_ladder(640, 360)) == [("360p", 640, 360)]


def test_source_below_the_lowest_rung_gets_one_rung_at_its_own_size() -> None:
    (only,) = plan_ladder(320, 240)
    lowest = SEED_LADDER[-1]
    assert (only.name, only.width, only.height) == ("240p", 320, 240)
    assert (only.video_kbps, only.maxrate_kbps, only.bufsize_kbps, only.audio_kbps) == (
        lowest.video_kbps,
        lowest.maxrate_kbps,
        lowest.bufsize_kbps,
        lowest.audio_kbps,
    )


def test_own_size_rung_is_rounded_down_to_even() -> None:
    assert sizes(plan_ladder(321, 241)) == [("240p", 320, 240)]
    assert sizes(plan_ladder(241, 321)) == [("240p", 240, 320)]


def test_sub_100_pixel_source_gets_a_valid_zero_padded_name() -> None:
    assert sizes(plan_ladder(100, 57)) == [("056p", 100, 56)]


@pytest.mark.parametrize(
    "width, height",
    [(1921, 1081), (1918, 1078), (1279, 719), (721, 1281), (853, 481), (1000, 999), (359, 641)],
)
def test_odd_sources_give_even_sizes_with_valid_names(width: int, height: int) -> None:
    for r in plan_ladder(width, height):
        assert r.width % 2 == 0 and r.height % 2 == 0, r
        assert re.fullmatch(r"[0-9]{3,4}p", r.name), r
        assert abs(r.width / r.height - width / height) < 0.01, r


def test_long_side_is_rounded_to_the_nearest_even_number() -> None:
    # 1918 * 720 / 1078 = 1281.04 -> 1282 (nearest even), not 1280 (rounded down).
    assert sizes(plan_ladder(1918, 1078))[0] == ("720p", 1282, 720)


def test_renditions_are_highest_first_whatever_the_ladder_order() -> None:
    shuffled = (SEED_LADDER[2], SEED_LADDER[0], SEED_LADDER[3], SEED_LADDER[1])
    assert [r.name for r in plan_ladder(1920, 1080, shuffled)] == [
        "1080p",
        "720p",
        "480p",
        "360p",
    ]


def test_custom_ladder_is_honoured() -> None:
    ladder = [Rung("540p", 540, 2000, 2200, 4000, 128)]
    assert sizes(plan_ladder(1920, 1080, ladder)) == [("540p", 960, 540)]


def test_degenerate_size_is_refused() -> None:
    with pytest.raises(ValueError):
        plan_ladder(1, 1)
