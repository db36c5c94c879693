"""Pure builders of ffmpeg argv lists; nothing here runs a process.

A video is encoded in time chunks (see `chunking.py`) plus one audio run:

- `video_chunk_command` decodes one chunk's time range once and writes that range's
  segments for every rung, video only: `out_dir/{rung}/seg_%05d.ts`, numbered globally, and
  a per-chunk playlist `out_dir/{rung}/chunk_%05d.m3u8`;
- `audio_command` encodes the whole file's audio once, as its own HLS rendition in
  `out_dir/audio/`, so no chunk boundary can ever click in the sound.

With `EncodeOptions.codec == "hevc"` the rungs are libx265 in fragmented MP4 instead
(`seg_%05d.m4s`, plus the init segment `init_{chunk:05d}.mp4` each chunk writes; the audio
then is fMP4 too, with `audio/init_audio.mp4`), on the same time grid.

The chunk playlists are stitched into each rung's `playlist.m3u8` by `playlists.py`.
ffmpeg's HLS muxer does not create folders: the caller creates `out_dir/{rung}/` and
`out_dir/audio/` first.

Timestamps run on across chunks, so the stitched VOD needs no EXT-X-DISCONTINUITY: every
chunk's timestamps are shifted to its place on the source timeline plus TS_OFFSET_SECONDS.
(The MPEG-TS muxer adds its usual 1.4 s mux delay to every timestamp of every output alike;
players take the first segment's time as the start.)
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from services.core import layout
from services.media.chunking import TimeChunk, opening_length
from services.media.demuxers import UPLOAD_FORMATS, Source, source_arg, source_input_args
from services.media.ladder import Rendition
from services.media.probe import SourceInfo

# Faster frame rates buy little on the web and cost every rung bits.
MAX_FPS = 60
# Browsers show frames, not fields: two woven fields of a moving picture are combs. One
# frame per frame (send_frame keeps the rate); deint=interlaced leaves alone the frames the
# decoder marks progressive (soft telecine, mixed content).
DEINTERLACE = "bwdif=mode=send_frame:parity=auto:deint=interlaced"
# SDR reference white in nits: HDR light above it is what the tone map compresses.
NOMINAL_PEAK_NITS = 100
# ffprobe's names that zscale reads too: for the matrix, and for SDR transfers of BT.2020.
_ZSCALE_MATRICES = ("bt709", "bt2020nc", "bt2020c", "smpte170m", "bt470bg")
_ZSCALE_SDR_TRANSFERS = {"bt709": "bt709", "bt2020-10": "bt2020-10", "bt2020-12": "bt2020-12"}
# Added to every output's timestamps. With an offset of 0 the muxer shifts the first chunk
# alone by the B-frame delay (it avoids negative DTS only then), so chunk 0 would overlap
# chunk 1 by two frames; `-avoid_negative_ts disabled` does not reach the HLS muxer's inner
# MPEG-TS muxer. A constant offset keeps every DTS positive and every chunk in place; the
# audio gets the same offset and stays in sync.
TS_OFFSET_SECONDS = 10
# The video encoders' clock: MPEG-TS's own 90 kHz, fine enough for any source's frame times.
ENCODER_TIME_BASE = "1:90000"
H264 = "h264"
HEVC = "hevc"
CODECS = (H264, HEVC)
# How the H.264 ladder's rungs spend bits (EncodeOptions.rate_control): FIXED targets each
# rung's average bit rate; CAPPED_CRF keeps a constant quality (CRF) and spends at most the
# rung's average bit rate (as its VBV maxrate), so easy footage costs fewer bytes.
FIXED = "fixed"
CAPPED_CRF = "capped-crf"
RATE_CONTROLS = (FIXED, CAPPED_CRF)
# MPEG-TS's own bytes over a video stream's (packet headers, PES headers, stuffing): up to
# about 5 % at the lowest rung's rate, allowed for wherever a rate is bounded in advance.
TS_OVERHEAD = 1.06
# A chunk ending this close to the opening's length is the opening: its end went through
# the database and the plan's JSON as a float, its length may be a fraction (0.5 s).
OPENING_TOLERANCE = 1e-6
# x264's frame threads per rung in the opening (see opening_threads).
OPENING_X264_THREADS = 2
# An opening shorter than this spends what one this long may (see _opening_buffer).
OPENING_BUDGET_SECONDS = 1.0
# HLS authoring spec [2.9]: stereo AAC at 32-160 kb/s.
MAX_AUDIO_KBPS = 160


@dataclass(frozen=True)
class EncodeOptions:
    """Encoder knobs that are not part of the ladder policy."""

    preset: str = "veryfast"
    segment_seconds: int = 6
    keyframe_seconds: int = 2
    threads: int = 0
    # x264 options over the preset: `x264_params` for the top rung, `x264_lower_params` for
    # every rung below it ("" = the preset as it is). See Settings.x264_params for why.
    x264_params: str = ""
    x264_lower_params: str = ""
    # h264: MPEG-TS segments; hevc: libx265 in fMP4 segments (see `_hevc_args`).
    codec: str = H264
    x265_preset: str = "ultrafast"
    # The short opening segment (chunking.split_chunks; 0 = none, as in plans made before it)
    # and how the opening's H.264 rungs are encoded: a faster preset and a capped CRF (the
    # rung's maxrate and bufsize still bound it) in place of the rung's average bit rate,
    # since a bit-rate target cannot settle within a second or two. The VBV buffer starts
    # full (vbv-init=1; x264's default is 90 %), so the opening may spend what a decoder's
    # full buffer allows: on the bench's 1080p rung 15.6 Mb/s for its one second, which
    # keeps its SSIM within 0.01 of the rest's (30 % full: 9 Mb/s and 0.067 below). The
    # 720p rung is the one held by its buffer: at CRF 20 and 90 % it spent 8.4 of its
    # 9.1 Mb for 0.960 SSIM, 0.007-0.010 below its rest; at CRF 18 and a full buffer 9.4 Mb
    # for 0.963 (480p 0.973 -> 0.977, 360p 0.983 -> 0.984: the bench clip's opening second
    # through video_chunk_command, SSIM as scripts/bench.py measures it). The rung's
    # declared peak counts the opening together with the next segment (RFC 8216's window
    # of at least half a target duration), so it moves little.
    opening_seconds: float = 0
    opening_preset: str = "ultrafast"
    opening_x264_params: str = (
        "cabac=1:8x8dct=1:bframes=3:b-adapt=1:aq-mode=1:aq-strength=1.3:vbv-init=1"
    )
    opening_crf: float = 18.0
    # The H.264 ladder's rate control after the opening (FIXED or CAPPED_CRF, with `crf`).
    # Capped CRF: x264's constant-quality mode bounded by a VBV of maxrate = the rung's
    # average bit rate (the seed's `video_kbps`) and the rung's own buffer. Where a rung
    # needs more than its average (noise, fast motion) it spends what the fixed ladder
    # spends; where it needs less (most camera footage, screen recordings) it spends less
    # at the same quality. Being no bit-rate target, it needs nothing to settle, so every
    # chunk is encoded alike wherever it starts. The HEVC ladder keeps its fixed rates.
    rate_control: str = FIXED
    crf: float = 18.0

    @property
    def fmp4(self) -> bool:
        """Whether segments are fragmented MP4 (with an init segment) rather than MPEG-TS."""
        return self.codec == HEVC


def video_chunk_command(
    *,
    ffmpeg: str,
    source: Source,
    info: SourceInfo,
    renditions: Sequence[Rendition],
    out_dir: Path,
    options: EncodeOptions,
    chunk: TimeChunk,
    playlist_type: str = "vod",
) -> list[str]:
    """One ffmpeg run that decodes `chunk` of `source` once and writes its segments per rung.

    `playlist_type` "event" rewrites each rung's playlist as every segment closes (a run
    whose chunks are taken out while it goes on); "vod" writes it once, at the end."""
    if not renditions:
        raise ValueError("a ladder needs at least one rendition")
    # Input options: only the upload's own bytes, read as one of the upload formats (a file
    # naming other files is never opened: see demuxers.py); seek (decoding from the keyframe
    # before, dropping frames up to `start`) and read only the chunk's range, so each frame
    # lands in exactly one chunk.
    argv = [ffmpeg, *_global_args(options), *source_input_args(source, UPLOAD_FORMATS)]
    argv += ["-ss", _seconds(chunk.start)]
    if chunk.end is not None:
        argv += ["-t", _seconds(chunk.end - chunk.start)]
    # -i before the path so a name starting with "-" is never read as an option; absolute so
    # a name like "http:x" is never read as a protocol.
    argv += ["-i", source_arg(source)]
    length = chunk.end - chunk.start if chunk.end is not None else None
    argv += ["-filter_complex", filter_graph(info, renditions, length=length)]
    offset = chunk_ts_offset(chunk)
    opening = is_opening(chunk, options)
    for index, rendition in enumerate(renditions):
        encoder = _encoder_args(index, rendition, output_fps(info), options, opening=opening)
        argv += [*encoder, "-an"]
        argv += color_tags(info)
        # Frames keep their own times. The default here, cfr, duplicates a chunk's first
        # frame when it falls more than half a frame after the chunk start (29.97 fps at
        # 18 s, for one), and that duplicate overlaps the previous chunk's last frame.
        argv += ["-fps_mode", "vfr"]
        # The encoder's default clock ticks once a frame (1/fps). Frames off that grid (a
        # phone's or MediaRecorder's variable rate) would be rounded onto it: two frames
        # landing on one tick lose one, and a frame just before a chunk's end, rounded up
        # to it, becomes a one-frame segment the next chunk writes again.
        argv += ["-enc_time_base", ENCODER_TIME_BASE]
        argv += ["-output_ts_offset", _seconds(offset)]
        first = chunk.first_segment(options.segment_seconds, options.opening_seconds)
        argv += ["-start_number", str(first)]
        rung_dir = out_dir.absolute() / rendition.name
        argv += _hls_args(
            rung_dir,
            options,
            flags="independent_segments+temp_file",
            playlist_type=playlist_type,
            init=layout.chunk_init(chunk.index),
        )
        argv += [str(rung_dir / layout.chunk_playlist(chunk.index))]
    return argv


def audio_command(
    *, ffmpeg: str, source: Source, audio_kbps: int, out_dir: Path, options: EncodeOptions
) -> list[str]:
    """One ffmpeg run that encodes the source's first audio stream as an HLS rendition."""
    argv = [ffmpeg, *_global_args(options), *source_input_args(source, UPLOAD_FORMATS)]
    argv += ["-i", source_arg(source), "-map", "0:a:0", "-vn"]
    argv += ["-c:a", "aac", "-b:a", f"{audio_kbps}k"]
    argv += ["-ac", "2", "-ar", "48000"]
    if options.threads > 0:
        argv += ["-threads", str(options.threads)]
    # The same offset as the video chunks: the first audio sample meets the first frame.
    argv += ["-output_ts_offset", str(TS_OFFSET_SECONDS)]
    audio_dir = out_dir.absolute() / layout.AUDIO
    # Every AAC frame is independent: the audio may be cut anywhere, no flag needed. An EVENT
    # playlist is rewritten after every segment, so playback can start on the first ones
    # while the rest of a long file's audio is still being encoded.
    argv += _hls_args(
        audio_dir, options, flags="temp_file", playlist_type="event", init=layout.AUDIO_RUN_INIT
    )
    return [*argv, str(audio_dir / layout.AUDIO_RUN_PLAYLIST)]


