"""The transcoding worker: claim a unit of work, run ffmpeg on it, record it; repeat.

Units are a job's planning (probe, cut into chunks), its audio, and its time chunks. Run
standalone with `python -m services.transcoding.worker` on any machine that shares the
database and the storage folder, or in-process inside the transcoding service (the default).

With object storage (STORAGE_URL=s3://...) a worker needs only the database and the bucket:
ffmpeg reads the source through a presigned URL, writes into this process's own scratch
folder (STORAGE_DIR, same layout), and each checked unit is uploaded to its rung keys and
removed from the scratch before it is recorded done; the growing audio is uploaded while it
runs. A bucket that cannot be reached releases the unit (not failed): it is done again once
the bucket answers, and nothing already stored is lost.
"""

import asyncio
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from services.core import jobs, layout
from services.core.db import engine, init_db, session_scope
from services.core.doorbell import Doorbell, key_of
from services.core.errors import AppError
from services.core.jobs import ClaimedChunk
from services.core.layout import VideoLayout
from services.core.metrics import CHUNK_SECONDS, FFMPEG_FAILURES, REALTIME
from services.core.models import Video
from services.core.settings import Settings, get_settings
from services.core.storage import Storage, make_durable, remove_tree
from services.core.storage.factory import store_of, uses_object_storage
from services.core.storage.interface import StorageUnavailable
from services.core.tasks import sleep_unless
from services.media import derived
from services.media import video_captions as captions
from services.media.bounds import check_source
from services.media.chunking import TimeChunk
from services.media.demuxers import RemoteSource, Source
from services.media.ffmpeg_args import audio_command, is_opening, video_chunk_command
from services.media.plan import CAPTIONS, Plan, make_plan
from services.media.playlists import parse_media_playlist, read_media_playlist
from services.media.probe import ProbeError, probe
from services.media.runner import FFmpegError, Stopped, run_ffmpeg
from services.media.video_files import SOURCE_URL_SECONDS, put_bytes, put_file
from services.transcoding import embedded, stitch
from services.transcoding.runs import Run

log = logging.getLogger(__name__)

# A file a unit wrote: (rung, file name), both named by services.core.layout.
UnitFile = tuple[str, str]
# Uploads of one unit's files side by side: they mostly wait on the network.
UPLOAD_THREADS = 8
# How often the growing audio's new segments and playlist go to the bucket while it encodes.
AUDIO_UPLOAD_SECONDS = 1.0
# How much lower than the video the audio encode runs (see Worker._nice).
AUDIO_NICE_EXTRA = 5
# How often a run's playlists are read for a chunk it has closed (see runs.py).
RUN_POLL_SECONDS = 0.2
# A run claims no chunk after this long: its presigned source URL must outlive it.
RUN_MAX_SECONDS = SOURCE_URL_SECONDS / 2
# How often an idle worker looks for units recorded done but not published (their worker
# stopped in between): a sweep for what a crash left, not new work, so not at every poll (it
# was a third of an idle worker's CPU, 0.25 s apart).
LEFTOVERS_SECONDS = 5.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class IncompleteOutput(Exception):
    """ffmpeg reported success but what it wrote cannot be served."""


def _incomplete(reason: str, folder: Path) -> str:
    # Measured where the output goes: renditions may live on another disk than the rest.
    free = shutil.disk_usage(folder).free if folder.exists() else 0
    full = "; the disk is full (No space left on device)" if free < 16 << 20 else ""
    return f"ffmpeg finished but its output is incomplete: {reason}{full}"


