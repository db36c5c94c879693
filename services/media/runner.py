"""Run one ffmpeg command: report progress, keep a bounded stderr tail, stop on request.

FFmpegError   ffmpeg exited non-zero; carries argv, exit code and the stderr tail
Stopped       the caller's stop event was set and ffmpeg was terminated
"""

import asyncio
import contextlib
import ctypes
import functools
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

# Enough of ffmpeg's stderr to show why it failed, bounded however chatty it gets.
TAIL_BYTES = 4096
TAIL_LINES = 40
# Lines of the tail shown in the one-line str() of an FFmpegError.
SUMMARY_LINES = 3
# A killed process is reaped at once; this only bounds the wait if something is stuck.
REAP_SECONDS = 1.0

_PR_SET_PDEATHSIG = 1


class FFmpegError(Exception):
    """ffmpeg exited with a non-zero code."""

    def __init__(self, argv: list[str], returncode: int, stderr_tail: str) -> None:
        self.argv = argv
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        super().__init__(self._summary())

    def _summary(self) -> str:
        lines = [line.strip() for line in self.stderr_tail.splitlines() if line.strip()]
        last = " | ".join(lines[-SUMMARY_LINES:]) or "no error output"
        program = os.path.basename(self.argv[0])
        return f"{program} exited with code {_describe_code(self.returncode)}: {last}"


class Stopped(Exception):
    """The stop event was set; ffmpeg was terminated before it finished."""


async def run_ffmpeg(
    argv: list[str],
    *,
    on_progress: Callable[[float], None] | None = None,
    stop: asyncio.Event | None = None,
    grace: float = 1.0,
    nice: int = 0,
) -> None:
    """Run `argv` (with `-progress pipe:1`) to completion, or until `stop` is set.

    `nice` > 0 runs ffmpeg at that lower CPU priority (an encoder yields the cores to the
    servers on the same machine, and takes them all when nothing else wants them)."""
    if stop is not None and stop.is_set():
        raise Stopped("stopped before ffmpeg was started")
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=functools.partial(_before_exec, os.getpid(), nice),
    )
    assert proc.stdout is not None and proc.stderr is not None
    tail = _Tail()
    # The pipes are read while ffmpeg runs: a full pipe would block it forever.
    finished = asyncio.gather(
        proc.wait(), _read_progress(proc.stdout, on_progress), tail.read(proc.stderr)
    )
    try:
        stopped = await _finish_or_stop(finished, stop)
        if stopped:
            await _terminate(proc, grace)
            await finished
    except BaseException:
        # Cancelled, or on_progress raised: never leave ffmpeg running behind us.
        await _kill(proc, finished)
        raise
    if stopped:
        raise Stopped(f"stopped: {argv[0]} was terminated on request")
    if proc.returncode != 0:
        raise FFmpegError(argv, proc.returncode or 0, tail.text())


async def _finish_or_stop(finished: asyncio.Future[Any], stop: asyncio.Event | None) -> bool:
    """Wait for the process and its readers; True if `stop` was set first."""
    if stop is None:
        await finished
        return False
    stop_set = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({finished, stop_set}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop_set.cancel()
    if finished.done():
        finished.result()  # re-raises an on_progress error
        return False
    return True


async def _terminate(proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM (ffmpeg closes its outputs cleanly), then SIGKILL after `grace` seconds."""
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), timeout=grace)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


async def _kill(proc: asyncio.subprocess.Process, finished: asyncio.Future[Any]) -> None:
    """SIGKILL and reap, bounded in time: this runs while an error is on its way out."""
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    finished.cancel()
    with contextlib.suppress(TimeoutError, asyncio.CancelledError):
        await asyncio.wait_for(proc.wait(), timeout=REAP_SECONDS)


async def _read_progress(
    stream: asyncio.StreamReader, on_progress: Callable[[float], None] | None
) -> None:
    """Turn ffmpeg's `-progress` key=value lines into on_progress(seconds) calls."""
    last = -1.0
    async for raw in stream:
        seconds = _progress_seconds(raw)
        # out_time_us and out_time_ms come in pairs with the same value: report it once.
        if on_progress is not None and seconds is not None and seconds != last:
            last = seconds
            on_progress(seconds)


def _progress_seconds(raw: bytes) -> float | None:
    key, _, value = raw.decode("ascii", errors="replace").strip().partition("=")
    # Both keys are microseconds in ffmpeg 5 (out_time_ms is misnamed).
    if key not in ("out_time_us", "out_time_ms"):
        return None
    try:
        micros = int(value)
    except ValueError:
        return None  # "N/A" before the first frame is out
    return micros / 1_000_000 if micros >= 0 else None


class _Tail:
    """The last TAIL_BYTES of a stream, read to its end."""

    def __init__(self) -> None:
        self._buffer = b""

    async def read(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(TAIL_BYTES):
            self._buffer = (self._buffer + chunk)[-TAIL_BYTES:]

    def text(self) -> str:
        lines = self._buffer.decode("utf-8", errors="replace").splitlines()
        return "\n".join(lines[-TAIL_LINES:])


def _describe_code(returncode: int) -> str:
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"{returncode} ({signal.Signals(-returncode).name})"
    return str(returncode)


def _load_prctl() -> Callable[..., int] | None:
    """libc's prctl, looked up before any fork: a forked child should only call it."""
    if sys.platform != "linux":
        return None
    prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    return prctl


_prctl = _load_prctl()


def lower_priority(nice: int) -> None:
    """In a child before exec: run it `nice` levels below its parent, in its own scheduling
    group.

    A thread's nice weighs it only against the threads of its own group. Where the kernel
    groups tasks by session (autogroup: sched_autogroup_enabled, the default of Debian's and
    most distributions' kernels) each service the launcher starts is a session, so ffmpeg's
    nice 10 would weigh it against the transcoding service's own threads and not at all
    against the streaming service or the gateway: each group gets an equal share of the
    cores. In a session of its own with that group's nice lowered too, the encoder yields
    to every server. Where there is no autogroup (a container's cgroup, a kernel built
    without it) the file is missing or ignored, and the thread nice does the work.
    """
    if nice <= 0:
        return
    os.setsid()
    os.nice(nice)
    with contextlib.suppress(OSError), open("/proc/self/autogroup", "w") as autogroup:
        autogroup.write(str(min(nice, 19)))


def _before_exec(parent: int, nice: int) -> None:
    """In the child, before exec: lower its priority by `nice` (`lower_priority`), and have
    the kernel SIGKILL ffmpeg when its parent dies.

    Even a worker killed with kill -9 then leaves no orphaned ffmpeg behind. (The signal
    follows the thread that forked, which is the thread running the event loop.)
    """
    lower_priority(nice)
    if _prctl is None:
        return
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)  # the parent died before the request was in place