def audio_bitrate(renditions: Sequence[Rendition]) -> int:
    """The one audio rendition's kb/s: the best any rung asks for, within the HLS spec."""
    if not renditions:
        raise ValueError("an audio bitrate needs at least one rendition")
    return min(max(r.audio_kbps for r in renditions), MAX_AUDIO_KBPS)


def chunk_ts_offset(chunk: TimeChunk) -> float:
    """The -output_ts_offset of `chunk`: its start + TS_OFFSET_SECONDS.

    The encoder counts in ENCODER_TIME_BASE, so each frame keeps its own time from the chunk
    start: the offset puts every frame back at its source time (+ the constant offset), as
    one whole-file encode would, whether the frames lie on a regular grid or not.
    """
    return chunk.start + TS_OFFSET_SECONDS


def output_fps(info: SourceInfo) -> float:
    """The frame rate every rung is encoded at: the source's, capped at MAX_FPS."""
    return min(info.fps, MAX_FPS)


def filter_graph(
    info: SourceInfo, renditions: Sequence[Rendition], *, length: float | None = None
) -> str:
    """Decode once, keep the frames of the chunk's `length` seconds (None: to the end), make
    the picture a browser shows (progressive, SDR BT.709, at most MAX_FPS), split, then
    scale for each rendition; outputs are labelled [v0], [v1], ..."""
    # The input's -t counts from the chunk's first frame, not from its start: a chunk whose
    # first frame comes after its start (a variable frame rate, a rate off the segment grid)
    # would also take the next chunk's first frame. trim's end counts from the start.
    cut = [f"trim=end={_seconds(length)}"] if length is not None else []
    head = "[0:v:0]" + "".join(f"{f}," for f in [*cut, *source_filters(info, renditions)])
    # The rungs below the second are scaled from the second rung's picture, not from the
    # source: the same taps over a third of the pixels or fewer. Measured on the bench's 30 s
    # 1080p clip: the four scales cost 4.1 CPU-s from the source, 2.9 this way; each rung's
    # SSIM against the source scaled straight to it moved by 0.0001 at most.
    direct = _scaled_from_source(renditions)
    labels = "".join(f"[s{i}]" for i in range(direct))
    chains = [f"{head}split={direct}{labels}"]
    # ffmpeg's autorotate has already turned rotated sources upright before this graph, so
    # the rendition sizes are display sizes.
    for i, r in enumerate(renditions[:direct]):
        # setsar=1: the scale already applied the source's pixel aspect, so pixels are square.
        chain = f"[s{i}]scale={r.width}:{r.height},setsar=1,format=yuv420p"
        if i == 1 and direct < len(renditions):
            rest = "".join(f"[t{j}]" for j in range(direct, len(renditions)))
            chains.append(f"{chain},split={len(renditions) - 1}[v1]{rest}")
        else:
            chains.append(f"{chain}[v{i}]")
    for j, r in enumerate(renditions[direct:], start=direct):
        chains.append(f"[t{j}]scale={r.width}:{r.height},setsar=1,format=yuv420p[v{j}]")
    return ";".join(chains)


