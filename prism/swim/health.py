"""Lifeguard's local health multiplier (LHM): a node that sees signs that *it* is the slow
one waits longer before it accuses others.

Theory of operation. A saturating score in ``0..max_multiplier - 1`` (Lifeguard §IV;
memberlist ``awareness.go``) moves with evidence about this node's own health:

* +1 for a failed probe when no relay could vouch for our links (no nack-capable helper),
  or +1 for every expected nack that did not arrive: relays that cannot even answer us
  mean the problem is likely here, not at the target;
* +1 when this node must refute a suspicion about itself: others found it slow;
* -1 for every successful probe.

A failed probe where every relay nacked costs nothing: the relays are reachable, so the
target is the one in trouble. The probe interval and probe timeout are multiplied by
``score + 1``: an overloaded node probes less often and waits longer, so its late
processing stops turning into false suspicions of healthy members.
"""

from __future__ import annotations


class Awareness:
    """The local health score. ``score`` is 0 when healthy."""

    def __init__(self, max_multiplier: int) -> None:
        if max_multiplier < 1:
            raise ValueError("max_multiplier must be at least 1")
        self._max = max_multiplier
        self.score = 0

    def apply(self, delta: int) -> None:
        """Move the score by ``delta``, saturating at ``0`` and ``max_multiplier - 1``."""
        self.score = min(self._max - 1, max(0, self.score + delta))

    def scale(self, ticks: int) -> int:
        """``ticks`` stretched by the current health: ``ticks * (score + 1)``."""
        return ticks * (self.score + 1)
