"""The transmit-limited broadcast queue: what gets piggybacked, and how often.

Theory of operation (SWIM §4.1, memberlist ``queue.go``). Every update is queued under the
name of the member it concerns. Queuing a new update about a member replaces the queued
one (invalidation: an ``alive`` that refutes a ``suspect`` makes the suspect worthless to
send). Each time the core fills a datagram it asks for updates that fit the bytes left:

* least-sent first, then newest first: fresh news spreads fastest, and an update that has
  gone out many times yields to one that has not gone out at all;
* greedily packed: an update that does not fit is skipped and smaller ones after it may
  still fit, so one 800-byte metadata update never blocks every small one;
* an update is dropped after ``retransmit_limit(mult, n) = mult * ceil(log10(n + 1))``
  sends, the lambda log n of the SWIM paper (base 10, as memberlist).

Sizes come from a caller-supplied estimate (an upper bound), so the queue never encodes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from prism.swim.messages import Update


def retransmit_limit(mult: int, members: int) -> int:
    """How many times an update is sent in a cluster of ``members``: ``mult * ceil(log10(n+1))``."""
    return mult * math.ceil(math.log10(members + 1))


@dataclass(slots=True)
class _Queued:
    update: Update
    id: int  # larger is newer
    transmits: int


class BroadcastQueue:
    """Updates waiting to be piggybacked, at most one per member."""

    def __init__(self) -> None:
        self._items: dict[str, _Queued] = {}
        self._next_id = 0

    def __len__(self) -> int:
        return len(self._items)

    def queue(self, update: Update) -> None:
        """Queue ``update``, replacing any queued update about the same member."""
        self._next_id += 1
        self._items.pop(update.node, None)  # re-insert so dict order follows age too
        self._items[update.node] = _Queued(update=update, id=self._next_id, transmits=0)

    def pending(self) -> list[Update]:
        """Queued updates in sending order (for tests and statistics)."""
        return [q.update for q in self._ordered()]

    def get(
        self,
        budget_bytes: int,
        *,
        limit: int,
        size: Callable[[Update], int],
        skip: str = "",
    ) -> list[Update]:
        """Take updates whose ``size`` sum fits ``budget_bytes``; each taken one counts a
        send, and is dropped once sent ``limit`` times. ``skip`` names a member whose news
        the caller already carries (the buddy-system suspect)."""
        taken: list[Update] = []
        room = budget_bytes
        for item in self._ordered():
            if item.update.node == skip and skip:
                continue
            cost = size(item.update)
            if cost > room:
                continue
            room -= cost
            taken.append(item.update)
            item.transmits += 1
            if item.transmits >= limit:
                del self._items[item.update.node]
        return taken

    def _ordered(self) -> list[_Queued]:
        return sorted(self._items.values(), key=lambda q: (q.transmits, -q.id))
