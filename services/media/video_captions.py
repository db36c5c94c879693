"""A video's captions: accepted (checked, made WebVTT, stored), listed, deleted, and published
as the master playlist's SUBTITLES renditions.

A caption is a row (`Caption`) and a WebVTT file beside the original
(`Storage.caption_source_path`): a new encode keeps both. Its HLS rendition (segments and
playlist under hls/{id}/captions/{caption_id}/) is made from that file when the master is
written, so it always matches the encode it is listed with.

The master is written by the publisher (`write_master`: the first playable chunk, and the
end) and rewritten when a caption is added or deleted (`refresh_master`). Both hold the
video's master lock (`flock`, across processes and machines sharing the folder) and read the
caption rows inside it, after the change they publish was committed: whichever of the two
writes last lists every caption committed before it, and the master is replaced atomically
and durably (`write_atomic`).
"""

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import langcodes
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from services.core import ids, layout
from services.core.db import session_scope
from services.core.errors import Conflict, InvalidInput, NotFound, Unavailable
from services.core.layout import VideoLayout
from services.core.models import Caption, CaptionOrigin, Job
from services.core.settings import Settings
from services.core.storage import Storage, fsync_folder, make_durable, remove_tree, write_atomic
from services.core.storage.factory import store_of, uses_object_storage
from services.core.storage.interface import ObjectMissing, StorageUnavailable
from services.core.videos import get_video
from services.media import caption_hls
from services.media.captions import CaptionError, Cue, read_captions, to_webvtt
from services.media.plan import Plan
from services.media.playlists import read_media_playlist
from services.media.video_files import SMALL_OBJECT_LIMIT, StoreFiles, put_bytes, stored_files

log = logging.getLogger(__name__)

MAX_LABEL_CHARS = 64
# A well-formed BCP 47 tag's shape (RFC 5646 2.1: subtags of letters and digits joined by
# hyphens); langcodes then checks the subtags against the IANA registry.
_TAG_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")
MAX_TAG_CHARS = 35
# How long a rewrite of the master waits for another one to finish.
LOCK_WAIT_SECONDS = 60.0
LOCK_POLL_SECONDS = 0.05
# Our own stored files are read back with room to spare (their limits were checked once).
STORED_LIMIT = 1 << 40


@dataclass(frozen=True)
class NewCaption:
    """A caption about to be recorded: its WebVTT file is already stored under `id`."""

    id: str
    language: str
    label: str
    origin: str
    source_format: str
    cues: int
    default: bool = False
    stream_index: int | None = None

    def row(self, video_id: str) -> Caption:
        return Caption(
            id=self.id,
            video_id=video_id,
            language=self.language,
            label=self.label,
            is_default=self.default,
            origin=self.origin,
            source_format=self.source_format,
            stream_index=self.stream_index,
            cues=self.cues,
        )


# ---- checking what a client sends --------------------------------------------------------


def language_tag(value: str) -> str:
    """A BCP 47 language tag in its standard form (`pt-br` -> `pt-BR`, `eng` -> `en`), or
    InvalidInput saying what a tag looks like."""
    text = value.strip()
    well_formed = 0 < len(text) <= MAX_TAG_CHARS and set(text) <= _TAG_CHARS
    try:
        if well_formed and "--" not in text and langcodes.tag_is_valid(text):
            return str(langcodes.standardize_tag(text))
    except ValueError:  # langcodes' LanguageTagError: refused below, as any other
        pass
    raise InvalidInput(
        f"language {value[:40]!r} is not a BCP 47 language tag: send one such as en, "
        "pt-BR or zh-Hant (language, then optional script and region, joined by hyphens)"
    )


def language_name(tag: str) -> str:
    """The language's English name ("Portuguese (Brazil)"), for a caption given no label."""
    try:
        return str(langcodes.Language.get(tag).display_name())
    except (LookupError, ValueError):
        return tag


