"""Two claims of one chunk never mix their files.

A chunk is claimed again when its lease lapses: the worker that held it may still be alive
(stalled on a loaded machine, or still finishing), so two ffmpeg runs of the same chunk can
overlap. Each claim writes into a folder of its own; only a finished, checked claim that still
holds the chunk moves its files into the rung folders. These tests stage the overlap with a
real worker, real ffmpeg and a real database, and check the counted files never change.
"""

import asyncio
import hashlib
from datetime import timedelta
from pathlib import Path
from unittest import mock

from sqlalchemy import update

from services.core.db import session_scope
from services.core.jobs import ClaimedChunk
from services.core.models import JobChunk, utcnow
from services.core.settings import Settings
from services.core.storage import Storage
from services.media.plan import Plan
from services.media.runner import run_ffmpeg
from services.transcoding.worker import Worker
from tests.clips import make_clip
from tests.transcoding.conftest import VIDEO_ID, queue_video


def _planned(settings: Settings, tmp_path: Path) -> tuple[Storage, Worker]:
    """A queued video, planned; a worker that takes video chunks only."""
    storage = queue_video(
        settings, make_clip(tmp_path / "clip.mp4", width=640, height=360, seconds=3)
    )
    worker = Worker(settings, kinds=("video",))
    asyncio.run(worker.run_once())  # plans the job
    return storage, worker


def _lapse(settings: Settings, index: int) -> None:
    """End chunk `index`'s lease now, as if its worker had stalled past it."""
    with session_scope(settings) as session:
        session.execute(
            update(JobChunk)
            .where(JobChunk.video_id == VIDEO_ID, JobChunk.index == index)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )


def _claim(worker: Worker) -> ClaimedChunk:
    claimed = worker._claim_chunk()
    assert claimed is not None
    return claimed


def _counted_files(storage: Storage) -> dict[str, tuple[str, int]]:
    """sha256 and inode of every file in the rung folders (what playback and publishing read).

    The inode tells a file replaced by another of the same bytes (x264 is deterministic, so
    two claims of a chunk usually write the same bytes) from the file left alone."""
    hls = storage.hls_dir(VIDEO_ID)
    return {
        str(path.relative_to(hls)): (
            hashlib.sha256(path.read_bytes()).hexdigest(),
            path.stat().st_ino,
        )
        for path in sorted(hls.glob("[0-9]*p/*"))
        if path.is_file()
    }


def _chunk(settings: Settings, index: int) -> JobChunk:
    with session_scope(settings) as session:
        row = session.get(JobChunk, (VIDEO_ID, index))
        assert row is not None
        session.expunge(row)
        return row


async def _encode_and_finish(worker: Worker, claimed: ClaimedChunk) -> None:
    await worker.encode(claimed, asyncio.Event())
    await worker.settle()


def test_a_claim_that_lost_its_chunk_while_encoding_leaves_the_counted_files_alone(
    settings, tmp_path
):
    storage, worker = _planned(settings, tmp_path)
    first = _claim(worker)
    _lapse(settings, first.index)
    second = _claim(worker)
    assert (second.index, second.attempt) == (first.index, first.attempt + 1)
    asyncio.run(_encode_and_finish(worker, second))
    counted = _counted_files(storage)
    assert counted, "the second claim's files are in the rung folders"

    # The first claim's ffmpeg starts late (its worker was stalled): its first heartbeat finds
    # the chunk no longer its own and stops it.
    asyncio.run(_encode_and_finish(worker, first))

    assert _counted_files(storage) == counted
    row = _chunk(settings, first.index)
    assert (row.status, row.encodes) == ("done", 2)
    assert not storage.work_dir(VIDEO_ID).exists() or not any(
        storage.work_dir(VIDEO_ID).iterdir()
    ), "the stopped claim's folder is removed"


def test_a_claim_that_finishes_after_losing_its_chunk_discards_its_output(settings, tmp_path):
    storage, worker = _planned(settings, tmp_path)
    first = _claim(worker)
    plan = Plan.from_dict(first.plan)
    # The first claim's encode runs to its end...
    asyncio.run(run_ffmpeg(worker._command(first, plan)))
    # ...but its lease lapsed meanwhile: another claim encodes the chunk and records it.
    _lapse(settings, first.index)
    second = _claim(worker)
    asyncio.run(_encode_and_finish(worker, second))
    counted = _counted_files(storage)

    worker._finish(first, plan, 1.0)

    assert _counted_files(storage) == counted
    assert not storage.attempt_dir(VIDEO_ID, first.index, first.attempt).exists()
    row = _chunk(settings, first.index)
    assert (row.status, row.encodes) == ("done", 2)


def test_the_lease_is_kept_while_a_unit_is_finishing(settings, tmp_path):
    settings = settings.model_copy(update={"lease_seconds": 2.0})
    storage, worker = _planned(settings, tmp_path)
    worker.settings = settings
    claimed = _claim(worker)
    seen: list[ClaimedChunk | None] = []
    real_durable = worker._make_durable

    def slow_durable(video_id: str, files: list[Path]) -> None:
        # Finishing outlasts the lease twice over; meanwhile another worker looks for work.
        for _ in range(8):
            asyncio.run(asyncio.sleep(0.5))
            seen.append(Worker(settings, name="other", kinds=("video",))._claim_chunk())
        real_durable(video_id, files)

    with mock.patch.object(worker, "_make_durable", side_effect=slow_durable):
        asyncio.run(_encode_and_finish(worker, claimed))

    taken = [c for c in seen if c is not None and c.index == claimed.index]
    assert not taken, "the chunk was claimed again while it was being finished"
    row = _chunk(settings, claimed.index)
    assert (row.status, row.encodes) == ("done", 1)
    assert storage.rung_dir(VIDEO_ID, Plan.from_dict(claimed.plan).renditions[0].name).is_dir()
