import re
from dataclasses import replace
from pathlib import Path

import pytest

from services.core import layout
from services.media.chunking import TimeChunk
from services.media.ffmpeg_args import (
    CAPPED_CRF,
    MAX_AUDIO_KBPS,
    TS_OFFSET_SECONDS,
    EncodeOptions,
    audio_bitrate,
    audio_command,
    chunk_ts_offset,
    filter_graph,
    video_chunk_command,
)
from services.media.ladder import Rendition, Rung, plan_ladder
from services.media.probe import SourceInfo

OUT = Path("/srv/hls/abc")
SOURCE = Path("/srv/originals/abc/source")
RUNGS = ("1080p", "720p", "480p", "360p")
MIDDLE = TimeChunk(index=2, start=6.0, end=18.0)
LAST = TimeChunk(index=3, start=18.0, end=None)


def source_info(*, fps: float = 30.0) -> SourceInfo:
    return SourceInfo(
        duration=30.0,
        width=1920,
        height=1080,
        fps=fps,
        video_codec="h264",
        audio_codec="aac",
        format_name="mov,mp4,m4a,3gp,3g2,mj2",
        bit_rate=8_000_000,
    )


def command(
    *,
    chunk: TimeChunk = MIDDLE,
    source: Path = SOURCE,
    info: SourceInfo | None = None,
    out_dir: Path = OUT,
    options: EncodeOptions | None = None,
) -> list[str]:
    info = info or source_info()
    return video_chunk_command(
        ffmpeg="ffmpeg",
        source=source,
        info=info,
        renditions=plan_ladder(info.width, info.height),
        out_dir=out_dir,
        options=options or EncodeOptions(segment_seconds=6),
        chunk=chunk,
    )


def audio(*, options: EncodeOptions | None = None, source: Path = SOURCE) -> list[str]:
    return audio_command(
        ffmpeg="ffmpeg",
        source=source,
        audio_kbps=128,
        out_dir=OUT,
        options=options or EncodeOptions(segment_seconds=6),
    )


def values_of(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == flag]


def before_input(argv: list[str]) -> list[str]:
    return argv[: argv.index("-i")]


# ---- video chunks ----------------------------------------------------------------------


def test_chunk_seeks_and_limits_its_input_before_dash_i() -> None:
    head = before_input(command())
    assert values_of(head, "-ss") == ["6.000000"]
    assert values_of(head, "-t") == ["12.000000"]
    assert command().count("-ss") == 1 and command().count("-t") == 1


def test_last_chunk_reads_to_the_end_of_the_source() -> None:
    argv = command(chunk=LAST)
    assert values_of(before_input(argv), "-ss") == ["18.000000"]
    assert "-t" not in argv


def test_seconds_are_written_without_an_exponent() -> None:
    argv = command(chunk=TimeChunk(index=1, start=0.00001, end=123456789.0))
    assert values_of(argv, "-ss") == ["0.000010"]
    assert values_of(argv, "-t") == ["123456788.999990"]
    assert not any(re.search(r"\d[eE][+-]\d", arg) for arg in argv)


def test_source_is_read_once_through_a_single_absolute_input() -> None:
    argv = command(source=Path("-evil.mp4"))
    (path,) = values_of(argv, "-i")
    assert Path(path).is_absolute() and path.endswith("/-evil.mp4")
    assert "-evil.mp4" not in argv


def test_filter_graph_scales_the_top_two_rungs_from_the_source_and_the_rest_from_the_second() -> (
    None
):
    (graph,) = values_of(command(chunk=LAST), "-filter_complex")
    assert graph.split(";") == [
        "[0:v:0]split=2[s0][s1]",
        "[s0]scale=1920:1080,setsar=1,format=yuv420p[v0]",
        "[s1]scale=1280:720,setsar=1,format=yuv420p,split=3[v1][t2][t3]",
        "[t2]scale=854:480,setsar=1,format=yuv420p[v2]",
        "[t3]scale=640:360,setsar=1,format=yuv420p[v3]",
    ]
    assert "fps=" not in graph


