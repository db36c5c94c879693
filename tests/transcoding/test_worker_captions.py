"""The captions unit: a source's text subtitle streams extracted by a unit of work claimed
after every other unit, recorded with its end, listed by the final master, which waits for
it; and picked up by an idle worker if its own worker stopped before publishing."""

import asyncio
from pathlib import Path
from unittest import mock

import m3u8
from sqlalchemy import select

from services.core.db import session_scope
from services.core.models import Caption, Job, Status
from services.core.settings import Settings
from services.core.storage import Storage
from services.media.plan import CAPTIONS
from services.transcoding import stitch
from services.transcoding.worker import Worker
from tests.clips import make_subtitled_clip, write_srt
from tests.transcoding.conftest import VIDEO_ID, queue_video, run_until_idle


def _subtitled(settings: Settings, tmp_path: Path) -> Storage:
    """A queued MKV with a SubRip and an ASS track and a bitmap-free rest."""
    english = write_srt(tmp_path / "en.srt", [(0.2, 0.8, "Hello"), (1.2, 1.8, "Bye")])
    tracks = [(english, "subrip", "eng", "English"), (english, "ass", "ger", "")]
    clip = make_subtitled_clip(tmp_path / "clip.mkv", seconds=2, tracks=tracks)
    return queue_video(settings, clip)


def _status(settings: Settings) -> str:
    with session_scope(settings) as session:
        job = session.get(Job, VIDEO_ID)
        assert job is not None
        return job.status


def _subtitles(storage: Storage) -> list[tuple[str, str]]:
    master = m3u8.loads(storage.master_path(VIDEO_ID).read_text())
    return [(m.language, m.name) for m in master.media if m.type == "SUBTITLES"]


def test_the_captions_unit_is_claimed_after_every_other_unit(settings, tmp_path):
    _subtitled(settings, tmp_path)
    worker = Worker(settings)
    asyncio.run(worker.run_once())  # plans the job
    kinds = []
    while (claimed := worker._claim_chunk()) is not None:  # claimed, never finished
        kinds.append(claimed.kind)
    assert kinds[-1] == CAPTIONS and kinds.count(CAPTIONS) == 1
    assert set(kinds[:-1]) == {"audio", "video"}


def test_the_final_master_waits_for_the_captions_and_lists_them(settings, tmp_path):
    storage = _subtitled(settings, tmp_path)
    run_until_idle(Worker(settings, kinds=("audio", "video")))
    # Every chunk is published; the video is not final while its captions are not extracted.
    assert _status(settings) == Status.RUNNING
    assert storage.master_path(VIDEO_ID).is_file() and _subtitles(storage) == []
    run_until_idle(Worker(settings, kinds=(CAPTIONS,)))
    assert _status(settings) == Status.OK
    assert _subtitles(storage) == [("en", "English"), ("de", "German")]
    with session_scope(settings) as session:
        rows = session.scalars(select(Caption).order_by(Caption.created_at)).all()
        assert [(c.origin, c.source_format, c.cues) for c in rows] == [
            ("embedded", "subrip", 2),
            ("embedded", "ass", 2),
        ]


def test_a_last_captions_unit_left_unpublished_is_published_by_an_idle_worker(settings, tmp_path):
    storage = _subtitled(settings, tmp_path)
    run_until_idle(Worker(settings, kinds=("audio", "video")))
    extractor = Worker(settings, kinds=(CAPTIONS,))
    # Its worker stops between recording the unit done and publishing.
    with mock.patch.object(Worker, "_publish"):
        run_until_idle(extractor)
    assert _status(settings) == Status.RUNNING
    assert stitch.pending_publications(settings) == [VIDEO_ID]
    run_until_idle(Worker(settings, kinds=("video",)))  # an idle pass publishes it
    assert _status(settings) == Status.OK
    assert [name for _, name in _subtitles(storage)] == ["English", "German"]
