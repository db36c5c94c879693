"""The worker records a unit done, and a video ok, only once what they stand for is on the disk.

A real worker (in this process) encodes a real clip with real ffmpeg against a real database
(PostgreSQL when TEST_DATABASE_URL is set); tests.disk.DiskCalls records every fsync, and the
recording functions (jobs.finish_chunk, jobs.finish) are wrapped to note what had been fsynced
when they were called.
"""

import asyncio
import time
from pathlib import Path
from unittest import mock

from services.core import jobs, layout
from services.core.db import session_scope
from services.core.models import Job, Status, Video
from services.core.settings import Settings
from services.core.storage import Storage
from services.media.playlists import read_media_playlist
from services.transcoding.worker import Worker
from tests.clips import make_clip
from tests.disk import DiskCalls
from tests.transcoding.conftest import VIDEO_ID, queue_video


class Recorded:
    """What had been fsynced when each unit was recorded done, and when the video became ok."""

    def __init__(self, disk: DiskCalls) -> None:
        self.disk = disk
        self.units: dict[tuple[str, int], set[str]] = {}
        self.ok: set[str] | None = None
        real_finish_chunk, real_finish = jobs.finish_chunk, jobs.finish

        def finish_chunk(session, *, video_id, index, **claim):  # type: ignore[no-untyped-def]
            self.units[(video_id, index)] = disk.synced()
            return real_finish_chunk(session, video_id=video_id, index=index, **claim)

        def finish(session, *, video_id, qualities):  # type: ignore[no-untyped-def]
            self.ok = disk.synced()
            return real_finish(session, video_id=video_id, qualities=qualities)

        self.patches = [
            mock.patch.object(jobs, "finish_chunk", side_effect=finish_chunk),
            mock.patch.object(jobs, "finish", side_effect=finish),
        ]

    def __enter__(self) -> "Recorded":
        for patch in self.patches:
            patch.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for patch in self.patches:
            patch.stop()


async def _work_until_ok(worker: Worker, settings: Settings, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await worker.run_once()
        await worker.settle()
        with session_scope(settings) as session:
            job = session.get(Job, VIDEO_ID)
            assert job is not None and job.status != Status.FAILED, job and job.error
            if job.status == Status.OK:
                # The poster and storyboard the worker started beside: let them finish.
                others = asyncio.all_tasks() - {asyncio.current_task()}
                await asyncio.gather(*others)
                return
    raise AssertionError(f"video {VIDEO_ID} not ok within {timeout:g} s")


def _unit_files(storage: Storage, rungs: list[str], index: int) -> set[Path]:
    """Every file chunk `index` wrote: its playlist, segments and I-frame sidecar per rung."""
    files = set()
    for rung in rungs:
        folder = storage.rung_dir(VIDEO_ID, rung)
        playlist = folder / layout.chunk_playlist(index)
        files |= {playlist, folder / layout.chunk_iframes(index)}
        files |= {folder / uri for uri, _ in read_media_playlist(playlist)}
    return files


def _audio_files(storage: Storage) -> set[Path]:
    playlist = storage.hls_dir(VIDEO_ID) / layout.AUDIO / layout.AUDIO_RUN_PLAYLIST
    return {playlist} | {playlist.parent / uri for uri, _ in read_media_playlist(playlist)}


def test_each_unit_is_on_the_disk_before_it_is_recorded_done(settings, tmp_path):
    storage = queue_video(
        settings, make_clip(tmp_path / "clip.mp4", width=854, height=480, seconds=3)
    )
    worker = Worker(settings)
    with DiskCalls() as disk, Recorded(disk) as recorded:
        asyncio.run(_work_until_ok(worker, settings))
    with session_scope(settings) as session:
        units = jobs.chunks_of(session, video_id=VIDEO_ID)
        rungs = list(session.get(Video, VIDEO_ID).qualities)  # type: ignore[union-attr]
    video_units = [u.index for u in units if u.kind == "video"]
    assert len(video_units) >= 2 and len(rungs) >= 2, "a ladder cut into chunks"
    assert len(recorded.units) == len(units), "every unit recorded once"
    hls = storage.hls_dir(VIDEO_ID)
    folders = {hls, hls.parent}
    for index in video_units:
        synced = recorded.units[(VIDEO_ID, index)]
        wanted = _unit_files(storage, rungs, index) | folders
        wanted |= {storage.rung_dir(VIDEO_ID, rung) for rung in rungs}
        missing = {str(p) for p in wanted} - synced
        assert not missing, f"chunk {index} recorded before these were fsynced: {missing}"
    audio = next(u.index for u in units if u.kind == "audio")
    wanted = _audio_files(storage) | folders | {hls / layout.AUDIO}
    missing = {str(p) for p in wanted} - recorded.units[(VIDEO_ID, audio)]
    assert not missing, f"the audio was recorded before these were fsynced: {missing}"


def test_the_video_is_recorded_ok_only_after_its_playlists_master_and_marker(settings, tmp_path):
    storage = queue_video(
        settings, make_clip(tmp_path / "clip.mp4", width=320, height=240, seconds=2)
    )
    worker = Worker(settings)
    with DiskCalls() as disk, Recorded(disk) as recorded:
        asyncio.run(_work_until_ok(worker, settings))
    with session_scope(settings) as session:
        rungs = list(session.get(Video, VIDEO_ID).qualities)  # type: ignore[union-attr]
    assert recorded.ok is not None, "jobs.finish was called"
    published = [storage.master_path(VIDEO_ID), storage.complete_marker(VIDEO_ID)]
    published += [storage.playlist_path(VIDEO_ID, rung) for rung in rungs]
    published += [storage.rung_dir(VIDEO_ID, rung) / layout.IFRAMES for rung in rungs]
    published += [storage.playlist_path(VIDEO_ID, layout.AUDIO)]
    # Each was written under a temporary name, fsynced, renamed, then its folder fsynced.
    folders = {str(p.parent) for p in published}
    missing = folders - recorded.ok
    assert not missing, f"recorded ok before these folders were fsynced: {missing}"
    temporaries = {Path(p).name for p in recorded.ok}
    for path in published:
        assert any(name.startswith(f".{path.name}.") for name in temporaries), path
