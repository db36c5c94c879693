"""Clips as phones, browsers, cameras, editors and screen recorders write them, rendered with
lavfi (so no media file is ever committed): a few seconds each, small, quick to encode."""

import subprocess
from dataclasses import dataclass
from pathlib import Path

FFMPEG = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
# BT.709 SDR test pattern -> BT.2020 HLG, 10 bit: what an iPhone records since 2020. The
# input's facts are given (testsrc2 has none) so zscale knows what it converts from.
TO_HLG = (
    "format=yuv444p,zscale=tin=bt709:pin=bt709:min=bt709:rin=tv"
    ":t=arib-std-b67:p=bt2020:m=bt2020nc:r=tv:npl=100,format=yuv420p10le"
)
HLG_TAGS = ["-color_primaries", "bt2020", "-color_trc", "arib-std-b67", "-colorspace", "bt2020nc"]
# MediaRecorder stamps frames with the capture clock in ms: no two frames exactly 1/30 s
# apart. A few ms of jitter (always less than half a frame, so the order holds) does that.
JITTER = "settb=1/1000,setpts=round((N/30+(random(1)-0.5)*0.008)*1000)"


@dataclass(frozen=True)
class DeviceClip:
    """How one kind of real recording is made: its file name and the ffmpeg options."""

    name: str
    filename: str
    video: str  # the lavfi video source
    options: tuple[str, ...]  # everything after the inputs, before the output
    seconds: float
    audio_channels: int = 2  # 0: no audio
    to_pipe: bool = False  # written to a pipe: the muxer cannot seek back to fill the header
    # Options of a second, stream-copy pass: ffmpeg 5.1 turns a rotate tag into a display
    # matrix only when it copies, not when it encodes.
    retag: tuple[str, ...] = ()


def _pattern(width: int, height: int, fps: float, seconds: float) -> str:
    return f"testsrc2=size={width}x{height}:rate={fps}:duration={seconds}"


X264 = ("-c:v", "libx264", "-preset", "ultrafast")
AAC = ("-c:a", "aac", "-b:a", "96k")

