"""The names of every file of a video, in one place: nothing else spells a file name or joins
one to a folder.

A `VideoLayout` is built once per video from a validated id and names each of its objects by
a *key*: a relative, '/'-separated name that every storage backend maps to its own place
(a file under the storage folder, an object in a bucket):

    originals/{id}/source                         the uploaded bytes
    originals/{id}/captions/{caption}.vtt         a caption as accepted (always WebVTT)
    hls/{id}/master.m3u8                          written last, from what was produced
    hls/{id}/.complete                            the presentation is final (VOD)
    hls/{id}/{rung}/playlist.m3u8, iframes.m3u8   a rung's published playlists
    hls/{id}/{rung}/seg_00000.ts (.m4s), init.mp4 its segments (fMP4: and init segment)
    hls/{id}/{rung}/chunk_00000.m3u8, init_00000.mp4, chunk_00000.iframes.json
                                                  what each chunk's encode left (stitched)
    hls/{id}/audio/...                            the audio rendition, a rung named "audio"
    hls/{id}/.work/{chunk}-{claim}/{rung}/...     a claim's own output, before it counts
    hls/{id}/poster.jpg, storyboard.jpg, storyboard.vtt
    hls/{id}/downloads/{rung}.mp4 (audio.m4a)     a rung remuxed to one file
    hls/{id}/captions/{caption}/playlist.m3u8, seg_00000.vtt   a caption's HLS rendition

Everything derived from the encode lives below hls/{id}/: starting over or deleting the video
removes it with the renditions. Names starting with a dot are the platform's own and never
served. The patterns that check names a client sends (`SEGMENT_RE`, `CAPTION_FILE_RE`) are
derived from the same constants that name the files.
"""

import re
from dataclasses import dataclass

from services.core import ids
from services.core.errors import InvalidInput

ORIGINALS = "originals"
HLS = "hls"

PLAYLIST = "playlist.m3u8"
IFRAMES = "iframes.m3u8"
MASTER = "master.m3u8"
COMPLETE = ".complete"
MASTER_LOCK = ".master.lock"
WORK = ".work"
SOURCE = "source"
# The init segment an fMP4 rung's chunks share, as served.
INIT = "init.mp4"
# The audio rendition: a rung folder of its own, encoded in one growing run.
AUDIO = "audio"
AUDIO_RUN_PLAYLIST = "chunk_audio.m3u8"
AUDIO_RUN_INIT = "init_audio.mp4"
POSTER = "poster.jpg"
STORYBOARD_IMAGE = "storyboard.jpg"
STORYBOARD_VTT = "storyboard.vtt"
DOWNLOADS = "downloads"
CAPTIONS = "captions"

SEGMENT_PREFIX = "seg_"
SEGMENT_DIGITS = 5
TS, M4S, VTT = "ts", "m4s", "vtt"

_SEQ = f"[0-9]{{{SEGMENT_DIGITS}}}"
# What a rendition folder serves: segments, an fMP4 init segment, its I-frame playlist.
SEGMENT_RE = re.compile(
    rf"{SEGMENT_PREFIX}{_SEQ}\.({TS}|{M4S})|{re.escape(INIT)}|{re.escape(IFRAMES)}"
)
# What a caption's rendition folder serves.
CAPTION_FILE_RE = re.compile(rf"{re.escape(PLAYLIST)}|{SEGMENT_PREFIX}{_SEQ}\.{VTT}")


def segment_pattern(*, fmp4: bool) -> str:
    """The printf pattern ffmpeg names a rung's segments with: seg_%05d.ts (fMP4: .m4s)."""
    return f"{SEGMENT_PREFIX}%0{SEGMENT_DIGITS}d.{M4S if fmp4 else TS}"


def caption_segment(index: int) -> str:
    """The name of a caption rendition's WebVTT segment `index`."""
    return f"{SEGMENT_PREFIX}{index:0{SEGMENT_DIGITS}d}.{VTT}"


def chunk_playlist(index: int) -> str:
    """The playlist chunk `index`'s encode writes in each rung folder (stitched into PLAYLIST)."""
    return f"chunk_{index:05d}.m3u8"


def chunk_init(index: int) -> str:
    """The fMP4 init segment chunk `index` writes beside its segments: every chunk writes one,
    publishing checks they are all alike and serves one of them as INIT."""
    return f"init_{index:05d}.mp4"


def chunk_iframes(index: int) -> str:
    """Where chunk `index`'s keyframes lie in its segments (for the I-frame playlist)."""
    return f"chunk_{index:05d}.iframes.json"


def segment(value: str) -> str:
    """Return `value` if it names a file a rendition folder serves (`seg_00001.ts`)."""
    if not SEGMENT_RE.fullmatch(value):
        raise InvalidInput(
            f"'{value[:64]}' is not a segment name: "
            f"expected seg_NNNNN.ts, seg_NNNNN.m4s, {INIT} or {IFRAMES}"
        )
    return value


