"""Commit notices a leader holds until its next tick.

An AppendEntries without entries from a leader only tells a follower the new commit index
(or that the leader lives). Sent at once after every commit, each costs the follower a save
and an answer per batch; under load the next batch of entries tells the follower the same
thing anyway. So a leader holds such a notice until its next tick, keeps only the newest
per follower, and drops it if an append that tells as much goes to that follower first, or
if by the tick it no longer leads in the notice's term (a follower would take a stale one
for a sign of a live leader). To Raft a held notice is a datagram delayed by up to one tick,
or lost: it tolerates both.

The trio driver and the simulator both send through ``NoticeHold``, so the simulator tests
the very timing the driver has.
"""

from __future__ import annotations

from typing import final

from prism.raft.messages import AppendEntries
from prism.raft.ready import Outbound


@final
class NoticeHold:
    """One leader's held notices, newest per follower, in the order first held."""

    def __init__(self) -> None:
        self._held: dict[str, Outbound] = {}
        self.superseded = 0  # notices dropped: a newer one, or an append, told as much

    def __bool__(self) -> bool:
        return bool(self._held)

    def admit(self, out: Outbound, *, leading: bool) -> bool:
        """Whether ``out`` goes now. A leader's commit-only append is held instead (False);
        an append with entries releases the held notice it makes redundant."""
        message = out.message
        if type(message) is not AppendEntries:
            return True
        held = self._held
        if not message.entries and leading:
            if out.to in held:
                self.superseded += 1
            held[out.to] = out  # the newer notice tells at least as much as the older
            return False
        before = held.get(out.to)
        if before is not None and _tells_as_much(message, before.message):
            del held[out.to]
            self.superseded += 1
        return True

    def release(self, *, leading: bool, term: int) -> list[Outbound]:
        """At a tick: take the held notices that are still true (leading, in ``term``)."""
        held = list(self._held.values())
        self._held.clear()
        if not leading:
            return []
        return [out for out in held if out.message.term == term]

    def hold_again(self, out: Outbound) -> None:
        """Keep a released notice for the next tick (the socket had no room), unless a newer
        one was held meanwhile."""
        self._held.setdefault(out.to, out)


def _tells_as_much(append: AppendEntries, notice: object) -> bool:
    """Whether ``append`` tells its follower all that the held commit-only ``notice`` does."""
    return (
        type(notice) is AppendEntries
        and notice.term == append.term
        and notice.leader_commit <= append.leader_commit
    )
