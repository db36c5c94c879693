"""Captions from the source itself: its text subtitle streams, extracted as WebVTT by a unit
of work of their own (kind "captions"), checked like an uploaded file, and stored as captions
of origin `embedded`.

The unit is planned when the probe counts text subtitle streams (SourceInfo.text_subtitles),
claimed after the job's other units (so reading the whole file never holds back the first
playable chunk) and done under a lease renewed while ffmpeg reads. Its captions are recorded
with the unit's end, in one transaction; the final master waits for it. A stream that cannot
be read as captions is left out with a log line (bitmap subtitles, PGS and DVB, too): it
never fails the video.
"""

import logging
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from services.core import ids
from services.core.errors import InvalidInput
from services.core.layout import VideoLayout
from services.core.models import CaptionOrigin
from services.core.settings import Settings
from services.core.storage import Storage, remove_tree
from services.core.storage.factory import store_of, uses_object_storage
from services.media.captions import CaptionError, read_captions, shifted, to_webvtt
from services.media.demuxers import RemoteSource, Source, source_name
from services.media.probe import ProbeError
from services.media.subtitles import SubtitleStream, extract_command, probe_subtitles
from services.media.video_captions import (
    NewCaption,
    clean_label,
    language_name,
    language_tag,
    store_file,
)
from services.media.video_files import SOURCE_URL_SECONDS, put_bytes

log = logging.getLogger(__name__)

# Reading a whole file for its subtitles is I/O, not decoding: minutes at most.
EXTRACT_TIMEOUT_SECONDS = 1800.0
KeepLease = Callable[[], bool]


def extract(
    settings: Settings, storage: Storage, video_id: str, *, keep_lease: KeepLease
) -> list[NewCaption]:
    """The source's text subtitle streams as captions, their files stored (not recorded)."""
    if uses_object_storage(settings):
        return _extract_stored(settings, storage, video_id, keep_lease)
    streams, start = _text_streams(settings, storage.source_path(video_id), video_id)
    if not streams:
        return []
    work = storage.caption_sources_dir(video_id) / f".extract-{os.getpid()}"
    remove_tree(work)
    try:
        # Below the original's folder, never made again: a video deleted meanwhile gets none.
        work.parent.mkdir(exist_ok=True)
        work.mkdir()
    except FileNotFoundError:
        log.info("video %s: its folder is gone, no captions extracted", video_id)
        return []
    started = time.monotonic()
    try:
        _run_all(settings, storage.source_path(video_id), streams, work, keep_lease)
        found = _captions(settings, storage, video_id, streams, work, start)
    except FileNotFoundError:
        log.info("video %s: its folder went while extracting captions", video_id)
        return []
    finally:
        remove_tree(work)
    _log_found(video_id, found, streams, started)
    return found


def _extract_stored(
    settings: Settings, storage: Storage, video_id: str, keep_lease: KeepLease
) -> list[NewCaption]:
    """extract() with object storage: ffmpeg reads the source through a presigned URL and
    writes into a scratch folder; each caption's file is put in the bucket."""
    store = store_of(settings)
    url = store.reader_url(VideoLayout.of(video_id).source, expires_seconds=SOURCE_URL_SECONDS)
    if url is None:
        return []
    source = RemoteSource(url)
    streams, start = _text_streams(settings, source, video_id)
    if not streams:
        return []
    work = storage.root / "tmp" / f".extract-{video_id}-{os.getpid()}"
    remove_tree(work)
    work.mkdir(parents=True)
    started = time.monotonic()
    try:
        _run_all(settings, source, streams, work, keep_lease)
        found = _captions(settings, storage, video_id, streams, work, start)
    finally:
        remove_tree(work)
    _log_found(video_id, found, streams, started)
    return found


def _captions(
    settings: Settings,
    storage: Storage,
    video_id: str,
    streams: list[SubtitleStream],
    work: Path,
    start: float,
) -> list[NewCaption]:
    return [
        new
        for number, stream in enumerate(streams, start=1)
        if (new := _caption(settings, storage, video_id, stream, work, number, start)) is not None
    ]


def _log_found(
    video_id: str, found: list[NewCaption], streams: list[SubtitleStream], started: float
) -> None:
    log.info(
        "video %s: %d of %d subtitle streams extracted as captions in %.1f s",
        video_id,
        len(found),
        len(streams),
        time.monotonic() - started,
    )


