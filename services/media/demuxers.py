"""Which demuxers and protocols ffmpeg and ffprobe may use: only the file named is read.

Left to itself, ffmpeg picks a demuxer by sniffing the bytes, and some demuxers read *other*
files that the bytes name: an HLS playlist opens its segments (another video's rungs, any file
the service may read), a DASH manifest its BaseURL, an ffconcat list its entries, an IMF
composition its assets. So every ffmpeg or ffprobe run that reads a file passes `input_args`
before its `-i`: the demuxers it may use (`-format_whitelist`; demuxers opened inside one,
such as HLS's segment readers, inherit the list) and the one protocol, `file`.

- `UPLOAD_FORMATS`: what an upload may be, the containers that phones, cameras, editors,
  screen recorders and browsers write, video and audio;
- `HLS_FORMATS`: what reading the platform's own HLS output needs (playlists, MPEG-TS and
  fMP4 segments); `SEGMENT_FORMATS`: a segment alone.

`refusal` says in words what a refused file is, for the 422 the uploader sees.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

UPLOAD_FORMATS: tuple[str, ...] = (
    # MP4/MOV/3GP/M4A (phones, cameras, editors, screen recorders); enable_drefs, the one
    # option that would follow a reference to another file, is off by default.
    "mov",
    "matroska",  # MKV and WebM (browsers' MediaRecorder, OBS)
    "mpegts",  # TS, and camcorders' AVCHD M2TS/MTS
    "mpeg",  # MPEG program streams: MPG, DVD VOB, older camcorders' MOD
    "avi",
    "flv",
    "asf",  # WMV/WMA
    "mxf",  # professional cameras and broadcast editors
    "ogg",  # OGV, Ogg Vorbis/Opus
    "dv",  # DV camcorders
    # Audio: voice memos, podcasts, music.
    "mp3",
    "aac",  # ADTS AAC
    "ac3",
    "eac3",
    "wav",
    "w64",
    "aiff",
    "caf",  # Apple Core Audio
    "flac",
    "amr",  # phones' voice recorders
)
# Left out on purpose: raw elementary streams (h264, hevc, mpegvideo, yuv4mpegpipe) carry no
# timing of their own and come from tools rather than devices; a person uploading one can
# wrap it in MP4 or MKV without re-encoding.

HLS_FORMATS: tuple[str, ...] = ("hls", "mpegts", "mov")
SEGMENT_FORMATS: tuple[str, ...] = ("mpegts", "mov")

# What a refused demuxer's bytes are, in words (ffprobe's names; see `ffmpeg -demuxers`).
_KINDS: dict[str, str] = {
    "hls": "an HLS playlist",
    "dash": "a DASH manifest",
    "webm_dash_manifest": "a DASH manifest",
    "concat": "an ffconcat list",
    "imf": "an IMF composition playlist",
    "ffmetadata": "an FFmpeg metadata file",
    "sdp": "an SDP session description",
    "tty": "a text file",
    "bin": "a text-art file",
    "xbin": "a text-art file",
    "adf": "a text-art file",
    "idf": "a text-art file",
    "sbg": "an SBaGen script",
    "h264": "a raw H.264 stream without a container",
    "hevc": "a raw HEVC stream without a container",
    "mpegvideo": "a raw MPEG video stream without a container",
    "yuv4mpegpipe": "raw YUV4MPEG video",
    "image2": "an image",
    "gif": "an image",
    "apng": "an image",
    "ico": "an image",
}
# fmt: off
_SUBTITLES = frozenset((
    "aqtitle", "ass", "dvbsub", "dvbtxt", "jacosub", "lrc", "mcc", "microdvd", "mpl2", "mpsub",
    "pjs", "realtext", "sami", "scc", "srt", "stl", "subviewer", "subviewer1", "sup",
    "tedcaptions", "vobsub", "vplayer", "webvtt",
))
# fmt: on
# Demuxers that read files which name other files: the refusal says what to send instead.
_REFERENCES = frozenset(("hls", "dash", "webm_dash_manifest", "concat", "imf"))


# A source in object storage is read over HTTP(S) from a presigned URL of the platform's own
# bucket: those protocols only, and a dropped connection is reopened where it broke (a chunk's
# encode reads for minutes).
REMOTE_PROTOCOLS = "https,http,tls,tcp"
RECONNECT_ARGS = [
    "-reconnect",
    "1",
    "-reconnect_streamed",
    "1",
    "-reconnect_on_network_error",
    "1",
    "-reconnect_delay_max",
    "10",
]


@dataclass(frozen=True)
class RemoteSource:
    """A file read over HTTP(S): a presigned URL the platform made for its own bucket. Its
    URL carries a signature: it is never logged whole nor shown to a client (`name` is)."""

    url: str
    name: str = "source"

    def __post_init__(self) -> None:
        if not self.url.startswith(("https://", "http://")):
            raise ValueError("a remote source is an http(s) URL")


# What an ffmpeg input can be: a file on this machine, or an object read over HTTP(S).
Source = Path | RemoteSource


def input_args(formats: Sequence[str], *, remote: bool = False) -> list[str]:
    """Input options (they go before `-i`): only `formats` demux; only local files open, or
    (`remote`) only HTTP(S), reconnecting."""
    if not formats:
        raise ValueError("an input needs at least one allowed format")
    if remote:
        protocols = ["-protocol_whitelist", REMOTE_PROTOCOLS, *RECONNECT_ARGS]
    else:
        protocols = ["-protocol_whitelist", "file"]
    return [*protocols, "-format_whitelist", ",".join(formats)]


def source_input_args(source: Source, formats: Sequence[str]) -> list[str]:
    """input_args for reading `source` (a local file, or a remote one)."""
    return input_args(formats, remote=isinstance(source, RemoteSource))


def source_arg(source: Source) -> str:
    """What follows `-i`: an absolute path (so a name like "http:x" is never read as a
    protocol, nor "-x" as an option), or the URL."""
    return source.url if isinstance(source, RemoteSource) else str(source.absolute())


def source_name(source: Source) -> str:
    """The source as messages may show it: a file's last name, never a path or a URL."""
    return source.name


def is_allowed(format_name: str, formats: Sequence[str] = UPLOAD_FORMATS) -> bool:
    """Whether ffprobe's `format_name` is one of `formats`.

    A demuxer's name may list aliases ("mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm"), and
    ffmpeg's whitelist accepts it when any of them is listed; so does this.
    """
    return not set(format_name.split(",")).isdisjoint(formats)


def describe(format_name: str) -> str:
    """What a file that ffprobe reads as `format_name` is, in words ("an HLS playlist")."""
    name = format_name.split(",")[0]
    if name in _KINDS:
        return _KINDS[name]
    if name in _SUBTITLES:
        return "a subtitle file"
    if name.endswith("_pipe"):  # png_pipe, jpeg_pipe, webp_pipe, ...: one picture
        return "an image"
    return f"a file in the {name} format"


def refusal(format_name: str | None) -> str:
    """The reason a file of `format_name` (None: not known) is not accepted, and what to send."""
    instead = "upload the video file itself (MP4, MOV, MKV, WebM, AVI, MPEG-TS and the like)"
    if not format_name:
        return f"it is in a format the platform does not accept; {instead}"
    what = describe(format_name)
    if format_name.split(",")[0] in _REFERENCES:
        # The file only names media elsewhere; nothing it names is ever read.
        return f"it is {what}, which names other files, not a video; {instead}"
    return f"it is {what}, which the platform does not accept; {instead}"
