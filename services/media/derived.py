"""Files derived from a video's encode, each made once: the poster, the storyboard (sprite and
WebVTT map) and the MP4 download of a rung.

Two parts of the platform make them: the transcoding worker, right after the first chunk is
published (poster) and once the video is `ok` (storyboard), and the streaming service when one
is asked for but missing (a worker died in between, or the video predates them). Both go
through `make_once`: under an exclusive lock per file (`flock`, so it holds across processes
and machines sharing the folder), the file is made only if it is still missing, written under
a temporary name, fsynced and renamed into place. Readers see no file or the whole file (after
a power cut too), and concurrent requests make it once.

Nothing here creates a video's folder: a file whose folder is gone (the video was deleted or
started over meanwhile) is not made, rather than left behind.
"""

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from services.core import layout
from services.core.redact import public_text
from services.core.settings import Settings
from services.core.storage import Storage, fsync_file, fsync_folder
from services.core.storage.factory import uses_object_storage
from services.core.storage.interface import StorageUnavailable
from services.media.demuxers import RemoteSource, Source
from services.media.plan import Plan
from services.media.playlists import parse_media_playlist
from services.media.remux import rung_mp4_command
from services.media.runner import FFmpegError, run_ffmpeg
from services.media.thumbnails import (
    plan_storyboard,
    poster_command,
    poster_size,
    poster_time,
    storyboard_command,
    storyboard_vtt,
)
from services.media.video_files import (
    SOURCE_URL_SECONDS,
    StoreFiles,
    put_bytes,
    put_file,
    stored_files,
)

log = logging.getLogger(__name__)

LOCK_POLL_SECONDS = 0.05
# How long a request waits for another process making the same file (a long rung's remux).
LOCK_WAIT_SECONDS = 600.0
# A poster or a storyboard is seconds of work at most; a remux reads a whole rung from disk.
PICTURE_TIMEOUT_SECONDS = 300.0
REMUX_TIMEOUT_SECONDS = 1800.0


class NotMade(Exception):
    """A derived file could not be made; the message says why, naming no server path."""


class Busy(NotMade):
    """Another process has been making the file for longer than we wait."""


Build = Callable[[Path], Awaitable[None]]


async def make_once(path: Path, build: Build) -> Path:
    """`path`, made by `build(temporary path)` unless it exists; one maker at a time."""
    if path.is_file():
        return path
    async with _locked(path):
        if path.is_file():  # made by whoever held the lock before us
            return path
        temporary = path.with_name(f".{path.stem}.tmp{path.suffix}")
        try:
            await build(temporary)
            if not temporary.is_file() or temporary.stat().st_size == 0:
                raise NotMade(f"ffmpeg wrote no {path.name}")
            # On the disk before it has its name: after a power cut, no file or the whole one.
            await asyncio.to_thread(fsync_file, temporary)
            os.replace(temporary, path)
            await asyncio.to_thread(fsync_folder, path.parent)
        except FileNotFoundError as exc:
            gone = Path(str(exc.filename)).name if exc.filename else path.name
            raise NotMade(f"the video's files are gone ({gone})") from exc
        finally:
            temporary.unlink(missing_ok=True)
    return path


@contextlib.asynccontextmanager
async def _locked(path: Path) -> AsyncIterator[None]:
    """Hold the exclusive lock of `path` (a dot file beside it, kept: unlinking races)."""
    try:
        fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    except FileNotFoundError as exc:
        raise NotMade(f"the video's folder is gone: no {path.name} can be made") from exc
    try:
        await _acquire(fd, path)
        yield
    finally:
        os.close(fd)  # closing releases the lock


async def _acquire(fd: int, path: Path) -> None:
    # Non-blocking tries: a blocking flock in a thread could not be cancelled.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LOCK_WAIT_SECONDS
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if loop.time() > deadline:
                raise Busy(f"{path.name} is still being made by another process") from None
            await asyncio.sleep(LOCK_POLL_SECONDS)


