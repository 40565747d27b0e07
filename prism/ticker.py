"""The drivers' ticker: a callback every ``interval_s`` of trio's clock."""

from __future__ import annotations

from collections.abc import Callable

import trio


async def run_ticker(interval_s: float, tick: Callable[[], None], late: Callable[[], None]) -> None:
    """Call ``tick()`` every ``interval_s`` seconds, forever. Ticks missed while the process
    stalled are not replayed in a burst (a core would see its timeouts pass without having
    read the answers waiting in its socket): ``late()`` is told once, and the schedule
    starts again from now."""
    deadline = trio.current_time()
    while True:
        deadline += interval_s
        now = trio.current_time()
        if deadline < now:
            late()
            deadline = now
        await trio.sleep_until(deadline)
        tick()
