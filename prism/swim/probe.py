"""Randomized round-robin probe order (SWIM §4.3).

Theory of operation. Members are probed in the order of a list that is shuffled (with the
core's seeded RNG) each time a pass over it completes; a newly learned member is inserted
at a random position. Every member is therefore probed once per pass, and two probes of
the same member are at most ``2n - 1`` protocol periods apart, while the order stays
unpredictable. Members that must not be probed now (this node, dead or left ones) stay in
the list and are skipped, so a member that comes back keeps its place.
"""

from __future__ import annotations

import random
from collections.abc import Callable


class ProbeOrder:
    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._names: list[str] = []
        self._known: dict[str, None] = {}  # the names in ``_names``, for O(1) membership
        self._index = 0  # next position to look at; a pass ends when it reaches the end

    def __len__(self) -> int:
        return len(self._names)

    def add(self, name: str) -> None:
        if name in self._known:
            return
        self._known[name] = None
        # A position in 0..n. ``random()`` is one C call; ``randrange`` is several Python
        # ones, and a 1,000-member cold start inserts a million names.
        position = int(self._rng.random() * (len(self._names) + 1))
        self._names.insert(position, name)
        if position < self._index:
            self._index += 1  # keep pointing at the same next member

    def remove(self, name: str) -> None:
        if name not in self._known:
            return
        del self._known[name]
        position = self._names.index(name)
        del self._names[position]
        if position < self._index:
            self._index -= 1

    def next(self, eligible: Callable[[str], bool]) -> str | None:
        """The next member to probe for which ``eligible`` holds, or None if none does."""
        for _ in range(len(self._names)):
            if self._index >= len(self._names):
                self._rng.shuffle(self._names)
                self._index = 0
            name = self._names[self._index]
            self._index += 1
            if eligible(name):
                return name
        return None
