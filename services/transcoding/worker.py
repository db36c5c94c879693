"""The transcoding worker: claim a job, run the ladder, record the result; repeat.

Run standalone with `python -m services.transcoding.worker` (any machine sharing the database
and the storage folder), or in-process inside the transcoding service (the default).
"""

import asyncio
import contextlib
import logging
import os
import shutil
import socket
from dataclasses import dataclass, field
from typing import Any

from services.core import jobs
from services.core.db import init_db, session_scope
from services.core.errors import NotFound
from services.core.models import Status
from services.core.settings import Settings, get_settings
from services.core.storage import Storage, write_atomic
from services.media.ffmpeg_args import EncodeOptions, ladder_command
from services.media.ladder import Rendition, plan_ladder
from services.media.playlists import master_playlist, measure_rendition
from services.media.probe import ProbeError, SourceInfo, probe
from services.media.runner import FFmpegError, Stopped, run_ffmpeg

log = logging.getLogger(__name__)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def _sleep_unless(event: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, waking early when `event` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)


@dataclass
class Progress:
    """Per-rung and overall progress of the running encode; only ever moves forward."""

    renditions: list[str]
    duration: float
    seconds_done: float = 0.0
    percent: float = field(default=0.0)

    def update(self, out_time: float) -> None:
        if self.duration > 0:
            self.percent = max(self.percent, min(99.0, 100.0 * out_time / self.duration))

    def qualities(self) -> dict[str, Any]:
        return {
            q: {"status": Status.RUNNING, "progress": round(self.percent, 2)}
            for q in self.renditions
        }


