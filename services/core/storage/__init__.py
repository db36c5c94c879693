"""The storage folder: every path the platform reads or writes is the path of a key that
services.core.layout built from validated ids (that module draws the whole layout).

    originals/{video_id}/...   the upload's bytes and the captions accepted for it
    hls/{video_id}/...         everything derived from the encode
    incoming/                  the watch folder (claims in incoming/.claimed/,
                               refused files in incoming/failed/)
"""

import os
import shutil
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from services.core import layout
from services.core.errors import InsufficientStorage, NotFound
from services.core.layout import VideoLayout

# fsyncs waiting on the disk at once (make_durable); they cost no CPU.
SYNC_THREADS = 8


@dataclass(frozen=True)
class DiskUsage:
    total: int
    used: int
    free: int


class Storage:
    """Paths under one storage root; methods take ids, validate them (through the layout)
    and return the path of the key the layout names."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def path(self, key: str) -> Path:
        """The file of a layout key (keys are built by services.core.layout only)."""
        return self.root / key

    def ensure_layout(self) -> None:
        """Create the top-level folders (idempotent)."""
        for sub in (layout.ORIGINALS, layout.HLS, "tmp", "incoming"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def incoming_dir(self) -> Path:
        """The watch folder: files dropped here become videos (services/upload/watch.py)."""
        return self.root / "incoming"

    def original_dir(self, video_id: str) -> Path:
        return self.path(VideoLayout.of(video_id).originals)

    def source_path(self, video_id: str) -> Path:
        """The original upload's bytes."""
        return self.path(VideoLayout.of(video_id).source)

    def create_source(self, video_id: str) -> Path:
        """Create the empty original of a new upload, its name already on the disk: a chunk's
        fdatasync makes only its bytes durable, not the name of the file that holds them."""
        source = self.source_path(video_id)
        source.parent.mkdir(parents=True, exist_ok=True)
        source.touch()
        make_durable([source], folders=[source.parent.parent])
        return source

    def hls_dir(self, video_id: str) -> Path:
        return self.path(VideoLayout.of(video_id).hls)

    def work_dir(self, video_id: str) -> Path:
        """Where video chunks are encoded before they count (one folder per claim)."""
        return self.path(VideoLayout.of(video_id).work)

    def attempt_dir(self, video_id: str, index: int, attempt: int) -> Path:
        """The private output folder of one claim of chunk `index`: {rung}/ folders inside.

        Two claims of a chunk can run at once (a worker stalled past its lease and the one that
        took over); each writes only here, and only a finished, checked claim moves its files
        into the rung folders, so a late or stopped ffmpeg never rewrites what already counts.
        """
        return self.path(VideoLayout.of(video_id).attempt(index, attempt))

    def run_dir(self, video_id: str, index: int, attempt: int) -> Path:
        """The output folder of an ffmpeg run from claim `attempt` of chunk `index` on into
        the chunks after it (see VideoLayout.run)."""
        return self.path(VideoLayout.of(video_id).run(index, attempt))

    def rung_dir(self, video_id: str, rung: str) -> Path:
        return self.path(VideoLayout.of(video_id).rung(rung))

    def rung_file(self, video_id: str, rung: str, name: str) -> Path:
        """A file of a rung folder, named by the layout (chunk playlists, init segments, ...)."""
        return self.path(VideoLayout.of(video_id).rung_file(rung, name))

    def master_path(self, video_id: str) -> Path:
        return self.path(VideoLayout.of(video_id).master)

    def complete_marker(self, video_id: str) -> Path:
        """Exists once the presentation is final (VOD): its playlists may then be cached."""
        return self.path(VideoLayout.of(video_id).complete)

    def playlist_path(self, video_id: str, rung: str) -> Path:
        return self.path(VideoLayout.of(video_id).playlist(rung))

    def segment_path(self, video_id: str, rung: str, segment: str) -> Path:
        return self.path(VideoLayout.of(video_id).segment(rung, segment))

    def poster_path(self, video_id: str) -> Path:
        """A JPEG frame from about a tenth into the video."""
        return self.path(VideoLayout.of(video_id).poster)

    def storyboard_image_path(self, video_id: str) -> Path:
        """The storyboard sprite: small frames at a fixed interval, in a grid."""
        return self.path(VideoLayout.of(video_id).storyboard_image)

    def storyboard_vtt_path(self, video_id: str) -> Path:
        """The WebVTT map from time ranges to tiles of the storyboard sprite."""
        return self.path(VideoLayout.of(video_id).storyboard_vtt)

    def downloads_dir(self, video_id: str) -> Path:
        return self.path(VideoLayout.of(video_id).downloads)

    def download_path(self, video_id: str, rung: str) -> Path:
        """Rung `rung` remuxed to one MP4 file (with the audio) for downloading; "audio" (an
        audio-only video's one rendition) is audio.m4a."""
        return self.path(VideoLayout.of(video_id).download(rung))

    def caption_sources_dir(self, video_id: str) -> Path:
        """The captions as accepted: beside the original, so a new encode keeps them."""
        return self.path(VideoLayout.of(video_id).caption_sources)

    def caption_source_path(self, video_id: str, caption: str) -> Path:
        """One caption's WebVTT file as accepted (the source of its HLS rendition)."""
        return self.path(VideoLayout.of(video_id).caption_source(caption))

    def captions_dir(self, video_id: str) -> Path:
        """The captions' HLS renditions, one folder each (made again after a new encode)."""
        return self.path(VideoLayout.of(video_id).captions)

    def caption_dir(self, video_id: str, caption: str) -> Path:
        return self.path(VideoLayout.of(video_id).caption(caption))

    def caption_file_path(self, video_id: str, caption: str, name: str) -> Path:
        """A file of a caption's HLS rendition: its playlist or one of its WebVTT segments."""
        return self.path(VideoLayout.of(video_id).caption_file(caption, name))

    def master_lock_path(self, video_id: str) -> Path:
        """Held while the master is rewritten (the publisher, a caption added or deleted)."""
        return self.path(VideoLayout.of(video_id).master_lock)

    def asset_path(self, video_id: str, relative: str) -> Path:
        """A file below hls/{video_id}/ named by a client; must resolve inside that folder."""
        base = self.hls_dir(video_id).resolve()
        # Checked before touching the filesystem: resolve() itself fails on a NUL byte.
        if relative.startswith("/") or "\x00" in relative or len(relative) > 512:
            raise NotFound(f"no asset '{relative[:64]!r}' for video {video_id}")
        candidate = (base / relative).resolve()
        if not candidate.is_relative_to(base):
            raise NotFound(f"no asset '{relative[:64]}' for video {video_id}")
        # Dot names are the platform's own (claims' work folders, locks, temporary files,
        # the completion marker): never served.
        if any(part.startswith(".") for part in candidate.relative_to(base).parts):
            raise NotFound(f"no asset '{relative[:64]}' for video {video_id}")
        return candidate

    def delete_renditions(self, video_id: str) -> None:
        """Remove every rendition of a video (before it is encoded anew)."""
        remove_tree(self.hls_dir(video_id))

    def delete_video(self, video_id: str) -> None:
        """Remove the original and every rendition of a video (nothing left on disk)."""
        for folder in (self.original_dir(video_id), self.hls_dir(video_id)):
            remove_tree(folder)

    def disk_usage(self) -> DiskUsage:
        usage = shutil.disk_usage(self.root)
        return DiskUsage(total=usage.total, used=usage.used, free=usage.free)

    def check_free_space(self, needed: int, keep_free: int, doing: str) -> None:
        """Refuse (507) `doing` when writing `needed` bytes would leave less than `keep_free`
        free on the storage disk (MIN_FREE_BYTES)."""
        free = self.disk_usage().free
        if free - needed < keep_free:
            raise full_disk(doing, free=free, needed=needed, keep_free=keep_free)


