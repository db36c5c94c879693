"""The transcoding worker on object storage: with STORAGE_URL=s3://bucket/prefix it needs only
the database and the bucket. Real workers (in this process), real ffmpeg, a real S3 server
(SeaweedFS) and a real database (PostgreSQL with TEST_DATABASE_URL)."""

import asyncio
import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import m3u8
import pytest
from sqlalchemy import select

from services.core import jobs, layout
from services.core.db import init_db, session_scope
from services.core.layout import VideoLayout
from services.core.models import Caption, Job, Status, Video
from services.core.settings import Settings
from services.core.storage.factory import store_of
from services.core.storage.interface import Store
from services.media import video_captions
from services.media.playlists import parse_media_playlist
from services.transcoding.worker import Worker
from tests.clips import make_clip, make_subtitled_clip, write_srt
from tests.harness import (
    create_database,
    database_server_under_test,
    drop_database,
    free_ports,
)
from tests.s3server import S3Server

VIDEO_ID = "e" * 32
MEDIA_SUFFIXES = {".ts", ".m4s", ".mp4", ".m4a", ".m3u8", ".jpg", ".vtt", ".json"}
MakeSettings = Callable[[str], Settings]


@pytest.fixture
def make_settings(tmp_path: Path, s3_server: S3Server) -> Iterator[MakeSettings]:
    """Settings of one worker process: its own scratch folder, the shared database and bucket
    prefix."""
    server = database_server_under_test()
    url = create_database(server) if server else f"sqlite:///{tmp_path / 'videos.db'}"
    prefix = f"w-{uuid.uuid4().hex[:12]}"

    def make(scratch: str) -> Settings:
        return Settings(
            storage_dir=tmp_path / scratch,
            database_url=url,
            storage_url=f"s3://{s3_server.bucket}/{prefix}",
            aws_endpoint_url=s3_server.endpoint,
            aws_access_key_id=s3_server.access_key,
            aws_secret_access_key=s3_server.secret_key,
            aws_region=s3_server.region,
            x264_preset="ultrafast",
            segment_seconds=1,
            keyframe_seconds=1,
            chunk_segments=1,
            # One chunk per 1 s segment, no short opening before them (the default's
            # half second would be one).
            opening_seconds=0,
            poll_seconds=0.05,
        )

    init_db(make("scratch-a"))
    yield make
    if server:
        drop_database(url)


def queue_video(settings: Settings, clip: Path) -> Store:
    """The source in the bucket, and a job waiting for a worker to plan it."""
    store = store_of(settings)
    store.put_file(VideoLayout.of(VIDEO_ID).source, clip)
    with session_scope(settings) as session:
        if session.get(Video, VIDEO_ID) is None:
            session.add(
                Video(id=VIDEO_ID, filename="clip.mp4", status=Status.UPLOADING, qualities=[])
            )
            session.flush()
        jobs.enqueue(session, video_id=VIDEO_ID)
    return store


def _status(settings: Settings) -> Job:
    with session_scope(settings) as session:
        job = session.get(Job, VIDEO_ID)
        assert job is not None
        session.expunge(job)
        return job


