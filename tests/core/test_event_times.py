"""A video's trail is ordered by id, and its times never go backwards along it, even when two
processes' events cross: one reads the clock, another records and commits its event, then the
first one's INSERT takes the next id (seen on the platform: a worker's `chunk.retry` 2 ms
earlier than the upload service's event before it). On SQLite."""

from datetime import datetime
from pathlib import Path

import pytest
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
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert settings.effective_database_url.startswith("sqlite")
    real_clock = events.utcnow
    readings: list[datetime] = []

    def clock() -> datetime:
        now = real_clock()
        readings.append(now)
        if len(readings) == 1:
            # Between the first event's clock reading and its INSERT, another process
            # (another connection) records an event and commits.
            with session_scope(settings) as other:
                events.record(other, video_id=VIDEO_ID, kind=events.CHUNK_RETRY, reason="b")
        return now

    monkeypatch.setattr(events, "utcnow", clock)
    with session_scope(settings) as session:
        events.record(session, video_id=VIDEO_ID, kind=events.CHUNK_RETRY, reason="a")

    with session_scope(settings) as session:
        trail = session.scalars(select(VideoEvent).order_by(VideoEvent.id)).all()
    assert [e.reason for e in trail] == ["b", "a"]
    times = [e.at for e in trail]
    assert times == sorted(times), times