DEVICE_CLIPS: tuple[DeviceClip, ...] = (
    *(
        # Phones store portrait video as landscape pixels plus a display matrix.
        DeviceClip(
            f"rotate{angle}",
            f"phone_rotate{angle}.mp4",
            _pattern(320, 180, 30, 3),
            (*X264, "-pix_fmt", "yuv420p", *AAC),
            3,
            retag=("-metadata:s:v:0", f"rotate={angle}"),
        )
        for angle in (90, 180, 270)
    ),
    DeviceClip(
        "hlg",
        "iphone_hlg.mov",
        _pattern(854, 480, 30, 3),
        (
            "-vf",
            TO_HLG,
            "-c:v",
            "libx265",
            "-preset",
            "ultrafast",
            "-profile:v",
            "main10",
            "-x265-params",
            "log-level=error",
            "-tag:v",
            "hvc1",
            *HLG_TAGS,
            *AAC,
        ),
        3,
    ),
    DeviceClip(
        "webm_live",
        "mediarecorder.webm",
        _pattern(320, 240, 30, 9),
        (
            "-vf",
            JITTER,
            "-c:v",
            "libvpx-vp9",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            "-b:v",
            "400k",
            # A 1 ms frame rate is what MediaRecorder declares: no DefaultDuration is written.
            "-r",
            "1000",
            "-fps_mode",
            "vfr",
            "-c:a",
            "libopus",
            "-f",
            "webm",
        ),
        9,  # three chunks with the test settings: [0, 2), [2, 6), [6, 9)
        to_pipe=True,
    ),
    DeviceClip(
        # A phone in low light: frames when the sensor delivers them, on a 1/600 s clock.
        "vfr_phone",
        "phone_vfr.mp4",
        _pattern(320, 240, 30, 9),
        (
            "-vf",
            JITTER,
            *X264,
            "-pix_fmt",
            "yuv420p",
            "-r",
            "1000",
            "-fps_mode",
            "vfr",
            "-video_track_timescale",
            "600",
            *AAC,
        ),
        9,
    ),
    DeviceClip(
        "av1",
        "av1.mp4",
        _pattern(320, 240, 30, 3),
        ("-c:v", "libsvtav1", "-preset", "12", "-pix_fmt", "yuv420p", *AAC),
        3,
    ),
    DeviceClip(
        "prores",
        "editor_prores.mov",
        _pattern(320, 240, 24, 3),
        ("-c:v", "prores_ks", "-profile:v", "0", "-c:a", "pcm_s16le"),
        3,
    ),
    DeviceClip(
        # PAL DVD/DV: 720x576 stored, shown 16:9 (SAR 64:45), two fields per frame (top
        # first) woven from 50 pictures a second, 5.1 AC-3. A fast pan (32 px a field), so
        # the two fields of a frame differ: left woven, every moving edge is a comb.
        "mpeg2_interlaced",
        "camcorder.ts",
        _pattern(1440, 576, 50, 3),
        (
            "-vf",
            "crop=720:576:x='mod(t*1600,720)':y=0,"
            "tinterlace=mode=interleave_top,setsar=64/45,setfield=tff",
            "-c:v",
            "mpeg2video",
            "-b:v",
            "4M",
            "-flags",
            "+ilme+ildct",
            "-top",
            "1",
            "-c:a",
            "ac3",
            "-b:a",
            "384k",
        ),
        3,
        audio_channels=6,
    ),
    DeviceClip(
        "mjpeg",
        "webcam_mjpeg.avi",
        _pattern(320, 240, 30, 3),
        ("-c:v", "mjpeg", "-q:v", "5", "-pix_fmt", "yuvj420p", "-c:a", "pcm_s16le"),
        3,
    ),
    DeviceClip(
        "yuv444",
        "screen_444.mp4",
        _pattern(320, 240, 30, 3),
        (*X264, "-pix_fmt", "yuv444p", *AAC),
        3,
    ),
    DeviceClip(
        # A window capture: neither side even. VP9 keeps odd sizes in 4:2:0.
        "odd_size",
        "window_853x481.webm",
        _pattern(853, 481, 30, 3),
        # testsrc2 rounds its size down to even; the scale puts the odd pixels back.
        (
            "-vf",
            "scale=853:481",
            "-c:v",
            "libvpx-vp9",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            "-c:a",
            "libopus",
        ),
        3,
    ),
    DeviceClip(
        "fps60",
        "action_60fps.mp4",
        _pattern(640, 360, 60, 3),
        (*X264, "-pix_fmt", "yuv420p", *AAC),
        3,
    ),
    DeviceClip(
        # One keyframe for the whole clip: every chunk after the first starts mid-GOP.
        "long_gop",
        "long_gop.mp4",
        _pattern(320, 240, 30, 5),
        (*X264, "-pix_fmt", "yuv420p", "-g", "300", "-keyint_min", "300", *AAC),
        5,
    ),
    DeviceClip(
        "three_frames",
        "three_frames.mp4",
        _pattern(320, 240, 30, 0.1),
        (*X264, "-pix_fmt", "yuv420p", *AAC),
        0.1,
    ),
)


def render(clip: DeviceClip, folder: Path) -> Path:
    """Render `clip` into `folder` and return its path."""
    path = folder / clip.filename
    argv = [*FFMPEG, "-f", "lavfi", "-i", clip.video]
    if clip.audio_channels:
        layout = {2: "stereo", 6: "5.1"}[clip.audio_channels]
        tone = f"sine=frequency=440:sample_rate=48000:duration={clip.seconds}"
        argv += ["-f", "lavfi", "-i", f"{tone},aformat=channel_layouts={layout}"]
        argv += ["-map", "0:v", "-map", "1:a"]
    argv += list(clip.options)
    if clip.to_pipe:
        with path.open("wb") as out:
            subprocess.run([*argv, "pipe:1"], check=True, stdout=out, timeout=120)
        return path
    first = path.with_name(f"plain_{path.name}") if clip.retag else path
    subprocess.run([*argv, str(first)], check=True, capture_output=True, timeout=120)
    if clip.retag:
        copy = [*FFMPEG, "-i", str(first), "-map", "0", "-c", "copy", *clip.retag, str(path)]
        subprocess.run(copy, check=True, capture_output=True, timeout=60)
        first.unlink()
    return path
