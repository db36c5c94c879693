"""The HEVC ladder's argv and plan: libx265 in fMP4 on the H.264 ladder's time grid."""

from dataclasses import asdict, replace
from pathlib import Path

import pytest

from services.core import layout
from services.core.settings import Settings
from services.media.chunking import TimeChunk
from services.media.ffmpeg_args import H264, HEVC, EncodeOptions, audio_command, video_chunk_command
from services.media.ladder import plan_ladder
from services.media.plan import HEVC_BITRATE_SHARE, Plan, encode_options, make_plan
from services.media.probe import SourceInfo
from tests.media.test_ffmpeg_args import OUT, RUNGS, SOURCE, values_of

MIDDLE = TimeChunk(index=2, start=6.0, end=18.0)
HEVC_OPTIONS = EncodeOptions(segment_seconds=6, codec=HEVC, x265_preset="superfast")


def source_info(*, fps: float = 30.0, audio: bool = True) -> SourceInfo:
    return SourceInfo(
        duration=30.0,
        width=1920,
        height=1080,
        fps=fps,
        video_codec="h264",
        audio_codec="aac" if audio else None,
        format_name="mov,mp4,m4a,3gp,3g2,mj2",
        bit_rate=8_000_000,
    )


def command(options: EncodeOptions = HEVC_OPTIONS, *, fps: float = 30.0) -> list[str]:
    info = source_info(fps=fps)
    return video_chunk_command(
        ffmpeg="ffmpeg",
        source=SOURCE,
        info=info,
        renditions=plan_ladder(info.width, info.height),
        out_dir=OUT,
        options=options,
        chunk=MIDDLE,
    )


def audio(options: EncodeOptions = HEVC_OPTIONS) -> list[str]:
    return audio_command(
        ffmpeg="ffmpeg", source=SOURCE, audio_kbps=128, out_dir=OUT, options=options
    )


# ---- video chunks ----------------------------------------------------------------------


def test_hevc_rungs_are_x265_tagged_hvc1() -> None:
    argv = command()
    assert values_of(argv, "-c:v") == ["libx265"] * 4
    assert values_of(argv, "-tag:v") == ["hvc1"] * 4
    assert values_of(argv, "-preset") == ["superfast"] * 4
    assert values_of(argv, "-profile:v") == ["main"] * 4
    assert "libx264" not in argv


def test_hevc_keyframes_follow_the_same_time_grid_as_h264() -> None:
    argv = command(fps=29.97)
    params = values_of(argv, "-x265-params")
    assert params == ["keyint=60:min-keyint=60:scenecut=0:open-gop=0:log-level=error"] * 4
    assert values_of(argv, "-force_key_frames") == ["expr:gte(t,n_forced*2)"] * 4
    assert values_of(argv, "-forced-idr") == ["1"] * 4
    h264 = command(EncodeOptions(segment_seconds=6), fps=29.97)
    assert values_of(argv, "-force_key_frames") == values_of(h264, "-force_key_frames")


def test_hevc_chunks_keep_the_h264_timeline_and_numbering() -> None:
    hevc, h264 = command(), command(EncodeOptions(segment_seconds=6))
    for flag in ("-ss", "-t", "-output_ts_offset", "-start_number", "-fps_mode", "-hls_time"):
        assert values_of(hevc, flag) == values_of(h264, flag), flag


def test_hevc_segments_are_fmp4_with_an_init_segment_per_chunk() -> None:
    argv = command()
    assert values_of(argv, "-hls_segment_type") == ["fmp4"] * 4
    assert values_of(argv, "-hls_fmp4_init_filename") == ["init_00002.mp4"] * 4
    assert layout.chunk_init(2) == "init_00002.mp4"
    assert values_of(argv, "-hls_segment_filename") == [f"{OUT}/{r}/seg_%05d.m4s" for r in RUNGS]
    # The fragments' decode times carry the chunk offset (instead of an edit list).
    assert values_of(argv, "-hls_segment_options") == ["movflags=+frag_discont"] * 4


def test_x265_gets_the_thread_cap_as_a_pool_size() -> None:
    argv = command(EncodeOptions(codec=HEVC, threads=2))
    assert all(p.endswith(":pools=2") for p in values_of(argv, "-x265-params"))


def test_an_unknown_codec_is_refused() -> None:
    with pytest.raises(ValueError, match="vp9"):
        command(EncodeOptions(codec="vp9"))