def _scaled_from_source(renditions: Sequence[Rendition]) -> int:
    """How many rungs, from the top, are scaled from the source: all of them, or the first
    two when every rung after the second is no larger than the second (then made from it)."""
    if len(renditions) <= 2:
        return len(renditions)
    second = renditions[1]
    smaller = all(r.width <= second.width and r.height <= second.height for r in renditions[2:])
    return 2 if smaller else len(renditions)


def source_filters(info: SourceInfo, renditions: Sequence[Rendition]) -> list[str]:
    """The filters every rung shares, run once before the split."""
    filters = [DEINTERLACE] if info.interlaced else []
    if info.fps > MAX_FPS:
        filters.append(f"fps={MAX_FPS}")
    if converts_to_bt709(info):
        filters += to_bt709_filters(info, renditions[0].width, renditions[0].height)
    return filters


def converts_to_bt709(info: SourceInfo) -> bool:
    """Whether the source's colours are converted (HDR tone-mapped, BT.2020 mapped) for the
    ladder: every rung is then SDR BT.709, 8-bit, and tagged so."""
    return info.hdr or info.wide_gamut


def to_bt709_filters(info: SourceInfo, width: int, height: int, *, jpeg: bool = False) -> list[str]:
    """HDR (HLG, PQ) or BT.2020 to SDR BT.709 at `width` x `height`, in 8-bit yuv420p
    (`jpeg`: in JPEG's own YUV, BT.601 full range, as every JPEG decoder reads it).

    Scaled first, to the top rung's size, then tone-mapped once for every rung: the float
    work then costs the same for a 4K phone clip as for a 1080p one. Measured on 2 s of HLG,
    four rungs, the filters alone on one thread (CPU seconds; no tone mapping in brackets):
    4K source: tone-mapped at the source size 8.9, per rung after scaling 4.5, once at the
    top rung's size 2.8 (2.1); 1080p source: 2.4, 3.2, 2.3 (0.6). zscale scales and
    converts in one step, so no YUV<->RGB step ever guesses a matrix.
    """
    # The source's own facts, or what HDR video is when it does not say (BT.2020, limited
    # range). Only names from these fixed sets reach the filter graph, never file text.
    transfer = (
        info.color_transfer if info.hdr else _ZSCALE_SDR_TRANSFERS.get(info.color_transfer, "bt709")
    )
    primaries = info.color_primaries if info.color_primaries in ("bt709", "bt2020") else "bt2020"
    matrix = info.color_space if info.color_space in _ZSCALE_MATRICES else "bt2020nc"
    range_in = "pc" if info.color_range == "pc" else "tv"
    to_linear = (
        f"zscale=w={width}:h={height}:f=bicubic:tin={transfer}:pin={primaries}:min={matrix}"
        f":rin={range_in}:t=linear:npl={NOMINAL_PEAK_NITS}"
    )
    # Möbius keeps the picture's SDR part as it is and bends only the highlights above it
    # (hable darkens the whole of a phone clip); desat=0 keeps the highlights' colour.
    tone_map = ["tonemap=mobius:desat=0"] if info.hdr else []
    to_yuv = (
        ["zscale=t=bt709:m=bt470bg:r=pc", "format=yuvj420p"]
        if jpeg
        else [
            "zscale=t=bt709:m=bt709:r=tv",
            "format=yuv420p",
        ]
    )
    return [to_linear, "format=gbrpf32le", "zscale=p=bt709", *tone_map, *to_yuv]


