"""What a Raft node keeps durable, as a contract, and its in-memory kind.

Every storage holds a hard state, at most one snapshot, and the log entries that follow the
snapshot. Three writes change it; each is durable when it returns:

* ``save(hard_state, entries, snapshot)``: one ``Ready``'s durable part. A snapshot (one
  received from the leader) is installed first: entries up to its index are dropped, and if
  the entry at its index is not of its term, every entry is dropped (Raft Figure 13, rules 6
  and 7). Then the log is replaced from ``entries[0].index`` on, then the hard state.
* ``save_snapshot(snapshot)``: a snapshot this node took of its own state machine. The log
  is left as it is (``compact`` trims it later, keeping trailing entries for slow followers).
* ``compact(index)``: drop entries up to ``index``, which must not pass the snapshot.

``MemoryStorage`` is what the simulator keeps for each node: after a crash, only what was
written here survives, exactly as only what was fsynced survives a power cut. The disk kind
(``prism.raft.disk``) passes the same checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, final

from prism.raft.messages import Entry
from prism.raft.ready import HardState
from prism.raft.snapshot import Snapshot


class Storage(Protocol):
    """The durable state of one Raft node; see the module docstring."""

    @property
    def hard_state(self) -> HardState: ...

    @property
    def snapshot(self) -> Snapshot | None: ...

    @property
    def entries(self) -> Sequence[Entry]:
        """The log: consecutive entries. They may begin at or before the snapshot's index
        (entries kept behind a local snapshot for slow followers); a loader skips those."""
        ...

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None = None,
    ) -> None: ...

    def save_snapshot(self, snapshot: Snapshot) -> None: ...

    def compact(self, index: int) -> None: ...


def install_snapshot_into(log: list[Entry], snapshot: Snapshot) -> None:
    """Drop from ``log`` (consecutive entries) what ``snapshot`` replaces (Figure 13, 6-7)."""
    meta = snapshot.meta
    keep_from = 0
    for position, entry in enumerate(log):
        if entry.index == meta.index:
            keep_from = position + 1 if entry.term == meta.term else len(log)
            break
        if entry.index > meta.index:
            keep_from = len(log)  # the snapshot's index is not in the log: nothing matches
            break
    else:
        keep_from = len(log)
    del log[:keep_from]


@final
class MemoryStorage:
    def __init__(self) -> None:
        self.hard_state = HardState()
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []

    @property
    def snapshot_index(self) -> int:
        return self.snapshot.meta.index if self.snapshot is not None else 0

    @property
    def last_index(self) -> int:
        """The last index the storage covers, by an entry or by the snapshot."""
        last_entry = self.entries[-1].index if self.entries else 0
        return max(last_entry, self.snapshot_index)

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None = None,
    ) -> None:
        if snapshot is not None and snapshot.meta.index > self.snapshot_index:
            install_snapshot_into(self.entries, snapshot)
            self.snapshot = snapshot
        if entries:
            first = entries[0].index
            if first > self.last_index + 1:
                raise ValueError(f"gap: storage ends at {self.last_index}, got {first}")
            if first <= self.snapshot_index:
                raise ValueError(f"entry {first} is behind the snapshot at {self.snapshot_index}")
            if self.entries:
                del self.entries[max(0, first - self.entries[0].index) :]
            self.entries.extend(entries)
        if hard_state is not None:
            self.hard_state = hard_state

    def save_snapshot(self, snapshot: Snapshot) -> None:
        if snapshot.meta.index > self.snapshot_index:
            self.snapshot = snapshot

    def compact(self, index: int) -> None:
        if index > self.snapshot_index:
            raise ValueError(
                f"cannot compact to {index}, past the snapshot at {self.snapshot_index}"
            )
        if self.entries and self.entries[0].index <= index:
            del self.entries[: index - self.entries[0].index + 1]
