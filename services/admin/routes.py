"""Operator endpoints: system status, every video, stop/resume/delete."""

import asyncio
from collections import Counter
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy import select

from services.admin.health import ServiceHealth, services_health
from services.core import events, ids, jobs, layout, signing
from services.core.auth import AdminOnly
from services.core.db import engine, session_scope
from services.core.deps import ObjectsDep, SessionDep, SettingsDep, StorageDep
from services.core.errors import Conflict
from services.core.jobs import transcode_status
from services.core.layout import VideoLayout
from services.core.models import (
    DeliveryStatus,
    Job,
    Video,
    VideoEvent,
    WebhookDelivery,
    as_utc,
)
from services.core.schemas import Deleted, Resumed, TranscodeStatus, VideoOut
from services.core.settings import Settings
from services.core.storage.factory import parse_storage_url, store_of
from services.core.storage.interface import Store
from services.core.sweeps import sweep_totals
from services.core.videos import delete_everywhere, get_video, list_videos

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=AdminOnly)


class Disk(BaseModel):
    total: int
    used: int
    free: int


class StorageStatus(BaseModel):
    """Where media are stored and whether that answers (never a credential)."""

    backend: str = Field(description="local (the storage folder) or s3 (a bucket)")
    bucket: str | None = Field(description="The bucket (s3 only)")
    prefix: str | None = Field(description="The prefix in the bucket (s3 only)")
    endpoint: str | None = Field(description="The S3 endpoint; null: AWS S3 (s3 only)")
    reachable: bool
    problem: str | None = Field(description="What is wrong when it is not reachable")


class Reclaimed(BaseModel):
    """What the abandoned-upload sweep has removed so far."""

    runs: int
    uploads_removed: int
    bytes_reclaimed: int
    last_run_at: datetime | None


class SystemStatus(BaseModel):
    database: str = Field(description="The database backend: sqlite or postgresql")
    services: dict[str, ServiceHealth]
    storage: StorageStatus
    disk: Disk = Field(
        description="The storage folder's disk (with STORAGE_URL set: only the scratch folder "
        "where bytes are staged; the bucket has no free space to report)"
    )
    queue_depth: int = Field(description="Jobs waiting for a worker")
    running_jobs: list[TranscodeStatus]
    videos_by_status: dict[str, int]
    reclaimed: Reclaimed = Field(description="Abandoned uploads swept away")


class AdminVideo(VideoOut):
    job: TranscodeStatus | None = None


class VideoFiles(BaseModel):
    original_bytes: int | None
    renditions: dict[str, int] = Field(description="Segments on disk per rung")
    master_playlist: bool


class ChunkOut(BaseModel):
    """One unit of work of a job."""

    index: int = Field(description="Time order; -1 is the whole audio")
    kind: str
    start: float
    end: float | None
    status: str
    encodes: int = Field(description="How many times ffmpeg was started on it")
    attempts: int = Field(description="Failed encodes so far")
    encode_seconds: float | None
    done_by: str | None
    worker: str | None
    error: str | None


class VideoStatus(BaseModel):
    video: VideoOut
    job: TranscodeStatus | None
    chunks: list[ChunkOut]
    files: VideoFiles


class EventOut(BaseModel):
    """One entry of a video's trail."""

    id: int = Field(description="Orders the trail")
    at: datetime = Field(description="When it happened (UTC, RFC 3339)")
    kind: str = Field(description="upload.completed, video.queued, job.running, video.ready, ...")
    from_status: str | None = Field(description="The video's status before; null for a step")
    to_status: str | None = Field(description="The video's status after; null for a step")
    reason: str | None
    actor: str | None = Field(description="operator, upload, or the worker's id")

    @classmethod
    def of(cls, event: VideoEvent) -> "EventOut":
        at = as_utc(event.at)
        assert at is not None
        return cls(
            id=event.id,
            at=at,
            kind=event.kind,
            from_status=event.from_status,
            to_status=event.to_status,
            reason=event.reason,
            actor=event.actor,
        )


