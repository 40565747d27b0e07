"""The event loop: a run whose virtual time stops moving is reported, not run forever; a run
collects garbage less often."""

from __future__ import annotations

import gc
import random

import pytest

from prism.collector import GC_THRESHOLD
from prism.sim.loop import SAME_INSTANT_LIMIT, EventLoop, Livelock


def test_events_at_one_instant_forever_raise_livelock() -> None:
    loop = EventLoop(random.Random(1))
    ran = 0

    def again() -> None:
        nonlocal ran
        ran += 1
        loop.call_later(0, again)

    loop.call_later(5, again)
    with pytest.raises(Livelock) as caught:
        loop.run_until(10**9)
    assert caught.value.now_ns == 5
    assert ran == SAME_INSTANT_LIMIT + 1
    assert loop.events_run == ran


def test_many_events_at_one_instant_that_end_are_fine() -> None:
    loop = EventLoop(random.Random(1))
    seen: list[int] = []
    for i in range(1000):
        loop.call_at(7, lambda i=i: seen.append(i))  # type: ignore[misc]
    assert not loop.run_until(100)
    assert sorted(seen) == list(range(1000))
    assert loop.now_ns == 100


def test_a_run_collects_garbage_less_often_and_restores_the_thresholds() -> None:
    loop = EventLoop(random.Random(0))
    seen: list[tuple[int, int, int]] = []
    loop.call_at(5, lambda: seen.append(gc.get_threshold()))
    before = gc.get_threshold()
    loop.run_until(10)
    assert seen == [tuple(max(o, n) for o, n in zip(before, GC_THRESHOLD, strict=True))]
    assert gc.get_threshold() == before