def color_tags(info: SourceInfo) -> list[str]:
    """Output options tagging a converted ladder BT.709 (players otherwise guess, or keep
    the source's HLG/PQ tags on SDR pixels); a source that was not converted keeps its own."""
    if not converts_to_bt709(info):
        return []
    tags = ["-color_primaries", "bt709", "-color_trc", "bt709", "-colorspace", "bt709"]
    return [*tags, "-color_range", "tv"]


def _seconds(value: float) -> str:
    """Seconds as ffmpeg reads them: fixed point, never an exponent such as 1e-05."""
    return f"{value:.6f}"


def _global_args(options: EncodeOptions) -> list[str]:
    args = ["-hide_banner", "-nostdin", "-y", "-loglevel", "error"]
    # Machine-readable key=value progress on stdout; the human stats line would only add noise.
    args += ["-progress", "pipe:1", "-nostats"]
    if options.threads > 0:
        # Caps the decoder (input option) and the filter graph; encoders get it per output.
        args += ["-threads", str(options.threads)]
        args += ["-filter_complex_threads", str(options.threads)]
    return args


def is_opening(chunk: TimeChunk, options: EncodeOptions) -> bool:
    """Whether `chunk` is the short opening segment of its plan (see chunking)."""
    opening = opening_length(options.segment_seconds, options.opening_seconds)
    return (
        opening > 0
        and chunk.start == 0
        and chunk.end is not None
        and abs(chunk.end - opening) < OPENING_TOLERANCE
    )


