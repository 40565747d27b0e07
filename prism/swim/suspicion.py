"""Lifeguard's suspicion timer (LHA-suspicion): long at first, shorter with each
independent confirmation.

Theory of operation. When a member is first suspected, its timer is set to ``max_ticks``.
Every *distinct* member that independently suspects it too (a ``suspect`` update with a new
``origin``) is a confirmation, and the timeout becomes (Lifeguard §IV, memberlist
``suspicion.go``)::

    timeout(c) = max(min_ticks, max_ticks - (max_ticks - min_ticks) * log(c + 1) / log(k + 1))

counted from the moment the suspicion started, where ``k`` is the number of confirmations
expected. With ``k`` confirmations the timeout reaches ``min_ticks``; with none a member
that is merely slow to answer one prober has the whole ``max_ticks`` to refute.

A *lone* accusation (no confirmation came although ``k`` were expected) is not trusted to
kill on its own: when its timer runs out the member checks for itself, with a probe of the
suspect (``checking``); only if that probe fails too (``checked``) is the suspect declared
dead, and if it is answered the suspicion starts over (``restart``). So is an accusation
the member only heard of (none of its own probes failed during it: not ``witnessed``;
being named as a confirmer is not enough, since a push-pull names its sender). See
``SwimConfig.check_lone_suspicions`` and ``check_hearsay_suspicions``.

The bounds scale with the cluster, ``min = mult * max(1, log10 n) * probe interval`` and
``max = max_mult * min``: in a larger cluster news needs more rounds to reach the suspect.
``k = mult - 2``, or 0 when fewer than ``k + 2`` members exist (nobody could confirm).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


def suspicion_bounds(
    *, members: int, suspicion_mult: int, max_timeout_mult: int, probe_interval_ticks: int
) -> tuple[int, int, int]:
    """``(min_ticks, max_ticks, k)`` for a cluster of ``members`` (this node included)."""
    scale = max(1.0, math.log10(max(1, members)))
    min_ticks = max(1, math.floor(suspicion_mult * scale * probe_interval_ticks))
    max_ticks = max_timeout_mult * min_ticks
    k = suspicion_mult - 2
    if members - 2 < k:
        k = 0
    return min_ticks, max_ticks, max(0, k)


def remaining_suspicion_ticks(confirmations: int, *, k: int, min_ticks: int, max_ticks: int) -> int:
    """The timeout, in ticks from the start of the suspicion, after ``confirmations``."""
    if k < 1:
        return min_ticks
    fraction = math.log(confirmations + 1) / math.log(k + 1)
    timeout = math.floor(max_ticks - (max_ticks - min_ticks) * fraction)
    return max(min_ticks, timeout)


@dataclass(slots=True)
class Suspicion:
    """One running suspicion. ``confirmers`` holds the origins seen, the first included
    (the first does not count as a confirmation: it is the accusation itself), up to the
    ``k`` confirmations that bring the timer to its minimum.

    Invariant: ``confirmers`` is a dict used as an ordered set (never a ``set`` of str).
    """

    start_tick: int
    min_ticks: int
    max_ticks: int
    k: int
    confirmers: dict[str, None] = field(default_factory=dict)
    checking: bool = False  # our own probe of the suspect is due or under way
    checked: bool = False  # and it failed: the accusation is ours too
    _deadline: int = field(default=-1, init=False, repr=False)  # cached; -1: to compute
    began_tick: int = field(default=-1, init=False)  # start_tick before any restart
    merged: bool = False  # it began with a push-pull's state, not with gossip or a probe
    witnessed: bool = False  # a probe of our own failed during it

    def __post_init__(self) -> None:
        self.began_tick = self.start_tick

    @property
    def confirmations(self) -> int:
        return max(0, len(self.confirmers) - 1)

    def confirm(self, origin: str) -> bool:
        """Record ``origin``'s suspicion; True if it is a new, independent one that still
        counts. Past ``k`` confirmations none does (memberlist's rule): the timer is at its
        minimum already, and passing each further accuser on would keep every member
        gossiping for the whole suspicion, as one more member accuses every period."""
        if origin in self.confirmers or len(self.confirmers) > self.k:
            return False
        self.confirmers[origin] = None
        self._deadline = -1
        return len(self.confirmers) > 1

    @property
    def is_lone(self) -> bool:
        """Confirmations were expected and none came: one member's word only."""
        return self.k > 0 and self.confirmations == 0

    def restart(self, tick: int) -> None:
        """Run the timer again from ``tick`` (the suspect answered our check)."""
        self.start_tick = tick
        self.checking = False
        self._deadline = -1

    def deadline(self) -> int:
        """The tick at which the suspected member is declared dead."""
        if self._deadline < 0:
            self._deadline = self.start_tick + remaining_suspicion_ticks(
                self.confirmations, k=self.k, min_ticks=self.min_ticks, max_ticks=self.max_ticks
            )
        return self._deadline