class Worker:
    """One worker: claims units of work from the database, one at a time."""

    def __init__(
        self,
        settings: Settings,
        *,
        name: str = "0",
        kinds: tuple[str, ...] = ("audio", "video", CAPTIONS),
    ) -> None:
        self.settings = settings
        # With object storage, only this process's scratch (the same layout, nothing shared).
        self.storage = Storage(settings.storage_dir)
        self.remote = uses_object_storage(settings)
        self.store = store_of(settings)
        self.kinds = kinds
        self.worker_id = f"{socket.gethostname()}/{name}:{os.getpid()}"
        # The previous unit's check-index-publish step, running beside the next encode.
        self._finishing: asyncio.Task[None] | None = None
        # When an idle pass next looks for units left unpublished (the first one at once).
        self._next_sweep = 0.0

    async def run_forever(self, shutdown: asyncio.Event) -> None:
        """Claim and process units until `shutdown` is set."""
        log.info("worker %s started", self.worker_id)
        # Rung when work is queued (on this machine; on PostgreSQL, on any): looked for at once.
        doorbell = Doorbell(key_of(engine(self.settings)))
        try:
            while not shutdown.is_set():
                try:
                    worked = await self.run_once(shutdown)
                except Exception:
                    # A database hiccup or a bug in one unit must not end the worker: go on.
                    log.exception("worker %s: a unit of work raised", self.worker_id)
                    worked = False
                if not worked:
                    await doorbell.wait(shutdown, self.settings.poll_seconds)
            await self.settle()
        finally:
            doorbell.close()

    async def settle(self) -> None:
        """Wait for the last unit's check-index-publish step (it runs beside the next unit)."""
        if self._finishing is not None:
            finishing, self._finishing = self._finishing, None
            await finishing

    async def run_once(self, shutdown: asyncio.Event | None = None) -> bool:
        """Do one unit of work; False when there was nothing to do."""
        shutdown = shutdown or asyncio.Event()
        sweep = time.monotonic() >= self._next_sweep
        work = await asyncio.to_thread(self._look_for_work, sweep)
        if isinstance(work, ClaimedChunk) and work.kind == CAPTIONS:
            await asyncio.to_thread(self.extract_captions, work)
            return True
        if isinstance(work, ClaimedChunk):
            await self.encode(work, shutdown)
            return True
        if work is not None:
            await asyncio.to_thread(self.plan, work)
            return True
        if sweep:
            self._next_sweep = time.monotonic() + LEFTOVERS_SECONDS
        return False

    def _look_for_work(self, sweep: bool) -> ClaimedChunk | str | None:
        """A unit claimed, or else a job to plan (its video id), or else None, in one thread
        hop and one transaction: an idle worker asks this at every poll. With `sweep`, when
        there is neither, the units recorded but not published are published first."""
        with session_scope(self.settings) as session:
            work: ClaimedChunk | str | None = self._claim_chunk_in(session)
            if work is None:
                work = self._claim_planning_in(session)
        if work is None and sweep:
            self._publish_leftovers()
        return work

    def _claim_chunk(self) -> ClaimedChunk | None:
        with session_scope(self.settings) as session:
            return self._claim_chunk_in(session)

    def _claim_chunk_in(self, session: Session) -> ClaimedChunk | None:
        return jobs.claim_chunk(
            session,
            worker_id=self.worker_id,
            lease_seconds=self.settings.lease_seconds,
            kinds=self.kinds,
        )

    def _claim_planning(self) -> str | None:
        with session_scope(self.settings) as session:
            return self._claim_planning_in(session)

    def _claim_planning_in(self, session: Session) -> str | None:
        return jobs.claim_planning(
            session, worker_id=self.worker_id, lease_seconds=self.settings.lease_seconds
        )

    def plan(self, video_id: str) -> None:
        """Probe the source and cut the job into units of work (or fail it with the reason)."""
        try:
            source = self._source(video_id)
            info = probe(source, ffprobe=self.settings.ffprobe_bin)
            # The bounds of today's settings, checked before the plan cuts the duration.
            check_source(info, self.settings, size=self._source_size(video_id, source))
            plan, specs = make_plan(info, self.settings, codec=self._codec(video_id))
        except ProbeError as exc:
            if self._storage_down(video_id):
                return  # the bucket, not the file: planned again once its lease lapses
            with session_scope(self.settings) as session:
                jobs.fail(session, video_id=video_id, error=exc.detail)
            return
        except StorageUnavailable as exc:
            log.warning("job %s: not planned, storage unavailable: %s", video_id, exc.detail)
            return
        # A new plan starts from nothing: segments of an earlier encode must not be served.
        try:
            self._delete_renditions(video_id)
        except StorageUnavailable as exc:
            log.warning("job %s: not planned, storage unavailable: %s", video_id, exc.detail)
            return
        with session_scope(self.settings) as session:
            saved = jobs.save_plan(
                session,
                video_id=video_id,
                worker_id=self.worker_id,
                plan=plan.to_dict(),
                chunks=specs,
            )
        log.info(
            "job %s planned: %d units (%s)", video_id, len(specs), "saved" if saved else "lost"
        )

    def _source(self, video_id: str) -> Source:
        """What ffmpeg reads the upload from: its file, or a presigned URL of its object."""
        if not self.remote:
            return self.storage.source_path(video_id)
        key = VideoLayout.of(video_id).source
        url = self.store.reader_url(key, expires_seconds=SOURCE_URL_SECONDS)
        if url is None:
            raise StorageUnavailable("the storage gives no URL to read the upload with")
        return RemoteSource(url)

    def _source_size(self, video_id: str, source: Source) -> int:
        if isinstance(source, Path):
            return source.stat().st_size
        found = self.store.stat(VideoLayout.of(video_id).source)
        if found is None:
            raise ProbeError("the uploaded file is missing from the storage")
        return found.size

    def _storage_down(self, video_id: str) -> bool:
        """Whether a failure reading from the bucket was the bucket's (logged): the work is
        then left to be retried, not failed."""
        if not self.remote:
            return False
        problem = self.store.check()
        if problem is not None:
            log.warning("job %s: storage unavailable, retried later: %s", video_id, problem)
        return problem is not None

    def _delete_renditions(self, video_id: str) -> None:
        if not self.remote:
            self.storage.delete_renditions(video_id)
            return
        self.store.delete_prefix(VideoLayout.of(video_id).hls)
        remove_tree(self.storage.hls_dir(video_id))

    def _codec(self, video_id: str) -> str | None:
        """The ladder codec the video was uploaded with (a start-over keeps it)."""
        with session_scope(self.settings) as session:
            video = session.get(Video, video_id)
            return video.codec if video is not None else None

    def _nice(self, chunk: ClaimedChunk) -> int:
        """The CPU priority a unit's ffmpeg runs at: ENCODE_NICE; the audio AUDIO_NICE_EXTRA
        lower still. The audio (one run for the whole file) costs a few percent of the video
        and runs far ahead of it, so it gives way: the opening chunk's encode, which the
        first publish waits for, gets the cores, and the audio still covers it sooner."""
        if chunk.kind == "audio":
            return min(19, self.settings.encode_nice + AUDIO_NICE_EXTRA)
        return self.settings.encode_nice

    async def encode(self, chunk: ClaimedChunk, shutdown: asyncio.Event) -> None:
        """Run ffmpeg on one claimed chunk, heartbeating, and record the outcome."""
        log.info("job %s unit %d: encoding (claim %d)", chunk.video_id, chunk.index, chunk.attempt)
        plan = Plan.from_dict(chunk.plan)
        if await asyncio.to_thread(self._runs_on, chunk, plan):
            await self._encode_run(Run(chunk, self._run_dir(chunk), plan), shutdown)
            return
        argv = self._command(chunk, plan)
        out_time = [0.0]
        stop = asyncio.Event()
        beat = asyncio.create_task(self._heartbeat(lambda: (chunk, out_time[0]), stop, shutdown))
        encoded = asyncio.Event()
        mirror = None
        if self.remote and chunk.kind == "audio":
            mirror = asyncio.create_task(self._upload_growing_audio(chunk, encoded))
        started = time.monotonic()
        try:
            await self._run_ffmpeg(argv, chunk, out_time, stop)
        except Stopped:
            await asyncio.to_thread(self._discard, chunk)
            await asyncio.to_thread(self._release, chunk)
            return
        except FFmpegError as exc:
            await self._ffmpeg_failed(chunk, exc, lambda: self._discard(chunk))
            return
        finally:
            beat.cancel()
            encoded.set()
            await asyncio.gather(beat, *([mirror] if mirror else []), return_exceptions=True)
        seconds = time.monotonic() - started
        # Checking the output, indexing its keyframes and publishing take a second or so of
        # ffprobe and I/O: done beside the next unit's encode, the CPUs never idle between
        # chunks. One such step at a time, under a lease kept alive until it is recorded.
        await self.settle()
        self._finishing = asyncio.create_task(self._finish_unit(chunk, plan, seconds))

    # --- runs: one ffmpeg on into the next chunks (see runs.py) ---------------------------
    def _runs_on(self, chunk: ClaimedChunk, plan: Plan) -> bool:
        """Whether `chunk`'s ffmpeg may run on into the chunks after it: a video chunk with
        one after it, encoded as they are (the opening has settings of its own), that waits
        for a worker now. One another worker already holds (several workers sharing a job)
        gets an ffmpeg that ends with this chunk: a run would encode past its end for
        nothing."""
        if not self.settings.chunk_runs or chunk.kind != "video" or chunk.end is None:
            return False
        if is_opening(TimeChunk(chunk.index, chunk.start, chunk.end), plan.options):
            return False
        with session_scope(self.settings) as session:
            return jobs.is_claimable(session, video_id=chunk.video_id, index=chunk.index + 1)

    def _run_dir(self, chunk: ClaimedChunk) -> Path:
        return self.storage.run_dir(chunk.video_id, chunk.index, chunk.attempt)

    async def _encode_run(self, run: Run, shutdown: asyncio.Event) -> None:
        """Encode from `run.first` to the end of the file, or until the chunk after the one
        it is on cannot be claimed: each chunk is handed to the check-and-record step (beside
        the encode) as soon as its segments are closed, and the next one claimed."""
        argv = self._run_command(run)
        out_time = [0.0]
        stop = asyncio.Event()
        ended = asyncio.Event()
        beat = asyncio.create_task(
            self._heartbeat(lambda: run.progress(out_time[0]), stop, shutdown)
        )
        follow = asyncio.create_task(self._follow_run(run, stop, ended))
        failure: FFmpegError | None = None
        stopped = False
        try:
            # Ended early, a run keeps nothing past the chunks it closed: killed at once, not
            # left to flush its four encoders' queued frames into segments that are dropped.
            await self._run_ffmpeg(argv, run.first, out_time, stop, grace=0.0)
        except Stopped:
            stopped = True
        except FFmpegError as exc:
            failure = exc
        finally:
            ended.set()
            beat.cancel()
            await asyncio.gather(beat, follow, return_exceptions=True)
        held = run.held
        if stopped and not run.cut:
            # Stopped, deleted, lost or shut down: the chunk it was on is not finished.
            await asyncio.to_thread(self._discard_run, run)
            await asyncio.to_thread(self._release, held)
            return
        if failure is not None:
            # The chunks it closed before are handed over already: only this one failed.
            await self._ffmpeg_failed(held, failure, lambda: self._discard_run(run))
            return
        # At the end of the file, or cut at the end of the chunk it was on: its segments are
        # all closed. Chunks ffmpeg closed since the last look are claimed and handed over
        # first (a short file can be encoded whole before the first look).
        if not run.cut:
            while await self._go_on(run) is True:
                pass
        await self._hand_over(run, run.held)
        await asyncio.to_thread(remove_tree, run.folder)

    def _run_command(self, run: Run) -> list[str]:
        first = run.first
        for rendition in run.plan.renditions:
            (run.folder / rendition.name).mkdir(parents=True, exist_ok=True)
        return video_chunk_command(
            ffmpeg=self.settings.ffmpeg_bin,
            source=self._source(first.video_id),
            info=run.plan.info,
            renditions=run.plan.renditions,
            out_dir=run.folder,
            options=run.plan.options,
            chunk=TimeChunk(first.index, first.start, None),
            playlist_type="event",
        )

    async def _follow_run(self, run: Run, stop: asyncio.Event, ended: asyncio.Event) -> None:
        """While the run's ffmpeg goes on: once the chunk it is on is closed, claim the next
        and hand this one over; if the next cannot be claimed, end the run (`stop`)."""
        try:
            while not ended.is_set() and not stop.is_set():
                await sleep_unless(ended, RUN_POLL_SECONDS)
                if ended.is_set():
                    return  # what is left is taken over once ffmpeg has exited
                while (going_on := await self._go_on(run)) is True:
                    pass
                if going_on is False:
                    run.cut = True
                    stop.set()
        except Exception:
            # The run ends at this chunk's end; what it finished is kept.
            log.exception("job %s: following the run raised", run.first.video_id)
            run.cut = True
            stop.set()

    async def _go_on(self, run: Run) -> bool | None:
        """If the chunk the run is on is closed, claim the next one and hand this one over
        (True), or find the next cannot be claimed (False); None: not closed yet (or the last
        chunk, which ends with the file)."""
        held = run.held
        if held.end is None or not await asyncio.to_thread(run.closed, held):
            return None
        following = None
        if time.monotonic() - run.began < RUN_MAX_SECONDS:
            following = await asyncio.to_thread(self._claim_following, held)
        if following is None:
            return False
        log.info(
            "job %s unit %d: encoding (claim %d), the run from unit %d going on",
            following.video_id,
            following.index,
            following.attempt,
            run.first.index,
        )
        run.held = following
        run.since[following.index] = time.monotonic()
        await self._hand_over(run, held)
        return True

    def _claim_following(self, held: ClaimedChunk) -> ClaimedChunk | None:
        """Claim the video chunk right after `held` (None: another worker has it, it is done,
        the job stopped, or work of an older job waits for this worker)."""
        with session_scope(self.settings) as session:
            following = jobs.claim_chunk(
                session,
                worker_id=self.worker_id,
                lease_seconds=self.settings.lease_seconds,
                kinds=self.kinds,
                only=(held.video_id, held.index + 1),
            )
        if following is not None and following.start != held.end:
            # Not the chunk the run's frames reach next (a plan cut otherwise): give it back.
            self._release(following)
            return None
        return following

    async def _hand_over(self, run: Run, chunk: ClaimedChunk) -> None:
        """Move `chunk`'s closed segments out of the run into its claim's folder, then check,
        record and publish it beside the encode, as a chunk of its own."""
        seconds = time.monotonic() - run.since.get(chunk.index, run.began)
        try:
            await asyncio.to_thread(run.split_off, chunk, self._output_dir(chunk))
        except OSError:
            # Its check then finds it incomplete: encoded again, nothing lost.
            log.exception("job %s unit %d: taking it out of the run", chunk.video_id, chunk.index)
        await self.settle()
        self._finishing = asyncio.create_task(self._finish_unit(chunk, run.plan, seconds))

    def _discard_run(self, run: Run) -> None:
        self._discard(run.held)
        remove_tree(run.folder)

    async def _run_ffmpeg(
        self,
        argv: list[str],
        chunk: ClaimedChunk,
        out_time: list[float],
        stop: asyncio.Event,
        *,
        grace: float | None = None,
    ) -> None:
        """Run a unit's ffmpeg at its priority, its progress in `out_time[0]`, until done or
        `stop` (Stopped: SIGTERM, SIGKILL after `grace`, STOP_GRACE_SECONDS by default) or
        it fails (FFmpegError)."""
        await run_ffmpeg(
            argv,
            on_progress=lambda seconds: out_time.__setitem__(0, seconds),
            stop=stop,
            grace=self.settings.stop_grace_seconds if grace is None else grace,
            nice=self._nice(chunk),
        )

    async def _ffmpeg_failed(
        self, chunk: ClaimedChunk, exc: FFmpegError, discard: Callable[[], None]
    ) -> None:
        """`chunk`'s ffmpeg failed: what it wrote is discarded (`discard`), and the chunk is
        failed (retried until MAX_ATTEMPTS) or, when the bucket is down, released."""
        log.warning("job %s unit %d: ffmpeg failed: %s", chunk.video_id, chunk.index, exc)
        await asyncio.to_thread(discard)
        if await asyncio.to_thread(self._storage_down, chunk.video_id):
            # It could not read the source: retried when the bucket answers, not failed.
            await asyncio.to_thread(self._release, chunk)
            return
        FFMPEG_FAILURES.labels(chunk.kind).inc()
        await asyncio.to_thread(self._fail, chunk, str(exc))

    async def _finish_unit(self, chunk: ClaimedChunk, plan: Plan, seconds: float) -> None:
        # The lease is renewed while the unit is checked and recorded: on a loaded machine that
        # can outlast a lease, and a lapsed lease would have the chunk encoded a second time.
        done = asyncio.Event()
        keepalive = asyncio.create_task(self._keep_lease(chunk, done))
        try:
            await asyncio.to_thread(self._finish, chunk, plan, seconds)
        except Exception:
            # Unrecorded, the unit's lease runs out and it is encoded again: nothing is lost.
            log.exception("job %s unit %d: finishing raised", chunk.video_id, chunk.index)
            await asyncio.to_thread(self._discard, chunk)
            return
        finally:
            done.set()
            keepalive.cancel()
            await asyncio.gather(keepalive, return_exceptions=True)
        # After the publish and beside the next unit, so they never hold back playback: the
        # poster once the first chunk plays, the storyboard once the video is final.
        derived.start_previews(self.settings, chunk.video_id, plan)

    def extract_captions(self, chunk: ClaimedChunk) -> None:
        """The captions unit: the source's text subtitle streams become captions, recorded
        with the unit's end in one transaction (the lease is renewed while ffmpeg reads)."""
        started = time.monotonic()
        found = embedded.extract(
            self.settings, self.storage, chunk.video_id, keep_lease=lambda: self._renew(chunk)
        )
        with session_scope(self.settings) as session:
            kept = jobs.finish_chunk(
                session,
                video_id=chunk.video_id,
                index=chunk.index,
                worker_id=self.worker_id,
                attempt=chunk.attempt,
                encode_seconds=time.monotonic() - started,
            )
            # Replacing an earlier extraction's (a start-over); none if the unit was lost.
            unused = (
                captions.replace_embedded(
                    session,
                    video_id=chunk.video_id,
                    found=found,
                    most=self.settings.captions_per_video,
                )
                if kept
                else [new.id for new in found]
            )
        for caption_id in unused:
            if self.remote:
                self.store.delete(VideoLayout.of(chunk.video_id).caption_source(caption_id))
            else:
                self.storage.caption_source_path(chunk.video_id, caption_id).unlink(missing_ok=True)
        if kept:
            self._list_captions(chunk.video_id)
            # The final publish waits for this unit: it may be the last one.
            self._publish(chunk.video_id)

    def _list_captions(self, video_id: str) -> None:
        """Put the new captions in the master, if a chunk already made one playable."""
        try:
            captions.refresh_master(self.settings, video_id)
        except (OSError, ValueError, RuntimeError, AppError):
            # The final master lists them anyway: its publisher reads the rows.
            log.exception("job %s: captions not listed in the master yet", video_id)

    def _command(self, chunk: ClaimedChunk, plan: Plan) -> list[str]:
        out_dir = self.storage.hls_dir(chunk.video_id)
        source = self._source(chunk.video_id)
        if chunk.kind == "audio":
            audio_dir = self.storage.rung_dir(chunk.video_id, layout.AUDIO)
            if self.remote:
                remove_tree(audio_dir)  # scratch: a run of an earlier claim on this machine
            audio_dir.mkdir(parents=True, exist_ok=True)
            assert plan.audio_kbps is not None
            return audio_command(
                ffmpeg=self.settings.ffmpeg_bin,
                source=source,
                audio_kbps=plan.audio_kbps,
                out_dir=out_dir,
                options=plan.options,
            )
        out_dir = self._output_dir(chunk)
        for rendition in plan.renditions:
            # ffmpeg's HLS muxer creates no folder: the chunk's playlist names the rung's.
            name = layout.chunk_playlist(chunk.index)
            self._unit_file(chunk, rendition.name, name).parent.mkdir(parents=True, exist_ok=True)
        return video_chunk_command(
            ffmpeg=self.settings.ffmpeg_bin,
            source=source,
            info=plan.info,
            renditions=plan.renditions,
            out_dir=out_dir,
            options=plan.options,
            chunk=TimeChunk(chunk.index, chunk.start, chunk.end),
        )

    async def _heartbeat(
        self,
        current: Callable[[], tuple[ClaimedChunk, float]],
        stop: asyncio.Event,
        shutdown: asyncio.Event,
    ) -> None:
        """Renew the lease of the chunk `current()` names and publish its progress (seconds
        into it); a stop, a lost lease or shutdown sets `stop`."""
        # Stop must end ffmpeg within 2 s: beat at least twice a second.
        interval = min(0.5, self.settings.poll_seconds)
        while not stop.is_set():
            chunk, done = current()
            stop_asked = await self._beat_to_the_end(chunk, done)
            # A run that went on meanwhile may find the chunk it handed over recorded: no stop.
            if (stop_asked and current()[0] is chunk) or shutdown.is_set():
                stop.set()
                return
            await sleep_unless(shutdown, interval)

    async def _keep_lease(self, chunk: ClaimedChunk, done: asyncio.Event) -> None:
        """Renew the chunk's lease until `done` (the unit is checked and recorded meanwhile).

        Only the lease: progress figures written beside the recording could land after it."""
        interval = min(0.5, self.settings.poll_seconds, self.settings.lease_seconds / 3)
        while not done.is_set():
            held = await asyncio.to_thread(self._renew, chunk)
            if not held:
                return
            await sleep_unless(done, interval)

    def _renew(self, chunk: ClaimedChunk) -> bool:
        with session_scope(self.settings) as session:
            return jobs.renew_lease(
                session,
                video_id=chunk.video_id,
                index=chunk.index,
                worker_id=self.worker_id,
                attempt=chunk.attempt,
                lease_seconds=self.settings.lease_seconds,
            )

    async def _beat_to_the_end(self, chunk: ClaimedChunk, out_time: float) -> bool:
        """One beat, which a cancelled heartbeat still waits for: its transaction runs on in
        its thread, and committed after the unit is recorded done (a short audio-only job's
        first beat, for one), its figures would overwrite the finished job's qualities."""
        beat = asyncio.ensure_future(asyncio.to_thread(self._beat, chunk, out_time))
        try:
            return await asyncio.shield(beat)
        except asyncio.CancelledError:
            await asyncio.gather(beat, return_exceptions=True)
            raise

    def _beat(self, chunk: ClaimedChunk, out_time: float) -> bool:
        with session_scope(self.settings) as session:
            return jobs.chunk_heartbeat(
                session,
                video_id=chunk.video_id,
                index=chunk.index,
                worker_id=self.worker_id,
                attempt=chunk.attempt,
                lease_seconds=self.settings.lease_seconds,
                out_time=out_time,
            )

    def _output_dir(self, chunk: ClaimedChunk) -> Path:
        """Where the unit's ffmpeg writes: video chunks into their claim's own folder (moved
        into the rung folders once checked, see Storage.attempt_dir); the audio in place, as
        it is published while it grows."""
        if chunk.kind == "audio":
            return self.storage.hls_dir(chunk.video_id)
        return self.storage.attempt_dir(chunk.video_id, chunk.index, chunk.attempt)

    def _discard(self, chunk: ClaimedChunk) -> None:
        """Remove what a claim that will not count wrote (a stopped or failed video chunk;
        with object storage the audio's scratch too: what was uploaded of it stays)."""
        if chunk.kind != "audio":
            remove_tree(self._output_dir(chunk))
        elif self.remote:
            remove_tree(self.storage.rung_dir(chunk.video_id, layout.AUDIO))

    def _unit_file(self, chunk: ClaimedChunk, rung: str, name: str) -> Path:
        """Where the unit's ffmpeg wrote file `name` of rung `rung` (see _output_dir)."""
        if chunk.kind == "audio":
            return self.storage.rung_file(chunk.video_id, rung, name)
        key = VideoLayout.of(chunk.video_id).attempt_file(chunk.index, chunk.attempt, rung, name)
        return self.storage.path(key)

    def _unit_playlists(self, chunk: ClaimedChunk, plan: Plan) -> list[UnitFile]:
        if chunk.kind == "audio":
            return [(layout.AUDIO, layout.AUDIO_RUN_PLAYLIST)]
        return [(r.name, layout.chunk_playlist(chunk.index)) for r in plan.renditions]

    def _verify(self, chunk: ClaimedChunk, plan: Plan) -> list[UnitFile]:
        """ffmpeg's exit code is not enough (a full disk can leave a truncated playlist and
        still exit 0): every playlist must parse and list segments that exist and are not empty.
        Returns every file the unit wrote (playlists, segments, init segments), by rung.
        """
        out = self._output_dir(chunk)
        playlists = self._unit_playlists(chunk, plan)
        files = list(playlists)
        for rung, name in playlists:
            try:
                listed = [
                    (rung, uri)
                    for uri, _ in read_media_playlist(self._unit_file(chunk, rung, name))
                ]
                sizes = [self._unit_file(chunk, *file).stat().st_size for file in listed]
            except (OSError, ValueError) as exc:
                raise IncompleteOutput(_incomplete(f"{name}: {exc}", out)) from exc
            if not listed or min(sizes) == 0:
                raise IncompleteOutput(_incomplete(f"{name} lists no segment", out))
            files += listed
        if plan.options.fmp4:
            files += self._verify_inits(chunk, plan, out)
        return files

    def _verify_inits(self, chunk: ClaimedChunk, plan: Plan, out: Path) -> list[UnitFile]:
        """fMP4 segments are nothing without the init segment each run writes beside them."""
        if chunk.kind == "audio":
            inits = [(layout.AUDIO, layout.AUDIO_RUN_INIT)]
        else:
            inits = [(r.name, layout.chunk_init(chunk.index)) for r in plan.renditions]
        for rung, name in inits:
            init = self._unit_file(chunk, rung, name)
            if not init.is_file() or init.stat().st_size == 0:
                raise IncompleteOutput(_incomplete(f"{name} is missing or empty", out))
        return inits

    def _make_durable(self, video_id: str, files: list[Path]) -> None:
        """Put a unit's files, and the folders that name them up to hls/, on the disk: once
        the unit is recorded done nobody encodes it again, so a power cut must not undo it."""
        hls = self.storage.hls_dir(video_id)
        folders = sorted({file.parent for file in files})
        make_durable(files, folders=[*folders, hls, hls.parent])

    def _move_into_place(self, chunk: ClaimedChunk, files: list[UnitFile]) -> list[Path]:
        """Move a checked video chunk's files from its claim's folder into the rung folders
        (a rename each; the chunk playlists last, so whoever reads one finds its segments).
        Returns the files at their new places."""
        playlists = {layout.chunk_playlist(chunk.index)}
        ordered = sorted(files, key=lambda file: file[1] in playlists)
        moved = []
        for rung, name in ordered:
            target = self.storage.rung_file(chunk.video_id, rung, name)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self._unit_file(chunk, rung, name), target)
            moved.append(target)
        remove_tree(self._output_dir(chunk))
        return moved

    def _upload_unit(self, chunk: ClaimedChunk, files: list[UnitFile]) -> None:
        """Put a checked unit's files from the scratch folder to their rung keys (segments
        and init segments first, then the playlists and sidecars that name them), then
        remove them from the scratch."""
        names = VideoLayout.of(chunk.video_id)
        last = {
            layout.chunk_playlist(chunk.index),
            layout.chunk_iframes(chunk.index),
            layout.AUDIO_RUN_PLAYLIST,
        }

        def upload(file: UnitFile) -> None:
            put_file(self.store, names.rung_file(*file), self._unit_file(chunk, *file))

        with ThreadPoolExecutor(max_workers=UPLOAD_THREADS) as pool:
            list(pool.map(upload, [f for f in files if f[1] not in last]))
            list(pool.map(upload, [f for f in files if f[1] in last]))
        self._discard(chunk)

    async def _upload_growing_audio(self, chunk: ClaimedChunk, encoded: asyncio.Event) -> None:
        """While the audio encodes, upload its new segments, then its playlist, so the
        publisher (on any machine) sees it grow. Failures wait for the next round."""
        uploaded: set[str] = set()
        while not encoded.is_set():
            try:
                await asyncio.to_thread(self._upload_audio_so_far, chunk, uploaded)
            except (StorageUnavailable, OSError) as exc:
                log.info("job %s: the growing audio waits for the storage: %s", chunk.video_id, exc)
            await sleep_unless(encoded, AUDIO_UPLOAD_SECONDS)

    def _upload_audio_so_far(self, chunk: ClaimedChunk, uploaded: set[str]) -> None:
        folder = self.storage.rung_dir(chunk.video_id, layout.AUDIO)
        try:
            text = (folder / layout.AUDIO_RUN_PLAYLIST).read_text(encoding="utf-8")
            listed = parse_media_playlist(text, name=layout.AUDIO_RUN_PLAYLIST)
        except (OSError, ValueError):
            return  # not written yet (ffmpeg replaces it whole: never half a playlist)
        names = VideoLayout.of(chunk.video_id)
        new = [uri for uri, _ in listed if uri not in uploaded]
        if not new:
            return
        if layout.AUDIO_RUN_INIT not in uploaded and (folder / layout.AUDIO_RUN_INIT).is_file():
            new.insert(0, layout.AUDIO_RUN_INIT)
        for name in new:
            put_file(self.store, names.rung_file(layout.AUDIO, name), folder / name)
            uploaded.add(name)
        put_bytes(self.store, names.rung_file(layout.AUDIO, layout.AUDIO_RUN_PLAYLIST), text)

    def _still_ours(self, chunk: ClaimedChunk) -> bool:
        with session_scope(self.settings) as session:
            return jobs.holds_chunk(
                session,
                video_id=chunk.video_id,
                index=chunk.index,
                worker_id=self.worker_id,
                attempt=chunk.attempt,
            )

    def _finish(self, chunk: ClaimedChunk, plan: Plan, seconds: float) -> None:
        try:
            files = self._verify(chunk, plan)
        except IncompleteOutput as exc:
            log.warning("job %s unit %d: %s", chunk.video_id, chunk.index, exc)
            FFMPEG_FAILURES.labels(chunk.kind).inc()
            self._fail(chunk, str(exc))
            return
        # I-frame playlists are made for MPEG-TS rungs only (not for the fMP4 HEVC ladder).
        if chunk.kind == "video" and not plan.options.fmp4:
            sidecars = [(r.name, layout.chunk_iframes(chunk.index)) for r in plan.renditions]
            with ThreadPoolExecutor(max_workers=4) as pool:
                list(
                    pool.map(
                        lambda file: stitch.index_chunk_iframes(
                            self._unit_file(chunk, file[0], layout.chunk_playlist(chunk.index)),
                            self._unit_file(chunk, *file),
                            ffprobe=self.settings.ffprobe_bin,
                        ),
                        sidecars,
                    )
                )
            # Written with write_atomic (durable already); listed so the whole unit is here.
            files += sidecars
        if chunk.kind == "video" and not self._still_ours(chunk):
            # Another claim of the chunk took over; its files are the ones that count.
            log.info("job %s unit %d: claim lost, output discarded", chunk.video_id, chunk.index)
            self._discard(chunk)
            return
        if not self._store_unit(chunk, files):
            return
        with session_scope(self.settings) as session:
            kept = jobs.finish_chunk(
                session,
                video_id=chunk.video_id,
                index=chunk.index,
                worker_id=self.worker_id,
                attempt=chunk.attempt,
                encode_seconds=seconds,
            )
        log.info("job %s unit %d done in %.1f s", chunk.video_id, chunk.index, seconds)
        media = (chunk.end if chunk.end is not None else plan.duration) - chunk.start
        CHUNK_SECONDS.labels(chunk.kind).observe(seconds)
        REALTIME.labels(chunk.kind).observe(media / seconds if seconds > 0 else 0.0)
        if kept:
            self._publish(chunk.video_id)

    def _store_unit(self, chunk: ClaimedChunk, files: list[UnitFile]) -> bool:
        """Put a checked unit where it counts, durably: moved into the rung folders (the
        local folder) or uploaded (a bucket). False when the bucket cannot be reached: the
        unit is then released, to be encoded again once it answers."""
        if not self.remote:
            if chunk.kind == "video":
                placed = self._move_into_place(chunk, files)
            else:
                placed = [self._unit_file(chunk, *file) for file in files]
            self._make_durable(chunk.video_id, placed)
            return True
        try:
            self._upload_unit(chunk, files)
        except StorageUnavailable as exc:
            log.warning(
                "job %s unit %d: not uploaded, released: %s", chunk.video_id, chunk.index, exc
            )
            self._discard(chunk)
            self._release(chunk)
            return False
        return True

    def _publish(self, video_id: str) -> None:
        try:
            if stitch.publish(self.settings, video_id):
                log.info("job %s ok", video_id)
        except StorageUnavailable as exc:
            # Nothing is lost: what is left to publish is picked up once the bucket answers.
            log.warning("job %s: publishing deferred: %s", video_id, exc.detail)
        except OperationalError:
            # Another publisher held the job (SQLite refuses a stale snapshot's write): what
            # is left to publish is picked up by the next idle pass.
            log.info("job %s: publishing deferred, another worker is publishing", video_id)
        except (OSError, ValueError, RuntimeError) as exc:
            # The output cannot be stitched or measured: say so on the job, don't retry blindly.
            log.exception("job %s: publishing failed", video_id)
            with session_scope(self.settings) as session:
                jobs.fail(session, video_id=video_id, error=f"publishing failed: {exc}")

    def _publish_leftovers(self) -> None:
        for video_id in stitch.pending_publications(self.settings):
            self._publish(video_id)

    def _release(self, chunk: ClaimedChunk) -> None:
        with session_scope(self.settings) as session:
            jobs.release_chunk(
                session,
                video_id=chunk.video_id,
                index=chunk.index,
                worker_id=self.worker_id,
                attempt=chunk.attempt,
            )

    def _fail(self, chunk: ClaimedChunk, error: str) -> None:
        with session_scope(self.settings) as session:
            jobs.fail_chunk(
                session,
                video_id=chunk.video_id,
                index=chunk.index,
                worker_id=self.worker_id,
                attempt=chunk.attempt,
                error=error[-2000:],
                max_attempts=self.settings.max_attempts,
                backoff_seconds=self.settings.retry_backoff_seconds,
            )

    def reclaim_own_dead_jobs(self) -> list[str]:
        """Expire the leases this host's dead workers held, so a restart resumes at once."""
        with session_scope(self.settings) as session:
            return jobs.reclaim_dead(session, host=socket.gethostname(), alive=_pid_alive)