def _text_streams(
    settings: Settings, source: Source, video_id: str
) -> tuple[list[SubtitleStream], float]:
    """The streams to extract (text ones, at most CAPTIONS_PER_VIDEO; the rest logged) and
    where the presentation starts on the file's timeline (seconds)."""
    try:
        streams, start = probe_subtitles(source, ffprobe=settings.ffprobe_bin)
    except ProbeError as exc:
        log.warning("video %s: subtitle streams not read: %s", video_id, exc.detail)
        return [], 0.0
    for stream in streams:
        if stream.is_bitmap:
            log.info(
                "video %s: subtitle stream %d (%s) is pictures, not text: skipped",
                video_id,
                stream.index,
                stream.codec,
            )
        elif not stream.is_text:
            log.info(
                "video %s: subtitle stream %d (%s) is not a text format read here: skipped",
                video_id,
                stream.index,
                stream.codec,
            )
    return [stream for stream in streams if stream.is_text][: settings.captions_per_video], start


def _run_all(
    settings: Settings,
    source: Source,
    streams: list[SubtitleStream],
    work: Path,
    keep_lease: KeepLease,
) -> None:
    """One ffmpeg for every stream; if it fails, one each, so one bad stream costs only its
    own caption."""
    if _run(settings, source, streams, work, keep_lease) or len(streams) == 1:
        return
    for stream in streams:
        _run(settings, source, [stream], work, keep_lease)


def _run(
    settings: Settings,
    source: Source,
    streams: list[SubtitleStream],
    work: Path,
    keep_lease: KeepLease,
) -> bool:
    """Run the extraction, renewing the planning lease meanwhile; whether it succeeded."""
    argv = extract_command(
        ffmpeg=settings.ffmpeg_bin,
        source=source,
        streams=streams,
        out_dir=work,
        max_bytes=settings.caption_max_bytes + 1,
    )
    interval = max(0.2, min(settings.lease_seconds / 3, 5.0))
    deadline = time.monotonic() + EXTRACT_TIMEOUT_SECONDS
    with subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    ) as process:
        while True:
            try:
                _, stderr = process.communicate(timeout=interval)
                break
            except subprocess.TimeoutExpired:
                if not keep_lease() or time.monotonic() > deadline:
                    process.kill()
                    process.communicate()
                    log.warning(
                        "subtitle extraction from %s stopped (lease lost or too long)",
                        source_name(source),
                    )
                    return False
    if process.returncode != 0:
        tail = stderr.decode("utf-8", "replace")
        if isinstance(source, RemoteSource):
            tail = tail.replace(source.url, source.name)  # a signature is never logged
        log.warning(
            "subtitle extraction from %s failed (%s): %s",
            source_name(source),
            process.returncode,
            tail.strip()[-500:],
        )
        return False
    return True


def _caption(
    settings: Settings,
    storage: Storage,
    video_id: str,
    stream: SubtitleStream,
    work: Path,
    number: int,
    start: float,
) -> NewCaption | None:
    """The caption one extracted stream makes, its times counted from `start` (the first
    frame's place on the file's timeline) and its file stored; None (logged) if it makes
    none."""
    try:
        data = (work / f"{stream.index}.vtt").read_bytes()
        read = read_captions(
            data, max_bytes=settings.caption_max_bytes, max_cues=settings.caption_max_cues
        )
    except (OSError, CaptionError) as exc:
        reason = exc.detail if isinstance(exc, CaptionError) else "ffmpeg wrote no file"
        log.info("video %s: subtitle stream %d not kept: %s", video_id, stream.index, reason)
        return None
    cues = shifted(read.cues, round(start * 1000))
    if not cues:
        log.info("video %s: subtitle stream %d has no cue: not kept", video_id, stream.index)
        return None
    language = _language(stream.language)
    new = NewCaption(
        id=ids.new_caption_id(),
        language=language,
        label=clean_label(stream.title) or _unnamed(language, number),
        origin=CaptionOrigin.EMBEDDED,
        source_format=stream.codec,
        cues=len(cues),
        stream_index=stream.index,
    )
    if uses_object_storage(settings):
        key = VideoLayout.of(video_id).caption_source(new.id)
        put_bytes(store_of(settings), key, to_webvtt(cues))
    else:
        store_file(storage, video_id, new.id, cues)
    return new


def _language(tag: str) -> str:
    """The container's language tag (ISO 639-2 "eng", or BCP 47) as BCP 47; "und" if none."""
    try:
        return language_tag(tag) if tag else "und"
    except InvalidInput:
        return "und"


def _unnamed(language: str, number: int) -> str:
    """A label for a track with no title: its language's name, or "Subtitles N"."""
    return language_name(language) if language != "und" else f"Subtitles {number}"
