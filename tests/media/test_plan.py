"""Planning an audio-only source: no ladder, no time chunks, the one audio unit."""

import json
from pathlib import Path

import pytest

from services.core.settings import Settings
from services.media import derived
from services.media.plan import AUDIO_INDEX, AUDIO_ONLY_KBPS, ChunkSpec, Plan, make_plan
from services.media.probe import SourceInfo

PODCAST = SourceInfo(
    duration=3600.0,
    width=0,
    height=0,
    fps=0.0,
    video_codec="",
    audio_codec="mp3",
    format_name="mp3",
    bit_rate=128_000,
)


def settings(tmp_path: Path) -> Settings:
    return Settings(storage_dir=tmp_path)


def test_an_audio_only_source_is_planned_as_its_audio_alone(tmp_path: Path) -> None:
    plan, specs = make_plan(PODCAST, settings(tmp_path))
    assert plan.audio_only and not PODCAST.has_video
    assert plan.renditions == []
    assert plan.audio_kbps == AUDIO_ONLY_KBPS == 160
    assert plan.qualities == ["audio"]
    # An hour of sound is still one unit: no chunk of the timeline for a picture.
    assert specs == [ChunkSpec(AUDIO_INDEX, "audio", 0.0, None)]


def test_an_audio_only_plan_survives_the_json_of_the_job_row(tmp_path: Path) -> None:
    plan, _ = make_plan(PODCAST, settings(tmp_path), codec="hevc")
    stored = Plan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert stored == plan
    assert stored.audio_only and stored.options.fmp4


def test_a_video_plan_offers_its_rungs_highest_first(tmp_path: Path) -> None:
    film = SourceInfo(30.0, 1280, 720, 30.0, "h264", "aac", "mov,mp4,m4a,3gp,3g2,mj2", None)
    plan, specs = make_plan(film, settings(tmp_path))
    assert not plan.audio_only and film.has_video
    assert plan.qualities == ["720p", "480p", "360p"]
    assert [s.kind for s in specs][:2] == ["audio", "video"]


async def test_no_poster_or_storyboard_is_made_for_an_audio_only_video(tmp_path: Path) -> None:
    plan, _ = make_plan(PODCAST, settings(tmp_path))
    video_id = "a" * 32
    hls = tmp_path / "hls" / video_id
    hls.mkdir(parents=True)
    (hls / "master.m3u8").write_text("#EXTM3U\n", encoding="utf-8")
    (hls / ".complete").touch()
    await derived.make_previews(settings(tmp_path), video_id, plan)
    assert sorted(p.name for p in hls.iterdir()) == [".complete", "master.m3u8"]


def test_the_opening_follows_an_ultrafast_ladder_and_keeps_its_own_options_otherwise() -> None:
    from services.media.plan import encode_options

    fast = encode_options(Settings(x264_preset="ultrafast"))
    assert (fast.opening_preset, fast.opening_x264_params) == ("ultrafast", "")
    default = encode_options(Settings())
    assert (default.opening_preset, default.opening_x264_params) == (
        "ultrafast",
        "cabac=1:8x8dct=1:bframes=3:b-adapt=1:aq-mode=1:aq-strength=1.3:vbv-init=1",
    )
    assert default.opening_seconds == Settings().opening_seconds


def test_a_fractional_opening_is_planned_and_recognised_after_a_trip_through_json(
    tmp_path: Path,
) -> None:
    """OPENING_SECONDS=0.5: the opening is [0, 0.5), the grid runs on from 0.5, and a worker
    reading the plan and the chunk back (JSON, the database's floats) knows it for the
    opening."""
    from services.media.chunking import TimeChunk
    from services.media.ffmpeg_args import is_opening

    info = SourceInfo(20.0, 1280, 720, 25.0, "h264", "aac", "mov,mp4,m4a,3gp,3g2,mj2", None)
    plan, specs = make_plan(info, Settings(storage_dir=tmp_path, opening_seconds=0.5))
    video = [(s.start, s.end) for s in specs if s.kind == "video"]
    assert video == [(0.0, 0.5), (0.5, 6.5), (6.5, None)]
    again = Plan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again.options.opening_seconds == 0.5
    opening, after = (TimeChunk(i, s, e) for i, (s, e) in enumerate(video[:2]))
    assert is_opening(opening, again.options)
    assert not is_opening(after, again.options)


@pytest.mark.parametrize(
    ("asked", "hevc"), [(0.5, 1.0), (0.25, 1.0), (0.0, 0.0), (1.0, 1.0), (2.0, 2.0)]
)
def test_the_hevc_ladder_keeps_an_opening_of_a_second_at_least(
    tmp_path: Path, asked: float, hevc: float
) -> None:
    """x265 encodes its opening as the rest of the rung: shorter is worse (see
    plan.codec_opening_seconds), so an HEVC ladder's opening is never under a second; the H.264
    ladder's is what was asked."""
    info = SourceInfo(20.0, 1280, 720, 30.0, "h264", "aac", "mov,mp4,m4a,3gp,3g2,mj2", None)
    settings = Settings(storage_dir=tmp_path, opening_seconds=asked)
    h264, _ = make_plan(info, settings, codec="h264")
    assert h264.options.opening_seconds == asked
    plan, specs = make_plan(info, settings, codec="hevc")
    assert plan.options.opening_seconds == hevc
    video = [(s.start, s.end) for s in specs if s.kind == "video"]
    assert video[0] == ((0.0, hevc) if hevc else (0.0, 6.0))


@pytest.mark.parametrize("seconds", [0.1, 0.24, -1.0, float("nan"), float("inf")])
def test_an_opening_too_short_to_hold_a_few_frames_is_refused_with_what_to_set(
    seconds: float,
) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"(?i)opening_seconds"):
        Settings(opening_seconds=seconds)


def test_the_default_opening_is_half_a_second_and_zero_or_a_quarter_are_allowed() -> None:
    assert Settings().opening_seconds == 0.5
    assert Settings(opening_seconds=0).opening_seconds == 0
    assert Settings(opening_seconds=0.25).opening_seconds == 0.25
    assert Settings(opening_seconds="1.5").opening_seconds == 1.5


def test_the_rate_control_is_the_settings_and_recorded_in_the_plan(tmp_path: Path) -> None:
    info = SourceInfo(
        duration=20.0,
        width=1280,
        height=720,
        fps=30.0,
        video_codec="h264",
        audio_codec="aac",
        format_name="mov,mp4,m4a,3gp,3g2,mj2",
        bit_rate=4_000_000,
    )
    fixed, _ = make_plan(info, settings(tmp_path))
    assert fixed.options.rate_control == "fixed"
    capped = Settings(storage_dir=tmp_path, rate_control="capped-crf", ladder_crf=21)
    plan, _ = make_plan(info, capped)
    assert (plan.options.rate_control, plan.options.crf) == ("capped-crf", 21)
    # A job resumed from its stored plan encodes as it began, whatever the settings now say.
    assert Plan.from_dict(json.loads(json.dumps(plan.to_dict()))).options == plan.options
    # The HEVC ladder keeps fixed rates, and its plan says so.
    hevc, _ = make_plan(info, capped, codec="hevc")
    assert hevc.options.rate_control == "fixed"
    with pytest.raises(ValueError, match="rate_control"):
        Settings(rate_control="crf")


def test_an_opening_in_another_h264_profile_than_the_ladder_is_refused() -> None:
    with pytest.raises(ValueError, match="8x8dct=1 and bframes=3"):
        Settings(opening_x264_preset="ultrafast", opening_x264_params="cabac=1")
