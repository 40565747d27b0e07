"""A discrete-event loop on virtual time, in integer nanoseconds.

Events at the same instant run in an order drawn from the loop's own seeded stream, so seeds
also explore same-instant interleavings (as madsim and trio's batch shuffle do), and the run
stays a pure function of the seed.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from typing import final

NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000


@final
class EventLoop:
    def __init__(self, rng: random.Random) -> None:
        self.now_ns = 0
        self.events_run = 0
        self._rng = rng
        self._seq = 0
        self._heap: list[tuple[int, float, int, Callable[[], None]]] = []

    def call_at(self, at_ns: int, callback: Callable[[], None]) -> None:
        if at_ns < self.now_ns:
            raise ValueError("cannot schedule in the past")
        self._seq += 1
        heapq.heappush(self._heap, (at_ns, self._rng.random(), self._seq, callback))

    def call_later(self, delay_ns: int, callback: Callable[[], None]) -> None:
        self.call_at(self.now_ns + max(0, delay_ns), callback)

    def run_until(self, end_ns: int, stop: Callable[[], bool] | None = None) -> bool:
        """Run events up to ``end_ns``; with ``stop``, return True as soon as it holds."""
        heap = self._heap
        while heap and heap[0][0] <= end_ns:
            at_ns, _, _, callback = heapq.heappop(heap)
            self.now_ns = at_ns
            self.events_run += 1
            callback()
            if stop is not None and stop():
                return True
        self.now_ns = max(self.now_ns, end_ns)
        return stop is not None and stop()
