"""A discrete-event loop on virtual time, in integer nanoseconds.

Events at the same instant run in an order drawn from the loop's own seeded stream, so seeds
also explore same-instant interleavings (as madsim and trio's batch shuffle do), and the run
stays a pure function of the seed.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from heapq import heappop, heappush
from typing import final

from prism.collector import fewer_collections

NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000


SAME_INSTANT_LIMIT = 1_000_000


class Livelock(RuntimeError):
    """Virtual time stopped moving: too many events in a row at one instant."""

    def __init__(self, now_ns: int) -> None:
        self.now_ns = now_ns
        super().__init__(
            f"livelock: over {SAME_INSTANT_LIMIT:,} events in a row at {now_ns / 1e9:.6f}s"
        )


@final
class EventLoop:
    """Events are heap entries ``(time, same-instant draw, sequence, callback)``.

    The loop runs every event of a simulation, so its two hot paths (scheduling and the
    ``run_until`` loop) bind what they use to locals; keep them lean.
    """

    def __init__(self, rng: random.Random) -> None:
        self.now_ns = 0
        self.events_run = 0
        self._rng = rng
        self._draw = rng.random  # one draw per scheduled event orders same-instant events
        self._seq = 0
        self._heap: list[tuple[int, float, int, Callable[[], None]]] = []

    def call_at(self, at_ns: int, callback: Callable[[], None]) -> None:
        if at_ns < self.now_ns:
            raise ValueError("cannot schedule in the past")
        self._seq += 1
        heappush(self._heap, (at_ns, self._draw(), self._seq, callback))

    def call_later(self, delay_ns: int, callback: Callable[[], None]) -> None:
        # call_at inlined: a negative delay means now, so the past check cannot fail.
        at_ns = self.now_ns + delay_ns if delay_ns > 0 else self.now_ns
        self._seq += 1
        heappush(self._heap, (at_ns, self._draw(), self._seq, callback))

    def run_until(self, end_ns: int, stop: Callable[[], bool] | None = None) -> bool:
        """Run events up to ``end_ns``; with ``stop``, return True as soon as it holds.

        Raises ``Livelock`` when ``SAME_INSTANT_LIMIT`` events in a row run at one instant:
        virtual time no longer moves, so the run would never end (a broken rule that
        answers a message with another at once, forever).
        """
        heap = self._heap
        ran = 0
        same = 0
        with fewer_collections():
            try:
                while heap and heap[0][0] <= end_ns:
                    event = heappop(heap)
                    if event[0] == self.now_ns:
                        same += 1
                        if same > SAME_INSTANT_LIMIT:
                            raise Livelock(self.now_ns)
                    else:
                        same = 0
                        self.now_ns = event[0]
                    ran += 1
                    event[3]()
                    if stop is not None and stop():
                        return True
            finally:
                self.events_run += ran
        if self.now_ns < end_ns:
            self.now_ns = end_ns
        return stop is not None and stop()
