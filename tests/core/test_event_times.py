"""A video's trail is ordered by id, and its times never go backwards along it, even when two
processes' events cross: one reads the clock, another records and commits its event, then the
first one's INSERT takes the next id (seen on the platform: a worker's `chunk.retry` 2 ms
earlier than the upload service's event before it). On SQLite."""

from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy import select

from services.core import events
from services.core.db import init_db, session_scope
from services.core.models import Status, Video, VideoEvent
from services.core.settings import Settings

VIDEO_ID = "e" * 32


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    made = Settings(storage_dir=tmp_path / "storage", database_url="")
    init_db(made)
    with session_scope(made) as session:
        session.add(Video(id=VIDEO_ID, filename="a.mp4", status=Status.UPLOADING, qualities=[]))
    return made


def test_an_event_that_read_the_clock_first_but_took_its_id_second_is_timed_after(
    settings: Settings,
) -> None:
    assert settings.effective_database_url.startswith("sqlite")
    crossed: list[str] = []

    def another_process_goes_first(*_: object) -> None:
        # Just before the first event's INSERT (its Python-side values made, no write lock
        # taken yet), another process (another connection) records an event and commits.
        if not crossed:
            crossed.append("b")
            with session_scope(settings) as other:
                events.record(other, video_id=VIDEO_ID, kind=events.CHUNK_RETRY, reason="b")

    sqlalchemy.event.listen(VideoEvent, "before_insert", another_process_goes_first)
    try:
        with session_scope(settings) as session:
            events.record(session, video_id=VIDEO_ID, kind=events.CHUNK_RETRY, reason="a")
    finally:
        sqlalchemy.event.remove(VideoEvent, "before_insert", another_process_goes_first)

    with session_scope(settings) as session:
        trail = session.scalars(select(VideoEvent).order_by(VideoEvent.id)).all()
    assert [e.reason for e in trail] == ["b", "a"]
    times = [e.at for e in trail]
    assert times == sorted(times), times
