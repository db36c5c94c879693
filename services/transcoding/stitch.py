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
from services.core.storage import Storage, remove_tree, write_atomic
from services.media import fmp4
from services.media import video_captions as captions
from services.media.plan import CAPTIONS, Plan
from services.media.playlists import (
    IFrame,
    iframe_bandwidth,
    iframe_playlist,
    index_iframes,
    master_playlist,
    measure_audio,
    measure_rendition,
    media_playlist,
    read_media_playlist,
)


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
    storage = Storage(settings.storage_dir)
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
        elif ready == 0 or not _audio_covers(
            storage, video_id, audio, _video_seconds(storage, video_id, plan, ready)
        ):
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
            storage,
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


def _video_seconds(storage: Storage, video_id: str, plan: Plan, chunks: int) -> float:
    rung = storage.rung_dir(video_id, plan.renditions[0].name)
    return sum(
        d for i in range(chunks) for _, d in read_media_playlist(rung / layout.chunk_playlist(i))
    )


def _audio_covers(storage: Storage, video_id: str, audio: JobChunk | None, seconds: float) -> bool:
    """Whether the audio (encoded whole, in one growing playlist) reaches `seconds` yet."""
    if audio is None or audio.status == ChunkStatus.DONE:
        return True
    playlist = storage.rung_file(video_id, layout.AUDIO, layout.AUDIO_RUN_PLAYLIST)
    if audio.status != ChunkStatus.RUNNING:
        return False
    try:
        covered = sum(d for _, d in read_media_playlist(playlist))
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
    storage: Storage,
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
    (the publisher's adds the video's captions) or else written as it is."""
    iframe_rates: dict[str, int] = {}
    video_end = 0.0
    for rendition in plan.renditions:
        rung = storage.rung_dir(video_id, rendition.name)
        video_end, iframe_rate = _write_rung(rung, plan, chunks, final=final)
        if iframe_rate is not None:
            iframe_rates[rendition.name] = iframe_rate
    if plan.audio_kbps is not None:
        _write_audio(storage.rung_dir(video_id, layout.AUDIO), plan, video_end, final)
    master = storage.master_path(video_id)
    if final or not master.exists():
        text = _measure_master(storage, video_id, plan, iframe_rates, tools)
        if write_master is None:
            write_atomic(master, text)
        else:
            write_master(text)
    if final:
        # Last, and durably like every playlist before it: the job is recorded ok after this.
        write_atomic(storage.complete_marker(video_id), "")
        # Every chunk counts now: what claims left in their work folders never will.
        remove_tree(storage.work_dir(video_id))


def _write_rung(rung: Path, plan: Plan, chunks: int, *, final: bool) -> tuple[float, int | None]:
    """Write a rung's media (and I-frame) playlists for its first `chunks` chunks; return
    where its video ends (seconds) and its I-frame playlist's bit rate (None: it has none).

    An fMP4 rung gets the init segment its chunks share, and no I-frame playlist.
    """
    segments = [
        s for i in range(chunks) for s in read_media_playlist(rung / layout.chunk_playlist(i))
    ]
    init = _publish_init(rung, [layout.chunk_init(i) for i in range(chunks)], plan)
    target = plan.options.segment_seconds
    write_atomic(
        rung / layout.PLAYLIST, media_playlist(segments, target=target, ended=final, init=init)
    )
    video_end = sum(seconds for _, seconds in segments)
    if plan.options.fmp4:
        return video_end, None
    frames = _iframes(rung, chunks)
    end_time = (frames[0].time if frames else 0.0) + video_end
    write_atomic(rung / layout.IFRAMES, iframe_playlist(frames, end_time=end_time, ended=final))
    return video_end, iframe_bandwidth(rung, frames, end_time)


def _publish_init(
    folder: Path, sources: list[str], plan: Plan, *, check: bool = True
) -> str | None:
    """For fMP4, publish the init segment `sources` share; its name (None for MPEG-TS)."""
    if not plan.options.fmp4:
        return None
    fmp4.publish_init(folder, sources, name=layout.INIT, check=check)
    return layout.INIT


def _iframes(rung: Path, chunks: int) -> list[IFrame]:
    frames: list[IFrame] = []
    for index in range(chunks):
        frames += [
            IFrame(**f) for f in json.loads((rung / layout.chunk_iframes(index)).read_text())
        ]
    return frames


def _write_audio(audio: Path, plan: Plan, video_end: float, final: bool) -> None:
    segments = read_media_playlist(audio / layout.AUDIO_RUN_PLAYLIST)
    # The audio is one run, which a retry may be rewriting until `final`: its init segment
    # is compared with the published one only then.
    init = _publish_init(audio, [layout.AUDIO_RUN_INIT], plan, check=final)
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
    write_atomic(
        audio / layout.PLAYLIST, media_playlist(segments, target=target, ended=final, init=init)
    )


def _measure_master(
    storage: Storage, video_id: str, plan: Plan, iframe_rates: dict[str, int], tools: Tools
) -> str:
    """Measure every rendition: the master playlist (without captions) that lists them."""
    init = layout.INIT if plan.options.fmp4 else None
    # Each measurement is a few ffprobe/ffmpeg runs that mostly wait: run them side by side.
    with ThreadPoolExecutor(max_workers=4) as pool:
        stats = list(
            pool.map(
                lambda r: measure_rendition(
                    storage.rung_dir(video_id, r.name),
                    ffprobe=tools.ffprobe,
                    ffmpeg=tools.ffmpeg,
                    init=init,
                ),
                plan.renditions,
            )
        )
    audio = None
    if plan.audio_kbps is not None:
        audio_dir = storage.rung_dir(video_id, layout.AUDIO)
        audio = measure_audio(audio_dir, ffprobe=tools.ffprobe, init=init)
    return master_playlist(stats, audio=audio, iframe_bandwidths=iframe_rates)


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
