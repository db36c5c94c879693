"""Stitching: chunks finished by any worker become one continuous HLS presentation.

Each chunk's ffmpeg wrote its segments (numbered globally) and a small playlist of its own.
Publishing lists the chunks that are done *in order from the start* (a chunk that finishes
early waits for its predecessors: never a gap) as `EVENT` playlists that grow, and as `VOD`
with `ENDLIST` once every chunk is done; the master playlist is written at the first publish
and rewritten from the final measurements at the end.

`write_presentation` works on the files alone (no settings, no database): `publish` decides
what to write from the job's rows.

Every playlist, the master and the completion marker are written with `write_atomic`: each
is whole and on the disk before the next step, and the job is recorded `ok` only after the
marker.
"""

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from sqlalchemy import exists, or_, select

from services.core import jobs, layout
from services.core.db import session_scope
from services.core.models import ChunkStatus, Job, JobChunk, Status
from services.core.settings import Settings
from services.core.storage import Storage, write_atomic
from services.media import video_captions as captions
from services.media.plan import CAPTIONS, Plan
from services.media.playlists import (
    iframe_playlist,
    index_iframes,
    master_playlist,
    media_playlist,
    read_media_playlist,
)
from services.media.video_files import LocalFiles, VideoFiles, read_sidecar, video_files


def index_chunk_iframes(playlist: Path, sidecar: Path, *, ffprobe: str) -> None:
    """Record in `sidecar` where the keyframes of the segments a chunk's `playlist` lists lie
    (for I-frame playlists); the segments are beside the playlist."""
    segments = read_media_playlist(playlist)
    frames = [
        f for uri, _ in segments for f in index_iframes(playlist.with_name(uri), ffprobe=ffprobe)
    ]
    write_atomic(sidecar, json.dumps([asdict(f) for f in frames]))


def _leading_done(chunks: list[JobChunk]) -> int:
    count = 0
    for chunk in chunks:
        if chunk.status != ChunkStatus.DONE:
            break
        count += 1
    return count


def publish(settings: Settings, video_id: str) -> bool:
    """Publish every chunk done in order from the start; True when the video became `ok`."""
    files = video_files(settings, video_id)
    with session_scope(settings) as session:
        # Row lock on PostgreSQL; on SQLite the UPDATE in advance_published takes the lock.
        job = session.get(Job, video_id, with_for_update=True, populate_existing=True)
        if job is None or job.plan is None or job.status == Status.OK:
            return False
        plan = Plan.from_dict(job.plan)
        chunks = jobs.chunks_of(session, video_id=video_id)
        video = [c for c in chunks if c.kind == "video"]
        audio = next((c for c in chunks if c.kind == "audio"), None)
        # The source's captions are listed in the final master: it waits for them.
        extracted = all(c.status == ChunkStatus.DONE for c in chunks if c.kind == CAPTIONS)
        ready = _leading_done(video)
        if plan.audio_only:
            # The audio is the whole presentation: published once, whole, when it is done.
            if audio is None or audio.status != ChunkStatus.DONE:
                return False
        elif ready == 0 or not _audio_covers(files, audio, _video_seconds(files, plan, ready)):
            return False
        final = (
            ready == len(video)
            and (audio is None or audio.status == ChunkStatus.DONE)
            and extracted
        )
        if final:
            if not jobs.claim_final(session, video_id=video_id):
                return False
        elif not jobs.advance_published(session, video_id=video_id, count=ready):
            return False
        write_presentation(
            files,
            video_id,
            plan,
            ready,
            final=final,
            tools=Tools(ffprobe=settings.ffprobe_bin, ffmpeg=settings.ffmpeg_bin),
            write_master=lambda text: captions.write_master(settings, video_id, plan, text),
        )
        if final:
            jobs.finish(session, video_id=video_id, qualities=plan.qualities)
        return final


def _video_seconds(files: VideoFiles, plan: Plan, chunks: int) -> float:
    rung = plan.renditions[0].name
    return sum(
        d for i in range(chunks) for _, d in files.read_playlist(rung, layout.chunk_playlist(i))
    )


def _audio_covers(files: VideoFiles, audio: JobChunk | None, seconds: float) -> bool:
    """Whether the audio (encoded whole, in one growing playlist) reaches `seconds` yet."""
    if audio is None or audio.status == ChunkStatus.DONE:
        return True
    if audio.status != ChunkStatus.RUNNING:
        return False
    try:
        covered = sum(d for _, d in files.read_playlist(layout.AUDIO, layout.AUDIO_RUN_PLAYLIST))
    except (OSError, ValueError):
        # Missing, or caught mid-rewrite (or left truncated by a full disk): not ready yet.
        # If the audio encode really failed, its own failure says why.
        return False
    return covered >= seconds


@dataclass(frozen=True)
class Tools:
    """The programs that measure what was encoded."""

    ffprobe: str = "ffprobe"
    ffmpeg: str = "ffmpeg"