def caption_label(value: str | None, language: str) -> str:
    """The label shown in players' menus: the text given, one line, bounded; by default the
    language's name."""
    if value is None or not value.strip():
        return language_name(language)[:MAX_LABEL_CHARS]
    text = value.strip()
    if any(ord(char) < 32 or 127 <= ord(char) < 160 for char in text):
        raise InvalidInput("the label may not hold control characters or line breaks")
    if len(text) > MAX_LABEL_CHARS:
        raise InvalidInput(f"the label has {len(text)} characters; at most {MAX_LABEL_CHARS}")
    return text


def clean_label(text: str) -> str:
    """A label taken from a file (an embedded track's title): one line, bounded."""
    printable = "".join(char if char.isprintable() else " " for char in text)
    return " ".join(printable.split())[:MAX_LABEL_CHARS]


# ---- adding, listing, deleting -------------------------------------------------------------


def add(
    settings: Settings,
    *,
    video_id: str,
    data: bytes,
    language: str,
    label: str | None,
    default: bool = False,
) -> Caption:
    """Check a WebVTT or SRT file and add it to the video as a caption (SRT made WebVTT);
    the master lists it at once when the video is playable."""
    ids.video_id(video_id)
    tag = language_tag(language)
    name = caption_label(label, tag)
    read = read_captions(
        data, max_bytes=settings.caption_max_bytes, max_cues=settings.caption_max_cues
    )
    if not read.cues:
        raise CaptionError("the file holds no cue with text: there is nothing to show")
    storage = Storage(settings.storage_dir)
    new = NewCaption(
        id=ids.new_caption_id(),
        language=tag,
        label=name,
        origin=CaptionOrigin.UPLOAD,
        source_format=read.format,
        cues=len(read.cues),
        default=default,
    )
    with session_scope(settings) as session:
        get_video(session, video_id=video_id)  # before anything is written for it
    if uses_object_storage(settings):
        names = VideoLayout.of(video_id)
        put_bytes(store_of(settings), names.caption_source(new.id), to_webvtt(read.cues))
    else:
        store_file(storage, video_id, new.id, read.cues, make_video_folder=True)
    try:
        row = _record(settings, video_id, new)
    except BaseException:
        _unstore_any(settings, video_id, new.id)
        raise
    _publish_or_undo(settings, video_id, new.id)
    return row


def store_file(
    storage: Storage,
    video_id: str,
    caption_id: str,
    cues: Sequence[Cue],
    *,
    make_video_folder: bool = False,
) -> Path:
    """Write a caption's WebVTT file, durably, before any row names it. The video's own
    folder is made only when asked (a record made without an upload has none); otherwise a
    video deleted meanwhile is a FileNotFoundError, not a folder made again."""
    path = storage.caption_source_path(video_id, caption_id)
    created = not path.parent.is_dir()
    path.parent.mkdir(parents=make_video_folder, exist_ok=True)
    write_atomic(path, to_webvtt(list(cues)))
    if created:
        make_durable([], folders=[path.parent.parent, path.parent.parent.parent])
    return path


def _unstore_any(settings: Settings, video_id: str, caption_id: str) -> None:
    """Remove a caption's file (and in a bucket its rendition) wherever it is kept."""
    if not uses_object_storage(settings):
        _unstore(Storage(settings.storage_dir), video_id, caption_id)
        return
    store, names = store_of(settings), VideoLayout.of(video_id)
    store.delete_prefix(names.caption(caption_id))
    store.delete(names.caption_source(caption_id))


def _unstore(storage: Storage, video_id: str, caption_id: str) -> None:
    """Remove a caption's file, and the folders it leaves empty (a video deleted meanwhile)."""
    path = storage.caption_source_path(video_id, caption_id)
    path.unlink(missing_ok=True)
    for folder in (path.parent, path.parent.parent):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty


def _record(settings: Settings, video_id: str, new: NewCaption) -> Caption:
    """The caption's row, in one transaction with the check that the video has room."""
    with session_scope(settings) as session:
        get_video(session, video_id=video_id)
        count = session.scalar(select(func.count()).where(Caption.video_id == video_id)) or 0
        if count >= settings.captions_per_video:
            raise Conflict(
                f"video {video_id} has {count} captions, the most it may have "
                "(CAPTIONS_PER_VIDEO): delete one first"
            )
        if new.default:
            _clear_defaults(session, video_id)
        row = new.row(video_id)
        session.add(row)
        session.flush()
        return row


