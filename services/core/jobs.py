"""A job's life in the database: enqueue, plan, claim chunks with leases, heartbeat, publish,
finish, stop, resume.

The upload service enqueues by committing a row. One worker plans the job (probe, cut into
time chunks, one row each, plus one row for the whole audio); then any number of workers, on
any number of machines, claim chunk rows with a lease and renew it while ffmpeg runs. A lease
that is not renewed (worker killed, machine lost) expires and the chunk is claimed again.
Stop and resume change the job row; the workers holding its chunks see it at their next beat.
Finished chunks stay finished: resume only encodes what is not done.
"""

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, delete, exists, func, or_, select, update
from sqlalchemy.orm import Session

from services.core import doorbell, events, ids
from services.core.errors import Conflict, NotFound
from services.core.models import ChunkStatus, Job, JobChunk, Status, Video, utcnow
from services.core.redact import public_text
from services.core.schemas import TranscodeStatus

log = logging.getLogger(__name__)

RUNNABLE = (Status.QUEUED, Status.RUNNING)
# Audio costs a few percent of a video chunk's work; it weighs that much in overall progress.
AUDIO_WEIGHT = 0.05
# The kind of the unit that extracts the source's text subtitle streams as captions.
CAPTIONS = "captions"


@dataclass(frozen=True)
class ChunkSpec:
    """A unit of work to create when a job is planned: a time chunk, or the whole audio."""

    index: int
    kind: str
    start: float
    end: float | None


@dataclass(frozen=True)
class ClaimedChunk:
    """What a worker needs to encode a chunk it now holds."""

    video_id: str
    index: int
    kind: str
    start: float
    end: float | None
    plan: dict[str, Any]
    # Which claim of the chunk this is (its `encodes` count): a worker that claims a chunk
    # again (its lease ran out while it was still finishing) must not be taken for the
    # earlier claim, whose late heartbeat, finish or release would then act on the new one.
    attempt: int = 0


def get_job(session: Session, *, video_id: str) -> Job:
    """The job of `video_id`, or NotFound."""
    job = session.get(Job, ids.video_id(video_id))
    if job is None:
        raise NotFound(f"no transcoding job for video {video_id}")
    return job


def _set_video_status(
    session: Session,
    video_id: str,
    status: str,
    error: str | None,
    *,
    kind: str,
    reason: str,
    actor: str | None = None,
) -> None:
    """Change the video's status and record the change in its trail (same transaction)."""
    previous = events.video_status(session, video_id)
    session.execute(
        update(Video)
        .where(Video.id == video_id)
        .values(status=status, error=error, updated_at=utcnow())
    )
    events.record(
        session,
        video_id=video_id,
        kind=kind,
        from_status=previous,
        to_status=status,
        reason=reason,
        actor=actor,
    )
    if status == Status.QUEUED:
        _work_queued(session)


def _work_queued(session: Session) -> None:
    """Work to do: idle workers, here and on other machines, look as soon as this commits."""
    session.info[doorbell.QUEUED] = True


def enqueue(
    session: Session,
    *,
    video_id: str,
    plan: dict[str, Any] | None = None,
    chunks: Sequence[ChunkSpec] = (),
) -> Job:
    """Create the job of a video, or start it over from nothing; the video shows `queued`.

    With a plan its units of work are created at once and workers can start right away;
    without one, a worker probes and plans first.
    """
    job = session.get(Job, video_id)
    first = job is None
    if job is None:
        job = Job(video_id=video_id, status=Status.QUEUED, progress=0.0, qualities={})
        session.add(job)
    elif job.status == Status.RUNNING:
        raise Conflict(f"video {video_id} is being transcoded; stop it first to start over")
    else:
        session.execute(delete(JobChunk).where(JobChunk.video_id == video_id))
        job.status, job.error, job.plan = Status.QUEUED, None, None
        job.total_chunks = job.published_chunks = 0
        job.progress, job.qualities = 0.0, {}
        job.worker_id = job.lease_expires_at = job.finished_at = None
    planned = f"{len(chunks)} units of work planned" if plan else "a worker plans it first"
    _set_video_status(
        session,
        video_id,
        Status.QUEUED,
        None,
        kind=events.VIDEO_QUEUED,
        reason=f"transcoding queued: {planned}" if first else f"started over: {planned}",
        actor=events.UPLOAD_SERVICE if first else events.OPERATOR,
    )
    session.flush()
    if plan is not None:
        _store_plan(session, job, plan, chunks)
    return job