async def _ffmpeg(argv: list[str], timeout: float) -> None:
    """Run one ffmpeg; a failure or a timeout (ffmpeg is then killed) is NotMade."""
    try:
        await asyncio.wait_for(run_ffmpeg(argv), timeout=timeout)
    except FFmpegError as exc:
        # ffmpeg's words name our files: the log keeps them, the message shows base names.
        log.warning("ffmpeg failed making a derived file: %s", exc)
        raise NotMade(public_text(str(exc))) from exc
    except TimeoutError as exc:
        raise NotMade(f"ffmpeg took longer than {timeout:g} s") from exc


# --- poster ---------------------------------------------------------------------------------


async def make_poster(settings: Settings, video_id: str, plan: Plan) -> Path:
    """The poster: the keyframe a tenth into the source, at the top rung's size (capped)."""
    storage = Storage(settings.storage_dir)
    build = _poster_build(settings, plan, storage.source_path(video_id))
    return await make_once(storage.poster_path(video_id), build)


def _poster_build(settings: Settings, plan: Plan, source: Source) -> Build:
    """What writes the poster of `source` to a file."""
    top = plan.renditions[0]
    width, height = poster_size(top.width, top.height)
    at = poster_time(plan.duration)

    def command(out: Path, *, keyframes_only: bool) -> list[str]:
        return poster_command(
            ffmpeg=settings.ffmpeg_bin,
            source=source,
            at=at,
            width=width,
            height=height,
            out=out,
            keyframes_only=keyframes_only,
            info=plan.info,
        )

    async def build(out: Path) -> None:
        await _ffmpeg(command(out, keyframes_only=True), PICTURE_TIMEOUT_SECONDS)
        if not out.is_file() or out.stat().st_size == 0:
            # No flagged keyframe to show (intra refresh): decode every frame instead.
            await _ffmpeg(command(out, keyframes_only=False), PICTURE_TIMEOUT_SECONDS)

    return build


# --- storyboard -----------------------------------------------------------------------------


async def make_storyboard(settings: Settings, video_id: str, plan: Plan) -> Path:
    """The storyboard sprite and its WebVTT map, from the finished lowest rung; the map's path.

    Call it once the presentation is final: the lowest rung's playlist must be complete.
    """
    storage = Storage(settings.storage_dir)
    lowest = plan.renditions[-1]
    board = plan_storyboard(
        plan.duration, lowest.width, lowest.height, keyframe_seconds=plan.options.keyframe_seconds
    )
    image = storage.storyboard_image_path(video_id)
    playlist = storage.playlist_path(video_id, lowest.name)

    async def build_image(out: Path) -> None:
        argv = storyboard_command(
            ffmpeg=settings.ffmpeg_bin, playlist=playlist, board=board, out=out
        )
        await _ffmpeg(argv, PICTURE_TIMEOUT_SECONDS)

    async def build_map(out: Path) -> None:
        # The map is made after the sprite: whoever finds the map finds the sprite too.
        await make_once(image, build_image)
        out.write_text(storyboard_vtt(board, plan.duration, image.name), encoding="utf-8")

    return await make_once(storage.storyboard_vtt_path(video_id), build_map)


# --- downloads ------------------------------------------------------------------------------


async def make_rung_mp4(settings: Settings, video_id: str, plan: Plan, rung: str) -> Path:
    """Rung `rung` of a finished video remuxed (stream copy) with its audio into one MP4; for
    an audio-only video, rung "audio" is its audio alone as an .m4a."""
    if rung not in plan.qualities:
        raise NotMade(f"video {video_id} has no rung {rung}")
    storage = Storage(settings.storage_dir)
    path = storage.download_path(video_id, rung)
    audio = storage.playlist_path(video_id, layout.AUDIO) if plan.audio_kbps is not None else None
    video = None if plan.audio_only else storage.playlist_path(video_id, rung)
    try:
        # Below the video's folder, never creating it (parents=False): see the module's doc.
        path.parent.mkdir(exist_ok=True)
    except FileNotFoundError as exc:
        raise NotMade(f"the files of video {video_id} are gone") from exc

    async def build(out: Path) -> None:
        argv = rung_mp4_command(
            ffmpeg=settings.ffmpeg_bin,
            video_playlist=video,
            audio_playlist=audio,
            out=out,
        )
        await _ffmpeg(argv, REMUX_TIMEOUT_SECONDS)

    return await make_once(path, build)