class DeliveryOut(BaseModel):
    """One webhook delivery of an event to one configured URL."""

    id: str = Field(description="Sent as Webhook-Id and as the body's id")
    event_id: int
    type: str
    url: str
    status: str = Field(description="pending | delivered | failed")
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: datetime | None = Field(description="When a pending one is tried next")
    delivered_at: datetime | None

    @classmethod
    def of(cls, delivery: WebhookDelivery) -> "DeliveryOut":
        pending = delivery.status == DeliveryStatus.PENDING
        return cls(
            id=delivery.id,
            event_id=delivery.event_id,
            type=delivery.type,
            url=delivery.url,
            status=delivery.status,
            attempts=delivery.attempts,
            last_status_code=delivery.last_status_code,
            last_error=delivery.last_error,
            next_attempt_at=as_utc(delivery.next_attempt_at) if pending else None,
            delivered_at=as_utc(delivery.delivered_at),
        )


class VideoEvents(BaseModel):
    video_id: str
    events: list[EventOut] = Field(description="Oldest first; kept after a delete")
    webhooks: list[DeliveryOut]


@router.post("/resume_all", response_model=Resumed)
def resume_all(session: SessionDep) -> Resumed:
    """Re-queue every stopped or failed job."""
    return Resumed(resumed=jobs.resume_all(session))


@router.get("/status", response_model=SystemStatus)
async def status(settings: SettingsDep, storage: StorageDep) -> SystemStatus:
    """Services' health, disk space, queue depth and running jobs."""
    health, (depth, running, counts), stored = await asyncio.gather(
        services_health(settings),
        asyncio.to_thread(_job_overview, settings),
        asyncio.to_thread(storage_status, settings),
    )
    usage = storage.disk_usage()
    return SystemStatus(
        database=engine(settings).dialect.name,
        services=health,
        storage=stored,
        disk=Disk(total=usage.total, used=usage.used, free=usage.free),
        queue_depth=depth,
        running_jobs=running,
        videos_by_status=counts,
        reclaimed=Reclaimed.model_validate(await asyncio.to_thread(sweep_totals, settings)),
    )


def storage_status(settings: Settings) -> StorageStatus:
    """The storage backend and whether it answers now (Store.check)."""
    store = store_of(settings)
    target = parse_storage_url(settings.storage_url)
    problem = store.check()
    bucket, prefix = target if target is not None else (None, None)
    return StorageStatus(
        backend=store.name,
        bucket=bucket,
        prefix=prefix,
        endpoint=(settings.aws_endpoint_url or None) if target else None,
        reachable=problem is None,
        problem=problem,
    )


def _job_overview(settings: SettingsDep) -> tuple[int, list[TranscodeStatus], dict[str, int]]:
    with session_scope(settings) as session:
        running = [transcode_status(session, j) for j in jobs.running(session)]
        counts = Counter(session.scalars(select(Video.status)).all())
        return jobs.queue_depth(session), running, dict(counts)


@router.get("/videos", response_model=list[AdminVideo])
def videos(session: SessionDep) -> list[AdminVideo]:
    """Every video with its job."""
    found = list_videos(session, limit=10_000)
    job_of = {j.video_id: j for j in session.scalars(select(Job))}
    return [
        AdminVideo(
            **VideoOut.of(v).model_dump(),
            job=TranscodeStatus.of(job_of[v.id]) if v.id in job_of else None,
        )
        for v in found
    ]


@router.delete("/videos/{video_id}", response_model=Deleted)
def delete(video_id: str, settings: SettingsDep) -> Deleted:
    """Delete a video completely: record, job, original, every rendition."""
    delete_everywhere(settings, video_id=video_id)
    return Deleted(deleted=video_id)


@router.post("/videos/{video_id}/stop", response_model=TranscodeStatus)
def stop(video_id: str, session: SessionDep) -> TranscodeStatus:
    """Stop a video's transcoding (ffmpeg ends within 2 s; finished work is kept)."""
    get_video(session, video_id=video_id)
    return transcode_status(session, jobs.request_stop(session, video_id=video_id))


@router.post("/videos/{video_id}/resume", response_model=TranscodeStatus)
def resume(video_id: str, session: SessionDep) -> TranscodeStatus:
    """Resume (or retry) a stopped or failed transcoding."""
    get_video(session, video_id=video_id)
    return transcode_status(session, jobs.resume(session, video_id=video_id))


