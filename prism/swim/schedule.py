"""The coordinated probe schedule: every live member probed by exactly one member per period.

Theory of operation. Under SWIM's randomized round-robin (``prism.swim.probe``) each member
walks its own shuffled list, so a given member is probed about once per period *on average*:
by nobody in about e^-1 = 37 % of periods. The wait from a crash to the first probe of the
crashed member is then close to exponential, mean one period and p99 4.6 periods, and that
wait is most of the spread in detection times (``benchmarks/RESULTS.md``).

Here every member orders the live members (itself included) the same way: by a hash of the
name, so the order is random but common to all. Periods are numbered on a shared clock
(``global tick // probe interval``; the drivers derive it from the wall clock, the simulator
from virtual time). In period ``p`` the member at position ``i`` of the ``n``-member ring
probes position ``(i + d) mod n`` with ``d = 1 + p mod (n - 1)``. Every member uses the same
``d``, so the probers of one period are a permutation of the targets: each member is probed
exactly once. Over ``n - 1`` periods ``d`` runs through every offset, so each member probes
every other member once: a round robin in a random order, as SWIM asks.

Within its period a member probes at the phase its key gives, ``key * interval // 2^64``:
fixed for its life, so its own probes stay one period apart and its slot never moves as
others join or leave; and since the ring is ordered by key, phases grow with ring position
(about ``i * interval / n``: the probes of a period spread over it). Consecutive probes of
one target come from positions ``i, i - 1, ...``, whose phases only fall, so they are at
most one period apart, except once every ``n - 1`` periods when the prober's position wraps
from ``0`` to ``n - 1`` (at most two periods apart). The wait for the first probe after a
crash is therefore at most one period in all but about ``2 / n`` of crashes.

When views differ (a join or a death not yet heard everywhere) or clocks disagree, two
members may probe one target in a period and another goes unprobed: the schedule degrades
towards the random one, never below it, since every member still probes once per period.
"""

from __future__ import annotations

import bisect
import functools
import hashlib

KEY_BITS = 64


@functools.lru_cache(maxsize=65_536)
def ring_key(name: str) -> int:
    """A member's place in the ring: 64 bits of a hash of its name, the same everywhere.
    Cached and shared, because every member of a simulated cluster asks for every name."""
    hashed = hashlib.blake2b(name.encode(), digest_size=KEY_BITS // 8, person=b"prism-ring")
    return int.from_bytes(hashed.digest(), "big")


def phase_of(name: str, interval: int) -> int:
    """The tick of each period at which ``name`` probes: its key's share of the key space."""
    return ring_key(name) * interval >> KEY_BITS


class ProbeRing:
    """The live members (this one included) in ring order.

    Invariant: ``_keys[j] == ring_key(_names[j])``, ordered by ``(key, name)``."""

    def __init__(self) -> None:
        self._keys: list[int] = []
        self._names: list[str] = []

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: str) -> bool:
        return self._find(name) >= 0

    def names(self) -> list[str]:
        return list(self._names)

    def add(self, name: str) -> None:
        key, position = self._place(name)
        if position < len(self._names) and self._names[position] == name:
            return
        self._keys.insert(position, key)
        self._names.insert(position, name)

    def remove(self, name: str) -> None:
        position = self._find(name)
        if position >= 0:
            del self._keys[position]
            del self._names[position]

    def slot(self, me: str, period: int, interval: int) -> tuple[int, str] | None:
        """``(phase, target)``: ``me`` probes ``target`` at tick ``phase`` (``0 <= phase <
        interval``) of ``period``. None when ``me`` is not in the ring or is alone in it."""
        n = len(self._names)
        position = self._find(me)
        if n < 2 or position < 0:
            return None
        offset = 1 + period % (n - 1)
        return phase_of(me, interval), self._names[(position + offset) % n]

    def _find(self, name: str) -> int:
        """``name``'s position, or -1 when it is not in the ring."""
        position = self._place(name)[1]
        found = position < len(self._names) and self._names[position] == name
        return position if found else -1

    def _place(self, name: str) -> tuple[int, int]:
        """``name``'s key, and where it is or would go in ``(key, name)`` order."""
        key = ring_key(name)
        keys, names = self._keys, self._names
        position = bisect.bisect_left(keys, key)
        while position < len(keys) and keys[position] == key and names[position] < name:
            position += 1  # equal keys (one in 2^64): order by name
        return key, position