def full_disk(doing: str, *, free: int, needed: int, keep_free: int) -> InsufficientStorage:
    """The 507 refusing `doing`, with the disk's figures in its message."""
    return InsufficientStorage(
        f"not enough disk space for {doing}: {free} bytes free, {needed} needed and "
        f"{keep_free} must stay free; try again later or ask the operator"
    )


def remove_tree(folder: Path, attempts: int = 5) -> None:
    """Remove `folder` and everything below it, even while a file is being added to it.

    A preview made in the background (services.media.derived) can create a file after
    rmtree listed the folder, so that the folder is not empty when it is removed: go again.
    """
    for _ in range(attempts):
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            return
        time.sleep(0.05)


def write_atomic(path: Path, content: str | bytes) -> None:
    """Write `content` to `path` so readers see the old file or the whole new one, never half,
    and a power cut leaves one of the two as well: the bytes reach the disk before the rename,
    and the rename before this returns."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    # Per process and thread: two threads of one worker may publish the same playlist.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def fsync_file(path: Path) -> None:
    """Have the kernel put `path`'s bytes on the disk before this returns."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_folder(folder: Path) -> None:
    """Have the names in `folder` (files created, renamed into it) reach the disk."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_durable(files: Iterable[Path], folders: Iterable[Path] = ()) -> None:
    """fsync every file, then every folder (each given or holding a file), so that a power cut
    after this returns loses none of them. The fsyncs run side by side: a journaling file
    system commits the waiting ones together."""
    files = list(dict.fromkeys(files))
    folders = list(dict.fromkeys([*(f.parent for f in files), *folders]))
    with ThreadPoolExecutor(max_workers=SYNC_THREADS) as pool:
        list(pool.map(fsync_file, files))
        list(pool.map(fsync_folder, folders))
