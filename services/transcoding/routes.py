"""HTTP face of transcoding: start, status, resume. Work itself is done by workers."""

from fastapi import APIRouter

from services.core import ids, jobs
from services.core.auth import AdminOnly
from services.core.deps import ObjectsDep, SessionDep, StorageDep
from services.core.errors import Conflict
from services.core.jobs import transcode_status
from services.core.layout import VideoLayout
from services.core.models import Status
from services.core.schemas import Resumed, TranscodeStatus, VideoIdBody
from services.core.storage import Storage
from services.core.storage.interface import Store
from services.core.videos import get_video

router = APIRouter(tags=["transcoding"])


class ResumeBody(VideoIdBody):
    upload_id: str | None = None  # type: ignore[assignment]


@router.post("/transcode/start", response_model=TranscodeStatus, dependencies=AdminOnly)
def start(
    body: VideoIdBody, session: SessionDep, storage: StorageDep, objects: ObjectsDep
) -> TranscodeStatus:
    """Queue (or re-queue) the transcoding of an uploaded video."""
    video = get_video(session, video_id=body.upload_id)
    if video.status == Status.UPLOADING or not _has_source(video.id, storage, objects):
        raise Conflict(f"video {video.id} has no complete original yet: call /upload/complete")
    return transcode_status(session, jobs.enqueue(session, video_id=video.id))


def _has_source(video_id: str, storage: Storage, objects: Store | None) -> bool:
    """Whether the video's original is stored (in the bucket when there is one)."""
    if objects is None:
        return storage.source_path(video_id).exists()
    return objects.stat(VideoLayout.of(video_id).source) is not None


@router.get("/transcode/status/{upload_id}", response_model=TranscodeStatus)
def status(upload_id: str, session: SessionDep) -> TranscodeStatus:
    """A job's state, overall and per quality."""
    return transcode_status(session, jobs.get_job(session, video_id=upload_id))


@router.post("/transcode/resume", response_model=Resumed, dependencies=AdminOnly)
def resume(session: SessionDep, body: ResumeBody | None = None) -> Resumed:
    """Resume one stopped/failed job (`upload_id`), or every one when no id is given."""
    if body is None or body.upload_id is None:
        return Resumed(resumed=jobs.resume_all(session))
    job = jobs.resume(session, video_id=ids.video_id(body.upload_id))
    return Resumed(resumed=[job.video_id] if job.status == Status.QUEUED else [])
