"""An idle worker's poll: one transaction that claims a unit or a job to plan, and the sweep
for units left unpublished only every LEFTOVERS_SECONDS (the first idle pass at once), on a
real database."""

import asyncio
from contextlib import contextmanager
from unittest import mock

from services.core.db import session_scope
from services.core.settings import Settings
from services.transcoding import stitch, worker
from services.transcoding.worker import LEFTOVERS_SECONDS, Worker
from tests.clips import make_clip
from tests.transcoding.conftest import VIDEO_ID, queue_video


def _counting(settings: Settings):  # type: ignore[no-untyped-def]
    """session_scope as the worker module uses it, counting the sessions it opens."""
    opened: list[int] = []

    @contextmanager
    def counted(given: Settings | None = None):  # type: ignore[no-untyped-def]
        opened.append(1)
        with session_scope(given) as session:
            yield session

    return opened, counted


def test_an_idle_pass_is_one_transaction_and_sweeps_leftovers_only_now_and_then(settings):
    idle = Worker(settings)
    swept: list[int] = []
    real_sweep = stitch.pending_publications
    opened, counted = _counting(settings)

    def sweep(given: Settings) -> list[str]:
        swept.append(1)
        return real_sweep(given)

    with (
        mock.patch.object(stitch, "pending_publications", sweep),
        mock.patch.object(worker, "session_scope", counted),
    ):
        assert asyncio.run(idle.run_once()) is False  # the first idle pass sweeps
        assert swept == [1]
        opened.clear()
        for _ in range(3):
            assert asyncio.run(idle.run_once()) is False
        assert swept == [1], f"swept again within {LEFTOVERS_SECONDS} s"
        assert len(opened) == 3, "one transaction an idle pass"
        idle._next_sweep = 0.0  # LEFTOVERS_SECONDS later
        assert asyncio.run(idle.run_once()) is False
        assert swept == [1, 1]


def test_the_same_pass_plans_a_queued_job_then_claims_its_units(settings, tmp_path):
    queue_video(settings, make_clip(tmp_path / "clip.mp4", width=160, height=120, seconds=2))
    busy = Worker(settings, kinds=("video",))
    with mock.patch.object(Worker, "plan") as plan:
        assert asyncio.run(busy.run_once()) is True
    plan.assert_called_once_with(VIDEO_ID)
    busy.plan(VIDEO_ID)  # for real, under the claim the pass made
    claimed = busy._look_for_work(sweep=False)
    assert claimed is not None and not isinstance(claimed, str) and claimed.kind == "video"
