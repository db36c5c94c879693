"""Operations on a whole video that several services expose: look up, delete everywhere."""

import time

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from services.core import events, ids, jobs
from services.core.db import session_scope
from services.core.errors import NotFound
from services.core.layout import VideoLayout
from services.core.models import (
    Caption,
    ChunkStatus,
    Job,
    JobChunk,
    Status,
    Upload,
    UploadChunk,
    UploadPart,
    Video,
    utcnow,
)
from services.core.settings import Settings
from services.core.storage import Storage
from services.core.storage.factory import store_of, uses_object_storage


def get_video(session: Session, *, video_id: str) -> Video:
    """The video with this id (validated first), or NotFound."""
    video = session.get(Video, ids.video_id(video_id))
    if video is None:
        raise NotFound(f"no video {video_id}")
    return video


def list_videos(
    session: Session, *, status: str | None = None, limit: int = 100, offset: int = 0
) -> list[Video]:
    """Videos, newest first."""
    query = select(Video).order_by(Video.created_at.desc()).limit(limit).offset(offset)
    if status:
        query = query.where(Video.status == status)
    return list(session.scalars(query))


def delete_everywhere(settings: Settings, *, video_id: str, wait_seconds: float = 5.0) -> None:
    """Stop its job, then remove the record, the upload, the captions, the original and every
    rendition."""
    ids.video_id(video_id)
    with session_scope(settings) as session:
        known = session.get(Video, video_id) or session.get(Upload, video_id)
        if known is None:
            raise NotFound(f"no video {video_id}")
        job = session.get(Job, video_id)
        if job is not None and job.status in jobs.RUNNABLE:
            jobs.request_stop(session, video_id=video_id, reason="stopped to delete the video")
    _wait_until_not_running(settings, video_id, wait_seconds)
    # In a bucket, first: an unreachable one (503) leaves the record, so the delete can be
    # asked again, rather than objects that no record names any more.
    abort_upload(settings, video_id)
    remove_objects(settings, video_id)
    with session_scope(settings) as session:
        previous = events.video_status(session, video_id) or Status.UPLOADING
        # The trail outlives the video: its last entry says it was deleted.
        events.record(
            session,
            video_id=video_id,
            kind=events.VIDEO_DELETED,
            from_status=previous,
            reason="deleted by an operator: record, original and renditions removed",
            actor=events.OPERATOR,
        )
        session.execute(delete(JobChunk).where(JobChunk.video_id == video_id))
        session.execute(delete(Job).where(Job.video_id == video_id))
        session.execute(delete(UploadChunk).where(UploadChunk.upload_id == video_id))
        session.execute(delete(UploadPart).where(UploadPart.upload_id == video_id))
        session.execute(delete(Upload).where(Upload.id == video_id))
        session.execute(delete(Caption).where(Caption.video_id == video_id))
        session.execute(delete(Video).where(Video.id == video_id))
    Storage(settings.storage_dir).delete_video(video_id)
    # Again: a preview or a late chunk of a worker may have landed since.
    remove_objects(settings, video_id)


def remove_objects(settings: Settings, video_id: str) -> None:
    """Delete every object of a video from the bucket (original, captions, renditions);
    nothing to do on the local folder (Storage.delete_video removes its files)."""
    if uses_object_storage(settings):
        store = store_of(settings)
        lay = VideoLayout.of(video_id)
        for prefix in (lay.originals, lay.hls):
            store.delete_prefix(prefix)


def abort_upload(settings: Settings, video_id: str) -> bool:
    """Drop the multipart object of the video's upload while it is unfinished (its id is on
    the upload's row), in a bucket; False when there is none to drop (done, or the local
    folder). StorageUnavailable when the bucket cannot be reached."""
    if not uses_object_storage(settings):
        return False
    with session_scope(settings) as session:
        upload = session.get(Upload, video_id)
        if upload is None or upload.completed or not upload.multipart_id:
            return False
        multipart_id = upload.multipart_id
    # The parts cost storage (and money) but no listing shows them: abort, not just delete.
    store_of(settings).abort_multipart(VideoLayout.of(video_id).source, multipart_id)
    return True


def remove_renditions(settings: Settings, video_id: str) -> None:
    """Delete everything derived from a video's encode (before it is encoded anew), from the
    storage folder and, on object storage, from the bucket."""
    Storage(settings.storage_dir).delete_renditions(video_id)
    if uses_object_storage(settings):
        store_of(settings).delete_prefix(VideoLayout.of(video_id).hls)


def _wait_until_not_running(settings: Settings, video_id: str, wait_seconds: float) -> None:
    # Workers see the stop at their next heartbeat and kill ffmpeg; deleting files under a
    # live ffmpeg would let it recreate them.
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        with session_scope(settings) as session:
            held = session.scalar(
                select(func.count()).where(
                    JobChunk.video_id == video_id,
                    JobChunk.status == ChunkStatus.RUNNING,
                    JobChunk.lease_expires_at > utcnow(),
                )
            )
        if not held:
            return
        time.sleep(0.1)