def _clear_defaults(session: Session, video_id: str) -> None:
    """Only one caption is shown by default: the newest one asked to be."""
    session.execute(update(Caption).where(Caption.video_id == video_id).values(is_default=False))


def _publish_or_undo(settings: Settings, video_id: str, caption_id: str) -> None:
    """Put the new caption in the master; if that cannot be done, take it back out."""
    try:
        refresh_master(settings, video_id)
    except (OSError, ValueError, RuntimeError, Unavailable, StorageUnavailable) as exc:
        log.warning("video %s: caption %s not published: %s", video_id, caption_id, exc)
        with session_scope(settings) as session:
            session.execute(delete(Caption).where(Caption.id == caption_id))
        _unstore_any(settings, video_id, caption_id)
        raise Unavailable(
            "the caption could not be added to the video's playlists right now: try again later"
        ) from exc


def list_captions(session: Session, *, video_id: str) -> list[Caption]:
    """The video's captions, in the order the master lists them; NotFound for no video."""
    get_video(session, video_id=video_id)
    return _captions_of(session, video_id)


def _captions_of(session: Session, video_id: str) -> list[Caption]:
    query = select(Caption).where(Caption.video_id == video_id)
    return list(session.scalars(query.order_by(Caption.created_at, Caption.id)))


def remove(settings: Settings, *, video_id: str, caption_id: str) -> None:
    """Delete one caption: its row, then its place in the master, then its files."""
    ids.video_id(video_id)
    ids.caption_id(caption_id)
    with session_scope(settings) as session:
        row = session.get(Caption, caption_id)
        if row is None or row.video_id != video_id:
            get_video(session, video_id=video_id)
            raise NotFound(f"video {video_id} has no caption {caption_id}")
        session.delete(row)
    storage = Storage(settings.storage_dir)
    try:
        refresh_master(settings, video_id)
    except (OSError, ValueError, RuntimeError, Unavailable):
        # The row is gone: the next rewrite of the master leaves the caption out. Until
        # then its files stay, so what the master lists still plays.
        log.exception("video %s: master not rewritten after deleting %s", video_id, caption_id)
        return
    if uses_object_storage(settings):
        _unstore_any(settings, video_id, caption_id)
        return
    remove_tree(storage.caption_dir(video_id, caption_id))
    storage.caption_source_path(video_id, caption_id).unlink(missing_ok=True)


def replace_embedded(
    session: Session, *, video_id: str, found: Sequence[NewCaption], most: int
) -> list[str]:
    """Record the captions extracted from the source in place of earlier extractions, up to
    `most` captions in all; the ids replaced or left out (their files go once this commits)."""
    query = select(Caption.id).where(
        Caption.video_id == video_id, Caption.origin == CaptionOrigin.EMBEDDED
    )
    old = list(session.scalars(query))
    if old:
        session.execute(delete(Caption).where(Caption.id.in_(old)))
    count = session.scalar(select(func.count()).where(Caption.video_id == video_id)) or 0
    room = max(0, most - count)
    for new in found[:room]:
        session.add(new.row(video_id))
    for new in found[room:]:
        log.info("video %s: embedded caption %s left out (CAPTIONS_PER_VIDEO)", video_id, new.id)
    return old + [new.id for new in found[room:]]


# ---- the master ----------------------------------------------------------------------------


def write_master(settings: Settings, video_id: str, plan: Plan, master: str) -> None:
    """The publisher's master (`master`, with no subtitles) written with the video's
    captions as SUBTITLES renditions, each rendition made if it is missing."""
    if uses_object_storage(settings):
        _publish_stored(settings, video_id, plan, master)
        return
    storage = Storage(settings.storage_dir)
    with _master_lock(storage, video_id) as held:
        if not held:
            raise FileNotFoundError(f"the folder of video {video_id} is gone")
        _publish(settings, storage, video_id, plan, master)


