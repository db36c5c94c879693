"""Pure builders of ffmpeg argv lists; nothing here runs a process.

`ladder_command` writes `out_dir/{name}/playlist.m3u8` and `out_dir/{name}/seg_%05d.ts`
for every rendition. ffmpeg's HLS muxer does not create folders, so the caller must create
`out_dir/{name}/` for each rendition before running the command.

Timestamps are left to ffmpeg's defaults (no -copyts, no per-segment reset): the source's
first frame becomes 0 and the clock runs on continuously across segments, so a VOD never
needs EXT-X-DISCONTINUITY. (The MPEG-TS muxer adds its usual 1.4 s mux delay to every
timestamp of every rung alike; players take the first segment's time as the start.)
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from services.media.ladder import Rendition
from services.media.probe import SourceInfo

# Faster frame rates buy little on the web and cost every rung bits.
MAX_FPS = 60


@dataclass(frozen=True)
class EncodeOptions:
    """Encoder knobs that are not part of the ladder policy."""

    preset: str = "veryfast"
    segment_seconds: int = 6
    keyframe_seconds: int = 2
    threads: int = 0


def ladder_command(
    *,
    ffmpeg: str,
    source: Path,
    info: SourceInfo,
    renditions: Sequence[Rendition],
    out_dir: Path,
    options: EncodeOptions,
) -> list[str]:
    """One ffmpeg run that decodes `source` once and writes an HLS rung per rendition."""
    if not renditions:
        raise ValueError("a ladder needs at least one rendition")
    argv = [ffmpeg, *_global_args(options)]
    # -i before the path so a name starting with "-" is never read as an option; absolute so
    # a name like "http:x" is never read as a protocol.
    argv += ["-i", str(source.absolute())]
    argv += ["-filter_complex", filter_graph(info, renditions)]
    for index, rendition in enumerate(renditions):
        argv += _video_args(index, rendition, output_fps(info), options)
        if info.has_audio:
            argv += _audio_args(rendition)
        argv += _hls_args(out_dir.absolute() / rendition.name, options)
    return argv


def output_fps(info: SourceInfo) -> float:
    """The frame rate every rung is encoded at: the source's, capped at MAX_FPS."""
    return min(info.fps, MAX_FPS)


def filter_graph(info: SourceInfo, renditions: Sequence[Rendition]) -> str:
    """Decode once, split, then scale for each rendition; outputs are labelled [v0], [v1], ..."""
    head = "[0:v:0]" + (f"fps={MAX_FPS}," if info.fps > MAX_FPS else "")
    labels = "".join(f"[s{i}]" for i in range(len(renditions)))
    chains = [f"{head}split={len(renditions)}{labels}"]
    # ffmpeg's autorotate has already turned rotated sources upright before this graph, so
    # the rendition sizes are display sizes.
    for i, r in enumerate(renditions):
        # setsar=1: the scale already applied the source's pixel aspect, so pixels are square.
        chains.append(f"[s{i}]scale={r.width}:{r.height},setsar=1,format=yuv420p[v{i}]")
    return ";".join(chains)


def _global_args(options: EncodeOptions) -> list[str]:
    args = ["-hide_banner", "-nostdin", "-y", "-loglevel", "error"]
    # Machine-readable key=value progress on stdout; the human stats line would only add noise.
    args += ["-progress", "pipe:1", "-nostats"]
    if options.threads > 0:
        # Caps the decoder (input option) and the filter graph; encoders get it per output.
        args += ["-threads", str(options.threads)]
        args += ["-filter_complex_threads", str(options.threads)]
    return args


def _video_args(index: int, r: Rendition, fps: float, options: EncodeOptions) -> list[str]:
    gop = math.ceil(options.keyframe_seconds * fps)
    args = ["-map", f"[v{index}]", "-c:v", "libx264", "-preset", options.preset]
    args += ["-profile:v", "high", "-pix_fmt", "yuv420p"]
    args += ["-b:v", f"{r.video_kbps}k", "-maxrate", f"{r.maxrate_kbps}k"]
    args += ["-bufsize", f"{r.bufsize_kbps}k"]
    # A GOP never longer than the keyframe interval, and no extra scene-cut keyframes:
    # every rung then has its IDRs at the same instants.
    args += ["-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0"]
    # IDRs forced by time, not frame count, so segment boundaries line up at any frame rate.
    args += ["-force_key_frames", f"expr:gte(t,n_forced*{options.keyframe_seconds})"]
    if options.threads > 0:
        args += ["-threads", str(options.threads)]
    return args


def _audio_args(r: Rendition) -> list[str]:
    # Each rung muxes its own stereo AAC so any single rung plays on its own.
    return ["-map", "0:a:0", "-c:a", "aac", "-b:a", f"{r.audio_kbps}k", "-ac", "2", "-ar", "48000"]


def _hls_args(rung_dir: Path, options: EncodeOptions) -> list[str]:
    args = ["-f", "hls", "-hls_time", str(options.segment_seconds)]
    args += ["-hls_playlist_type", "vod", "-hls_segment_type", "mpegts"]
    # Every segment starts with an IDR; saying so lets players switch rungs at any boundary.
    args += ["-hls_flags", "independent_segments"]
    # The segment name is a printf pattern: a "%" in the folder must not count as one.
    pattern = str(rung_dir).replace("%", "%%") + "/seg_%05d.ts"
    args += ["-hls_segment_filename", pattern]
    # A source whose audio runs ahead of its video would otherwise abort with
    # "Too many packets buffered for output stream".
    args += ["-max_muxing_queue_size", "1024"]
    return [*args, str(rung_dir / "playlist.m3u8")]