# Previews being made in the background, kept referenced until done (asyncio holds tasks weakly).
_BACKGROUND: set[asyncio.Task[None]] = set()


def start_previews(settings: Settings, video_id: str, plan: Plan) -> None:
    """`make_previews` in the background: the worker claims its next unit meanwhile.

    A preview is mostly process start-up and waiting for the disk (a poster decodes one frame),
    so the encode it overlaps loses next to nothing, and no chunk waits for a picture.
    """
    task = asyncio.get_running_loop().create_task(make_previews(settings, video_id, plan))
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


async def make_previews(settings: Settings, video_id: str, plan: Plan) -> None:
    """What a worker makes after a unit: the poster once the video plays, the storyboard once
    it is final. Cheap when there is nothing to do (two or three stats); never raises for a
    file that cannot be made (the streaming service tries again when it is asked for)."""
    if plan.audio_only:
        return  # no picture: nothing to show before playback or over the seek bar
    if uses_object_storage(settings):
        await _make_stored_previews(settings, video_id, plan)
        return
    storage = Storage(settings.storage_dir)
    wanted: list[tuple[Path, Callable[[], Awaitable[Path]]]] = []
    if storage.master_path(video_id).is_file():
        wanted.append(
            (storage.poster_path(video_id), lambda: make_poster(settings, video_id, plan))
        )
    if storage.complete_marker(video_id).is_file():
        wanted.append(
            (
                storage.storyboard_vtt_path(video_id),
                lambda: make_storyboard(settings, video_id, plan),
            )
        )
    for path, make in wanted:
        if path.is_file():
            continue
        started = time.monotonic()
        try:
            await make()
        except (NotMade, OSError, ValueError) as exc:
            log.warning("video %s: %s not made: %s", video_id, path.name, exc)
            continue
        # Made here, or by another process this waited for: either way, there now.
        elapsed = time.monotonic() - started
        log.info("video %s: %s ready after %.2f s", video_id, path.name, elapsed)


# --- with object storage ----------------------------------------------------------------------
# Made in this process's scratch folder and uploaded. A bucket has no lock across machines:
# two workers may both make one (the same picture, put twice); readers see one whole object.

StoredBuild = Callable[[StoreFiles, Path], Awaitable[None]]


async def _make_stored_previews(settings: Settings, video_id: str, plan: Plan) -> None:
    """make_previews for a bucket: the poster once there is a master, the storyboard once
    the video is final; each skipped when stored already, logged when it cannot be made."""
    files = stored_files(settings, video_id)
    names = files.layout
    wanted: list[tuple[str, str, StoredBuild]] = []
    try:
        if await asyncio.to_thread(files.has_master):
            wanted.append((names.poster, layout.POSTER, _stored_poster(settings, plan)))
        if await asyncio.to_thread(files.store.stat, names.complete) is not None:
            wanted.append(
                (names.storyboard_vtt, layout.STORYBOARD_VTT, _stored_storyboard(settings, plan))
            )
        for key, name, build in wanted:
            if await asyncio.to_thread(files.store.stat, key) is not None:
                continue
            started = time.monotonic()
            try:
                with files.scratch_folder() as folder:
                    await build(files, folder)
            except (NotMade, OSError, ValueError) as exc:
                log.warning("video %s: %s not made: %s", video_id, name, exc)
                continue
            elapsed = time.monotonic() - started
            log.info("video %s: %s ready after %.2f s", video_id, name, elapsed)
    except StorageUnavailable as exc:
        log.warning("video %s: previews not made now: %s", video_id, exc.detail)


def _stored_poster(settings: Settings, plan: Plan) -> StoredBuild:
    async def build(files: StoreFiles, folder: Path) -> None:
        url = files.store.reader_url(files.layout.source, expires_seconds=SOURCE_URL_SECONDS)
        if url is None:
            raise NotMade("the storage gives no URL to read the upload with")
        out = folder / layout.POSTER
        await _poster_build(settings, plan, RemoteSource(url))(out)
        _check_made(out)
        await asyncio.to_thread(put_file, files.store, files.layout.poster, out)

    return build