@pytest.mark.parametrize(
    ("sizes", "split"),
    [
        ([(1280, 720)], "split=1[s0]"),
        ([(1280, 720), (854, 480)], "split=2[s0][s1]"),
        ([(1920, 1080), (1280, 720), (1280, 720)], "split=2[s0][s1]"),
        # A rung after the second that is larger than it in either way comes from the source.
        ([(1920, 1080), (640, 720), (854, 480)], "split=3[s0][s1][s2]"),
    ],
)
def test_every_rung_is_scaled_from_a_picture_at_least_its_size(sizes, split) -> None:
    renditions = [Rendition(f"r{i}", w, h, 900, 1100, 2200, 96) for i, (w, h) in enumerate(sizes)]
    graph = filter_graph(source_info(), renditions)
    assert graph.split(";")[0] == f"[0:v:0]{split}"
    chains = graph.split(";")
    for i, (w, h) in enumerate(sizes):
        (made,) = [c for c in chains if f"[v{i}]" in c]  # each output made once
        assert f"scale={w}:{h},setsar=1,format=yuv420p" in made


def test_a_chunk_keeps_the_frames_before_its_end_counted_from_its_start() -> None:
    # -t counts from the chunk's first frame; trim's end from the start the -ss sought.
    (graph,) = values_of(command(chunk=MIDDLE), "-filter_complex")
    assert graph.startswith("[0:v:0]trim=end=12.000000,split=2")
    (graph,) = values_of(command(chunk=LAST), "-filter_complex")
    assert "trim" not in graph


def test_frame_rate_is_capped_only_above_60() -> None:
    argv = command(info=source_info(fps=120))
    (graph,) = values_of(argv, "-filter_complex")
    assert graph.startswith("[0:v:0]trim=end=12.000000,fps=60,split=2")
    assert values_of(argv, "-g") == ["120"] * 4
    (graph,) = values_of(command(info=source_info(fps=60)), "-filter_complex")
    assert "fps=" not in graph


def test_chunks_carry_video_only() -> None:
    argv = command()
    assert values_of(argv, "-map") == ["[v0]", "[v1]", "[v2]", "[v3]"]
    assert argv.count("-an") == 4
    assert not {"-c:a", "-b:a", "0:a:0"} & set(argv)


def test_each_rung_writes_its_chunk_playlist_and_global_segments_in_its_folder() -> None:
    argv = command()
    assert values_of(argv, "-f") == ["hls"] * 4
    assert values_of(argv, "-hls_segment_filename") == [f"{OUT}/{r}/seg_%05d.ts" for r in RUNGS]
    playlists = [arg for arg in argv if arg.endswith(".m3u8")]
    assert playlists == [f"{OUT}/{r}/chunk_00002.m3u8" for r in RUNGS]
    assert argv[-1] == f"{OUT}/360p/chunk_00002.m3u8"


def test_segment_numbers_continue_from_the_chunks_before() -> None:
    assert values_of(command(), "-start_number") == ["1"] * 4  # 6 s / 6 s segments
    two_second = EncodeOptions(segment_seconds=2)
    assert values_of(command(chunk=LAST, options=two_second), "-start_number") == ["9"] * 4


def test_timestamps_are_offset_to_the_chunk_start_plus_ten_seconds() -> None:
    assert TS_OFFSET_SECONDS == 10
    assert values_of(command(), "-output_ts_offset") == ["16.000000"] * 4
    first = TimeChunk(index=0, start=0.0, end=2.0)
    assert values_of(command(chunk=first), "-output_ts_offset") == ["10.000000"] * 4


def test_offset_is_the_chunk_start_at_any_frame_rate() -> None:
    # The encoder's clock is 90 kHz: a frame keeps its time after the start, no grid snap.
    argv = command(info=source_info(fps=30000 / 1001))
    assert values_of(argv, "-output_ts_offset") == ["16.000000"] * 4
    assert chunk_ts_offset(LAST) == 28.0


def test_frames_keep_their_times_instead_of_being_duplicated() -> None:
    assert values_of(command(), "-fps_mode") == ["vfr"] * 4


def test_the_encoder_clock_is_90_khz_not_one_tick_a_frame() -> None:
    assert values_of(command(), "-enc_time_base") == ["1:90000"] * 4


def test_hls_options_follow_the_encode_options() -> None:
    argv = command(options=EncodeOptions(segment_seconds=4))
    assert values_of(argv, "-hls_time") == ["4"] * 4
    assert values_of(argv, "-hls_playlist_type") == ["vod"] * 4
    assert values_of(argv, "-hls_flags") == ["independent_segments+temp_file"] * 4
    assert values_of(argv, "-hls_segment_type") == ["mpegts"] * 4
    assert values_of(argv, "-max_muxing_queue_size") == ["1024"] * 4


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