# --- planning -------------------------------------------------------------------------------


def claim_planning(session: Session, *, worker_id: str, lease_seconds: float) -> str | None:
    """Claim a queued job that has no plan yet; return its video id."""
    now = utcnow()
    unplanned = and_(
        Job.status == Status.QUEUED,
        Job.plan.is_(None),
        or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < now),
    )
    candidate = session.scalars(
        select(Job.video_id).where(unplanned).order_by(Job.created_at).limit(1)
    ).first()
    if candidate is None:
        return None
    claimed = session.execute(
        update(Job)
        .where(Job.video_id == candidate, unplanned)
        .values(worker_id=worker_id, lease_expires_at=now + timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False)
    )
    return candidate if claimed.rowcount == 1 else None  # type: ignore[attr-defined]


def save_plan(
    session: Session,
    *,
    video_id: str,
    worker_id: str,
    plan: dict[str, Any],
    chunks: Sequence[ChunkSpec],
) -> bool:
    """Store the plan and create the chunk rows, if the job is still ours to plan."""
    job = session.get(Job, video_id, populate_existing=True)
    if job is None or job.worker_id != worker_id or job.plan is not None:
        return False
    _store_plan(session, job, plan, chunks)
    return True


def _store_plan(
    session: Session, job: Job, plan: dict[str, Any], chunks: Sequence[ChunkSpec]
) -> None:
    for spec in chunks:
        session.add(
            JobChunk(
                video_id=job.video_id,
                index=spec.index,
                kind=spec.kind,
                start=spec.start,
                end=spec.end,
                status=ChunkStatus.PENDING,
            )
        )
    job.plan = plan
    # What publishing counts: the time chunks, or an audio-only job's one unit, its audio.
    job.total_chunks = sum(1 for c in chunks if c.kind == "video") or sum(
        1 for c in chunks if c.kind == "audio"
    )
    job.worker_id = job.lease_expires_at = None
    session.flush()
    # Planning is claimed (one planner), so the figures are set as they are: none is newer.
    job.progress, job.qualities = _progress(session, job)
    # The planner goes on with a unit; the audio's worker, and any other, with the rest.
    _work_queued(session)


# --- claiming chunks ------------------------------------------------------------------------


def _claimable(now: datetime) -> Any:
    pending = and_(
        JobChunk.status == ChunkStatus.PENDING,
        or_(JobChunk.not_before.is_(None), JobChunk.not_before <= now),
    )
    abandoned = and_(JobChunk.status == ChunkStatus.RUNNING, JobChunk.lease_expires_at < now)
    return or_(pending, abandoned)


