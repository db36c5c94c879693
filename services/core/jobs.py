"""A job's life in the database: enqueue, claim with a lease, heartbeat, finish, stop, resume.

The upload service enqueues by committing a row; workers anywhere claim rows; stop and resume
change a row that the worker holding it watches. A lease that is not renewed (worker killed,
machine lost) expires and the job is claimed again.
"""

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from services.core.errors import Conflict, NotFound
from services.core.models import Job, Status, Video, as_utc, utcnow


def get_job(session: Session, *, video_id: str) -> Job:
    """The job of `video_id`, or NotFound."""
    job = session.get(Job, video_id)
    if job is None:
        raise NotFound(f"no transcoding job for video {video_id}")
    return job


def _set_video_status(session: Session, video_id: str, status: str, error: str | None) -> None:
    session.execute(
        update(Video)
        .where(Video.id == video_id)
        .values(status=status, error=error, updated_at=utcnow())
    )


def enqueue(session: Session, *, video_id: str) -> Job:
    """Create (or re-queue) the job of a video; the video shows `queued`."""
    job = session.get(Job, video_id)
    if job is None:
        job = Job(video_id=video_id, status=Status.QUEUED, progress=0.0, qualities={})
        session.add(job)
    elif job.status == Status.RUNNING:
        raise Conflict(f"video {video_id} is already being transcoded")
    else:
        _requeue(job, reset_progress=job.status == Status.OK)
    _set_video_status(session, video_id, Status.QUEUED, None)
    session.flush()
    return job


def _requeue(job: Job, *, reset_progress: bool) -> None:
    job.status = Status.QUEUED
    job.error = None
    job.stop_requested = False
    job.not_before = None
    job.worker_id = None
    job.lease_expires_at = None
    job.attempts = 0
    if reset_progress:
        job.progress = 0.0
        job.qualities = {}


def _claimable(now: datetime) -> Any:
    queued = and_(Job.status == Status.QUEUED, or_(Job.not_before.is_(None), Job.not_before <= now))
    abandoned = and_(Job.status == Status.RUNNING, Job.lease_expires_at < now)
    return or_(queued, abandoned)