def refresh_master(settings: Settings, video_id: str) -> bool:
    """Rewrite the master for the captions as they are now; False when there is no master
    yet (the publisher lists the captions when it writes one)."""
    if uses_object_storage(settings):
        return _refresh_stored(settings, video_id)
    storage = Storage(settings.storage_dir)
    master = storage.master_path(video_id)
    with _master_lock(storage, video_id) as held:
        if not held or not master.is_file():
            return False
        plan = _plan(settings, video_id)
        if plan is None:
            return False
        _publish(settings, storage, video_id, plan, master.read_text(encoding="utf-8"))
        return True


def _plan(settings: Settings, video_id: str) -> Plan | None:
    with session_scope(settings) as session:
        job = session.get(Job, video_id)
        return Plan.from_dict(job.plan) if job is not None and job.plan else None


def _publish(settings: Settings, storage: Storage, video_id: str, plan: Plan, master: str) -> None:
    with session_scope(settings) as session:
        rows = _captions_of(session, video_id)
    zero: list[int] = []  # measured once, when a rendition has to be made
    tracks = []
    for row in rows:
        if _ensure_rendition(settings, storage, video_id, row.id, plan, zero):
            tracks.append(caption_hls.Track(row.id, row.language, row.label, row.is_default))
    _remove_stale(storage, video_id, {row.id for row in rows})
    write_atomic(storage.master_path(video_id), caption_hls.with_subtitles(master, tracks))


def _ensure_rendition(
    settings: Settings,
    storage: Storage,
    video_id: str,
    caption_id: str,
    plan: Plan,
    zero: list[int],
) -> bool:
    """Make the caption's rendition unless it is there; False if its file has gone."""
    folder = storage.caption_dir(video_id, caption_id)
    if (folder / layout.PLAYLIST).is_file():
        return True
    try:
        data = storage.caption_source_path(video_id, caption_id).read_bytes()
    except FileNotFoundError:
        log.warning("video %s: caption %s has no file; left out", video_id, caption_id)
        return False
    cues = read_captions(data, max_bytes=STORED_LIMIT, max_cues=STORED_LIMIT).cues
    if not zero:
        zero.append(_media_zero(settings, storage, video_id, plan))
    files = caption_hls.rendition_files(
        cues,
        duration=plan.duration,
        segment_seconds=plan.options.segment_seconds,
        mpegts=zero[0],
    )
    _write_folder(storage, video_id, folder, files)
    return True


def _media_zero(settings: Settings, storage: Storage, video_id: str, plan: Plan) -> int:
    """The MPEGTS value of cue time 0: the first timestamp of the main variant's first
    segment (the top rung's, or the audio's for an audio-only video)."""
    rung = plan.renditions[0].name if plan.renditions else layout.AUDIO
    folder = storage.hls_dir(video_id) / rung
    first = read_media_playlist(folder / layout.PLAYLIST)[0][0]
    init = folder / layout.INIT if plan.options.fmp4 else None
    return caption_hls.media_zero(folder / first, init=init, ffprobe=settings.ffprobe_bin)


def _write_folder(storage: Storage, video_id: str, folder: Path, files: dict[str, str]) -> None:
    """Write a rendition's files into a temporary folder, durably, then rename it into place:
    its playlist is never seen without its segments. The video's folder is never created."""
    parent = storage.captions_dir(video_id)
    parent.mkdir(exist_ok=True)  # under hls/{id}/, which must still exist
    temporary = parent / f".{folder.name}.{os.getpid()}.{threading.get_ident()}.tmp"
    remove_tree(temporary)
    temporary.mkdir()
    try:
        paths = []
        for name, text in files.items():
            path = temporary / name
            path.write_text(text, encoding="utf-8")
            paths.append(path)
        make_durable(paths, folders=[temporary])
        os.replace(temporary, folder)
    finally:
        remove_tree(temporary)
    fsync_folder(parent)
    fsync_folder(parent.parent)


def _remove_stale(storage: Storage, video_id: str, wanted: set[str]) -> None:
    """Remove the renditions of captions that are no longer there (and leftovers)."""
    parent = storage.captions_dir(video_id)
    if not parent.is_dir():
        return
    for entry in parent.iterdir():
        if entry.name not in wanted:
            remove_tree(entry)