def test_x264_options_split_between_the_top_rung_and_the_rest() -> None:
    options = EncodeOptions(x264_params="me=dia", x264_lower_params="me=dia:subme=1")
    argv = command(options=options)
    assert (
        values_of(argv, "-x264-params")
        == ["me=dia:force-cfr=1"] + ["me=dia:subme=1:force-cfr=1"] * 3
    )


def test_no_x264_options_leaves_the_preset_alone_but_declares_the_frame_rate() -> None:
    assert values_of(command(options=EncodeOptions()), "-x264-params") == ["force-cfr=1"] * 4


def test_global_options_make_ffmpeg_quiet_and_machine_readable() -> None:
    for argv in (command(), audio()):
        head = before_input(argv)
        assert head[0] == "ffmpeg"
        for flag in ("-hide_banner", "-nostdin", "-y", "-nostats"):
            assert flag in head
        assert values_of(head, "-progress") == ["pipe:1"]
        assert values_of(head, "-loglevel") == ["error"]


def test_threads_are_set_only_when_asked_for() -> None:
    assert "-threads" not in command() + audio()
    for argv in (
        command(options=EncodeOptions(threads=2)),
        audio(options=EncodeOptions(threads=2)),
    ):
        assert set(values_of(argv, "-threads")) == {"2"}
        assert argv.index("-threads") < argv.index("-i")


def test_percent_in_the_output_folder_is_not_a_segment_pattern() -> None:
    argv = command(out_dir=Path("/srv/100%/abc"))
    assert values_of(argv, "-hls_segment_filename")[0] == "/srv/100%%/abc/1080p/seg_%05d.ts"


def test_every_argument_is_a_string() -> None:
    assert all(isinstance(arg, str) for arg in command() + command(chunk=LAST) + audio())


def test_a_chunk_needs_a_rendition() -> None:
    with pytest.raises(ValueError):
        video_chunk_command(
            ffmpeg="ffmpeg",
            source=SOURCE,
            info=source_info(),
            renditions=[],
            out_dir=OUT,
            options=EncodeOptions(),
            chunk=LAST,
        )


def test_chunk_playlist_names_are_zero_padded() -> None:
    assert layout.chunk_playlist(3) == "chunk_00003.m3u8"
    assert layout.chunk_playlist(12345) == "chunk_12345.m3u8"


# ---- audio -----------------------------------------------------------------------------


def test_audio_is_the_whole_first_audio_stream_as_stereo_aac() -> None:
    argv = audio()
    assert values_of(argv, "-i") == [str(SOURCE)]
    assert not {"-ss", "-t", "-filter_complex"} & set(argv)
    assert values_of(argv, "-map") == ["0:a:0"] and "-vn" in argv
    assert values_of(argv, "-c:a") == ["aac"]
    assert values_of(argv, "-b:a") == ["128k"]
    assert (values_of(argv, "-ac"), values_of(argv, "-ar")) == (["2"], ["48000"])


def test_audio_has_the_video_offset_and_its_own_hls_folder() -> None:
    argv = audio(options=EncodeOptions(segment_seconds=4))
    assert values_of(argv, "-output_ts_offset") == ["10"]
    assert values_of(argv, "-f") == ["hls"]
    assert values_of(argv, "-hls_time") == ["4"]
    # EVENT: the playlist is rewritten after every segment, so playback need not wait for the
    # whole file's audio.
    assert values_of(argv, "-hls_playlist_type") == ["event"]
    assert values_of(argv, "-hls_flags") == ["temp_file"]
    assert values_of(argv, "-hls_segment_filename") == [f"{OUT}/audio/seg_%05d.ts"]
    assert layout.AUDIO_RUN_PLAYLIST == "chunk_audio.m3u8"
    assert argv[-1] == f"{OUT}/audio/chunk_audio.m3u8"


def test_audio_source_path_is_absolute() -> None:
    (path,) = values_of(audio(source=Path("-x.mp4")), "-i")
    assert Path(path).is_absolute() and path.endswith("/-x.mp4")