def _encoder_args(
    index: int, r: Rendition, fps: float, options: EncodeOptions, *, opening: bool = False
) -> list[str]:
    """The video encoder's options for rendition `index` in the chosen codec (`opening`: for
    the short opening segment; the HEVC ladder encodes it as it does the rest)."""
    if options.codec == HEVC:
        return _hevc_args(index, r, fps, options)
    if options.codec != H264:
        raise ValueError(f"unknown codec {options.codec!r}: expected one of {CODECS}")
    return _video_args(index, r, fps, options, opening=opening)


def _hevc_args(index: int, r: Rendition, fps: float, options: EncodeOptions) -> list[str]:
    """libx265 with the same keyframe grid as the H.264 ladder (see `_video_args`).

    8-bit Main and SDR like the H.264 ladder: an HDR source is tone-mapped for it too (the
    shared filter graph), so one ladder looks the same on every screen and the master
    needs no VIDEO-RANGE.
    """
    gop = math.ceil(options.keyframe_seconds * fps)
    args = ["-map", f"[v{index}]", "-c:v", "libx265", "-preset", options.x265_preset]
    # hvc1, not ffmpeg's default hev1: the parameter sets live only in the init segment,
    # the form Apple's players require for HEVC in HLS.
    args += ["-tag:v", "hvc1", "-profile:v", "main", "-pix_fmt", "yuv420p"]
    args += ["-b:v", f"{r.video_kbps}k", "-maxrate", f"{r.maxrate_kbps}k"]
    args += ["-bufsize", f"{r.bufsize_kbps}k"]
    # Closed GOPs of at most `gop` frames, no scene-cut keyframes: IDRs only where forced,
    # at the same instants in every rung and every chunk. x265's banner would fill the
    # stderr tail an error report keeps.
    params = f"keyint={gop}:min-keyint={gop}:scenecut=0:open-gop=0:log-level=error"
    if options.threads > 0:
        params += f":pools={options.threads}"  # libx265 ignores -threads
    args += ["-x265-params", params, "-forced-idr", "1"]
    args += ["-force_key_frames", f"expr:gte(t,n_forced*{options.keyframe_seconds})"]
    return args


