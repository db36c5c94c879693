"""A worker's write to a chunk it held (done, given back, failed) never lands on a chunk the
video was planned anew with.

The worker reads the chunk, sees it still holds it, then writes. On SQLite that read takes no
snapshot, and a UPDATE by key alone would then write into whatever row has that key now: an
operator's stop and start-over between the two (the units dropped and planned again under the
same indexes, and another worker on them already) would get the old encode's "done" on the
new plan's chunk, or give back the other worker's claim. Here the start-over is made to happen
exactly there."""

import asyncio
from collections.abc import Callable

import pytest

from services.core import events, jobs
from services.core.db import session_scope
from services.core.models import ChunkStatus, JobChunk
from services.transcoding.worker import Worker
from tests.clips import make_clip
from tests.transcoding.conftest import VIDEO_ID, queue_video

WORKER, OTHER = "host/0:1", "host/1:1"
WRITES: dict[str, Callable[..., object]] = {
    "finish": lambda s, c: jobs.finish_chunk(
        s, video_id=VIDEO_ID, index=c.index, worker_id=WORKER, attempt=c.attempt, encode_seconds=1
    ),
    "release": lambda s, c: jobs.release_chunk(
        s, video_id=VIDEO_ID, index=c.index, worker_id=WORKER, attempt=c.attempt
    ),
    "fail": lambda s, c: jobs.fail_chunk(
        s,
        video_id=VIDEO_ID,
        index=c.index,
        worker_id=WORKER,
        attempt=c.attempt,
        error="ffmpeg failed",
        max_attempts=1,
        backoff_seconds=1,
    ),
}


def _planned(settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A 1 s clip queued and planned by a worker: its units wait to be claimed."""
    queue_video(settings, make_clip(tmp_path / "clip.mp4", width=320, height=180, seconds=1))
    asyncio.run(Worker(settings).run_once())


@pytest.mark.parametrize("write", sorted(WRITES))
def test_a_start_over_between_a_workers_read_and_its_write_leaves_the_new_plan_alone(
    settings, tmp_path, monkeypatch, write
):
    _planned(settings, tmp_path)
    with session_scope(settings) as session:
        job = jobs.get_job(session, video_id=VIDEO_ID)
        plan = dict(job.plan or {})
        specs = [
            jobs.ChunkSpec(c.index, c.kind, c.start, c.end)
            for c in jobs.chunks_of(session, video_id=VIDEO_ID)
        ]
        claimed = jobs.claim_chunk(session, worker_id=WORKER, lease_seconds=60, kinds=("video",))
    assert claimed is not None and claimed.attempt == 1

    read = jobs._owned_chunk

    def start_over_after_the_read(*args, **kwargs):  # type: ignore[no-untyped-def]
        chunk = read(*args, **kwargs)
        assert chunk is not None  # the worker still held it when it looked
        with session_scope(settings) as other:
            jobs.request_stop(other, video_id=VIDEO_ID)
        with session_scope(settings) as other:
            jobs.enqueue(other, video_id=VIDEO_ID, plan=plan, chunks=specs)
        with session_scope(settings) as other:  # and another worker is on it already
            again = jobs.claim_chunk(other, worker_id=OTHER, lease_seconds=60, kinds=("video",))
            assert again is not None and again.index == claimed.index
        return chunk

    monkeypatch.setattr(jobs, "_owned_chunk", start_over_after_the_read)
    with session_scope(settings) as session:
        assert not WRITES[write](session, claimed)
    monkeypatch.undo()
    with session_scope(settings) as session:
        fresh = session.get(JobChunk, (VIDEO_ID, claimed.index))
        assert fresh is not None
        assert (fresh.status, fresh.worker_id) == (ChunkStatus.RUNNING, OTHER)
        assert (fresh.encodes, fresh.attempts) == (1, 0)
        assert (fresh.done_by, fresh.error, fresh.not_before) == (None, None, None)
        assert jobs.get_job(session, video_id=VIDEO_ID).status == "running"


@pytest.mark.parametrize(
    ("write", "expected"),
    [
        ("finish", (ChunkStatus.DONE, WORKER)),
        ("release", (ChunkStatus.PENDING, None)),
        ("fail", (ChunkStatus.FAILED, None)),
    ],
)
def test_the_write_lands_on_a_chunk_the_worker_still_holds(settings, tmp_path, write, expected):
    """The control: with no start-over between the read and the write, the write is made."""
    _planned(settings, tmp_path)
    with session_scope(settings) as session:
        claimed = jobs.claim_chunk(session, worker_id=WORKER, lease_seconds=60, kinds=("video",))
    assert claimed is not None
    with session_scope(settings) as session:
        WRITES[write](session, claimed)
    with session_scope(settings) as session:
        chunk = session.get(JobChunk, (VIDEO_ID, claimed.index))
        assert chunk is not None
        assert (chunk.status, chunk.done_by) == expected
        assert chunk.worker_id is None


def _fail(session, claimed, worker: str, *, max_attempts: int) -> bool:  # type: ignore[no-untyped-def]
    return jobs.fail_chunk(
        session,
        video_id=VIDEO_ID,
        index=claimed.index,
        worker_id=worker,
        attempt=claimed.attempt,
        error="ffmpeg failed",
        max_attempts=max_attempts,
        backoff_seconds=1,
    )


def test_a_unit_failing_after_another_failed_the_job_tells_no_retry(settings, tmp_path):
    """Two units fail at once: the one that fails the job tells `video.failed`; the other,
    whose first attempt failed just after, must not add a `chunk.retry` behind it (the trail
    would read as a retry of a failed video; seen on PostgreSQL in CI)."""
    _planned(settings, tmp_path)
    with session_scope(settings) as session:
        video = jobs.claim_chunk(session, worker_id=WORKER, lease_seconds=60, kinds=("video",))
        audio = jobs.claim_chunk(session, worker_id=OTHER, lease_seconds=60, kinds=("audio",))
    assert video is not None and audio is not None
    with session_scope(settings) as session:
        assert _fail(session, video, WORKER, max_attempts=1), "its last attempt: the job fails"
    with session_scope(settings) as session:
        assert not _fail(session, audio, OTHER, max_attempts=2)
    with session_scope(settings) as session:
        kinds = [e.kind for e in events.trail(session, video_id=VIDEO_ID)]
    assert kinds[-1] == "video.failed" and "chunk.retry" not in kinds


def test_a_unit_failing_while_its_job_runs_tells_its_retry(settings, tmp_path):
    """The control: the job still running, a failed first attempt is told as a retry."""
    _planned(settings, tmp_path)
    with session_scope(settings) as session:
        audio = jobs.claim_chunk(session, worker_id=OTHER, lease_seconds=60, kinds=("audio",))
    assert audio is not None
    with session_scope(settings) as session:
        assert not _fail(session, audio, OTHER, max_attempts=2)
    with session_scope(settings) as session:
        kinds = [e.kind for e in events.trail(session, video_id=VIDEO_ID)]
    assert kinds[-1] == "chunk.retry"