async def _work_until_ok(workers: list[Worker], settings: Settings, timeout: float = 240) -> None:
    """Each worker in turn does one unit until the video is ok."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for worker in workers:
            await worker.run_once()
            await worker.settle()
        job = _status(settings)
        assert job.status != Status.FAILED, job.error
        if job.status == Status.OK:
            # The poster and storyboard the workers started beside: let them finish.
            others = asyncio.all_tasks() - {asyncio.current_task()}
            await asyncio.gather(*others)
            return
    raise AssertionError(f"video {VIDEO_ID} not ok within {timeout:g} s")


def _media_in(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and p.suffix in MEDIA_SUFFIXES]


def _keys(store: Store, prefix: str) -> set[str]:
    return {info.key for info in store.list_prefix(prefix)}


def test_two_workers_with_empty_scratch_folders_encode_one_video_into_the_bucket(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    first, second = make_settings("scratch-a"), make_settings("scratch-b")
    clip = make_clip(tmp_path / "clip.mp4", width=640, height=360, seconds=4)
    store = queue_video(first, clip)
    workers = [Worker(first, name="a"), Worker(second, name="b")]
    asyncio.run(_work_until_ok(workers, first))

    names = VideoLayout.of(VIDEO_ID)
    stored = _keys(store, names.hls)
    with session_scope(first) as session:
        units = jobs.chunks_of(session, video_id=VIDEO_ID)
        rungs = list(session.get(Video, VIDEO_ID).qualities)  # type: ignore[union-attr]
    assert {names.master, names.complete} <= stored
    master = store.get_bytes(names.master, limit=1 << 20).decode()
    assert master.startswith("#EXTM3U") and "#EXT-X-STREAM-INF" in master
    for rung in [*rungs, layout.AUDIO]:
        text = store.get_bytes(names.playlist(rung), limit=1 << 20).decode()
        assert "#EXT-X-ENDLIST" in text
        segments = parse_media_playlist(text, name=rung)
        assert segments
        assert {names.rung_file(rung, uri) for uri, _ in segments} <= stored
    # Both workers encoded some chunks of the same video.
    done_by = {unit.done_by.split("/")[1].split(":")[0] for unit in units if unit.done_by}
    assert done_by == {"a", "b"}, done_by
    # Nothing of the video's media stays in either scratch folder.
    for settings in (first, second):
        assert not _media_in(settings.storage_dir), _media_in(settings.storage_dir)
    # Nothing of the claims' private work reached the bucket.
    assert not any(f"/{layout.WORK}/" in key for key in stored)
    assert names.poster in stored and names.storyboard_vtt in stored


def test_a_new_plan_deletes_the_renditions_of_the_earlier_encode(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    settings = make_settings("scratch-a")
    clip = make_clip(tmp_path / "clip.mp4", width=320, height=240, seconds=2)
    store = queue_video(settings, clip)
    asyncio.run(_work_until_ok([Worker(settings)], settings))
    names = VideoLayout.of(VIDEO_ID)
    rung = _status(settings).plan["renditions"][0]["name"]  # type: ignore[index]
    stale = names.rung_file(rung, "seg_09999.ts")
    store.put_bytes(stale, b"an earlier encode's segment")

    queue_video(settings, clip)  # start over
    asyncio.run(_work_until_ok([Worker(settings)], settings))
    stored = _keys(store, names.hls)
    assert stale not in stored
    assert {names.master, names.complete, names.playlist(rung)} <= stored
    assert not _media_in(settings.storage_dir)


def test_embedded_captions_are_extracted_into_the_bucket_and_listed_by_the_master(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    settings = make_settings("scratch-a")
    english = write_srt(tmp_path / "en.srt", [(0.2, 0.8, "Hello"), (1.2, 1.8, "Bye")])
    clip = make_subtitled_clip(
        tmp_path / "clip.mkv", seconds=2, tracks=[(english, "subrip", "eng", "English")]
    )
    store = queue_video(settings, clip)
    asyncio.run(_work_until_ok([Worker(settings)], settings))
    names = VideoLayout.of(VIDEO_ID)
    with session_scope(settings) as session:
        captions = list(session.scalars(select(Caption).where(Caption.video_id == VIDEO_ID)))
    assert [(c.language, c.label) for c in captions] == [("en", "English")]
    caption = captions[0].id
    stored = _keys(store, names.originals) | _keys(store, names.hls)
    assert names.caption_source(caption) in stored
    assert names.caption_file(caption, layout.PLAYLIST) in stored
    master = m3u8.loads(store.get_bytes(names.master, limit=1 << 20).decode())
    assert [(m.language, m.name) for m in master.media if m.type == "SUBTITLES"] == [
        ("en", "English")
    ]
    assert not _media_in(settings.storage_dir)

    # A caption added to the finished video, then the embedded one deleted: the master in
    # the bucket follows, and the deleted caption's objects go.
    added = video_captions.add(
        settings,
        video_id=VIDEO_ID,
        data=b"WEBVTT\n\n00:00.100 --> 00:01.000\nHallo\n",
        language="de",
        label=None,
    )
    video_captions.remove(settings, video_id=VIDEO_ID, caption_id=caption)
    master = m3u8.loads(store.get_bytes(names.master, limit=1 << 20).decode())
    assert [m.language for m in master.media if m.type == "SUBTITLES"] == ["de"]
    stored = _keys(store, names.originals) | _keys(store, names.hls)
    assert names.caption_file(added.id, layout.PLAYLIST) in stored
    assert not any(caption in key for key in stored)
    assert not _media_in(settings.storage_dir)


class Outage:
    """A TCP relay in front of the S3 server that can be cut (connections refused and the
    open ones closed) and restored: the bucket unreachable, then back, as a worker sees it."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.port = free_ports(1)[0]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._listener: socket.socket | None = None
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()

    def up(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port), reuse_port=True)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed: down
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, target: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                target.sendall(data)
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)


def test_units_wait_while_the_bucket_is_unreachable_and_finish_when_it_returns(
    make_settings: MakeSettings, tmp_path: Path, s3_server: S3Server
) -> None:
    outage = Outage(s3_server.endpoint)
    outage.up()
    settings = make_settings("scratch-a").model_copy(
        update={
            "aws_endpoint_url": outage.endpoint,
            "s3_max_attempts": 1,
            "s3_connect_timeout_seconds": 1.0,
            "max_attempts": 1,
        }
    )
    clip = make_clip(tmp_path / "clip.mp4", width=320, height=240, seconds=2)
    queue_video(settings, clip)
    worker = Worker(settings)
    try:
        asyncio.run(worker.run_once())  # planned while the bucket answers
        assert _status(settings).plan is not None
        outage.down()

        async def units_without_the_bucket() -> None:
            for _ in range(3):
                await worker.run_once()
                await worker.settle()

        asyncio.run(units_without_the_bucket())
        job = _status(settings)
        # One attempt is all a failing unit gets here (MAX_ATTEMPTS=1): none was failed.
        assert job.status != Status.FAILED, job.error
        with session_scope(settings) as session:
            units = jobs.chunks_of(session, video_id=VIDEO_ID)
            assert all(unit.status != "failed" for unit in units), [u.error for u in units]
            assert not any(unit.status == "done" for unit in units)
        outage.up()
        asyncio.run(_work_until_ok([worker], settings))
    finally:
        outage.down()
    assert not _media_in(settings.storage_dir)
