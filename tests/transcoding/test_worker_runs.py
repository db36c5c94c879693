"""Runs: one ffmpeg goes on from chunk to chunk while its worker can claim the next one.

Each chunk is still claimed, checked, recorded and published on its own; these tests run a
real worker, real ffmpeg and a real database, and check what the chunks hold and how many
ffmpeg processes made them.
"""

import asyncio
import json
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from services.core import jobs, layout
from services.core.db import session_scope
from services.core.jobs import ClaimedChunk
from services.core.models import ChunkStatus, JobChunk, Status
from services.core.settings import Settings
from services.core.storage import Storage
from services.media.playlists import read_media_playlist
from services.media.runner import FFmpegError, run_ffmpeg
from services.transcoding import worker as worker_module
from services.transcoding.runs import closed_through, segments_between
from services.transcoding.worker import Worker
from tests.clips import make_clip
from tests.transcoding.conftest import VIDEO_ID, queue_video, run_until_idle

SECONDS = 4
FPS = 30


@pytest.fixture
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(
        tmp_path_factory.mktemp("runs") / "clip.mp4", width=320, height=180, seconds=SECONDS
    )


def _video_ffmpegs(calls: list[list[str]]) -> list[list[str]]:
    """The video chunks' ffmpeg command lines among `calls` (the audio maps 0:a:0)."""
    return [argv for argv in calls if "0:a:0" not in argv]


def _counting() -> tuple[list[list[str]], Any]:
    calls: list[list[str]] = []

    async def counted(argv: list[str], **kwargs: Any) -> None:
        calls.append(list(argv))
        await run_ffmpeg(argv, **kwargs)

    return calls, mock.patch.object(worker_module, "run_ffmpeg", counted)


def _encode_counting(worker: Worker, claimed: ClaimedChunk) -> list[list[str]]:
    """Encode `claimed` (and whatever run it starts) to its end: the ffmpeg command lines."""
    calls, patched = _counting()

    async def encode() -> None:
        await worker.encode(claimed, asyncio.Event())
        await worker.settle()

    with patched:
        asyncio.run(encode())
    return calls


def _chunks(settings: Settings) -> list[JobChunk]:
    with session_scope(settings) as session:
        rows = [c for c in jobs.chunks_of(session, video_id=VIDEO_ID) if c.kind == "video"]
        for row in rows:
            session.expunge(row)
        return rows