def _stored_storyboard(settings: Settings, plan: Plan) -> StoredBuild:
    async def build(files: StoreFiles, folder: Path) -> None:
        lowest = plan.renditions[-1]
        board = plan_storyboard(
            plan.duration,
            lowest.width,
            lowest.height,
            keyframe_seconds=plan.options.keyframe_seconds,
        )
        rung = folder / lowest.name
        init = layout.INIT if plan.options.fmp4 else None
        await asyncio.to_thread(_download_rung, files, lowest.name, rung, init)
        image = folder / layout.STORYBOARD_IMAGE
        argv = storyboard_command(
            ffmpeg=settings.ffmpeg_bin, playlist=rung / layout.PLAYLIST, board=board, out=image
        )
        await _ffmpeg(argv, PICTURE_TIMEOUT_SECONDS)
        _check_made(image)
        # The map after the sprite: whoever finds the map finds the sprite too.
        await asyncio.to_thread(put_file, files.store, files.layout.storyboard_image, image)
        text = storyboard_vtt(board, plan.duration, image.name)
        await asyncio.to_thread(put_bytes, files.store, files.layout.storyboard_vtt, text)

    return build


def _download_rung(files: StoreFiles, rung: str, folder: Path, init: str | None) -> None:
    """A rung's published playlist and every segment it lists (and its init segment) into
    `folder` (the lowest rung: the smallest)."""
    folder.mkdir()
    playlist = files.read_bytes(rung, layout.PLAYLIST)
    (folder / layout.PLAYLIST).write_bytes(playlist)
    listed = parse_media_playlist(playlist.decode("utf-8"), name=f"{rung}/{layout.PLAYLIST}")
    for name in [*([init] if init else []), *(uri for uri, _ in listed)]:
        files.download(files.layout.rung_file(rung, name), folder / name)


def _check_made(path: Path) -> None:
    if not path.is_file() or path.stat().st_size == 0:
        raise NotMade(f"ffmpeg wrote no {path.name}")


async def make_stored_rung_mp4(settings: Settings, video_id: str, plan: Plan, rung: str) -> None:
    """make_rung_mp4 for a bucket: the rung's (and the audio's) playlist and segments into
    scratch, remuxed there as on the local folder, the MP4 put at the download key; the
    scratch folder is emptied whatever happens."""
    if rung not in plan.qualities:
        raise NotMade(f"video {video_id} has no rung {rung}")
    files = stored_files(settings, video_id)
    init = layout.INIT if plan.options.fmp4 else None
    try:
        with files.scratch_folder() as folder:
            video = None
            if not plan.audio_only:
                await asyncio.to_thread(_download_rung, files, rung, folder / rung, init)
                video = folder / rung / layout.PLAYLIST
            audio = None
            if plan.audio_kbps is not None:
                sound = folder / layout.AUDIO
                await asyncio.to_thread(_download_rung, files, layout.AUDIO, sound, init)
                audio = sound / layout.PLAYLIST
            out = folder / layout.download_name(rung)
            argv = rung_mp4_command(
                ffmpeg=settings.ffmpeg_bin, video_playlist=video, audio_playlist=audio, out=out
            )
            await _ffmpeg(argv, REMUX_TIMEOUT_SECONDS)
            _check_made(out)
            await asyncio.to_thread(put_file, files.store, files.layout.download(rung), out)
    except FileNotFoundError as exc:
        raise NotMade(f"the renditions of video {video_id} are gone ({exc})") from exc


async def make_stored_poster(settings: Settings, video_id: str, plan: Plan) -> None:
    """The poster made in scratch from the source object and put in the bucket."""
    await _make_stored(settings, video_id, _stored_poster(settings, plan))


async def make_stored_storyboard(settings: Settings, video_id: str, plan: Plan) -> None:
    """The storyboard made in scratch from the lowest rung's objects and put in the bucket
    (sprite, then map)."""
    await _make_stored(settings, video_id, _stored_storyboard(settings, plan))


async def _make_stored(settings: Settings, video_id: str, build: StoredBuild) -> None:
    files = stored_files(settings, video_id)
    try:
        with files.scratch_folder() as folder:
            await build(files, folder)
    except FileNotFoundError as exc:
        raise NotMade(f"the files of video {video_id} are gone ({exc})") from exc