def claim_next(session: Session, *, worker_id: str, lease_seconds: float) -> Job | None:
    """Claim the oldest claimable job for `worker_id`, or None.

    The claim is a conditional UPDATE re-checking the claimable condition, so two workers
    racing for the same row cannot both win, on SQLite and PostgreSQL alike.
    """
    now = utcnow()
    candidate = session.scalars(
        select(Job.video_id).where(_claimable(now)).order_by(Job.created_at).limit(1)
    ).first()
    if candidate is None:
        return None
    result = session.execute(
        update(Job)
        .where(Job.video_id == candidate, _claimable(now))
        .values(
            status=Status.RUNNING,
            worker_id=worker_id,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            started_at=now,
            stop_requested=False,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    _set_video_status(session, candidate, Status.RUNNING, None)
    job = session.get(Job, candidate, populate_existing=True)
    return job


def heartbeat(
    session: Session,
    *,
    video_id: str,
    worker_id: str,
    lease_seconds: float,
    progress: float,
    qualities: dict[str, Any],
) -> bool:
    """Renew the lease and record progress (never backwards); return whether stop was asked.

    Returns True too when the job is no longer ours (lease lost, deleted): the worker must stop.
    """
    job = session.get(Job, video_id, populate_existing=True)
    if job is None or job.worker_id != worker_id or job.status != Status.RUNNING:
        return True
    job.lease_expires_at = utcnow() + timedelta(seconds=lease_seconds)
    job.progress = max(job.progress, round(progress, 2))
    job.qualities = qualities
    return job.stop_requested


def finish(session: Session, *, video_id: str, worker_id: str, qualities: list[str]) -> None:
    """Mark the job and its video `ok` with the rungs produced."""
    job = get_job(session, video_id=video_id)
    if job.worker_id != worker_id:
        return
    job.status, job.progress, job.error = Status.OK, 100.0, None
    job.qualities = {q: {"status": Status.OK, "progress": 100.0} for q in qualities}
    job.finished_at, job.lease_expires_at = utcnow(), None
    session.execute(
        update(Video)
        .where(Video.id == video_id)
        .values(status=Status.OK, qualities=qualities, error=None, updated_at=utcnow())
    )


def fail(
    session: Session,
    *,
    video_id: str,
    worker_id: str | None,
    error: str,
    retry_after: float | None = None,
) -> None:
    """Record a failure: re-queue after `retry_after` seconds, or fail for good when None."""
    job = get_job(session, video_id=video_id)
    if worker_id is not None and job.worker_id != worker_id:
        return
    job.error, job.lease_expires_at, job.worker_id = error, None, None
    if retry_after is not None:
        job.status = Status.QUEUED
        job.not_before = utcnow() + timedelta(seconds=retry_after)
        _set_video_status(session, video_id, Status.QUEUED, error)
        return
    job.status, job.finished_at = Status.FAILED, utcnow()
    _set_video_status(session, video_id, Status.FAILED, error)


def mark_stopped(session: Session, *, video_id: str, worker_id: str) -> None:
    """The worker holding the job stopped its ffmpeg: the job rests as `stopped`."""
    job = get_job(session, video_id=video_id)
    if job.worker_id != worker_id:
        return
    job.status, job.worker_id, job.lease_expires_at = Status.STOPPED, None, None
    _set_video_status(session, video_id, Status.STOPPED, None)


def request_stop(session: Session, *, video_id: str) -> Job:
    """Ask for a stop: a queued (or abandoned) job stops now, a running one at the next beat."""
    job = get_job(session, video_id=video_id)
    if job.status in (Status.OK, Status.FAILED):
        raise Conflict(f"video {video_id} is {job.status}; only unfinished jobs can be stopped")
    lease_live = (
        job.lease_expires_at is not None and (as_utc(job.lease_expires_at) or utcnow()) > utcnow()
    )
    if job.status == Status.RUNNING and lease_live:
        job.stop_requested = True
    else:
        job.status, job.worker_id, job.lease_expires_at = Status.STOPPED, None, None
        _set_video_status(session, video_id, Status.STOPPED, None)
    return job


def resume(session: Session, *, video_id: str) -> Job:
    """Re-queue a stopped or failed job (continues where possible); running/ok ones stay."""
    job = get_job(session, video_id=video_id)
    if job.status in (Status.STOPPED, Status.FAILED):
        _requeue(job, reset_progress=False)
        _set_video_status(session, video_id, Status.QUEUED, None)
    elif job.status == Status.RUNNING and job.stop_requested:
        job.stop_requested = False
    return job


def resume_all(session: Session) -> list[str]:
    """Re-queue every stopped or failed job; return their video ids."""
    ids = session.scalars(
        select(Job.video_id).where(Job.status.in_((Status.STOPPED, Status.FAILED)))
    ).all()
    for vid in ids:
        resume(session, video_id=vid)
    return list(ids)


def is_stopped(session: Session, *, video_id: str) -> bool:
    """Whether the job is stopped or has a stop pending."""
    job = get_job(session, video_id=video_id)
    return job.status == Status.STOPPED or job.stop_requested


def queue_depth(session: Session) -> int:
    """Jobs waiting for a worker."""
    return session.scalar(select(func.count()).where(Job.status == Status.QUEUED)) or 0


def running(session: Session) -> list[Job]:
    """Jobs a worker holds now."""
    return list(session.scalars(select(Job).where(Job.status == Status.RUNNING)))


def reclaim_dead(session: Session, *, host: str, alive: Any) -> list[str]:
    """Expire the leases of jobs held by workers on `host` whose process `alive(pid)` denies.

    Lets a restarted transcoding service pick its own jobs up at once instead of waiting for
    the lease to run out.
    """
    reclaimed = []
    for job in running(session):
        owner_host, _, pid = (job.worker_id or "").rpartition(":")
        if owner_host.split("/")[0] == host and pid.isdigit() and not alive(int(pid)):
            job.lease_expires_at = utcnow() - timedelta(seconds=1)
            reclaimed.append(job.video_id)
    return reclaimed


def release(session: Session, *, video_id: str, worker_id: str) -> None:
    """Give a job back to the queue (worker shutting down); the attempt does not count."""
    job = get_job(session, video_id=video_id)
    if job.worker_id != worker_id:
        return
    job.status, job.worker_id, job.lease_expires_at = Status.QUEUED, None, None
    job.attempts = max(0, job.attempts - 1)
    _set_video_status(session, video_id, Status.QUEUED, None)
