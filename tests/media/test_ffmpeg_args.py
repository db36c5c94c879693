from pathlib import Path

from services.media.ffmpeg_args import EncodeOptions, ladder_command
from services.media.ladder import plan_ladder
from services.media.probe import SourceInfo

OUT = Path("/srv/hls/abc")


def source_info(*, fps: float = 30.0, audio: bool = True) -> SourceInfo:
    return SourceInfo(
        duration=10.0,
        width=1920,
        height=1080,
        fps=fps,
        video_codec="h264",
        audio_codec="aac" if audio else None,
        format_name="mov,mp4,m4a,3gp,3g2,mj2",
        bit_rate=8_000_000,
    )


def command(
    *,
    source: Path = Path("/srv/originals/abc/source"),
    info: SourceInfo | None = None,
    out_dir: Path = OUT,
    options: EncodeOptions | None = None,
) -> list[str]:
    info = info or source_info()
    return ladder_command(
        ffmpeg="ffmpeg",
        source=source,
        info=info,
        renditions=plan_ladder(info.width, info.height),
        out_dir=out_dir,
        options=options or EncodeOptions(),
    )


def values_of(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == flag]


def test_source_is_read_once_through_a_single_input() -> None:
    argv = command()
    assert argv.count("-i") == 1
    assert values_of(argv, "-i") == ["/srv/originals/abc/source"]


def test_source_path_beginning_with_a_dash_still_follows_dash_i() -> None:
    argv = command(source=Path("-evil.mp4"))
    (path,) = values_of(argv, "-i")
    assert Path(path).is_absolute()
    assert path.endswith("/-evil.mp4")
    assert "-evil.mp4" not in argv


def test_filter_graph_splits_once_and_scales_per_rendition() -> None:
    (graph,) = values_of(command(), "-filter_complex")
    assert graph.startswith("[0:v:0]split=4[s0][s1][s2][s3];")
    for i, size in enumerate(["1920:1080", "1280:720", "854:480", "640:360"]):
        assert f"[s{i}]scale={size},setsar=1,format=yuv420p[v{i}]" in graph
    assert "fps=" not in graph


def test_frame_rate_is_capped_only_above_60() -> None:
    (graph,) = values_of(command(info=source_info(fps=120)), "-filter_complex")
    assert graph.startswith("[0:v:0]fps=60,split=4")
    assert values_of(command(info=source_info(fps=120)), "-g") == ["120"] * 4
    (graph,) = values_of(command(info=source_info(fps=60)), "-filter_complex")
    assert "fps=" not in graph


def test_one_hls_output_per_rendition_in_its_own_folder() -> None:
    argv = command()
    assert values_of(argv, "-f") == ["hls"] * 4
    assert values_of(argv, "-hls_segment_filename") == [
        f"{OUT}/{name}/seg_%05d.ts" for name in ("1080p", "720p", "480p", "360p")
    ]
    playlists = [arg for arg in argv if arg.endswith("playlist.m3u8")]
    assert playlists == [
        f"{OUT}/{name}/playlist.m3u8" for name in ("1080p", "720p", "480p", "360p")
    ]
    assert values_of(argv, "-map")[::2] == ["[v0]", "[v1]", "[v2]", "[v3]"]


def test_hls_options_follow_the_encode_options() -> None:
    argv = command(options=EncodeOptions(segment_seconds=4))
    assert values_of(argv, "-hls_time") == ["4"] * 4
    assert values_of(argv, "-hls_playlist_type") == ["vod"] * 4
    assert values_of(argv, "-hls_flags") == ["independent_segments"] * 4
    assert values_of(argv, "-hls_segment_type") == ["mpegts"] * 4


def test_keyframes_are_forced_by_time_without_scene_cuts() -> None:
    argv = command(info=source_info(fps=29.97), options=EncodeOptions(keyframe_seconds=2))
    assert values_of(argv, "-force_key_frames") == ["expr:gte(t,n_forced*2)"] * 4
    assert values_of(argv, "-sc_threshold") == ["0"] * 4
    # ceil(2 s * 29.97 fps) = 60 frames: the GOP never outlasts the forced interval.
    assert values_of(argv, "-g") == ["60"] * 4
    assert values_of(argv, "-keyint_min") == ["60"] * 4


def test_gop_follows_the_frame_rate() -> None:
    argv = command(info=source_info(fps=25), options=EncodeOptions(keyframe_seconds=2))
    assert values_of(argv, "-g") == ["50"] * 4


def test_video_encoder_settings_come_from_each_rendition() -> None:
    argv = command(options=EncodeOptions(preset="ultrafast"))
    assert values_of(argv, "-c:v") == ["libx264"] * 4
    assert values_of(argv, "-preset") == ["ultrafast"] * 4
    assert values_of(argv, "-profile:v") == ["high"] * 4
    assert values_of(argv, "-pix_fmt") == ["yuv420p"] * 4
    assert values_of(argv, "-b:v") == ["5800k", "3500k", "1600k", "900k"]
    assert values_of(argv, "-maxrate") == ["6400k", "3900k", "1900k", "1100k"]
    assert values_of(argv, "-bufsize") == ["9600k", "5800k", "3000k", "2200k"]


def test_each_rung_muxes_its_own_stereo_aac() -> None:
    argv = command()
    assert values_of(argv, "-map")[1::2] == ["0:a:0"] * 4
    assert values_of(argv, "-c:a") == ["aac"] * 4
    assert values_of(argv, "-b:a") == ["192k", "160k", "128k", "96k"]
    assert values_of(argv, "-ac") == ["2"] * 4
    assert values_of(argv, "-ar") == ["48000"] * 4


def test_source_without_audio_maps_no_audio() -> None:
    argv = command(info=source_info(audio=False))
    assert "0:a:0" not in argv
    assert not {"-c:a", "-b:a", "-ac", "-ar"} & set(argv)
    assert values_of(argv, "-map") == ["[v0]", "[v1]", "[v2]", "[v3]"]


def test_global_options_make_ffmpeg_quiet_and_machine_readable() -> None:
    argv = command()
    head = argv[: argv.index("-i")]
    assert head[0] == "ffmpeg"
    for flag in ("-hide_banner", "-nostdin", "-y", "-nostats"):
        assert flag in head
    assert values_of(head, "-progress") == ["pipe:1"]
    assert values_of(head, "-loglevel") == ["error"]


def test_threads_are_set_only_when_asked_for() -> None:
    assert "-threads" not in command()
    argv = command(options=EncodeOptions(threads=2))
    assert set(values_of(argv, "-threads")) == {"2"}
    assert argv.index("-threads") < argv.index("-i")


def test_percent_in_the_output_folder_is_not_a_segment_pattern() -> None:
    argv = command(out_dir=Path("/srv/100%/abc"))
    assert values_of(argv, "-hls_segment_filename")[0] == "/srv/100%%/abc/1080p/seg_%05d.ts"


def test_every_argument_is_a_string() -> None:
    assert all(isinstance(arg, str) for arg in command())