def test_audio_bitrate_is_the_best_rung_asks_for_capped_by_the_spec() -> None:
    assert MAX_AUDIO_KBPS == 160
    assert audio_bitrate(plan_ladder(1920, 1080)) == 160  # 1080p asks for 192k
    assert audio_bitrate(plan_ladder(854, 480)) == 128
    assert audio_bitrate(plan_ladder(320, 240)) == 96
    ladder = [Rung("540p", 540, 2000, 2200, 4000, 64)]
    assert audio_bitrate(plan_ladder(960, 540, ladder)) == 64
    with pytest.raises(ValueError):
        audio_bitrate([])


# ---- the picture a browser shows ---------------------------------------------------------

HLG = replace(
    source_info(),
    pix_fmt="yuv420p10le",
    color_transfer="arib-std-b67",
    color_primaries="bt2020",
    color_space="bt2020nc",
    color_range="tv",
)


def graph_of(info: SourceInfo) -> str:
    (graph,) = values_of(command(info=info, chunk=LAST), "-filter_complex")
    return graph


def test_an_sdr_source_is_neither_converted_nor_retagged() -> None:
    argv = command()
    assert "zscale" not in graph_of(source_info()) and "tonemap" not in graph_of(source_info())
    assert not {"-color_trc", "-color_primaries", "-colorspace"} & set(argv)


def test_hlg_is_scaled_to_the_top_rung_then_tone_mapped_once_before_the_split() -> None:
    graph = graph_of(HLG)
    head, _, rungs = graph.partition("split=")
    assert head.startswith(
        "[0:v:0]zscale=w=1920:h=1080:f=bicubic:tin=arib-std-b67:pin=bt2020:min=bt2020nc"
        ":rin=tv:t=linear:npl=100,format=gbrpf32le,zscale=p=bt709,tonemap=mobius:desat=0,"
        "zscale=t=bt709:m=bt709:r=tv,format=yuv420p,"
    )
    assert "zscale" not in rungs and "tonemap" not in rungs


def test_pq_is_tone_mapped_from_pq() -> None:
    graph = graph_of(replace(HLG, color_transfer="smpte2084"))
    assert "tin=smpte2084:" in graph and "tonemap=mobius" in graph


def test_a_converted_ladder_is_tagged_bt709_on_every_rung() -> None:
    argv = command(info=HLG)
    for flag in ("-color_primaries", "-color_trc", "-colorspace"):
        assert values_of(argv, flag) == ["bt709"] * 4
    assert values_of(argv, "-color_range") == ["tv"] * 4


def test_bt2020_sdr_is_mapped_to_bt709_without_a_tone_curve() -> None:
    graph = graph_of(replace(HLG, color_transfer="bt2020-10"))
    assert "tin=bt2020-10:pin=bt2020:" in graph and "tonemap" not in graph
    assert values_of(command(info=replace(HLG, color_transfer="bt2020-10")), "-color_trc")


def test_hdr_that_does_not_say_its_primaries_or_matrix_is_taken_as_bt2020() -> None:
    graph = graph_of(replace(HLG, color_primaries="", color_space="", color_range=""))
    assert "pin=bt2020:min=bt2020nc:rin=tv:" in graph


def test_only_known_colour_names_reach_the_filter_graph() -> None:
    odd = replace(HLG, color_space="x,movie=/etc/passwd", color_primaries="y[a];[b]")
    graph = graph_of(odd)
    assert "passwd" not in graph and "[a]" not in graph
    assert "pin=bt2020:min=bt2020nc:" in graph


def test_an_interlaced_source_is_deinterlaced_frame_for_frame() -> None:
    for order in ("tt", "bb", "tb", "bt"):
        graph = graph_of(replace(source_info(), field_order=order))
        assert graph.startswith("[0:v:0]bwdif=mode=send_frame:parity=auto:deint=interlaced,")
    for order in ("progressive", "unknown", ""):
        assert "bwdif" not in graph_of(replace(source_info(), field_order=order))


def test_deinterlacing_comes_before_the_frame_rate_cap_and_tone_mapping() -> None:
    info = replace(HLG, field_order="tt", fps=120)
    (graph,) = values_of(command(info=info), "-filter_complex")
    assert graph.startswith("[0:v:0]trim=end=12.000000,bwdif=")
    assert graph.index("bwdif") < graph.index("fps=60") < graph.index("zscale")