def _video_args(
    index: int, r: Rendition, fps: float, options: EncodeOptions, *, opening: bool = False
) -> list[str]:
    gop = math.ceil(options.keyframe_seconds * fps)
    preset = options.opening_preset if opening else options.preset
    args = ["-map", f"[v{index}]", "-c:v", "libx264", "-preset", preset]
    args += ["-profile:v", "high", "-pix_fmt", "yuv420p"]
    if options.rate_control not in RATE_CONTROLS:
        raise ValueError(
            f"unknown rate control {options.rate_control!r}: expected one of {RATE_CONTROLS}"
        )
    if opening:
        args += ["-crf", f"{options.opening_crf:g}", "-maxrate", f"{r.maxrate_kbps}k"]
    elif options.rate_control == CAPPED_CRF:
        args += ["-crf", f"{options.crf:g}", "-maxrate", f"{r.video_kbps}k"]
    else:
        args += ["-b:v", f"{r.video_kbps}k", "-maxrate", f"{r.maxrate_kbps}k"]
    args += ["-bufsize", f"{r.bufsize_kbps}k"]
    # A GOP never longer than the keyframe interval, and no extra scene-cut keyframes:
    # every rung then has its IDRs at the same instants.
    args += ["-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0"]
    # IDRs forced by time, not frame count, so segment boundaries line up at any frame rate.
    args += ["-force_key_frames", f"expr:gte(t,n_forced*{options.keyframe_seconds})"]
    # Renditions come highest first: index 0 is the top rung.
    params = options.x264_params if index == 0 else options.x264_lower_params
    if opening:
        # The ladder's options are tuned for its own preset; the opening has its own, after
        # its thread count so that OPENING_X264_PARAMS may still set that.
        threads = f"threads={opening_threads(options)}"
        params = ":".join(
            p for p in (threads, options.opening_x264_params, _opening_buffer(r, options)) if p
        )
    elif options.rate_control == CAPPED_CRF:
        # First, so the operator's own X264_PARAMS may still set it.
        params = ":".join(p for p in (_capped_crf_buffer(r, options), params) if p)
    # The 90 kHz encoder clock (ENCODER_TIME_BASE) would otherwise become the stream's
    # declared timing (VUI time_scale 180000): frame durations would then be unknown to
    # every reader of the rung (its MP4 download, the storyboard's last tile). force-cfr
    # declares the frame rate instead; the frames keep their own timestamps.
    args += ["-x264-params", ":".join(p for p in (params, "force-cfr=1") if p)]
    if options.threads > 0:
        args += ["-threads", str(options.threads)]
    return args


