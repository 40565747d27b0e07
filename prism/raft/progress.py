"""What a leader knows of each follower's log, and how fast it may send (etcd's tracker).

A follower is either probed (``PROBE``: one AppendEntries at a time, waiting for the answer,
used after a rejection or at the start of a term) or replicated to (``REPLICATE``: pipelined,
``next`` moved forward optimistically, up to ``max_inflight`` unanswered appends). A rejection
sends it back to probing; a success while probing lets it pipeline. A follower whose next
entry the leader has compacted away is sent the snapshot (``SNAPSHOT``: one chunk at a time,
each sent when the previous one is acknowledged, resent on a heartbeat answer if lost); once
it is installed the follower is probed from the entry after it.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import final

from prism.raft.snapshot import Snapshot


class ProgressState(enum.StrEnum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


@final
class Progress:
    """Replication state of one follower, kept by the leader.

    Invariant: ``match < next``.
    Invariant: ``inflights`` holds increasing last-indexes of unanswered appends (REPLICATE).
    """

    __slots__ = (
        "inflights",
        "last_heard_tick",
        "match",
        "max_inflight",
        "next",
        "probe_sent",
        "snapshot",
        "snapshot_offset",
        "state",
    )

    def __init__(self, *, next_index: int, max_inflight: int, now_tick: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False  # PROBE: an append is outstanding; wait for its answer
        self.inflights: deque[int] = deque()
        self.max_inflight = max_inflight
        self.last_heard_tick = now_tick  # a new leader gives everyone one timeout of grace
        self.snapshot: Snapshot | None = None  # SNAPSHOT: the one being sent (it may be
        self.snapshot_offset = 0  # superseded meanwhile; this one is finished first)

    def is_paused(self) -> bool:
        if self.state is ProgressState.SNAPSHOT:
            return True  # appends wait until the snapshot is installed
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        return len(self.inflights) >= self.max_inflight

    def maybe_update(self, match: int) -> bool:
        """Record an acknowledged match index; True if it moved forward."""
        updated = match > self.match
        if updated:
            self.match = match
            self.probe_sent = False
        self.next = max(self.next, match + 1)
        while self.inflights and self.inflights[0] <= match:
            self.inflights.popleft()
        return updated

    def maybe_decrease_to(self, rejected: int, hint_next: int) -> bool:
        """Handle a rejection of the append whose ``prev_log_index`` was ``rejected``.

        Returns False for a stale rejection (of an append older than what we know).
        """
        if self.state is ProgressState.SNAPSHOT:
            return False  # the snapshot in flight settles where this follower stands
        if rejected <= self.match:
            # A follower cannot lack an entry it acknowledged: a stale (reordered) reply.
            # Resending at once would loop at network speed; the next heartbeat retries.
            return False
        if self.state is ProgressState.REPLICATE:
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, hint_next), self.match + 1)
        self.probe_sent = False
        return True

    def become_probe(self) -> None:
        self.state = ProgressState.PROBE
        self.next = self.match + 1
        self.probe_sent = False
        self.inflights.clear()
        self.snapshot = None

    def become_snapshot(self, snapshot: Snapshot) -> None:
        self.state = ProgressState.SNAPSHOT
        self.snapshot = snapshot
        self.snapshot_offset = 0
        self.probe_sent = False
        self.inflights.clear()

    def snapshot_installed(self, index: int) -> None:
        """The follower holds everything up to ``index``: probe from the entry after it."""
        self.match = max(self.match, index)
        self.become_probe()

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.probe_sent = False
        self.inflights.clear()

    def sent(self, last_index: int) -> None:
        """An append carrying entries up to ``last_index`` was sent."""
        if self.state is ProgressState.REPLICATE:
            self.next = last_index + 1
            self.inflights.append(last_index)
        else:
            self.probe_sent = True