# ---- the short opening -------------------------------------------------------------------

OPENING = EncodeOptions(segment_seconds=6, opening_seconds=2, x264_params="me=dia")


def test_the_opening_chunk_encodes_with_its_own_preset_and_a_capped_crf() -> None:
    argv = command(chunk=TimeChunk(index=0, start=0.0, end=2.0), options=OPENING)
    assert values_of(argv, "-preset") == ["ultrafast"] * 4
    assert values_of(argv, "-crf") == ["18"] * 4
    assert values_of(argv, "-b:v") == []
    # Still capped by every rung's VBV.
    assert values_of(argv, "-maxrate") == ["6400k", "3900k", "1900k", "1100k"]
    assert values_of(argv, "-bufsize") == ["9600k", "5800k", "3000k", "2200k"]
    # Its own x264 options (the ladder's are tuned for the ladder's preset): CABAC and the
    # 8x8 transform keep ultrafast in the High profile the rest of the rung declares.
    assert (
        values_of(argv, "-x264-params")
        == [
            "threads=2:cabac=1:8x8dct=1:bframes=3:b-adapt=1:aq-mode=1:aq-strength=1.3:vbv-init=1"
            ":force-cfr=1"
        ]
        * 4
    )
    assert values_of(argv, "-start_number") == ["0"] * 4


def test_the_opening_runs_two_frame_threads_per_rung_whatever_the_machine() -> None:
    """x264's own choice (1.5 per core) grows with the machine, and each frame in flight is
    one its rate control plans blind: the bench's 1080p opening lost 0.012 SSIM per thread
    (opening_threads). Two, or fewer when FFMPEG_THREADS asks for fewer; an operator's
    OPENING_X264_PARAMS, later in the list, still wins. The rest of the ladder keeps
    x264's (and FFMPEG_THREADS') choice."""
    opening = TimeChunk(index=0, start=0.0, end=2.0)

    def threads(options: EncodeOptions, chunk: TimeChunk = opening) -> list[str]:
        return [
            ",".join(part for part in p.split(":") if part.startswith("threads="))
            for p in values_of(command(chunk=chunk, options=options), "-x264-params")
        ]

    assert threads(OPENING) == ["threads=2"] * 4
    assert threads(replace(OPENING, threads=8)) == ["threads=2"] * 4
    assert threads(replace(OPENING, threads=1)) == ["threads=1"] * 4
    assert threads(replace(OPENING, opening_x264_params="threads=3")) == ["threads=2,threads=3"] * 4
    rest = TimeChunk(index=1, start=2.0, end=8.0)
    assert threads(OPENING, rest) == [""] * 4
    eight = values_of(command(chunk=rest, options=replace(OPENING, threads=8)), "-threads")
    assert len(eight) >= 4 and set(eight) == {"8"}


def test_chunks_after_the_opening_keep_the_ladder_s_rate_control_and_number_on() -> None:
    after = command(chunk=TimeChunk(index=1, start=2.0, end=8.0), options=OPENING)
    assert values_of(after, "-preset") == ["veryfast"] * 4
    assert values_of(after, "-b:v") == ["5800k", "3500k", "1600k", "900k"]
    assert values_of(after, "-crf") == []
    assert values_of(after, "-start_number") == ["1"] * 4
    later = command(chunk=TimeChunk(index=2, start=8.0, end=26.0), options=OPENING)
    assert values_of(later, "-start_number") == ["2"] * 4


def test_a_whole_short_video_in_one_chunk_is_not_an_opening() -> None:
    argv = command(chunk=TimeChunk(index=0, start=0.0, end=None), options=OPENING)
    assert values_of(argv, "-preset") == ["veryfast"] * 4
    assert values_of(argv, "-crf") == []


def test_hevc_encodes_its_opening_as_the_rest() -> None:
    hevc = replace(OPENING, codec="hevc")
    argv = command(chunk=TimeChunk(index=0, start=0.0, end=2.0), options=hevc)
    assert values_of(argv, "-c:v") == ["libx265"] * 4
    assert values_of(argv, "-crf") == []


CAPPED = replace(OPENING, rate_control=CAPPED_CRF, crf=20)