async def run_workers(
    settings: Settings, count: int, shutdown: asyncio.Event, *, audio: int = 0
) -> None:
    """Run `count` workers (any unit) and `audio` audio-only workers until `shutdown` is set.

    Audio is a single light ffmpeg; an audio-only worker beside the video ones means a long
    file's audio never holds chunk 0 back, and the cores stay with the video.
    """
    kinds = ("video",) if audio > 0 else ("audio", "video", CAPTIONS)
    workers = [Worker(settings, name=str(n), kinds=kinds) for n in range(count)]
    # Extracting captions reads the file and decodes text only: light work, like the audio.
    light = ("audio", CAPTIONS)
    workers += [Worker(settings, name=f"audio{n}", kinds=light) for n in range(audio)]
    if workers:
        reclaimed = await asyncio.to_thread(workers[0].reclaim_own_dead_jobs)
        if reclaimed:
            log.info("reclaimed work of dead workers: %s", ", ".join(reclaimed))
    await asyncio.gather(*(w.run_forever(shutdown) for w in workers))


def main() -> None:
    """Entry point of a standalone worker process (`python -m services.transcoding.worker`)."""
    import signal

    from services.core.app import configure_logging

    configure_logging()
    settings = get_settings()
    init_db(settings)

    async def _main() -> None:
        shutdown = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, shutdown.set)
        await run_workers(
            settings, max(1, settings.workers), shutdown, audio=settings.audio_workers
        )

    asyncio.run(_main())


if __name__ == "__main__":
    main()