def claim_chunk(
    session: Session,
    *,
    worker_id: str,
    lease_seconds: float,
    kinds: Sequence[str] = ("audio", "video", CAPTIONS),
    only: tuple[str, int] | None = None,
) -> ClaimedChunk | None:
    """Claim the next unit of one of `kinds` (oldest job first, then in time order).

    With `only` (video id, unit index): that unit, and only while no unit of an older job
    waits (a worker going on with one job must not hold back a job queued before it).

    On PostgreSQL the candidate row is locked with FOR UPDATE SKIP LOCKED, so workers on many
    machines each get a different chunk without waiting on each other. The UPDATE re-checks
    the claimable condition (compare-and-set), which alone makes SQLite correct for workers on
    one machine.
    """
    now = utcnow()
    candidate = session.execute(
        select(JobChunk.video_id, JobChunk.index)
        .join(Job, Job.video_id == JobChunk.video_id)
        .where(Job.status.in_(RUNNABLE), JobChunk.kind.in_(kinds), _claimable(now))
        # A job's captions are extracted after its other units were claimed: reading the
        # whole file for them must not hold back the first playable chunk.
        .order_by(Job.created_at, case((JobChunk.kind == CAPTIONS, 1), else_=0), JobChunk.index)
        .limit(1)
        .with_for_update(skip_locked=True, of=JobChunk)
    ).first()
    if candidate is None or (only is not None and candidate[0] != only[0]):
        return None
    # The UPDATE below re-checks that the unit asked for is claimable.
    video_id, index = only if only is not None else candidate
    claimed = session.execute(
        update(JobChunk)
        .where(JobChunk.video_id == video_id, JobChunk.index == index, _claimable(now))
        .values(
            status=ChunkStatus.RUNNING,
            worker_id=worker_id,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            encodes=JobChunk.encodes + 1,
            out_time=0.0,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return _mark_running(session, video_id, index, worker_id)


def is_claimable(session: Session, *, video_id: str, index: int) -> bool:
    """Whether unit `index` of the video waits for a worker (pending, or its lease lapsed)."""
    found = session.scalar(
        select(JobChunk.index).where(
            JobChunk.video_id == video_id, JobChunk.index == index, _claimable(utcnow())
        )
    )
    return found is not None


def _mark_running(session: Session, video_id: str, index: int, worker_id: str) -> ClaimedChunk:
    job = session.get(Job, video_id, populate_existing=True)
    chunk = session.get(JobChunk, (video_id, index), populate_existing=True)
    assert job is not None and job.plan is not None and chunk is not None
    # Compare-and-set: two workers claiming a job's first units at once both saw `queued`;
    # only the one whose UPDATE changes the row records the start.
    started = session.execute(
        update(Job)
        .where(Job.video_id == video_id, Job.status == Status.QUEUED)
        .values(
            status=Status.RUNNING,
            started_at=func.coalesce(Job.started_at, utcnow()),
            updated_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    if started.rowcount == 1:  # type: ignore[attr-defined]
        unit = {"audio": "the audio", CAPTIONS: "the captions"}.get(chunk.kind, f"chunk {index}")
        _set_video_status(
            session,
            video_id,
            Status.RUNNING,
            None,
            kind=events.JOB_RUNNING,
            reason=f"a worker started on {unit}",
            actor=worker_id,
        )
    return ClaimedChunk(
        video_id, index, chunk.kind, chunk.start, chunk.end, dict(job.plan), chunk.encodes
    )


def _owned_chunk(
    session: Session, video_id: str, index: int, worker_id: str, attempt: int | None
) -> JobChunk | None:
    """The chunk while `worker_id` holds it under claim `attempt` (None: any claim)."""
    chunk = session.get(JobChunk, (video_id, index), populate_existing=True)
    if chunk is None or chunk.worker_id != worker_id or chunk.status != ChunkStatus.RUNNING:
        return None
    if attempt is not None and chunk.encodes != attempt:
        return None
    return chunk


def _write_owned(session: Session, chunk: JobChunk, holder: str, /, **values: Any) -> bool:
    """Write `values` into `chunk` (read by `_owned_chunk`) only while it is still held by
    `holder` under the claim read; False when it no longer is.

    Compare-and-set in the UPDATE itself: on SQLite the read takes no snapshot, and between
    it and this write the chunk may have been taken over, or the video started over (its
    units dropped, or planned anew under the same keys), which the write must not touch."""
    written = session.execute(
        update(JobChunk)
        .where(
            JobChunk.video_id == chunk.video_id,
            JobChunk.index == chunk.index,
            JobChunk.worker_id == holder,
            JobChunk.encodes == chunk.encodes,
            JobChunk.status == ChunkStatus.RUNNING,
        )
        .values(**values, updated_at=utcnow())
        .execution_options(synchronize_session="fetch")
    )
    return bool(written.rowcount == 1)  # type: ignore[attr-defined]


def holds_chunk(
    session: Session, *, video_id: str, index: int, worker_id: str, attempt: int | None = None
) -> bool:
    """Whether `worker_id` still holds chunk `index` under claim `attempt`."""
    return _owned_chunk(session, video_id, index, worker_id, attempt) is not None


def renew_lease(
    session: Session,
    *,
    video_id: str,
    index: int,
    worker_id: str,
    attempt: int,
    lease_seconds: float,
) -> bool:
    """Extend the lease of a chunk still held under claim `attempt` (one conditional UPDATE,
    nothing else: a unit being finished has no progress left to report); False if not held."""
    renewed = session.execute(
        update(JobChunk)
        .where(
            JobChunk.video_id == video_id,
            JobChunk.index == index,
            JobChunk.worker_id == worker_id,
            JobChunk.encodes == attempt,
            JobChunk.status == ChunkStatus.RUNNING,
        )
        .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False)
    )
    return bool(renewed.rowcount)  # type: ignore[attr-defined]


def chunk_heartbeat(
    session: Session,
    *,
    video_id: str,
    index: int,
    worker_id: str,
    attempt: int | None = None,
    lease_seconds: float,
    out_time: float,
) -> bool:
    """Renew a chunk's lease and record its progress; True means: stop encoding it now.

    True when the job was stopped, failed or deleted, or the chunk is no longer ours.
    """
    chunk = _owned_chunk(session, video_id, index, worker_id, attempt)
    job = session.get(Job, video_id, populate_existing=True)
    if chunk is None or job is None or job.status not in RUNNABLE:
        return True
    chunk.lease_expires_at = utcnow() + timedelta(seconds=lease_seconds)
    chunk.out_time = max(chunk.out_time, out_time)
    update_progress(session, job)
    return False


def finish_chunk(
    session: Session,
    *,
    video_id: str,
    index: int,
    worker_id: str,
    attempt: int | None = None,
    encode_seconds: float,
) -> bool:
    """Mark a chunk done; False when it was no longer ours (its work is then discarded)."""
    chunk = _owned_chunk(session, video_id, index, worker_id, attempt)
    if chunk is None or not _write_owned(
        session,
        chunk,
        worker_id,
        status=ChunkStatus.DONE,
        error=None,
        done_by=worker_id,
        worker_id=None,
        lease_expires_at=None,
        encode_seconds=encode_seconds,
    ):
        return False
    job = session.get(Job, video_id, populate_existing=True)
    if job is not None:
        update_progress(session, job)
    return True


def release_chunk(
    session: Session, *, video_id: str, index: int, worker_id: str, attempt: int | None = None
) -> None:
    """Give a chunk back (stop, shutdown): pending again, its partial output is overwritten."""
    chunk = _owned_chunk(session, video_id, index, worker_id, attempt)
    if chunk is not None and _write_owned(
        session,
        chunk,
        worker_id,
        status=ChunkStatus.PENDING,
        worker_id=None,
        lease_expires_at=None,
    ):
        _work_queued(session)


def fail_chunk(
    session: Session,
    *,
    video_id: str,
    index: int,
    worker_id: str,
    attempt: int | None = None,
    error: str,
    max_attempts: int,
    backoff_seconds: float,
) -> bool:
    """Record a failed encode: retry after a doubling backoff, or fail the job when exhausted.

    Returns True when the job is now failed.
    """
    chunk = _owned_chunk(session, video_id, index, worker_id, attempt)
    if chunk is None:
        return False
    attempts = chunk.attempts + 1
    # The worker logged the full text; the chunk and the trail show the public one.
    error = public_text(error)
    what = "audio" if chunk.kind == "audio" else f"chunk {index}"
    retry = attempts < max_attempts
    delay = backoff_seconds * 2 ** (attempts - 1)
    outcome: dict[str, Any] = (
        {"status": ChunkStatus.PENDING, "not_before": utcnow() + timedelta(seconds=delay)}
        if retry
        else {"status": ChunkStatus.FAILED}
    )
    if not _write_owned(
        session,
        chunk,
        worker_id,
        attempts=attempts,
        error=error,
        worker_id=None,
        lease_expires_at=None,
        **outcome,
    ):
        return False
    if retry:
        # Read under the job row's lock, after the chunk's write: when another unit fails the
        # job at the same moment, the two are told in the order they commit, never a retry
        # after `video.failed` (PostgreSQL waits here for the other's commit; on SQLite the one
        # writer already orders them). A job that has failed retries nothing: no event.
        status = session.scalar(
            select(Job.status).where(Job.video_id == video_id).with_for_update()
        )
        if status != Status.FAILED:
            events.record(
                session,
                video_id=video_id,
                kind=events.CHUNK_RETRY,
                reason=f"{what} attempt {attempts} of {max_attempts} failed, "
                f"retry in {delay:g} s: {error[-500:]}",
                actor=worker_id,
            )
        return False
    error = f"{what} failed {attempts} times: {error}"
    fail(session, video_id=video_id, error=error, actor=worker_id)
    return True


# --- progress and publishing ------------------------------------------------------------------


def _chunk_seconds(chunk: JobChunk, duration: float) -> float:
    return max(0.0, (chunk.end if chunk.end is not None else duration) - chunk.start)


def _done_seconds(chunk: JobChunk, duration: float) -> float:
    length = _chunk_seconds(chunk, duration)
    if chunk.status == ChunkStatus.DONE:
        return length
    if chunk.status == ChunkStatus.RUNNING:
        return min(length, chunk.out_time)
    return 0.0


def _percent(chunks: Sequence[JobChunk], duration: float) -> float:
    total = sum(_chunk_seconds(c, duration) for c in chunks)
    if total <= 0:
        return 100.0 if chunks and all(c.status == ChunkStatus.DONE for c in chunks) else 0.0
    return 100.0 * sum(_done_seconds(c, duration) for c in chunks) / total


def _qualities(job: Job, chunks: list[JobChunk], previous: dict[str, Any]) -> dict[str, Any]:
    plan = job.plan or {}
    duration = float(plan.get("duration", 0.0))
    video = [c for c in chunks if c.kind == "video"]
    audio = [c for c in chunks if c.kind == "audio"]
    views = {r["name"]: video for r in plan.get("renditions", [])}
    if audio:
        views["audio"] = audio
    result = {}
    for name, parts in views.items():
        done = bool(parts) and all(c.status == ChunkStatus.DONE for c in parts)
        percent = max(_percent(parts, duration), previous.get(name, {}).get("progress", 0.0))
        status = Status.OK if done else job.status
        result[name] = {"status": status, "progress": round(min(100.0, percent), 2)}
    return result


def _progress(session: Session, job: Job) -> tuple[float, dict[str, Any]]:
    """The job's progress and per-rung qualities, recomputed from its chunks."""
    chunks = list(session.scalars(select(JobChunk).where(JobChunk.video_id == job.video_id)))
    duration = float((job.plan or {}).get("duration", 0.0))
    video = [c for c in chunks if c.kind == "video"]
    audio = [c for c in chunks if c.kind == "audio"]
    overall = _percent(video, duration)
    if audio:
        # Beside video the audio weighs little; without video (audio only) it is everything.
        weight = AUDIO_WEIGHT if video else 1.0
        overall = (1 - weight) * overall + weight * _percent(audio, duration)
    # 100 is kept for `ok`: the last step (measuring, the final master) is still ahead.
    value = round(min(overall, 99.9), 2)
    return value, _qualities(job, chunks, job.qualities or {})


def update_progress(session: Session, job: Job) -> None:
    """Recompute progress from the chunks: finished durations plus running out_times.

    Stored as a maximum, so it never goes backwards, not even when a stopped or killed
    chunk's partial work is thrown away.
    """
    value, qualities = _progress(session, job)
    # Conditions in the UPDATE itself: two writers (a heartbeat, a finishing chunk) may each
    # have read the old rows; the later one's smaller figure must not win, and a figure read
    # before the job was finished must not overwrite the finished job's qualities.
    session.execute(
        update(Job)
        .where(Job.video_id == job.video_id, Job.status.in_(RUNNABLE))
        .values(
            progress=case((Job.progress < value, value), else_=Job.progress),
            qualities=qualities,
        )
        .execution_options(synchronize_session=False)
    )


def advance_published(session: Session, *, video_id: str, count: int) -> bool:
    """Raise the published chunk count to `count` if it is lower; True if this call did.

    The UPDATE takes the job row's lock (a write lock on SQLite) until the transaction ends,
    so publishers write playlists one at a time and a playlist never shrinks.
    """
    # And only while the first `count` video chunks are still done (as in claim_final): a
    # publisher's rows may be older than this UPDATE on SQLite, and a video started over
    # meanwhile must not get the old encode's growing playlists.
    video = (JobChunk.video_id == video_id, JobChunk.kind == "video", JobChunk.index < count)
    done = select(func.count()).where(*video, JobChunk.status == ChunkStatus.DONE)
    advanced = session.execute(
        update(Job)
        .where(
            Job.video_id == video_id,
            Job.published_chunks < count,
            done.scalar_subquery() == count,
        )
        .values(published_chunks=count, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return bool(advanced.rowcount == 1)  # type: ignore[attr-defined]


def claim_final(session: Session, *, video_id: str) -> bool:
    """Take the right to publish the final presentation: exactly one publisher gets True.

    Compare-and-set on the status in the publisher's transaction: a concurrent publisher waits
    for the lock, then finds the job `ok` and does nothing (no second round of measuring).
    If writing the presentation fails, the transaction rolls back and the job is not `ok`.
    """
    # And only while every unit is still done: on SQLite the publisher's reads take no
    # snapshot, so the rows it decided on may be older than this UPDATE, and a job started
    # over meanwhile (its units dropped, or planned anew and pending) must stay `queued`.
    units = exists().where(JobChunk.video_id == video_id)
    claimed = session.execute(
        update(Job)
        .where(
            Job.video_id == video_id,
            Job.status != Status.OK,
            units,
            ~units.where(JobChunk.status != ChunkStatus.DONE),
        )
        .values(status=Status.OK, published_chunks=Job.total_chunks, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return bool(claimed.rowcount == 1)  # type: ignore[attr-defined]


def chunks_of(session: Session, *, video_id: str) -> list[JobChunk]:
    """A job's chunks, audio first then in time order."""
    return list(
        session.scalars(
            select(JobChunk).where(JobChunk.video_id == video_id).order_by(JobChunk.index)
        )
    )


def finish(session: Session, *, video_id: str, qualities: list[str]) -> None:
    """Mark the job and its video `ok` with the rungs produced."""
    job = get_job(session, video_id=video_id)
    job.status, job.progress, job.error = Status.OK, 100.0, None
    job.qualities = {q: {"status": Status.OK, "progress": 100.0} for q in job.qualities or {}}
    job.finished_at = utcnow()
    previous = events.video_status(session, video_id)
    session.execute(
        update(Video)
        .where(Video.id == video_id)
        .values(status=Status.OK, qualities=qualities, error=None, updated_at=utcnow())
    )
    events.record(
        session,
        video_id=video_id,
        kind=events.VIDEO_READY,
        from_status=previous,
        to_status=Status.OK,
        reason=f"every rung is published: {', '.join(qualities)}",
    )


def fail(session: Session, *, video_id: str, error: str, actor: str | None = None) -> None:
    """The job failed for good (until an operator resumes it)."""
    get_job(session, video_id=video_id)
    # The full text goes to the log; the job, the video and the trail show the public one.
    log.warning("video %s failed: %s", video_id, error)
    error = public_text(error)
    # Compare-and-set: units failing at the same moment fail the job (and tell) once.
    failed = session.execute(
        update(Job)
        .where(Job.video_id == video_id, Job.status != Status.FAILED)
        .values(
            status=Status.FAILED,
            error=error,
            finished_at=utcnow(),
            worker_id=None,
            lease_expires_at=None,
            updated_at=utcnow(),
        )
    )
    if failed.rowcount != 1:  # type: ignore[attr-defined]
        return
    _set_video_status(
        session,
        video_id,
        Status.FAILED,
        error,
        kind=events.VIDEO_FAILED,
        reason=error,
        actor=actor,
    )


# --- operator actions -------------------------------------------------------------------------


def request_stop(session: Session, *, video_id: str, reason: str = "stopped by an operator") -> Job:
    """Stop the job now; workers holding its chunks kill ffmpeg at their next beat."""
    job = get_job(session, video_id=video_id)
    if job.status not in RUNNABLE:
        raise Conflict(f"video {video_id} is {job.status}; only queued or running jobs stop")
    job.status = Status.STOPPED
    job.qualities = _qualities(job, chunks_of(session, video_id=video_id), job.qualities or {})
    _set_video_status(
        session,
        video_id,
        Status.STOPPED,
        None,
        kind=events.JOB_STOPPED,
        reason=reason,
        actor=events.OPERATOR,
    )
    return job


def resume(session: Session, *, video_id: str) -> Job:
    """Continue a stopped or failed job: only chunks not yet done are encoded again."""
    job = get_job(session, video_id=video_id)
    if job.status not in (Status.STOPPED, Status.FAILED):
        return job
    session.execute(
        update(JobChunk)
        .where(JobChunk.video_id == video_id, JobChunk.status == ChunkStatus.FAILED)
        .values(status=ChunkStatus.PENDING, attempts=0, not_before=None, error=None)
        .execution_options(synchronize_session=False)
    )
    reason = (
        f"retried by an operator after: {job.error}"
        if job.status == Status.FAILED
        else "resumed by an operator: only unfinished chunks are encoded"
    )
    job.status, job.error, job.finished_at = Status.QUEUED, None, None
    job.worker_id = job.lease_expires_at = None
    _set_video_status(
        session,
        video_id,
        Status.QUEUED,
        None,
        kind=events.JOB_RESUMED,
        reason=reason,
        actor=events.OPERATOR,
    )
    return job


def resume_all(session: Session) -> list[str]:
    """Resume every stopped or failed job; return their video ids."""
    stalled = session.scalars(
        select(Job.video_id).where(Job.status.in_((Status.STOPPED, Status.FAILED)))
    ).all()
    for video_id in stalled:
        resume(session, video_id=video_id)
    return list(stalled)


def is_stopped(session: Session, *, video_id: str) -> bool:
    """Whether the job is stopped."""
    return get_job(session, video_id=video_id).status == Status.STOPPED


def queue_depth(session: Session) -> int:
    """Units of work waiting for a worker: chunks of runnable jobs, and jobs to plan."""
    now = utcnow()
    chunks = session.scalar(
        select(func.count())
        .select_from(JobChunk)
        .join(Job, Job.video_id == JobChunk.video_id)
        .where(Job.status.in_(RUNNABLE), _claimable(now))
    )
    unplanned = session.scalar(
        select(func.count()).where(Job.status == Status.QUEUED, Job.plan.is_(None))
    )
    return int(chunks or 0) + int(unplanned or 0)


def running(session: Session) -> list[Job]:
    """Jobs being worked on now."""
    return list(session.scalars(select(Job).where(Job.status == Status.RUNNING)))


def chunk_counts(session: Session, *, video_id: str) -> dict[str, int]:
    """How many of a job's chunks are in each state."""
    rows = session.execute(
        select(JobChunk.status, func.count())
        .where(JobChunk.video_id == video_id)
        .group_by(JobChunk.status)
    ).all()
    return {status: int(count) for status, count in rows}


def transcode_status(session: Session, job: Job) -> TranscodeStatus:
    """A job's status with its chunk counts."""
    return TranscodeStatus.of(job, chunk_counts(session, video_id=job.video_id))


def reclaim_dead(session: Session, *, host: str, alive: Callable[[int], bool]) -> list[str]:
    """Expire the leases held by dead workers of this host, so a restart resumes at once.

    A worker id is `host/name:pid`; leases of other hosts are left to expire by themselves.
    """
    past = utcnow() - timedelta(seconds=1)
    reclaimed: list[str] = []
    held = session.scalars(select(JobChunk).where(JobChunk.status == ChunkStatus.RUNNING))
    for chunk in held:
        if _dead_here(chunk.worker_id, host, alive):
            chunk.lease_expires_at = past
            reclaimed.append(f"{chunk.video_id}#{chunk.index}")
    for job in session.scalars(select(Job).where(Job.worker_id.is_not(None))):
        if _dead_here(job.worker_id, host, alive):
            job.lease_expires_at = past
            reclaimed.append(job.video_id)
    if reclaimed:
        _work_queued(session)
    return reclaimed


def _dead_here(worker_id: str | None, host: str, alive: Callable[[int], bool]) -> bool:
    owner, _, pid = (worker_id or "").rpartition(":")
    return owner.split("/")[0] == host and pid.isdigit() and not alive(int(pid))
