"""`while_busy`: the event loop's wait for something another request holds (an upload's chunk
or tus lock), tried again in a worker thread until it is free or the wait is over."""

import asyncio
from collections.abc import Callable

import pytest

from services.core.tasks import while_busy


class Busy(Exception):
    pass


def busy_for(tries: int) -> tuple[list[int], Callable[[], str]]:
    calls: list[int] = []

    def call() -> str:
        calls.append(1)
        if len(calls) <= tries:
            raise Busy("held")
        return "got it"

    return calls, call


def test_a_call_busy_a_few_times_is_tried_again_until_it_is_free():
    calls, call = busy_for(3)
    got = asyncio.run(while_busy(call, Busy, wait=5, pause=0.01, most=0.02))
    assert got == "got it"
    assert len(calls) == 4


def test_a_call_still_busy_when_the_wait_is_over_raises_its_busy():
    calls, call = busy_for(10**6)
    with pytest.raises(Busy, match="held"):
        asyncio.run(while_busy(call, Busy, wait=0.1, pause=0.01))
    assert 2 <= len(calls) <= 11  # tried again, and no more often than every pause


def test_another_error_is_not_waited_on():
    calls: list[int] = []

    def call() -> None:
        calls.append(1)
        raise ValueError("broken")

    with pytest.raises(ValueError, match="broken"):
        asyncio.run(while_busy(call, Busy, wait=5, pause=0.01))
    assert calls == [1]