def test_capped_crf_keeps_a_constant_quality_under_each_rung_s_average_rate() -> None:
    argv = command(chunk=TimeChunk(index=1, start=2.0, end=8.0), options=CAPPED)
    assert values_of(argv, "-preset") == ["veryfast"] * 4
    assert values_of(argv, "-crf") == ["20"] * 4
    assert values_of(argv, "-b:v") == []
    # The cap is the rung's average bit rate (what the fixed ladder targets), the buffer
    # the rung's own. It starts only as full as keeps a chunk's first 6 s segment within the
    # rung's maxrate: (maxrate / 1.06 - cap) x 6 s of the buffer (1080p: 0.147). The
    # operator's options come after, and may still set it.
    assert values_of(argv, "-maxrate") == ["5800k", "3500k", "1600k", "900k"]
    assert values_of(argv, "-bufsize") == ["9600k", "5800k", "3000k", "2200k"]
    assert values_of(argv, "-x264-params") == [
        "vbv-init=0.15:me=dia:force-cfr=1",
        "vbv-init=0.19:force-cfr=1",
        "vbv-init=0.38:force-cfr=1",
        "vbv-init=0.38:force-cfr=1",
    ]


def test_capped_crf_leaves_the_opening_to_its_own_rate_control() -> None:
    opening = command(chunk=TimeChunk(index=0, start=0.0, end=2.0), options=CAPPED)
    plain = command(chunk=TimeChunk(index=0, start=0.0, end=2.0), options=OPENING)
    assert opening == plain


def test_an_opening_that_is_a_peak_window_of_its_own_starts_its_buffer_lower() -> None:
    """With a 2 s target the 1 s opening alone is a window of RFC 8216's peak: its buffer
    starts only as full as keeps it within twice the rung's average rate [1.30]. With 6 s
    segments it counts with the next segment, and keeps its full buffer."""
    short = replace(OPENING, segment_seconds=2, opening_seconds=1)
    argv = command(chunk=TimeChunk(index=0, start=0.0, end=1.0), options=short)
    # 1080p: (2 x 5800 / 1.06 - 6400) x 1 s / 9600 = 0.47 of its buffer; after the
    # opening's own vbv-init=1, so it is the one x264 takes.
    fills = [p.split(":vbv-init=")[-1].split(":")[0] for p in values_of(argv, "-x264-params")]
    assert fills == ["0.47", "0.47", "0.37", "0.27"]
    opening = command(chunk=TimeChunk(index=0, start=0.0, end=2.0), options=OPENING)
    assert all(p.count("vbv-init=") == 1 for p in values_of(opening, "-x264-params"))


def test_a_half_second_opening_keeps_a_one_second_budget_within_the_peak_rule() -> None:
    """Shorter than a second, the opening's buffer grows by maxrate x the difference (it may
    spend what a 1 s opening may), as far as the opening and a next segment at its maxrate
    stay within twice the rung's average [1.30] in MPEG-TS."""
    half = replace(OPENING, opening_seconds=0.5)
    argv = command(chunk=TimeChunk(index=0, start=0.0, end=0.5), options=half)
    sizes = [p.partition("vbv-bufsize=")[2].split(":")[0] for p in values_of(argv, "-x264-params")]
    # 9600 + 6400 x 0.5, 5800 + 3900 x 0.5, 3000 + 1900 x 0.5, 2200 + 1100 x 0.5.
    assert sizes == ["12800", "7750", "3950", "2750"]
    # 2 s segments leave less room: 1080p 2 x 5800 x 2.5 / 1.06 - 6400 x 2.5 - 9600 = 1758
    # more; 720p 959; the lower rungs none (their own buffer).
    short = replace(half, segment_seconds=2)
    argv = command(chunk=TimeChunk(index=0, start=0.0, end=0.5), options=short)
    sizes = [p.partition("vbv-bufsize=")[2].split(":")[0] for p in values_of(argv, "-x264-params")]
    assert sizes == ["11358", "6759", "", ""]
    # A whole second or more keeps the rung's buffer.
    argv = command(chunk=TimeChunk(index=0, start=0.0, end=2.0), options=OPENING)
    assert not any("vbv-bufsize" in p for p in values_of(argv, "-x264-params"))


def test_an_unknown_rate_control_is_refused() -> None:
    with pytest.raises(ValueError, match="rate control"):
        command(options=replace(OPENING, rate_control="vbr"))