def test_h264_chunks_stay_mpegts_without_fmp4_options() -> None:
    argv = command(EncodeOptions(segment_seconds=6))
    assert values_of(argv, "-hls_segment_type") == ["mpegts"] * 4
    assert not {"-hls_fmp4_init_filename", "-hls_segment_options", "-tag:v"} & set(argv)
    assert values_of(argv, "-hls_segment_filename") == [f"{OUT}/{r}/seg_%05d.ts" for r in RUNGS]


# ---- audio -----------------------------------------------------------------------------


def test_the_audio_of_an_hevc_ladder_is_fmp4_aac() -> None:
    argv = audio()
    assert values_of(argv, "-c:a") == ["aac"]
    assert values_of(argv, "-hls_segment_type") == ["fmp4"]
    assert values_of(argv, "-hls_fmp4_init_filename") == [layout.AUDIO_RUN_INIT]
    assert values_of(argv, "-hls_segment_filename") == [f"{OUT}/audio/seg_%05d.m4s"]
    assert values_of(argv, "-output_ts_offset") == values_of(
        audio(EncodeOptions(segment_seconds=6)), "-output_ts_offset"
    )


def test_the_audio_of_an_h264_ladder_stays_mpegts() -> None:
    argv = audio(EncodeOptions(segment_seconds=6))
    assert values_of(argv, "-hls_segment_type") == ["mpegts"]
    assert "-hls_fmp4_init_filename" not in argv


# ---- the plan --------------------------------------------------------------------------


def settings(**values: object) -> Settings:
    return Settings(storage_dir=Path("/srv"), **values)  # type: ignore[arg-type]


def test_hevc_plan_keeps_the_sizes_at_60_percent_of_the_bit_rates() -> None:
    h264, _ = make_plan(source_info(), settings())
    hevc, specs = make_plan(source_info(), settings(), codec=HEVC)
    assert hevc.options.codec == HEVC and h264.options.codec == H264
    assert [(r.name, r.width, r.height) for r in hevc.renditions] == [
        (r.name, r.width, r.height) for r in h264.renditions
    ]
    assert HEVC_BITRATE_SHARE == 0.6
    assert [r.video_kbps for r in hevc.renditions] == [3480, 2100, 960, 540]
    assert [r.maxrate_kbps for r in hevc.renditions] == [3840, 2340, 1140, 660]
    # The audio is not H.265's business: same AAC rate for both ladders.
    assert hevc.audio_kbps == h264.audio_kbps == 160
    # The same time grid as an H.264 ladder with the HEVC ladder's one-second opening (see
    # plan.codec_opening_seconds).
    assert specs == make_plan(source_info(), settings(opening_seconds=1))[1]


def test_default_codec_setting_picks_the_ladder_when_the_upload_does_not() -> None:
    plan, _ = make_plan(source_info(), settings(default_codec="hevc"))
    assert plan.options.codec == HEVC
    plan, _ = make_plan(source_info(), settings(default_codec="hevc"), codec=H264)
    assert plan.options.codec == H264


def test_x265_preset_comes_from_its_setting() -> None:
    options = encode_options(settings(x265_preset="superfast"), HEVC)
    assert (options.codec, options.x265_preset, options.preset) == (HEVC, "superfast", "veryfast")


def test_an_unknown_codec_cannot_be_planned() -> None:
    with pytest.raises(ValueError, match="av1"):
        make_plan(source_info(), settings(), codec="av1")
    with pytest.raises(ValueError):
        settings(default_codec="av1")


def test_the_codec_survives_the_plans_json_and_old_plans_read_as_h264() -> None:
    plan, _ = make_plan(source_info(), settings(), codec=HEVC)
    assert Plan.from_dict(plan.to_dict()) == plan
    stored = plan.to_dict()
    # A plan stored before the codec existed.
    old = {**stored, "options": {k: v for k, v in asdict(plan.options).items() if "x265" not in k}}
    del old["options"]["codec"]
    assert Plan.from_dict(old).options.codec == H264


def test_an_hlg_source_is_tone_mapped_and_tagged_bt709_on_the_hevc_ladder_too() -> None:
    info = replace(source_info(), color_transfer="arib-std-b67", color_primaries="bt2020")
    argv = video_chunk_command(
        ffmpeg="ffmpeg",
        source=SOURCE,
        info=info,
        renditions=plan_ladder(info.width, info.height),
        out_dir=OUT,
        options=HEVC_OPTIONS,
        chunk=MIDDLE,
    )
    (graph,) = values_of(argv, "-filter_complex")
    assert "tonemap=mobius" in graph
    assert values_of(argv, "-profile:v") == ["main"] * 4
    assert values_of(argv, "-color_trc") == ["bt709"] * 4
