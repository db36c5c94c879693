"""A video's rendition files as publishing reads and writes them, wherever they are kept.

`LocalFiles` is the local storage folder: the rung folders themselves, read and written as
files (`write_atomic`), measured where they lie: today's code path, unchanged.

`StoreFiles` is object storage: chunk playlists, I-frame sidecars and init segments are read
with `get_bytes`, published playlists, init segments, the master and the completion marker
written with `put_bytes`; a rung is measured from a small mirror in a scratch folder (its
playlist, first segment and init segment: what ffprobe reads) with the segment sizes taken
from the bucket's listing.
"""

import contextlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Protocol

from services.core import layout
from services.core.fileserve import MEDIA_TYPES
from services.core.layout import VideoLayout
from services.core.settings import Settings
from services.core.storage import Storage, remove_tree, write_atomic
from services.core.storage.factory import store_of, uses_object_storage
from services.core.storage.interface import ObjectMissing, Store
from services.media import fmp4
from services.media.playlists import (
    AudioStats,
    IFrame,
    RenditionStats,
    iframe_bandwidth,
    measure_audio,
    measure_rendition,
    parse_media_playlist,
    read_media_playlist,
)

# Playlists, sidecars and init segments are small; our own, read back with room to spare.
SMALL_OBJECT_LIMIT = 64 << 20
Segments = list[tuple[str, float]]
# A presigned source URL outlives the longest encode reading it (ffmpeg reopens the same URL
# after a dropped connection).
SOURCE_URL_SECONDS = 12 * 3600


def media_type(key: str) -> str | None:
    """The MIME type an object is stored with (as the streaming service serves its kind)."""
    return MEDIA_TYPES.get(PurePosixPath(key).suffix)


def put_bytes(store: Store, key: str, data: str | bytes) -> None:
    """Publish a small object with its MIME type."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    store.put_bytes(key, raw, content_type=media_type(key))


def put_file(store: Store, key: str, source: Path) -> None:
    """Store the local file `source` under `key` with its MIME type."""
    store.put_file(key, source, content_type=media_type(key))


class VideoFiles(Protocol):
    """The rendition files of one video, for publishing."""

    video_id: str

    def read_bytes(self, rung: str, name: str) -> bytes:
        """A file of rung `rung`; FileNotFoundError when there is none."""
        ...

    def read_playlist(self, rung: str, name: str) -> Segments:
        """The (uri, seconds) segments of a media playlist of rung `rung`."""
        ...

    def write(self, rung: str, name: str, data: str | bytes) -> None:
        """Publish file `name` of rung `rung` atomically (readers see old or new, whole)."""
        ...

    def publish_init(self, rung: str, sources: list[str], *, check: bool) -> None:
        """fmp4.publish_init for the rung: its chunks' init segments become layout.INIT."""
        ...

    def iframe_bandwidth(self, rung: str, frames: list[IFrame], end_time: float) -> int:
        """playlists.iframe_bandwidth of the rung's I-frame playlist."""
        ...

    def measure_rendition(
        self, rung: str, *, ffprobe: str, ffmpeg: str, init: str | None
    ) -> RenditionStats:
        """playlists.measure_rendition of the rung's published playlist."""
        ...

    def measure_audio(self, *, ffprobe: str, init: str | None) -> AudioStats:
        """playlists.measure_audio of the audio's published playlist."""
        ...

    def has_master(self) -> bool:
        """Whether a master playlist was published."""
        ...

    def write_master(self, text: str) -> None:
        """Publish the master playlist atomically."""
        ...

    def finish(self) -> None:
        """Mark the presentation final (the completion marker, last) and drop claims' work."""
        ...


class LocalFiles:
    """The rung folders under the local storage folder (today's files, written in place)."""

    def __init__(self, storage: Storage, video_id: str) -> None:
        self.storage = storage
        self.video_id = video_id

    def _file(self, rung: str, name: str) -> Path:
        return self.storage.rung_file(self.video_id, rung, name)

    def read_bytes(self, rung: str, name: str) -> bytes:
        return self._file(rung, name).read_bytes()

    def read_playlist(self, rung: str, name: str) -> Segments:
        return read_media_playlist(self._file(rung, name))

    def write(self, rung: str, name: str, data: str | bytes) -> None:
        write_atomic(self._file(rung, name), data)

    def publish_init(self, rung: str, sources: list[str], *, check: bool) -> None:
        folder = self.storage.rung_dir(self.video_id, rung)
        fmp4.publish_init(folder, sources, name=layout.INIT, check=check)

    def iframe_bandwidth(self, rung: str, frames: list[IFrame], end_time: float) -> int:
        return iframe_bandwidth(self.storage.rung_dir(self.video_id, rung), frames, end_time)

    def measure_rendition(
        self, rung: str, *, ffprobe: str, ffmpeg: str, init: str | None
    ) -> RenditionStats:
        folder = self.storage.rung_dir(self.video_id, rung)
        return measure_rendition(folder, ffprobe=ffprobe, ffmpeg=ffmpeg, init=init)

    def measure_audio(self, *, ffprobe: str, init: str | None) -> AudioStats:
        folder = self.storage.rung_dir(self.video_id, layout.AUDIO)
        return measure_audio(folder, ffprobe=ffprobe, init=init)

    def has_master(self) -> bool:
        return self.storage.master_path(self.video_id).exists()

    def write_master(self, text: str) -> None:
        write_atomic(self.storage.master_path(self.video_id), text)

    def finish(self) -> None:
        # Last, and durably like every playlist before it: the job is recorded ok after this.
        write_atomic(self.storage.complete_marker(self.video_id), "")
        # Every chunk counts now: what claims left in their work folders never will.
        remove_tree(self.storage.work_dir(self.video_id))