def write_presentation(
    storage: Storage | VideoFiles,
    video_id: str,
    plan: Plan,
    chunks: int,
    *,
    final: bool,
    tools: Tools = Tools(),
    write_master: Callable[[str], None] | None = None,
) -> None:
    """Write every media, I-frame and audio playlist for the first `chunks` chunks, and the
    master at the first publish and at the end: measured here, handed to `write_master`
    (the publisher's adds the video's captions) or else written as it is.

    `storage` is the local storage folder, or the video's files wherever they are kept."""
    files = LocalFiles(storage, video_id) if isinstance(storage, Storage) else storage
    iframe_rates: dict[str, int] = {}
    video_end = 0.0
    for rendition in plan.renditions:
        video_end, iframe_rate = _write_rung(files, rendition.name, plan, chunks, final=final)
        if iframe_rate is not None:
            iframe_rates[rendition.name] = iframe_rate
    if plan.audio_kbps is not None:
        _write_audio(files, plan, video_end, final)
    if final or not files.has_master():
        text = _measure_master(files, plan, iframe_rates, tools)
        if write_master is None:
            files.write_master(text)
        else:
            write_master(text)
    if final:
        files.finish()


def _write_rung(
    files: VideoFiles, rung: str, plan: Plan, chunks: int, *, final: bool
) -> tuple[float, int | None]:
    """Write a rung's media (and I-frame) playlists for its first `chunks` chunks; return
    where its video ends (seconds) and its I-frame playlist's bit rate (None: it has none).

    An fMP4 rung gets the init segment its chunks share, and no I-frame playlist.
    """
    segments = [
        s for i in range(chunks) for s in files.read_playlist(rung, layout.chunk_playlist(i))
    ]
    init = _publish_init(files, rung, [layout.chunk_init(i) for i in range(chunks)], plan)
    target = plan.options.segment_seconds
    files.write(
        rung, layout.PLAYLIST, media_playlist(segments, target=target, ended=final, init=init)
    )
    video_end = sum(seconds for _, seconds in segments)
    if plan.options.fmp4:
        return video_end, None
    frames = [f for i in range(chunks) for f in read_sidecar(files, rung, layout.chunk_iframes(i))]
    end_time = (frames[0].time if frames else 0.0) + video_end
    files.write(rung, layout.IFRAMES, iframe_playlist(frames, end_time=end_time, ended=final))
    return video_end, files.iframe_bandwidth(rung, frames, end_time)


def _publish_init(
    files: VideoFiles, rung: str, sources: list[str], plan: Plan, *, check: bool = True
) -> str | None:
    """For fMP4, publish the init segment `sources` share; its name (None for MPEG-TS)."""
    if not plan.options.fmp4:
        return None
    files.publish_init(rung, sources, check=check)
    return layout.INIT


def _write_audio(files: VideoFiles, plan: Plan, video_end: float, final: bool) -> None:
    segments = files.read_playlist(layout.AUDIO, layout.AUDIO_RUN_PLAYLIST)
    # The audio is one run, which a retry may be rewriting until `final`: its init segment
    # is compared with the published one only then.
    init = _publish_init(files, layout.AUDIO, [layout.AUDIO_RUN_INIT], plan, check=final)
    if not final:
        # While growing, the audio covers what the video covers (it was encoded whole, ahead).
        kept, start = [], 0.0
        for uri, seconds in segments:
            if start >= video_end:
                break
            kept.append((uri, seconds))
            start += seconds
        segments = kept
    target = plan.options.segment_seconds
    files.write(
        layout.AUDIO,
        layout.PLAYLIST,
        media_playlist(segments, target=target, ended=final, init=init),
    )


def _measure_master(
    files: VideoFiles, plan: Plan, iframe_rates: dict[str, int], tools: Tools
) -> str:
    """Measure every rendition: the master playlist (without captions) that lists them."""
    init = layout.INIT if plan.options.fmp4 else None
    # An MPEG-TS rung is read in Python; the rest are ffprobe runs that mostly wait: all of
    # them side by side, the audio's too.
    with ThreadPoolExecutor(max_workers=5) as pool:
        audio = None
        if plan.audio_kbps is not None:
            audio = pool.submit(files.measure_audio, ffprobe=tools.ffprobe, init=init)
        stats = list(
            pool.map(
                lambda r: files.measure_rendition(
                    r.name, ffprobe=tools.ffprobe, ffmpeg=tools.ffmpeg, init=init
                ),
                plan.renditions,
            )
        )
        return master_playlist(
            stats, audio=audio.result() if audio else None, iframe_bandwidths=iframe_rates
        )


def pending_publications(settings: Settings) -> list[str]:
    """Jobs with finished chunks not yet published, or every unit done and the job not final
    (their publisher died before it could: the last unit may be the captions, after the last
    chunk was published)."""
    unfinished = exists().where(
        JobChunk.video_id == Job.video_id, JobChunk.status != ChunkStatus.DONE
    )
    with session_scope(settings) as session:
        rows = session.scalars(
            select(Job.video_id).where(
                Job.status.in_((*jobs.RUNNABLE, Status.STOPPED)),
                Job.plan.is_not(None),
                or_(Job.published_chunks < Job.total_chunks, ~unfinished),
            )
        ).all()
    return list(rows)