def opening_threads(options: EncodeOptions) -> int:
    """x264's frame threads for each rung of the opening: OPENING_X264_THREADS, or fewer when
    FFMPEG_THREADS asks for fewer.

    Left to itself x264 runs 1.5 frame threads per core, and each frame in flight is one the
    rate control must plan without knowing its size: over the opening's 15 frames that is a
    large share, and x264 plans it cautiously. The bench clip's half-second opening through
    video_chunk_command (1080p rung, SSIM against the source; its rest 0.944) came out at
    0.953 with 1 thread, 0.941 with 2, 0.927 with 3 (what 2 cores get by default) and 0.914
    with 4, so the same command lost quality as the machine grew. With 2 the opening's ffmpeg
    was also the fastest on 2 cores (0.65-0.76 s against 0.80 s with 3 and 0.91-1.07 s with
    1, where ffmpeg runs the four encoders one after another) and every rung was within
    0.006 of its rest (1080p / 720p / 480p / 360p: 0.941 / 0.962 / 0.979 / 0.986)."""
    if options.threads > 0:
        return min(OPENING_X264_THREADS, options.threads)
    return OPENING_X264_THREADS


def _capped_crf_buffer(r: Rendition, options: EncodeOptions) -> str:
    """x264's vbv-init for a capped-CRF chunk: how full its VBV buffer starts.

    Each chunk is an encoder of its own, and the VBV lets it spend its buffer's starting
    fill over the cap in its first seconds, which constant quality always does on hard
    footage. x264's default (90 % full) made the first segment of a chunk of the bench's
    noisy 1080p clip 6.54 Mb/s, past the rung's 6.4 Mb/s maxrate, and the ladder 1.05-1.07x
    the fixed ladder's bytes. The fill here keeps a chunk's first segment within the rung's
    maxrate (start fill + cap x segment, MPEG-TS's bytes on top): 15 % of 1080p's buffer
    and 38 % of 480p's with 6 s segments. On that clip (12 s, CRF 18, veryfast) the rungs
    then took 0.95-0.98x the fixed ladder's bytes at an SSIM within 0.0011 of it, every
    segment under its maxrate; on the same pattern without the noise 0.72-0.96x, within
    0.0008.
    """
    fill = _start_fill(r.maxrate_kbps, r.video_kbps, options.segment_seconds, r.bufsize_kbps)
    return f"vbv-init={min(0.9, fill):.2f}"