def _frames(storage: Storage, rung: str) -> int:
    """Video frames in the rung's published playlist, its segments read one after another."""
    folder = storage.rung_dir(VIDEO_ID, rung)
    segments = [uri for uri, _ in read_media_playlist(folder / layout.PLAYLIST)]
    listing = folder / "concat.txt"
    listing.write_text("".join(f"file '{folder / uri}'\n" for uri in segments))
    argv = ["ffprobe", "-v", "error", "-f", "concat", "-safe", "0", "-i", str(listing)]
    argv += ["-count_packets", "-select_streams", "v:0", "-show_entries", "stream=nb_read_packets"]
    out = subprocess.run(
        [*argv, "-of", "json"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(json.loads(out.stdout)["streams"][0]["nb_read_packets"])


def _assert_every_chunk_is_its_own(settings: Settings, storage: Storage) -> None:
    """Each chunk's playlist in every rung lists the segments of its own time range, and the
    published playlist lists all of them once, every frame of the source once."""
    chunks = _chunks(settings)
    assert [c.status for c in chunks] == [ChunkStatus.DONE] * len(chunks)
    rungs = sorted(p.name for p in storage.hls_dir(VIDEO_ID).glob("[0-9]*p"))
    assert rungs
    for rung in rungs:
        folder = storage.rung_dir(VIDEO_ID, rung)
        published = [uri for uri, _ in read_media_playlist(folder / layout.PLAYLIST)]
        listed = []
        for chunk in chunks:
            own = read_media_playlist(folder / layout.chunk_playlist(chunk.index))
            end = chunk.end if chunk.end is not None else SECONDS
            assert sum(d for _, d in own) == pytest.approx(end - chunk.start, abs=0.05), chunk.index
            listed += [uri for uri, _ in own]
        assert listed == published
        assert len(set(published)) == len(published)
        assert _frames(storage, rung) == SECONDS * FPS


def test_one_ffmpeg_encodes_every_chunk_when_no_other_worker_claims_them(settings, clip):
    storage = queue_video(settings, clip)
    calls, patched = _counting()
    with patched:
        run_until_idle(Worker(settings))
    assert len(_chunks(settings)) == SECONDS, "one chunk per 1 s segment"
    assert len(_video_ffmpegs(calls)) == 1
    assert [c.encodes for c in _chunks(settings)] == [1] * SECONDS
    with session_scope(settings) as session:
        assert jobs.get_job(session, video_id=VIDEO_ID).status == Status.OK
    _assert_every_chunk_is_its_own(settings, storage)
    assert not storage.work_dir(VIDEO_ID).exists(), "the run's folder is gone"


def test_without_runs_each_chunk_has_its_own_ffmpeg_and_the_same_segments(settings, clip):
    settings = settings.model_copy(update={"chunk_runs": False})
    storage = queue_video(settings, clip)
    calls, patched = _counting()
    with patched:
        run_until_idle(Worker(settings))
    assert len(_video_ffmpegs(calls)) == SECONDS
    _assert_every_chunk_is_its_own(settings, storage)


def test_a_run_ends_where_another_worker_holds_the_next_chunk(settings, clip):
    storage = queue_video(settings, clip)
    ours = Worker(settings, name="ours", kinds=("video",))
    other = Worker(settings, name="other", kinds=("video",))
    asyncio.run(ours.run_once())  # plans the job
    with session_scope(settings) as session:
        held = jobs.claim_chunk(
            session,
            worker_id=other.worker_id,
            lease_seconds=60,
            kinds=("video",),
            only=(VIDEO_ID, 2),
        )
    assert held is not None

    calls, patched = _counting()
    with patched:

        async def ours_then_other() -> None:
            assert await ours.run_once()  # chunk 0, on into 1, cut before 2
            await ours.settle()
            await other.encode(held, asyncio.Event())  # 2, on into 3
            await other.settle()

        asyncio.run(ours_then_other())

    starts = [argv[argv.index("-ss") + 1] for argv in _video_ffmpegs(calls)]
    assert [float(s) for s in starts] == [0.0, 2.0]
    rows = _chunks(settings)
    assert [(r.status, r.encodes) for r in rows] == [(ChunkStatus.DONE, 1)] * SECONDS
    assert [r.done_by for r in rows] == [ours.worker_id] * 2 + [other.worker_id] * 2
    run_until_idle(Worker(settings, name="audio", kinds=("audio",)))
    with session_scope(settings) as session:
        assert jobs.get_job(session, video_id=VIDEO_ID).status == Status.OK
    _assert_every_chunk_is_its_own(settings, storage)


def test_a_chunk_whose_next_one_another_worker_already_holds_gets_an_ffmpeg_of_its_own(
    settings, clip
):
    """Workers sharing a job from its start: no run past a chunk whose next one is taken."""
    queue_video(settings, clip)
    ours = Worker(settings, name="ours", kinds=("video",))
    other = Worker(settings, name="other", kinds=("video",))
    asyncio.run(ours.run_once())  # plans the job
    first = ours._claim_chunk()
    assert first is not None and first.index == 0
    with session_scope(settings) as session:
        held = jobs.claim_chunk(
            session, worker_id=other.worker_id, lease_seconds=60, only=(VIDEO_ID, 1)
        )
    assert held is not None
    calls = _encode_counting(ours, first)
    (argv,) = _video_ffmpegs(calls)
    assert argv[argv.index("-t") + 1] == "1.000000", "it ends with its chunk"
    assert [r.status for r in _chunks(settings)][:2] == [ChunkStatus.DONE, ChunkStatus.RUNNING]


def test_a_run_whose_chunk_is_taken_over_stops_and_leaves_the_finished_chunks(settings, clip):
    """The lease of the chunk a run is on lapses (its worker stalled): another claim takes it,
    and the run's next heartbeat ends it (or, if ffmpeg got to the end of this tiny file
    first, its check finds the chunk lost); the chunks it finished before stay done, and
    nothing of the lost chunk is counted."""
    storage = queue_video(settings, clip)
    ours = Worker(settings, name="ours", kinds=("video",))
    asyncio.run(ours.run_once())  # plans the job
    taken: list[int] = []
    claim_following = Worker._claim_following

    def take_over_chunk_2(self: Worker, held: Any) -> Any:
        following = claim_following(self, held)
        if following is not None and following.index == 2 and not taken:
            with session_scope(settings) as session:
                session.query(JobChunk).filter_by(video_id=VIDEO_ID, index=2).update(
                    {"worker_id": "elsewhere/0:1"}
                )
            taken.append(2)
        return following

    with mock.patch.object(Worker, "_claim_following", take_over_chunk_2):

        async def go() -> None:
            assert await ours.run_once()
            await ours.settle()

        asyncio.run(go())
    rows = {r.index: r for r in _chunks(settings)}
    assert taken == [2]
    assert (rows[0].status, rows[1].status) == (ChunkStatus.DONE, ChunkStatus.DONE)
    assert rows[2].worker_id == "elsewhere/0:1" and rows[2].status == ChunkStatus.RUNNING
    # Whether the run got to chunk 3 depends on how soon its heartbeat beat ffmpeg's end.
    assert rows[3].status in (ChunkStatus.PENDING, ChunkStatus.DONE)
    for rung in storage.hls_dir(VIDEO_ID).glob("[0-9]*p"):
        assert not (rung / layout.chunk_playlist(2)).exists()
    assert not any(storage.work_dir(VIDEO_ID).glob("*-run")), "the run's folder is removed"


def test_a_run_gives_way_to_an_older_job_with_work_waiting(settings, clip):
    """Going on with one job must not hold back a job queued before it (one whose chunk came
    back: a retry, a resume, a lapsed lease): the run ends at its chunk's end instead."""
    queue_video(settings, clip)
    ours = Worker(settings, name="ours", kinds=("video",))
    asyncio.run(ours.run_once())  # plans the job
    first = ours._claim_chunk()
    assert first is not None and (first.video_id, first.index) == (VIDEO_ID, 0)
    older = "e" * 32
    queue_video(settings, clip, video_id=older)
    assert ours._claim_planning() == older
    ours.plan(older)
    with session_scope(settings) as session:
        ours_created = jobs.get_job(session, video_id=VIDEO_ID).created_at
        jobs.get_job(session, video_id=older).created_at = ours_created - timedelta(hours=1)

    calls = _encode_counting(ours, first)
    assert len(_video_ffmpegs(calls)) == 1
    rows = _chunks(settings)
    assert [r.status for r in rows] == [ChunkStatus.DONE] + [ChunkStatus.PENDING] * (SECONDS - 1)
    with session_scope(settings) as session:
        waiting = [c for c in jobs.chunks_of(session, video_id=older) if c.kind == "video"]
        assert {c.status for c in waiting} == {ChunkStatus.PENDING}
    # The worker's next claim is the older job's.
    following = ours._claim_chunk()
    assert following is not None and (following.video_id, following.index) == (older, 0)


def test_segments_go_to_the_chunk_their_start_lies_in() -> None:
    listed = [(f"seg_{n:05d}.ts", 2.0) for n in range(5)]
    # The run starts at 4 s; the chunks [4, 8) and [8, 14).
    first = segments_between(listed, run_start=4.0, start=4.0, end=8.0, tolerance=1.0)
    rest = segments_between(listed, run_start=4.0, start=8.0, end=None, tolerance=1.0)
    assert [u for u, _ in first] == ["seg_00000.ts", "seg_00001.ts"]
    assert [u for u, _ in rest] == ["seg_00002.ts", "seg_00003.ts", "seg_00004.ts"]
    # A first frame a little after its boundary still counts for its chunk.
    late = [("a.ts", 2.03), ("b.ts", 1.97), ("c.ts", 2.0)]
    assert [u for u, _ in segments_between(late, run_start=4, start=4, end=6, tolerance=1)] == [
        "a.ts"
    ]
    assert not closed_through(listed[:1], run_start=4.0, end=8.0, tolerance=1.0)
    assert closed_through(listed[:2], run_start=4.0, end=8.0, tolerance=1.0)
    assert closed_through([("a.ts", 3.96)], run_start=4.0, end=8.0, tolerance=1.0)


def test_a_run_that_fails_fails_only_the_chunk_it_is_on(settings, clip):
    """ffmpeg exits with an error after the run went on into the last chunk: the chunks it
    closed before are done, encoded once; the last one is failed for a retry, which a new
    ffmpeg of its own then encodes."""
    storage = queue_video(settings, clip)
    worker = Worker(settings, kinds=("video",))
    asyncio.run(worker.run_once())  # plans the job
    failed: list[int] = []

    async def fails_at_the_end(argv: list[str], **kwargs: Any) -> None:
        await run_ffmpeg(argv, **kwargs)
        if not failed:
            # Time for the run to take every chunk it closed, then an error as ffmpeg exits.
            await asyncio.sleep(1.5)
            failed.append(1)
            raise FFmpegError(argv, 1, "injected failure")

    with mock.patch.object(worker_module, "run_ffmpeg", fails_at_the_end):

        async def go() -> None:
            assert await worker.run_once()
            await worker.settle()

        asyncio.run(go())
        rows = _chunks(settings)
        assert [r.status for r in rows[:-1]] == [ChunkStatus.DONE] * (SECONDS - 1)
        assert rows[-1].status == ChunkStatus.PENDING
        assert "injected failure" in (rows[-1].error or "")
        with session_scope(settings) as session:
            session.query(JobChunk).filter_by(video_id=VIDEO_ID, index=rows[-1].index).update(
                {"not_before": None}
            )
        run_until_idle(Worker(settings))
    rows = _chunks(settings)
    assert [r.encodes for r in rows] == [1] * (SECONDS - 1) + [2]
    _assert_every_chunk_is_its_own(settings, storage)
