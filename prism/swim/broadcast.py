"""The transmit-limited broadcast queue: what gets piggybacked, and how often.

Theory of operation (SWIM §4.1, memberlist ``queue.go``). Every update is queued under the
name of the member it concerns. Queuing a new update about a member replaces the queued
one (invalidation: an ``alive`` that refutes a ``suspect`` makes the suspect worthless to
send). Each time the core fills a datagram it asks for updates that fit the bytes left:

* least-sent first, then newest first: fresh news spreads fastest, and an update that has
  gone out many times yields to one that has not gone out at all;
* greedily packed: an update that does not fit is skipped and smaller ones after it may
  still fit, so one 800-byte metadata update never blocks every small one; but after
  ``PASS_OVER_LIMIT`` such skips the datagram is deemed full (updates in a large cluster
  differ in size by a few bytes, and hunting through a thousand of them for the one that
  fills the last 50 bytes cost more than the rest of the packing);
* an update is dropped after ``retransmit_limit(mult, n) = mult * ceil(log10(n + 1))``
  sends, the lambda log n of the SWIM paper (base 10, as memberlist);
* when the caller names a datagram's recipient, an update is not sent to a member known
  to hold it: the member it came from, and those it has been sent to. Such a send would
  be wasted, and in a small cluster the few sends an update gets are what it needs to
  reach everyone: at 5 members (4 sends each), random picks that repeated left one member
  without a metadata update until the next push-pull in about 1 update of 250. An update
  every other member holds is dropped. Holders are a tuple (at most the transmit limit
  long): small, and no work for the garbage collector, unlike a set per update.

Sizes come from an estimate (``estimate_size``, an upper bound), so the queue never
encodes; each update is sized once, when queued. Packing is the hot path of a large
cluster, whose queues hold hundreds of updates, so the sending order is maintained rather
than sorted per datagram, and a pass stops once the room left is below the smallest update
queued.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from prism.swim.messages import Update, estimate_size

PASS_OVER_LIMIT = 8
"""Updates skipped for their size in one ``get`` before the datagram is deemed full."""


def retransmit_limit(mult: int, members: int) -> int:
    """How many times an update is sent in a cluster of ``members``: ``mult * ceil(log10(n+1))``."""
    return mult * math.ceil(math.log10(members + 1))


@dataclass(slots=True)
class _Queued:
    update: Update
    id: int  # larger is newer
    transmits: int
    size: int  # the queue's size estimate of ``update``
    holders: tuple[str, ...]  # known to hold it: where it came from, whom it went to


class BroadcastQueue:
    """Updates waiting to be piggybacked, at most one per member.

    The sending order is kept up to date instead of sorted for every datagram: one *tier*
    per transmit count, each a list of ids in ascending order (read backwards: newest
    first). A new update joins the end of tier 0; a sent one moves up a tier by bisection.
    Invariant: each queued item's id is in exactly the tier of its ``transmits``, and no
    tier is empty.
    """

    def __init__(self, size: Callable[[Update], int] = estimate_size) -> None:
        """``size`` estimates an update's bytes in a datagram (an upper bound)."""
        self._size = size
        self._items: dict[str, _Queued] = {}  # by the member the update is about
        self._by_id: dict[int, _Queued] = {}
        self._tiers: dict[int, list[int]] = {}
        self._sizes: Counter[int] = Counter()  # queued items by size: the smallest bounds packing
        self._next_id = 0

    def __len__(self) -> int:
        return len(self._items)

    def queue(self, update: Update, *, source: str = "") -> None:
        """Queue ``update``, replacing any queued update about the same member. ``source``
        names the member it came from, which is not sent it back."""
        self._next_id += 1
        old = self._items.pop(update.node, None)
        if old is not None:
            self._unlink(old)
            self._forget(old)
        item = _Queued(
            update=update,
            id=self._next_id,
            transmits=0,
            size=self._size(update),
            holders=(source,) if source else (),
        )
        self._items[update.node] = item
        self._by_id[item.id] = item
        self._sizes[item.size] += 1
        tier = self._tiers.get(0)
        if tier is None:
            self._tiers[0] = [item.id]
        else:
            tier.append(item.id)  # the newest id of all: its place is the end

    def pending(self) -> list[Update]:
        """Queued updates in sending order (for tests and statistics)."""
        by_id = self._by_id
        return [by_id[i].update for t in sorted(self._tiers) for i in reversed(self._tiers[t])]

    def get(
        self,
        budget_bytes: int,
        *,
        limit: int,
        to: str = "",
        others: int | None = None,
        skip: str = "",
    ) -> list[Update]:
        """Take updates whose sizes sum to at most ``budget_bytes`` for the member ``to``
        ("" when unknown), leaving out those it is known to hold; each taken one counts a
        send, and is dropped once sent ``limit`` times, or once as many members as there
        are ``others`` (the live members but this one; None: not known) hold it. ``skip``
        names a member whose news the caller already carries (the buddy-system suspect)."""
        taken: list[Update] = []
        if not self._items:
            return taken
        held: list[_Queued] = []  # left out because ``to`` holds them
        room = budget_bytes
        smallest = min(self._sizes)
        pass_overs = PASS_OVER_LIMIT
        by_id = self._by_id
        tiers = self._tiers
        # What was sent, per tier, newest first; and whether it is the tier's newest end
        # (then it is cut off in one slice, which is the usual case).
        sent: list[tuple[int, list[_Queued], bool]] = []
        for transmits in sorted(tiers):
            if room < smallest:
                break  # not even the smallest queued update fits any more
            tier = tiers[transmits]
            here: list[_Queued] = []
            suffix = True
            passed_over = False
            for queued_id in reversed(tier):
                if room < smallest:
                    break
                item = by_id[queued_id]
                if item.size > room:
                    passed_over = True
                    pass_overs -= 1
                    if not pass_overs:
                        room = 0  # deemed full: ends this tier's loop and the outer one
                        break
                    continue
                if skip and item.update.node == skip:
                    passed_over = True
                    continue
                if to:
                    if to in item.holders:
                        passed_over = True
                        held.append(item)
                        continue
                    item.holders += (to,)
                if passed_over:
                    suffix = False  # an item left in between: not the tier's end any more
                room -= item.size
                taken.append(item.update)
                here.append(item)
            if here:
                sent.append((transmits, here, suffix))
        # Move what was sent only now (an item must not be met twice in one pass): first
        # out of the old tiers, then into the next ones.
        for transmits, here, suffix in sent:
            tier = tiers[transmits]
            if suffix:
                del tier[len(tier) - len(here) :]
            else:
                for item in here:
                    del tier[bisect_left(tier, item.id)]
            if not tier:
                del tiers[transmits]
        for transmits, here, _ in sent:
            moved = []
            for item in reversed(here):  # oldest first: ascending ids
                item.transmits += 1
                if item.transmits >= limit or (others is not None and len(item.holders) >= others):
                    del self._items[item.update.node]
                    self._forget(item)
                else:
                    moved.append(item.id)
            if not moved:
                continue
            upper = tiers.get(transmits + 1)
            if upper is None:
                tiers[transmits + 1] = moved
            else:
                interleaved = moved[0] < upper[-1]
                upper.extend(moved)
                if interleaved:
                    upper.sort()  # two sorted runs: timsort merges them in linear time
        for item in held:
            if others is not None and len(item.holders) >= others:  # nobody left to tell
                self._unlink(item)
                del self._items[item.update.node]
                self._forget(item)
        return taken

    def _forget(self, item: _Queued) -> None:
        del self._by_id[item.id]
        sizes = self._sizes
        sizes[item.size] -= 1
        if not sizes[item.size]:
            del sizes[item.size]

    def _unlink(self, item: _Queued) -> None:
        tier = self._tiers[item.transmits]
        del tier[bisect_left(tier, item.id)]
        if not tier:
            del self._tiers[item.transmits]