class PlaybackGrant(BaseModel):
    token: str
    expires_in: int
    master_url: str = Field(description="The signed master playlist path; share it as is")


@router.get("/videos/{video_id}/events", response_model=VideoEvents)
def video_events(video_id: str, session: SessionDep) -> VideoEvents:
    """Every status change of a video, with time and reason, and its webhook deliveries."""
    trail = events.trail(session, video_id=video_id)
    return VideoEvents(
        video_id=video_id,
        events=[EventOut.of(e) for e in trail],
        webhooks=[DeliveryOut.of(d) for d in events.deliveries(session, video_id=video_id)],
    )


@router.post("/videos/{video_id}/playback_token", response_model=PlaybackGrant)
def playback_token(
    video_id: str,
    session: SessionDep,
    settings: SettingsDep,
    ttl: Annotated[
        int, Query(ge=60, le=7 * 24 * 3600, description="Seconds it stays valid")
    ] = 3600,
) -> PlaybackGrant:
    """A signed, expiring playback token for a private video (PLAYBACK_SIGNING_KEY set)."""
    video = get_video(session, video_id=video_id)
    if not settings.playback_signing_key:
        raise Conflict("private playback is off: set PLAYBACK_SIGNING_KEY to issue tokens")
    token = signing.sign(settings.playback_signing_key, video.id, ttl)
    return PlaybackGrant(
        token=token, expires_in=ttl, master_url=f"/stream/{video.id}/master.m3u8?token={token}"
    )


@router.get("/videos/{video_id}/status", response_model=VideoStatus)
def video_status(
    video_id: str, session: SessionDep, storage: StorageDep, objects: ObjectsDep
) -> VideoStatus:
    """A video's record, its job and what is on disk for it."""
    video = get_video(session, video_id=video_id)
    job = session.get(Job, video.id)
    chunks = [
        ChunkOut(
            index=c.index,
            kind=c.kind,
            start=c.start,
            end=c.end,
            status=c.status,
            encodes=c.encodes,
            attempts=c.attempts,
            encode_seconds=c.encode_seconds,
            done_by=c.done_by,
            worker=c.worker_id,
            error=c.error,
        )
        for c in jobs.chunks_of(session, video_id=video.id)
    ]
    return VideoStatus(
        video=VideoOut.of(video),
        job=transcode_status(session, job) if job else None,
        chunks=chunks,
        files=_files(storage, video.id) if objects is None else _objects(objects, video.id),
    )


def _is_segment(name: str) -> bool:
    return name.startswith(layout.SEGMENT_PREFIX) and bool(layout.SEGMENT_RE.fullmatch(name))


def _files(storage: StorageDep, video_id: str) -> VideoFiles:
    source = storage.source_path(video_id)
    hls = storage.hls_dir(video_id)
    renditions = (
        {
            d.name: sum(1 for f in d.iterdir() if _is_segment(f.name))
            for d in sorted(hls.iterdir())
            # Rendition folders only: not downloads/, captions/ or the claims' .work/.
            if d.is_dir() and ids.QUALITY_RE.fullmatch(d.name)
        }
        if hls.is_dir()
        else {}
    )
    return VideoFiles(
        original_bytes=source.stat().st_size if source.is_file() else None,
        renditions=renditions,
        master_playlist=storage.master_path(video_id).is_file(),
    )


def _objects(store: Store, video_id: str) -> VideoFiles:
    """`_files` for a video whose media are in a bucket: one listing of its hls/ prefix."""
    lay = VideoLayout.of(video_id)
    source = store.stat(lay.source)
    renditions: dict[str, int] = {}
    master = False
    for info in store.list_prefix(lay.hls):
        folder, _, name = info.key[len(lay.hls) :].partition("/")
        if not name and folder == layout.MASTER:
            master = True
        # Rendition folders only: not downloads/, captions/ or the claims' .work/.
        elif ids.QUALITY_RE.fullmatch(folder) and "/" not in name:
            renditions[folder] = renditions.get(folder, 0) + _is_segment(name)
    return VideoFiles(
        original_bytes=source.size if source is not None else None,
        renditions=dict(sorted(renditions.items())),
        master_playlist=master,
    )