class Worker:
    """One worker: claims jobs from the database and encodes them one at a time."""

    def __init__(self, settings: Settings, *, name: str = "0") -> None:
        self.settings = settings
        self.storage = Storage(settings.storage_dir)
        self.worker_id = f"{socket.gethostname()}/{name}:{os.getpid()}"

    async def run_forever(self, shutdown: asyncio.Event) -> None:
        """Claim and process jobs until `shutdown` is set."""
        log.info("worker %s started", self.worker_id)
        while not shutdown.is_set():
            try:
                worked = await self.run_once(shutdown)
            except Exception:
                # A database hiccup or a bug in one job must not end the worker: log and go on.
                log.exception("worker %s: job processing raised", self.worker_id)
                worked = False
            if not worked:
                await _sleep_unless(shutdown, self.settings.poll_seconds)

    async def run_once(self, shutdown: asyncio.Event | None = None) -> bool:
        """Claim one job and process it; False when there was nothing to do."""
        video_id = await asyncio.to_thread(self._claim)
        if video_id is None:
            return False
        await self.process(video_id, shutdown or asyncio.Event())
        return True

    def _claim(self) -> str | None:
        with session_scope(self.settings) as session:
            job = jobs.claim_next(
                session, worker_id=self.worker_id, lease_seconds=self.settings.lease_seconds
            )
            if job is None:
                return None
            job.attempts += 1
            return job.video_id

    async def process(self, video_id: str, shutdown: asyncio.Event) -> None:
        """Encode the whole ladder of one claimed video and record the outcome."""
        log.info("job %s claimed by %s", video_id, self.worker_id)
        try:
            info = await asyncio.to_thread(
                probe, self.storage.source_path(video_id), ffprobe=self.settings.ffprobe_bin
            )
        except ProbeError as exc:
            await asyncio.to_thread(self._fail, video_id, exc.detail, retry=False)
            return
        renditions = plan_ladder(info.width, info.height)
        try:
            await self._encode(video_id, info, renditions, shutdown)
        except Stopped:
            # ffmpeg closes its outputs on SIGTERM, leaving a playlist that looks finished:
            # a partial single-process encode is useless, so nothing of it stays to be served.
            shutil.rmtree(self.storage.hls_dir(video_id), ignore_errors=True)
            await asyncio.to_thread(self._stopped, video_id, shutdown.is_set())
            return
        except FFmpegError as exc:
            log.warning("job %s: ffmpeg failed: %s", video_id, exc)
            await asyncio.to_thread(self._fail, video_id, str(exc), retry=True)
            return
        await asyncio.to_thread(self._publish, video_id, renditions)

    async def _encode(
        self, video_id: str, info: SourceInfo, renditions: list[Rendition], shutdown: asyncio.Event
    ) -> None:
        out_dir = self.storage.hls_dir(video_id)
        # A single-process encode cannot continue a partial one: start from a clean folder so
        # no stale segment from an earlier attempt is ever served.
        shutil.rmtree(out_dir, ignore_errors=True)
        for rendition in renditions:
            (out_dir / rendition.name).mkdir(parents=True, exist_ok=True)
        argv = ladder_command(
            ffmpeg=self.settings.ffmpeg_bin,
            source=self.storage.source_path(video_id),
            info=info,
            renditions=renditions,
            out_dir=out_dir,
            options=self._options(),
        )
        progress = Progress([r.name for r in renditions], info.duration)
        stop = asyncio.Event()
        beat = asyncio.create_task(self._heartbeat(video_id, progress, stop, shutdown))
        try:
            await run_ffmpeg(
                argv, on_progress=progress.update, stop=stop, grace=self.settings.stop_grace_seconds
            )
        finally:
            beat.cancel()
            await asyncio.gather(beat, return_exceptions=True)

    def _options(self) -> EncodeOptions:
        s = self.settings
        return EncodeOptions(
            preset=s.x264_preset,
            segment_seconds=s.segment_seconds,
            keyframe_seconds=s.keyframe_seconds,
            threads=s.ffmpeg_threads,
        )

    async def _heartbeat(
        self, video_id: str, progress: Progress, stop: asyncio.Event, shutdown: asyncio.Event
    ) -> None:
        """Renew the lease, publish progress, and turn a stop request into `stop`."""
        # Stop must end ffmpeg within 2 s: beat at least twice a second.
        interval = min(0.5, self.settings.poll_seconds)
        while not stop.is_set():
            stop_asked = await asyncio.to_thread(self._beat, video_id, progress)
            if stop_asked or shutdown.is_set():
                stop.set()
                return
            await _sleep_unless(shutdown, interval)

    def _beat(self, video_id: str, progress: Progress) -> bool:
        with session_scope(self.settings) as session:
            return jobs.heartbeat(
                session,
                video_id=video_id,
                worker_id=self.worker_id,
                lease_seconds=self.settings.lease_seconds,
                progress=progress.percent,
                qualities=progress.qualities(),
            )

    def _publish(self, video_id: str, renditions: list[Rendition]) -> None:
        """Measure what was produced, write the master playlist last, mark the video ok."""
        out_dir = self.storage.hls_dir(video_id)
        stats = [
            measure_rendition(
                out_dir / r.name, ffprobe=self.settings.ffprobe_bin, ffmpeg=self.settings.ffmpeg_bin
            )
            for r in renditions
        ]
        write_atomic(self.storage.master_path(video_id), master_playlist(stats))
        try:
            with session_scope(self.settings) as session:
                jobs.finish(
                    session,
                    video_id=video_id,
                    worker_id=self.worker_id,
                    qualities=[r.name for r in renditions],
                )
        except NotFound:
            self._discard(video_id)
        log.info("job %s ok: %s", video_id, ", ".join(r.name for r in renditions))

    def _fail(self, video_id: str, error: str, *, retry: bool) -> None:
        try:
            with session_scope(self.settings) as session:
                job = jobs.get_job(session, video_id=video_id)
                again = retry and job.attempts < self.settings.max_attempts
                backoff = self.settings.retry_backoff_seconds * 2 ** max(0, job.attempts - 1)
                jobs.fail(
                    session,
                    video_id=video_id,
                    worker_id=self.worker_id,
                    error=error[-2000:],
                    retry_after=backoff if again else None,
                )
        except NotFound:
            self._discard(video_id)

    def _stopped(self, video_id: str, shutting_down: bool) -> None:
        """ffmpeg was stopped: by an operator (job rests `stopped`), or by our own shutdown
        (job goes back to the queue for the next worker), or because the job was deleted."""
        try:
            with session_scope(self.settings) as session:
                job = jobs.get_job(session, video_id=video_id)
                if shutting_down and not job.stop_requested:
                    jobs.release(session, video_id=video_id, worker_id=self.worker_id)
                else:
                    jobs.mark_stopped(session, video_id=video_id, worker_id=self.worker_id)
        except NotFound:
            self._discard(video_id)

    def _discard(self, video_id: str) -> None:
        # The video was deleted while we encoded it: leave nothing behind.
        self.storage.delete_video(video_id)

    def reclaim_own_dead_jobs(self) -> list[str]:
        """Release jobs this host's dead workers held, so a restart resumes them at once."""
        with session_scope(self.settings) as session:
            return jobs.reclaim_dead(session, host=socket.gethostname(), alive=_pid_alive)


async def run_workers(settings: Settings, count: int, shutdown: asyncio.Event) -> None:
    """Run `count` workers in this process until `shutdown` is set."""
    workers = [Worker(settings, name=str(n)) for n in range(count)]
    if workers:
        reclaimed = await asyncio.to_thread(workers[0].reclaim_own_dead_jobs)
        if reclaimed:
            log.info("reclaimed jobs of dead workers: %s", ", ".join(reclaimed))
    await asyncio.gather(*(w.run_forever(shutdown) for w in workers))


def main() -> None:
    """Entry point of a standalone worker process."""
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
        await run_workers(settings, max(1, settings.workers), shutdown)

    asyncio.run(_main())


if __name__ == "__main__":
    main()
