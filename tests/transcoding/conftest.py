"""A worker in this process against a real database (PostgreSQL with TEST_DATABASE_URL) and a
storage folder of the test's own."""

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.core import jobs
from services.core.db import init_db, session_scope
from services.core.models import Status, Video
from services.core.settings import Settings
from services.core.storage import Storage
from services.transcoding.worker import Worker
from tests.harness import create_database, database_server_under_test, drop_database

VIDEO_ID = "d" * 32


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    """Storage of the test's own and a migrated database (PostgreSQL with TEST_DATABASE_URL)."""
    server = database_server_under_test()
    url = create_database(server) if server else ""
    made = Settings(
        storage_dir=tmp_path / "storage",
        database_url=url,
        x264_preset="ultrafast",
        segment_seconds=1,
        keyframe_seconds=1,
        chunk_segments=1,
        # One chunk per 1 s segment, no short opening before them (the default's half
        # second would be one).
        opening_seconds=0,
        poll_seconds=0.05,
    )
    init_db(made)
    yield made
    if url:
        drop_database(url)


def queue_video(settings: Settings, clip: Path, video_id: str = VIDEO_ID) -> Storage:
    """A video whose source is in place and whose job waits for a worker to plan it."""
    storage = Storage(settings.storage_dir)
    storage.ensure_layout()
    storage.original_dir(video_id).mkdir(parents=True)
    shutil.copyfile(clip, storage.source_path(video_id))
    with session_scope(settings) as session:
        session.add(Video(id=video_id, filename="clip.mp4", status=Status.UPLOADING, qualities=[]))
        session.flush()
        jobs.enqueue(session, video_id=video_id)
    return storage


def run_until_idle(worker: Worker, limit: int = 20) -> None:
    """Let `worker` take units until none is left (each one's publish step included), then
    wait for what it started beside them."""
    asyncio.run(_until_idle(worker, limit))


async def _until_idle(worker: Worker, limit: int) -> None:
    for _ in range(limit):
        worked = await worker.run_once()
        await worker.settle()  # the unit's check-and-publish step, which runs beside the next
        if not worked:
            # The poster and storyboard the worker started beside: let them finish.
            await asyncio.gather(*(asyncio.all_tasks() - {asyncio.current_task()}))
            return
    raise AssertionError(f"still working after {limit} units")
