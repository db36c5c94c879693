"""The final publish never overwrites a start-over that came between its reads and its write.

On SQLite a publisher's reads take no snapshot: it may decide "final" from rows read before
an operator started the video over, and only then claim the final publish. CI caught the old
encode's `ok` landing on the restarted job, which was then never planned again."""

import asyncio

from services.core import jobs
from services.core.db import session_scope
from services.core.models import ChunkStatus, JobChunk, Status
from services.transcoding.worker import Worker
from tests.clips import make_clip
from tests.transcoding.conftest import VIDEO_ID, queue_video, run_until_idle


def test_a_start_over_between_a_publishers_read_and_its_final_claim_stays_queued(
    settings, tmp_path
):
    queue_video(settings, make_clip(tmp_path / "clip.mp4", width=320, height=180, seconds=1))
    worker = Worker(settings)
    # Every unit done and the job ok. A second publisher (another unit's, or the idle
    # workers' pass) read these rows before the first one's `ok` was committed.
    run_until_idle(worker)
    with session_scope(settings) as session:
        jobs.enqueue(session, video_id=VIDEO_ID)  # the operator starts it over
    with session_scope(settings) as session:
        assert not jobs.claim_final(session, video_id=VIDEO_ID)
    with session_scope(settings) as session:
        job = jobs.get_job(session, video_id=VIDEO_ID)
        assert (job.status, job.plan) == (Status.QUEUED, None)
    # Planned anew (its units pending), the old publisher's claim still fails.
    asyncio.run(worker.run_once())
    with session_scope(settings) as session:
        assert jobs.get_job(session, video_id=VIDEO_ID).plan is not None
        assert not jobs.claim_final(session, video_id=VIDEO_ID)


def test_a_start_over_between_a_publishers_read_and_its_growing_publish_writes_nothing(
    settings, tmp_path
):
    """The same race for a publish that is not final: a publisher that counted chunks done
    before the start-over must not raise the restarted job's published count (and write the
    old encode's growing playlists)."""
    queue_video(settings, make_clip(tmp_path / "clip.mp4", width=320, height=180, seconds=1))
    worker = Worker(settings)
    run_until_idle(worker)
    with session_scope(settings) as session:
        jobs.enqueue(session, video_id=VIDEO_ID)
    with session_scope(settings) as session:
        assert not jobs.advance_published(session, video_id=VIDEO_ID, count=1)
    asyncio.run(worker.run_once())  # planned anew: every unit pending
    with session_scope(settings) as session:
        assert not jobs.advance_published(session, video_id=VIDEO_ID, count=1)
        assert jobs.get_job(session, video_id=VIDEO_ID).published_chunks == 0
    # Once chunk 0 of the new plan is done, the count goes up, once.
    with session_scope(settings) as session:
        first = session.get(JobChunk, (VIDEO_ID, 0))
        assert first is not None and first.kind == "video"
        first.status = ChunkStatus.DONE
    with session_scope(settings) as session:
        assert jobs.advance_published(session, video_id=VIDEO_ID, count=1)
        assert not jobs.advance_published(session, video_id=VIDEO_ID, count=1)
        assert not jobs.advance_published(session, video_id=VIDEO_ID, count=2)
