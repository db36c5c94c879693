"""The event trail: every status change of a video and its job, with time, reason and actor.

An event is written in the same transaction as the change it records, by the one function
that makes that change (`jobs`, `videos`, the upload's completion), so the trail can neither
miss a change nor show one that was rolled back. Events of the webhook kinds also write their
outbox rows in that transaction (see `outbox`).

Kinds (from -> to are video statuses; a kind without them is a step, not a change):

    upload.created    -> uploading        an upload was declared
    upload.completed                      every chunk arrived and the file was verified
    video.queued      X -> queued         transcoding queued (first time, or started over)
    job.running       queued -> running   a worker claimed the job's first unit of work
    chunk.retry                           a unit of work failed and will be tried again
    job.stopped       X -> stopped        an operator stopped it (or a delete did)
    job.resumed       stopped|failed -> queued   an operator resumed or retried it
    video.ready       X -> ok             every rung is published
    video.failed      X -> failed         not a video, or a unit failed too often, or publishing
    video.deleted     X ->                the record and every file were removed

The trail is kept when a video is deleted: the delete is its last entry.
"""

from datetime import datetime

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from services.core import ids, outbox
from services.core.errors import NotFound
from services.core.models import Status, Upload, Video, VideoEvent, WebhookDelivery
from services.core.redact import public_text

UPLOAD_CREATED = "upload.created"
UPLOAD_COMPLETED = "upload.completed"
VIDEO_QUEUED = "video.queued"
JOB_RUNNING = "job.running"
CHUNK_RETRY = "chunk.retry"
JOB_STOPPED = "job.stopped"
JOB_RESUMED = "job.resumed"
VIDEO_READY = "video.ready"
VIDEO_FAILED = "video.failed"
VIDEO_DELETED = "video.deleted"

OPERATOR = "operator"
UPLOAD_SERVICE = "upload"
REASON_LIMIT = 2000


def _now(session: Session) -> ColumnElement[datetime]:
    """The event's time, read by the INSERT that takes the event's id, so times follow ids.
    A time taken in Python before the INSERT lets two processes' transactions get their ids
    in one order and their times in the other (seen on SQLite: 2 ms backwards between a
    worker's and the upload service's events), and the trail is ordered by id. PostgreSQL:
    clock_timestamp(), not the transaction's start; SQLite: its clock in milliseconds, read
    while the INSERT holds the database's one write lock."""
    if session.get_bind().dialect.name == "postgresql":
        return func.clock_timestamp()
    return func.strftime("%Y-%m-%d %H:%M:%f", "now")


def record(
    session: Session,
    *,
    video_id: str,
    kind: str,
    reason: str | None = None,
    from_status: str | None = None,
    to_status: str | None = None,
    actor: str | None = None,
) -> VideoEvent:
    """Add one event to the trail (and its webhook deliveries) in the caller's transaction."""
    event = VideoEvent(
        video_id=video_id,
        at=_now(session),
        kind=kind,
        from_status=from_status,
        to_status=to_status,
        # The trail is shown to operators and sent to webhook receivers: no server paths.
        reason=public_text(reason, limit=REASON_LIMIT) if reason else reason,
        actor=actor,
    )
    session.add(event)
    session.flush()  # the id orders the trail and the outbox rows point at it
    if kind in outbox.TYPES:
        outbox.enqueue(session, event)
    return event


def video_status(session: Session, video_id: str) -> str | None:
    """The video's status as stored now (None when there is no record)."""
    return session.scalar(select(Video.status).where(Video.id == video_id))


def upload_created(session: Session, upload: Upload) -> None:
    """An upload was declared: the video's first entry."""
    size = f"{upload.total_size} bytes" if upload.total_size is not None else "size not given"
    record(
        session,
        video_id=upload.id,
        kind=UPLOAD_CREATED,
        to_status=Status.UPLOADING,
        reason=f"upload of '{upload.filename}' declared ({size})",
        actor=UPLOAD_SERVICE,
    )


def upload_completed(session: Session, video: Video, *, error: str | None = None) -> None:
    """Every chunk is in and verified; with `error` the content did not probe as video."""
    session.flush()
    record(
        session,
        video_id=video.id,
        kind=UPLOAD_COMPLETED,
        reason=f"{video.size} bytes received, sha256 {(video.sha256 or '')[:12]}",
        actor=UPLOAD_SERVICE,
    )
    if error is not None:
        record(
            session,
            video_id=video.id,
            kind=VIDEO_FAILED,
            from_status=Status.UPLOADING,
            to_status=Status.FAILED,
            reason=f"not a video: {error}",
            actor=UPLOAD_SERVICE,
        )


def trail(session: Session, *, video_id: str) -> list[VideoEvent]:
    """A video's events, oldest first; NotFound when neither it nor any event of it exists."""
    ids.video_id(video_id)
    found = list(
        session.scalars(
            select(VideoEvent).where(VideoEvent.video_id == video_id).order_by(VideoEvent.id)
        )
    )
    if not found and session.get(Video, video_id) is None:
        raise NotFound(f"no video {video_id} and no recorded events for it: check the id")
    return found


def deliveries(session: Session, *, video_id: str) -> list[WebhookDelivery]:
    """The webhook deliveries of a video's events, oldest first."""
    return list(
        session.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.video_id == ids.video_id(video_id))
            .order_by(WebhookDelivery.event_id, WebhookDelivery.url)
        )
    )
