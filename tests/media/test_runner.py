import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.media.runner import FFmpegError, Stopped, run_ffmpeg

QUIET = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-progress", "pipe:1"]
# -re paces the lavfi source in real time: the encode lasts as long as its duration and
# an endless one barely loads the CPU.
ENDLESS = [*QUIET, "-nostats", "-re", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10"]
ENDLESS += ["-c:v", "libx264", "-preset", "ultrafast", "-f", "null", "-"]


def children(parent: int, name: str = "ffmpeg") -> list[int]:
    """Live (not zombie) processes called `name` whose parent is `parent`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # the process ended while we looked
        comm = text[text.index("(") + 1 : text.rindex(")")]
        state, ppid = text[text.rindex(")") + 2 :].split()[:2]
        if comm == name and int(ppid) == parent and state != "Z":
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


async def test_progress_callbacks_report_increasing_output_time() -> None:
    seen: list[float] = []
    argv = [*QUIET, "-stats_period", "0.1", "-re", "-f", "lavfi"]
    argv += ["-i", "testsrc2=size=160x120:rate=10:duration=1", "-f", "null", "-"]
    await run_ffmpeg(argv, on_progress=seen.append)
    assert len(seen) >= 3
    assert seen == sorted(seen) and len(set(seen)) == len(seen)
    assert seen[-1] == pytest.approx(1.0, abs=0.15)


async def test_stop_event_ends_an_endless_encode_by_sigterm_before_any_sigkill() -> None:
    # An endless encode ends only if the stop ends it; with a grace longer than the wait, it
    # must be SIGTERM (ffmpeg closing its outputs cleanly) that did, not the SIGKILL after it.
    # (How fast is the benchmarks' business: a wall-clock bound here fails on a busy machine.)
    stop = asyncio.Event()
    running = asyncio.Event()
    task = asyncio.create_task(
        run_ffmpeg(ENDLESS, on_progress=lambda _: running.set(), stop=stop, grace=120.0)
    )
    await asyncio.wait_for(running.wait(), timeout=30)
    stop.set()
    with pytest.raises(Stopped):
        await asyncio.wait_for(task, timeout=60)
    assert children(os.getpid()) == []


async def test_process_ignoring_sigterm_is_killed_after_the_grace_period() -> None:
    script = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('out_time_us=1', flush=True)\n"
        "time.sleep(600)\n"
    )
    stop = asyncio.Event()
    ready = asyncio.Event()
    task = asyncio.create_task(
        run_ffmpeg(
            [sys.executable, "-c", script], on_progress=lambda _: ready.set(), stop=stop, grace=0.3
        )
    )
    await asyncio.wait_for(ready.wait(), timeout=10)
    started = time.monotonic()
    stop.set()
    with pytest.raises(Stopped):
        await task
    # It waited out the grace, and it was the SIGKILL that ended it (it would sleep on).
    assert 0.3 <= time.monotonic() - started < 300


async def test_stop_set_before_start_runs_nothing() -> None:
    stop = asyncio.Event()
    stop.set()
    with pytest.raises(Stopped):
        await run_ffmpeg(ENDLESS, stop=stop)
    assert children(os.getpid()) == []


async def test_failing_command_raises_ffmpeg_error_with_exit_code_and_stderr_tail(
    tmp_path: Path,
) -> None:
    argv = [*QUIET, "-i", str(tmp_path / "missing.mp4"), "-f", "null", "-"]
    with pytest.raises(FFmpegError) as caught:
        await run_ffmpeg(argv)
    error = caught.value
    assert error.argv == argv
    assert error.returncode != 0
    assert "No such file or directory" in error.stderr_tail
    assert f"code {error.returncode}" in str(error)
    assert "No such file or directory" in str(error)
    assert "\n" not in str(error)


async def test_stderr_tail_is_bounded_and_keeps_the_last_lines() -> None:
    script = "import sys\nfor i in range(20000): print(f'line {i}', file=sys.stderr)\nsys.exit(3)"
    with pytest.raises(FFmpegError) as caught:
        await run_ffmpeg([sys.executable, "-c", script])
    tail = caught.value.stderr_tail
    assert caught.value.returncode == 3
    assert len(tail) <= 4096 and len(tail.splitlines()) <= 40
    assert tail.endswith("line 19999")


async def test_error_raised_by_the_progress_callback_kills_ffmpeg() -> None:
    def explode(_: float) -> None:
        raise RuntimeError("callback failed")

    with pytest.raises(RuntimeError, match="callback failed"):
        await asyncio.wait_for(run_ffmpeg(ENDLESS, on_progress=explode), timeout=10)
    assert children(os.getpid()) == []


async def test_cancelling_the_awaiting_task_kills_ffmpeg() -> None:
    running = asyncio.Event()
    task = asyncio.create_task(run_ffmpeg(ENDLESS, on_progress=lambda _: running.set()))
    await asyncio.wait_for(running.wait(), timeout=10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert children(os.getpid()) == []


WORKER = """
import asyncio, sys
from services.media.runner import run_ffmpeg

def started(_):
    print("running", flush=True)

asyncio.run(run_ffmpeg(sys.argv[1:], on_progress=started))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux only")
def test_ffmpeg_dies_with_a_worker_killed_by_sigkill() -> None:
    root = Path(__file__).resolve().parents[2]
    argv = [sys.executable, "-c", WORKER, *ENDLESS]
    with subprocess.Popen(argv, cwd=root, stdout=subprocess.PIPE, text=True) as worker:
        try:
            assert worker.stdout is not None and worker.stdout.readline() == "running\n"
            (ffmpeg_pid,) = children(worker.pid)
        finally:
            worker.kill()  # the kill -9 under test (and the clean-up if the set-up failed)
        worker.wait(timeout=5)
    deadline = time.monotonic() + 30  # an orphan would run on; a wait, not a time limit
    while alive(ffmpeg_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    survived = alive(ffmpeg_pid)
    if survived:
        os.kill(ffmpeg_pid, signal.SIGKILL)  # do not leave the orphan running
    assert not survived


@pytest.mark.parametrize("nice", [0, 10])
async def test_the_encoder_runs_at_the_lower_priority_it_is_given(
    tmp_path: Path, nice: int
) -> None:
    seen = tmp_path / "nice"
    probe = f"import os; open({str(seen)!r}, 'w').write(str(os.nice(0)))"
    await run_ffmpeg([sys.executable, "-c", probe], nice=nice)
    assert int(seen.read_text()) == min(os.nice(0) + nice, 19)


AUTOGROUP = Path("/proc/self/autogroup")


def autogroup_enabled() -> bool:
    enabled = Path("/proc/sys/kernel/sched_autogroup_enabled")
    return AUTOGROUP.exists() and enabled.exists() and enabled.read_text().strip() == "1"


async def test_a_lowered_encoder_is_a_scheduling_group_of_its_own(tmp_path: Path) -> None:
    """A thread's nice counts only within its scheduling group, and where the kernel groups
    by session every service is one: the encoder gets a session of its own, and where that
    is a group (autogroup) the group's nice is lowered too."""
    seen = tmp_path / "seen"
    probe = (
        "import os, pathlib; a = pathlib.Path('/proc/self/autogroup'); "
        f"open({str(seen)!r}, 'w').write("
        "f'{os.getsid(0) == os.getpid()} {os.getsid(0) == os.getsid(os.getppid())}\\n'"
        " + (a.read_text() if a.exists() else ''))"
    )
    await run_ffmpeg([sys.executable, "-c", probe], nice=7)
    first, *group = seen.read_text().splitlines()
    assert first == "True False"  # a session leader, not in its parent's session
    if autogroup_enabled():
        # A process in the default group (init's session, as under some CI runners) reads
        # an empty file: that group is the root task group, not an autogroup.
        mine = AUTOGROUP.read_text().split()[:1]
        name, _, level = group[0].split()
        assert ([name] != mine, level) == (True, "7")
    await run_ffmpeg([sys.executable, "-c", probe])  # not lowered: stays where it was
    assert seen.read_text().splitlines()[0] == "False True"