class StoreFiles:
    """The rung folders of a video in object storage; `scratch` is this process's own local
    folder (nothing in it is shared), where measuring mirrors what ffprobe reads."""

    def __init__(self, store: Store, video_id: str, scratch: Storage) -> None:
        self.store = store
        self.video_id = video_id
        self.layout = VideoLayout.of(video_id)
        self.scratch = scratch

    def read_bytes(self, rung: str, name: str) -> bytes:
        try:
            return self.store.get_bytes(self.layout.rung_file(rung, name), limit=SMALL_OBJECT_LIMIT)
        except ObjectMissing as exc:
            raise FileNotFoundError(f"{rung}/{name} is not stored") from exc

    def read_playlist(self, rung: str, name: str) -> Segments:
        text = self.read_bytes(rung, name).decode("utf-8")
        return parse_media_playlist(text, name=f"{rung}/{name}")

    def write(self, rung: str, name: str, data: str | bytes) -> None:
        put_bytes(self.store, self.layout.rung_file(rung, name), data)

    def publish_init(self, rung: str, sources: list[str], *, check: bool) -> None:
        def read(name: str) -> bytes:
            try:
                return self.read_bytes(rung, name)
            except FileNotFoundError as exc:
                raise fmp4.Fmp4Error(str(exc)) from exc

        def published() -> bytes | None:
            try:
                return self.read_bytes(rung, layout.INIT)
            except FileNotFoundError:
                return None

        files = fmp4.InitFiles(
            read=read,
            published=published,
            write=lambda data: self.write(rung, layout.INIT, data),
            where=rung,
        )
        fmp4.publish_init_with(files, sources, name=layout.INIT, check=check)

    def sizes(self, rung: str) -> dict[str, int]:
        """Every object of the rung's folder: its size by file name (one listing)."""
        prefix = self.layout.rung(rung)
        return {info.key[len(prefix) :]: info.size for info in self.store.list_prefix(prefix)}

    def iframe_bandwidth(self, rung: str, frames: list[IFrame], end_time: float) -> int:
        folder = Path(rung)  # only named in errors: the sizes come from the bucket
        return iframe_bandwidth(folder, frames, end_time, sizes=self.sizes(rung).__getitem__)

    def measure_rendition(
        self, rung: str, *, ffprobe: str, ffmpeg: str, init: str | None
    ) -> RenditionStats:
        with self._mirror(rung, init) as folder:
            sizes = self.sizes(rung)
            return measure_rendition(
                folder, ffprobe=ffprobe, ffmpeg=ffmpeg, init=init, sizes=sizes.__getitem__
            )

    def measure_audio(self, *, ffprobe: str, init: str | None) -> AudioStats:
        with self._mirror(layout.AUDIO, init) as folder:
            sizes = self.sizes(layout.AUDIO)
            return measure_audio(folder, ffprobe=ffprobe, init=init, sizes=sizes.__getitem__)

    @contextlib.contextmanager
    def _mirror(self, rung: str, init: str | None) -> Iterator[Path]:
        """A scratch folder named as the rung holding its published playlist, first segment
        and init segment: all that measuring reads besides the sizes. Removed after."""
        with self.scratch_folder() as parent:
            folder = parent / rung
            folder.mkdir()
            playlist = self.read_bytes(rung, layout.PLAYLIST)
            (folder / layout.PLAYLIST).write_bytes(playlist)
            listed = parse_media_playlist(playlist.decode("utf-8"), name=f"{rung}/playlist")
            names = [listed[0][0]] if listed else []
            for name in [*names, *([init] if init else [])]:
                self.download(self.layout.rung_file(rung, name), folder / name)
            yield folder

    @contextlib.contextmanager
    def scratch_folder(self) -> Iterator[Path]:
        """A new empty folder in the scratch's tmp/, removed with what it holds."""
        tmp = self.scratch.root / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=f".{self.video_id}-", dir=tmp))
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def download(self, key: str, target: Path) -> None:
        """Copy the object `key` to the local file `target` (streamed)."""
        try:
            with open(target, "wb") as out:
                for piece in self.store.read_range(key):
                    out.write(piece)
        except ObjectMissing as exc:
            raise FileNotFoundError(f"{key.rsplit('/', 1)[-1]} is not stored") from exc

    def has_master(self) -> bool:
        return self.store.stat(self.layout.master) is not None

    def write_master(self, text: str) -> None:
        put_bytes(self.store, self.layout.master, text)

    def finish(self) -> None:
        # Last: the job is recorded ok after this. Claims' work is in each worker's scratch
        # (removed there); this process's own is dropped now.
        self.store.put_bytes(self.layout.complete, b"")
        remove_tree(self.scratch.work_dir(self.video_id))


def read_sidecar(files: VideoFiles, rung: str, name: str) -> list[IFrame]:
    """The keyframes an I-frame sidecar of rung `rung` records."""
    return [IFrame(**f) for f in json.loads(files.read_bytes(rung, name))]


def video_files(settings: Settings, video_id: str) -> VideoFiles:
    """The video's rendition files where the settings keep them: the local folder's rung
    folders, or the bucket (STORAGE_URL) with this process's scratch folder beside."""
    if uses_object_storage(settings):
        return stored_files(settings, video_id)
    return LocalFiles(Storage(settings.storage_dir), video_id)


def stored_files(settings: Settings, video_id: str) -> "StoreFiles":
    """The video's files in the settings' bucket, with this process's scratch folder."""
    return StoreFiles(store_of(settings), video_id, Storage(settings.storage_dir))
