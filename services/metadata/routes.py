"""REST face of the video records (reference API: `/videos`, `{hash}` = video id)."""

from typing import Annotated

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, Field

from services.core import ids, jobs
from services.core.auth import AdminOnly
from services.core.deps import SessionDep, SettingsDep
from services.core.errors import Conflict
from services.core.jobs import transcode_status
from services.core.models import Status, Video
from services.core.schemas import Deleted, OneLine, TranscodeStatus, VideoOut
from services.core.videos import delete_everywhere, get_video, list_videos

router = APIRouter(tags=["metadata"])


class VideoFields(BaseModel):
    """Descriptive fields a client may set; status and renditions belong to the job."""

    filename: OneLine | None = Field(None, min_length=1, max_length=255)
    size: int | None = Field(None, ge=0, le=2**62)
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    duration: float | None = Field(None, ge=0, allow_inf_nan=False)
    width: int | None = Field(None, ge=1, le=16384)
    height: int | None = Field(None, ge=1, le=16384)
    fps: float | None = Field(None, gt=0, le=1000)
    video_codec: OneLine | None = Field(None, max_length=32)
    audio_codec: OneLine | None = Field(None, max_length=32)


class VideoCreate(VideoFields):
    id: str | None = Field(None, pattern=r"^[0-9a-f]{32}$", description="Omit to get a new id")
    filename: OneLine = Field(min_length=1, max_length=255)


class Stopped(BaseModel):
    video_id: str
    stopped: bool


@router.post(
    "/videos", response_model=VideoOut, status_code=status.HTTP_201_CREATED, dependencies=AdminOnly
)
def create(body: VideoCreate, session: SessionDep) -> VideoOut:
    """Create a video record (the upload service does this itself at complete)."""
    video_id = body.id or ids.new_video_id()
    if session.get(Video, video_id) is not None:
        raise Conflict(f"video {video_id} already exists")
    video = Video(**body.model_dump(exclude={"id"}), id=video_id, qualities=[])
    video.status = Status.UPLOADING
    session.add(video)
    session.flush()
    return VideoOut.of(video)


@router.get("/videos", response_model=list[VideoOut])
def index(
    session: SessionDep,
    status_: Annotated[str | None, Query(alias="status", pattern=r"^[a-z]{2,16}$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    # Bounded: past 2**63 the database itself overflows.
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> list[VideoOut]:
    """Videos, newest first, optionally of one status."""
    return [
        VideoOut.of(v) for v in list_videos(session, status=status_, limit=limit, offset=offset)
    ]


@router.get("/videos/{hash}", response_model=VideoOut)
def read(hash: str, session: SessionDep) -> VideoOut:
    """One video record."""
    return VideoOut.of(get_video(session, video_id=hash))


@router.put("/videos/{hash}", response_model=VideoOut, dependencies=AdminOnly)
def edit(hash: str, body: VideoFields, session: SessionDep) -> VideoOut:
    """Update descriptive fields of a video record."""
    video = get_video(session, video_id=hash)
    for key, value in body.model_dump(exclude_unset=True).items():
        if value is not None:
            setattr(video, key, value)
    session.flush()
    return VideoOut.of(video)


@router.delete("/videos/{hash}", response_model=Deleted, dependencies=AdminOnly)
def remove(hash: str, settings: SettingsDep) -> Deleted:
    """Delete the video: record, job, original and renditions."""
    delete_everywhere(settings, video_id=hash)
    return Deleted(deleted=hash)


@router.get("/videos/{hash}/stopped", response_model=Stopped)
def stopped(hash: str, session: SessionDep) -> Stopped:
    """Whether the video's transcoding is stopped (or a stop is pending)."""
    get_video(session, video_id=hash)
    return Stopped(video_id=hash, stopped=jobs.is_stopped(session, video_id=hash))


@router.put("/videos/{hash}/stop", response_model=TranscodeStatus, dependencies=AdminOnly)
def stop(hash: str, session: SessionDep) -> TranscodeStatus:
    """Stop the video's transcoding; finished work is kept."""
    get_video(session, video_id=hash)
    return transcode_status(session, jobs.request_stop(session, video_id=hash))


@router.put("/videos/{hash}/resume", response_model=TranscodeStatus, dependencies=AdminOnly)
def resume(hash: str, session: SessionDep) -> TranscodeStatus:
    """Resume a stopped or failed transcoding."""
    get_video(session, video_id=hash)
    return transcode_status(session, jobs.resume(session, video_id=hash))
