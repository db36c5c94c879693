"""The doorbell: queuing work wakes idle workers once it commits, on the machine (a socket
each) and, on PostgreSQL, on others (NOTIFY); polling stays the rule for what becomes due
with time (and for a worker whose doorbell cannot be set up)."""

import asyncio
import os
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from services.core import doorbell, jobs
from services.core.db import engine, init_db, session_scope
from services.core.doorbell import Doorbell, folder_for, key_of, ring
from services.core.models import ChunkStatus, JobChunk
from services.core.settings import Settings
from services.transcoding.worker import Worker
from tests.clips import make_clip
from tests.harness import create_database, database_server_under_test, drop_database, pg_connect
from tests.transcoding.conftest import VIDEO_ID, queue_video

# Far longer than any test here waits: a wake-up before it can only be the doorbell's.
LONG_POLL = 120.0


def url_of(settings: Settings) -> str:
    return key_of(engine(settings))


async def rang_within(bell: Doorbell, seconds: float) -> bool:
    return await bell.wait(asyncio.Event(), seconds)


def test_a_ring_wakes_the_listening_socket(settings: Settings) -> None:
    bell = Doorbell(url_of(settings))
    try:
        assert ring(url_of(settings)) >= 1

        assert asyncio.run(rang_within(bell, LONG_POLL))
        # Read: the next wait sleeps its timeout out.
        assert not asyncio.run(rang_within(bell, 0.05))
    finally:
        bell.close()
    assert not any(folder_for(url_of(settings)).glob(f"{os.getpid()}-*.sock"))  # type: ignore[union-attr]


def test_queuing_work_rings_after_the_commit_and_a_rollback_does_not(
    settings: Settings, tmp_path: Path
) -> None:
    queue_video(settings, make_clip(tmp_path / "c.mp4", width=64, height=64, seconds=1))
    bell = Doorbell(url_of(settings))  # listening from here on
    try:
        with pytest.raises(RuntimeError), session_scope(settings) as session:
            jobs.enqueue(session, video_id=VIDEO_ID)  # started over...
            raise RuntimeError("...and rolled back")
        assert not asyncio.run(rang_within(bell, 0.2))
        with session_scope(settings) as session:
            jobs.enqueue(session, video_id=VIDEO_ID)
        assert asyncio.run(rang_within(bell, LONG_POLL))
    finally:
        bell.close()


def test_an_idle_worker_claims_new_work_without_waiting_for_its_poll(
    settings: Settings, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"poll_seconds": LONG_POLL})
    clip = make_clip(tmp_path / "clip.mp4", width=160, height=120, seconds=2)

    async def scenario() -> None:
        shutdown = asyncio.Event()
        worker = Worker(settings, kinds=("video",))
        running = asyncio.create_task(worker.run_forever(shutdown))
        await asyncio.sleep(0.5)  # it found nothing and sleeps its long poll
        await asyncio.to_thread(queue_video, settings, clip)
        try:
            async with asyncio.timeout(LONG_POLL / 2):
                while not await asyncio.to_thread(_claimed):
                    await asyncio.sleep(0.05)
        finally:
            shutdown.set()
            await running

    def _claimed() -> bool:
        with session_scope(settings) as session:
            return bool(
                session.query(JobChunk)
                .filter(JobChunk.video_id == VIDEO_ID, JobChunk.status != ChunkStatus.PENDING)
                .count()
            )

    asyncio.run(scenario())


def test_a_folder_that_is_not_this_users_own_is_not_used() -> None:
    url = f"sqlite:////nonexistent/{uuid.uuid4().hex}.db"
    folder = folder_for(url)
    assert folder is not None and (folder.stat().st_mode & 0o777) == 0o700
    try:
        folder.chmod(0o777)  # anyone could plant sockets or read rings
        assert folder_for(url) is None
        assert ring(url) == 0
        bell = Doorbell(url)  # polls only
        assert not asyncio.run(rang_within(bell, 0.05))
        bell.close()
    finally:
        folder.chmod(0o700)
        folder.rmdir()