# ---- the master in object storage -----------------------------------------------------------
# A bucket has no flock: the master is rewritten whole with put_bytes from the rows read just
# before, so the last writer lists every caption committed before it read them.


def _refresh_stored(settings: Settings, video_id: str) -> bool:
    store = store_of(settings)
    try:
        master = store.get_bytes(VideoLayout.of(video_id).master, limit=SMALL_OBJECT_LIMIT)
    except ObjectMissing:
        return False
    plan = _plan(settings, video_id)
    if plan is None:
        return False
    _publish_stored(settings, video_id, plan, master.decode("utf-8"))
    return True


def _publish_stored(settings: Settings, video_id: str, plan: Plan, master: str) -> None:
    """_publish for a bucket: the captions' renditions made where missing, stale ones
    deleted, then the master put."""
    files = stored_files(settings, video_id)
    with session_scope(settings) as session:
        rows = _captions_of(session, video_id)
    zero: list[int] = []
    tracks = []
    for row in rows:
        if _ensure_stored_rendition(settings, files, row.id, plan, zero):
            tracks.append(caption_hls.Track(row.id, row.language, row.label, row.is_default))
    _remove_stale_stored(files, {row.id for row in rows})
    files.write_master(caption_hls.with_subtitles(master, tracks))


def _ensure_stored_rendition(
    settings: Settings, files: StoreFiles, caption_id: str, plan: Plan, zero: list[int]
) -> bool:
    """Make the caption's rendition in the bucket unless it is there; False if its file
    has gone."""
    names = files.layout
    if files.store.stat(names.caption_file(caption_id, layout.PLAYLIST)) is not None:
        return True
    try:
        data = files.store.get_bytes(names.caption_source(caption_id), limit=STORED_LIMIT)
    except ObjectMissing:
        log.warning("video %s: caption %s has no file; left out", files.video_id, caption_id)
        return False
    cues = read_captions(data, max_bytes=STORED_LIMIT, max_cues=STORED_LIMIT).cues
    if not zero:
        zero.append(_stored_media_zero(settings, files, plan))
    rendition = caption_hls.rendition_files(
        cues,
        duration=plan.duration,
        segment_seconds=plan.options.segment_seconds,
        mpegts=zero[0],
    )
    # The segments first, the playlist last: whoever finds the playlist finds its segments.
    for name in sorted(rendition, key=lambda name: name == layout.PLAYLIST):
        put_bytes(files.store, names.caption_file(caption_id, name), rendition[name])
    return True


def _stored_media_zero(settings: Settings, files: StoreFiles, plan: Plan) -> int:
    """_media_zero from the main variant's first segment, downloaded to scratch."""
    rung = plan.renditions[0].name if plan.renditions else layout.AUDIO
    first = files.read_playlist(rung, layout.PLAYLIST)[0][0]
    with files.scratch_folder() as folder:
        segment = folder / first
        files.download(files.layout.rung_file(rung, first), segment)
        init = None
        if plan.options.fmp4:
            init = folder / layout.INIT
            files.download(files.layout.rung_file(rung, layout.INIT), init)
        return caption_hls.media_zero(segment, init=init, ffprobe=settings.ffprobe_bin)


def _remove_stale_stored(files: StoreFiles, wanted: set[str]) -> None:
    """Delete the renditions of captions that are no longer there."""
    prefix = files.layout.captions
    found = {info.key[len(prefix) :].split("/", 1)[0] for info in files.store.list_prefix(prefix)}
    for caption_id in found - wanted:
        files.store.delete_prefix(f"{prefix}{caption_id}/")


@contextlib.contextmanager
def _master_lock(storage: Storage, video_id: str) -> Iterator[bool]:
    """Hold the video's master lock; yields False (nothing held) when its folder is gone."""
    try:
        fd = os.open(storage.master_lock_path(video_id), os.O_RDWR | os.O_CREAT, 0o644)
    except FileNotFoundError:
        yield False
        return
    try:
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise Unavailable(
                        f"the master of video {video_id} is being rewritten: try again later"
                    ) from None
                time.sleep(LOCK_POLL_SECONDS)
        yield True
    finally:
        os.close(fd)