def caption_file(value: str) -> str:
    """Return `value` if it names a file of a caption's rendition (`seg_00001.vtt`)."""
    if not CAPTION_FILE_RE.fullmatch(value):
        raise InvalidInput(
            f"'{value[:64]}' is not a caption file: expected {PLAYLIST} or seg_NNNNN.vtt"
        )
    return value


def download_name(rung: str) -> str:
    """A rung's download: `720p.mp4`; an audio-only video's audio is `audio.m4a`."""
    name = ids.quality(rung)
    return f"{name}.m4a" if name == AUDIO else f"{name}.mp4"


def _file_name(file: str) -> str:
    """`file` if it is one plain name (no folder, not a dot name): made here, never a client's."""
    if not file or "/" in file or "\\" in file or file.startswith(".") or "\x00" in file:
        raise ValueError(f"{file[:64]!r} is not a file name of a rung")
    return file


@dataclass(frozen=True)
class VideoLayout:
    """Every key of one video. Build it with `VideoLayout.of(video_id)` (validates the id)."""

    video_id: str

    @classmethod
    def of(cls, video_id: str) -> "VideoLayout":
        return cls(ids.video_id(video_id))

    # --- the original and what is kept with it ------------------------------------------
    @property
    def originals(self) -> str:
        """The prefix of everything kept of the upload (its bytes, accepted captions)."""
        return f"{ORIGINALS}/{self.video_id}/"

    @property
    def source(self) -> str:
        return f"{self.originals}{SOURCE}"

    @property
    def caption_sources(self) -> str:
        return f"{self.originals}{CAPTIONS}/"

    def caption_source(self, caption: str) -> str:
        return f"{self.caption_sources}{ids.caption_id(caption)}.{VTT}"

    # --- what the encode makes ------------------------------------------------------------
    @property
    def hls(self) -> str:
        """The prefix of everything derived from the encode."""
        return f"{HLS}/{self.video_id}/"

    @property
    def master(self) -> str:
        return f"{self.hls}{MASTER}"

    @property
    def complete(self) -> str:
        return f"{self.hls}{COMPLETE}"

    @property
    def master_lock(self) -> str:
        return f"{self.hls}{MASTER_LOCK}"

    @property
    def work(self) -> str:
        return f"{self.hls}{WORK}/"

    def attempt(self, index: int, attempt: int) -> str:
        """The private output prefix of claim `attempt` of chunk `index` ({rung}/ inside)."""
        if index < 0 or attempt < 0:
            raise ValueError(f"no attempt folder for chunk {index}, claim {attempt}")
        return f"{self.work}{index:05d}-{attempt}/"

    def run(self, index: int, attempt: int) -> str:
        """The output prefix of an ffmpeg run that starts at claim `attempt` of chunk `index`
        and runs on into the chunks after it ({rung}/ inside): each chunk's files move from
        here into its own claim's folder once its segments are closed."""
        return f"{self.attempt(index, attempt).removesuffix('/')}-run/"

    def attempt_file(self, index: int, attempt: int, rung: str, file: str) -> str:
        """A file claim `attempt` of chunk `index` wrote in its own folder of rung `rung`."""
        return f"{self.attempt(index, attempt)}{ids.quality(rung)}/{_file_name(file)}"

    def rung(self, name: str) -> str:
        """The prefix of rung `name`'s folder (`hls/{id}/720p/`; the audio is "audio")."""
        return f"{self.hls}{ids.quality(name)}/"

    def rung_file(self, name: str, file: str) -> str:
        """A file of rung `name`; `file` is a name this module made (checked: no folder)."""
        return f"{self.rung(name)}{_file_name(file)}"

    def playlist(self, name: str) -> str:
        return self.rung_file(name, PLAYLIST)

    def segment(self, name: str, file: str) -> str:
        """A file a client asked for in rung `name`: a segment, init segment or I-frames."""
        return f"{self.rung(name)}{segment(file)}"

    @property
    def poster(self) -> str:
        return f"{self.hls}{POSTER}"

    @property
    def storyboard_image(self) -> str:
        return f"{self.hls}{STORYBOARD_IMAGE}"

    @property
    def storyboard_vtt(self) -> str:
        return f"{self.hls}{STORYBOARD_VTT}"

    @property
    def downloads(self) -> str:
        return f"{self.hls}{DOWNLOADS}/"

    def download(self, rung: str) -> str:
        return f"{self.downloads}{download_name(rung)}"

    @property
    def captions(self) -> str:
        """The prefix of the captions' HLS renditions (made again after a new encode)."""
        return f"{self.hls}{CAPTIONS}/"

    def caption(self, caption: str) -> str:
        return f"{self.captions}{ids.caption_id(caption)}/"

    def caption_file(self, caption: str, file: str) -> str:
        return f"{self.caption(caption)}{caption_file(file)}"