def test_a_socket_left_by_a_killed_worker_is_cleared_by_the_next_ring() -> None:
    url = f"sqlite:////nonexistent/{uuid.uuid4().hex}.db"
    folder = folder_for(url)
    assert folder is not None
    bell = Doorbell(url)
    stale = next(folder.glob("*.sock"))
    bell._sock.close()  # type: ignore[union-attr]  # its process died: nobody reads it
    assert ring(url) == 0 and not stale.exists()
    folder.rmdir()


def test_storing_a_plan_rings_for_the_units_it_makes(settings: Settings, tmp_path: Path) -> None:
    # The planner goes on with a unit; the audio's worker, idle, must not wait for its poll.
    queue_video(settings, make_clip(tmp_path / "c.mp4", width=64, height=64, seconds=1))
    planner = Worker(settings, kinds=("video",))
    claimed = planner._claim_planning()
    bell = Doorbell(url_of(settings))  # the audio worker's, listening from here on
    try:
        assert claimed == VIDEO_ID
        planner.plan(VIDEO_ID)
        assert asyncio.run(rang_within(bell, LONG_POLL))
    finally:
        bell.close()


# --- across machines: PostgreSQL's NOTIFY ------------------------------------------------------

# The PostgreSQL server of the suite's PostgreSQL pass, used by these tests in every pass.
POSTGRES = database_server_under_test() or "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[Settings]:
    url = create_database(POSTGRES)
    made = Settings(storage_dir=tmp_path / "storage", database_url=url)
    init_db(made)
    yield made
    drop_database(url)


@pytest.fixture
def elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker on another machine: no doorbell folder it shares with the committer."""
    monkeypatch.setattr(doorbell, "folder_for", lambda _url: None)


def listening(settings: Settings, scenario: Callable[[Doorbell], Awaitable[None]]) -> None:
    """Run `scenario` with a worker's doorbell on `settings`' database, closed afterwards."""
    bell = Doorbell(url_of(settings))
    try:
        asyncio.run(scenario(bell))
    finally:
        bell.close()


async def queuing_rings(settings: Settings, bell: Doorbell) -> bool:
    with session_scope(settings) as session:
        jobs.enqueue(session, video_id=VIDEO_ID)
    return await rang_within(bell, LONG_POLL)


def test_on_postgresql_a_commit_rings_a_worker_on_another_machine(
    postgres: Settings, elsewhere: None, tmp_path: Path
) -> None:
    queue_video(postgres, make_clip(tmp_path / "c.mp4", width=64, height=64, seconds=1))

    async def scenario(bell: Doorbell) -> None:
        assert not await rang_within(bell, 0.2)  # connects and listens; nothing yet
        with pytest.raises(RuntimeError), session_scope(postgres) as session:
            jobs.enqueue(session, video_id=VIDEO_ID)
            raise RuntimeError("rolled back: no NOTIFY")
        assert not await rang_within(bell, 0.3)
        assert await queuing_rings(postgres, bell)

    listening(postgres, scenario)


def test_a_lost_listening_connection_is_made_again_and_rings_again(
    postgres: Settings, elsewhere: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue_video(postgres, make_clip(tmp_path / "c.mp4", width=64, height=64, seconds=1))
    monkeypatch.setattr(doorbell, "RECONNECT_SECONDS", 0.5)

    async def scenario(bell: Doorbell) -> None:
        assert not await rang_within(bell, 0.2)
        with pg_connect(url_of(postgres)) as admin:  # the server ends the listener's session
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE query LIKE 'LISTEN%' AND datname = current_database()"
            )
        # A wake-up or two (the server's last message, then the end of the connection), and
        # the worker polls until RECONNECT_SECONDS have passed.
        for _ in range(3):
            await rang_within(bell, 0.2)
        await asyncio.sleep(0.6)
        assert not await rang_within(bell, 0.2)  # connected again: nothing since
        assert await queuing_rings(postgres, bell)

    listening(postgres, scenario)