def _opening_buffer(r: Rendition, options: EncodeOptions) -> str:
    """x264's VBV option for the opening: a lower starting fill when it is a peak window of
    its own, a larger buffer when it is shorter than OPENING_BUDGET_SECONDS, else "".

    RFC 8216 (4.3.4.2) counts a rung's peak over windows of at least half the target
    duration. With 6 s segments the opening counts with the segment after it; with a
    target of twice the opening or less it is a window alone, and its buffer, started full
    (OPENING_X264_PARAMS), lets it spend the whole buffer in that second: 2.2x the average
    on a 480p rung with 2 s segments, past the authoring spec's 200 % [1.30]. Its buffer
    then starts only as full as keeps the opening within twice the rung's average bit rate
    (the VBV bound: start fill + maxrate x length, MPEG-TS's own bytes on top).

    A first frame and its first few followers cost more than any later second: half a
    second of the bench's noisy 1080p clip, held to the rung's buffer (10.7 Mb), came out
    0.017 SSIM below the rest of the rung (720p 0.014), where a whole second (15.7 Mb) was
    0.007 above it. So an opening shorter than OPENING_BUDGET_SECONDS keeps that second's
    budget: its buffer grows by maxrate x the difference (1080p: 9600k + 3200k for 0.5 s),
    which put the same half second at +0.003 / -0.002 / +0.001 / +0.005 against the rest
    (1080p / 720p / 480p / 360p; the opening through video_chunk_command, SSIM as
    scripts/bench.py measures it). The growth is bounded so
    that the opening and the segment after it, that one at most at its maxrate, stay
    within twice the rung's average in MPEG-TS: where that leaves no room (short segments)
    the buffer stays the rung's own.
    """
    length = opening_length(options.segment_seconds, options.opening_seconds)
    if 2 * length >= options.segment_seconds:
        fill = _start_fill(2 * r.video_kbps, r.maxrate_kbps, length, r.bufsize_kbps)
        return f"vbv-init={fill:.2f}"
    if not 0 < length < OPENING_BUDGET_SECONDS:
        return ""
    window = length + options.segment_seconds
    room = 2 * r.video_kbps * window / TS_OVERHEAD - r.maxrate_kbps * window - r.bufsize_kbps
    extra = min(r.maxrate_kbps * (OPENING_BUDGET_SECONDS - length), room)
    if extra < 1:
        return ""
    return f"vbv-bufsize={r.bufsize_kbps + math.floor(extra)}"


def _start_fill(limit_kbps: float, maxrate_kbps: int, seconds: float, bufsize_kbps: int) -> float:
    """How full (0-1) a VBV buffer may start for `seconds` of output to stay within
    `limit_kbps` once in MPEG-TS: by the VBV's own bound, those seconds hold at most the
    starting fill plus `maxrate_kbps` x `seconds`. (x264 raises a fill below one frame's worth
    of maxrate to that.)"""
    spare = (limit_kbps / TS_OVERHEAD - maxrate_kbps) * seconds
    return min(1.0, max(0.0, spare / bufsize_kbps))


def _hls_args(
    folder: Path, options: EncodeOptions, *, flags: str, playlist_type: str = "vod", init: str
) -> list[str]:
    """HLS muxer options writing `folder/seg_%05d.ts` (or .m4s and the init segment `init`,
    for fMP4); the playlist path goes after them."""
    args = ["-f", "hls", "-hls_time", str(options.segment_seconds)]
    segment_type = "fmp4" if options.fmp4 else "mpegts"
    args += ["-hls_playlist_type", playlist_type, "-hls_segment_type", segment_type]
    if options.fmp4:
        args += ["-hls_fmp4_init_filename", init]
        # frag_discont: each fragment's tfdt is its frame's place on the shifted timeline.
        # Without it the MP4 muxer starts every chunk at 0 and says where it really starts
        # in the init segment's edit list, so no two chunks' init segments would be alike
        # and the stitched timeline would restart at every chunk.
        args += ["-hls_segment_options", "movflags=+frag_discont"]
    # independent_segments: every video segment starts with an IDR, so players may switch
    # rungs at any boundary. temp_file: a segment (and a playlist) appears under its name
    # only once complete, so a file the server can see is a file it may serve.
    args += ["-hls_flags", flags]
    # The segment name is a printf pattern: a "%" in the folder must not count as one.
    pattern = str(folder).replace("%", "%%") + "/" + layout.segment_pattern(fmp4=options.fmp4)
    args += ["-hls_segment_filename", pattern]
    # Room for the packets queued while the outputs of one run start up; running out aborts
    # with "Too many packets buffered for output stream".
    args += ["-max_muxing_queue_size", "1024"]
    return args
