"""The in-memory image of a disk storage, and the one set of rules that changes it.

The writer and recovery share this module: a write validates its records with ``Bounds``,
appends them to the WAL, then applies them with ``LogState.apply``; recovery replays the WAL
through exactly the same two steps. So what ``open`` rebuilds is, record for record, what
the writer held before it stopped, and the rules exist once.

The rules are ``MemoryStorage``'s (``prism.raft.storage``), with one difference: when an
append starts right after the snapshot while the log still ends before it (possible only if
a snapshot was taken or installed past the end of the log and its trailing entries were
kept), those stale entries are dropped rather than left in front of a gap, so the log is
always consecutive as the ``Storage`` contract says. They are all at or below the snapshot's
index, which covers them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from prism.raft.disk.records import Compact, Record, SegmentStart, SnapshotAction, SnapshotMark
from prism.raft.messages import Entry
from prism.raft.ready import HardState


@dataclass(frozen=True, slots=True)
class Bounds:
    """The two numbers every record is checked against, without touching the entries.

    ``last_index`` is ``MemoryStorage.last_index``: the last index covered by an entry or by
    the snapshot. Checking a whole save group costs one small object per record, so a save
    is refused before a byte of it is written.
    """

    snapshot_index: int
    last_index: int

    def after(self, record: Record) -> Bounds:
        """The bounds once ``record`` is applied; ValueError if it may not be."""
        match record:
            case Entry(index=index):
                if index > self.last_index + 1:
                    raise ValueError(f"gap: storage ends at {self.last_index}, got {index}")
                if index <= self.snapshot_index:
                    raise ValueError(
                        f"entry {index} is behind the snapshot at {self.snapshot_index}"
                    )
                return Bounds(self.snapshot_index, index)
            case SnapshotMark(index=index, action=action):
                if index <= self.snapshot_index:
                    raise ValueError(
                        f"snapshot at {index} is not newer than the one at {self.snapshot_index}"
                    )
                if action is SnapshotAction.DROP_ALL:
                    return Bounds(index, index)
                return Bounds(index, max(self.last_index, index))
            case Compact(index=index):
                if index > self.snapshot_index:
                    raise ValueError(
                        f"cannot compact to {index}, past the snapshot at {self.snapshot_index}"
                    )
                return self
            case HardState():
                return self
            case SegmentStart():
                raise ValueError("a segment header inside a segment")


@dataclass(slots=True, kw_only=True)
class LogState:
    """Hard state, the snapshot in force (by index and term) and the entries."""

    hard_state: HardState = field(default_factory=HardState)
    snapshot_index: int = 0
    snapshot_term: int = 0
    # Invariant: covers the entries and the snapshot, as Bounds.last_index describes. Kept
    # apart from the entries because after compaction the entries may not reach it.
    last_index: int = 0
    # Invariant: consecutive indexes; every index above snapshot_index is here up to
    # last_index; any below it are kept behind a local snapshot for slow followers.
    entries: list[Entry] = field(default_factory=list)

    @classmethod
    def from_segment_start(cls, start: SegmentStart) -> LogState:
        """The state recovery starts from when the oldest segment left is ``start``'s: its
        entries up to ``last_index`` are compacted away, so the list starts empty."""
        return cls(
            hard_state=start.hard_state,
            snapshot_index=start.snapshot_index,
            snapshot_term=start.snapshot_term,
            last_index=start.last_index,
        )

    def segment_start(self, seq: int) -> SegmentStart:
        return SegmentStart(
            seq=seq,
            hard_state=self.hard_state,
            snapshot_index=self.snapshot_index,
            snapshot_term=self.snapshot_term,
            last_index=self.last_index,
        )

    @property
    def bounds(self) -> Bounds:
        return Bounds(self.snapshot_index, self.last_index)

    def install_action(self, index: int, term: int) -> SnapshotAction:
        """What installing a snapshot at ``index``/``term`` does to this log (Raft Figure 13,
        rules 6 and 7, as ``install_snapshot_into``): keep what follows a matching entry."""
        log = self.entries
        held = bool(log) and log[0].index <= index <= log[-1].index
        if held and log[index - log[0].index].term == term:
            return SnapshotAction.KEEP_AFTER
        return SnapshotAction.DROP_ALL

    def apply(self, record: Record) -> None:
        """Apply one record, or raise ValueError (changing nothing) if ``Bounds`` refuses it."""
        if type(record) is Entry and self.snapshot_index < record.index <= self.last_index + 1:
            self._append(record)  # what Bounds.after allows for an entry, without a Bounds
            self.last_index = record.index
            return
        if type(record) is HardState:  # in nearly every save; Bounds.after lets it through
            self.hard_state = record
            return
        after = self.bounds.after(record)
        match record:
            case Entry():
                self._append(record)
            case HardState():
                self.hard_state = record
            case SnapshotMark(index=index, term=term, action=action):
                if action is SnapshotAction.KEEP_AFTER:
                    self._drop_through(index)
                elif action is SnapshotAction.DROP_ALL:
                    self.entries.clear()
                self.snapshot_index, self.snapshot_term = index, term
            case Compact(index=index):
                self._drop_through(index)
        self.last_index = after.last_index

    def apply_all(self, records: Sequence[Record]) -> None:
        """``apply`` each record in turn; an entry that continues the log (every entry of a
        save but the first after a truncation) is appended here, without a call of its own."""
        log = self.entries
        for record in records:
            if (
                type(record) is Entry
                and record.index == self.last_index + 1
                and record.index > self.snapshot_index
                and (not log or log[-1].index == self.last_index)
            ):
                log.append(record)
                self.last_index = record.index
            else:
                self.apply(record)

    def _append(self, entry: Entry) -> None:
        log = self.entries
        if log and log[-1].index + 1 == entry.index:
            log.append(entry)  # continues the list: the common case, nothing to replace
            return
        if log:
            # Replace from entry.index on (Raft §5.3: a conflicting suffix goes).
            del log[max(0, entry.index - log[0].index) :]
        if log and log[-1].index + 1 != entry.index:
            # Stale entries at or below the snapshot, left before a gap: see the docstring.
            log.clear()
        log.append(entry)

    def _drop_through(self, index: int) -> None:
        if self.entries and self.entries[0].index <= index:
            del self.entries[: index - self.entries[0].index + 1]


def check_group(bounds: Bounds, records: Sequence[Record]) -> None:
    """Raise ValueError unless every record of a group may follow the one before it."""
    snapshot_index, last_index = bounds.snapshot_index, bounds.last_index
    for record in records:
        if type(record) is Entry and snapshot_index < record.index <= last_index + 1:
            last_index = record.index  # Bounds.after for an entry it accepts
            continue
        if type(record) is HardState:
            continue  # Bounds.after accepts it and changes nothing
        bounds = Bounds(snapshot_index, last_index).after(record)
        snapshot_index, last_index = bounds.snapshot_index, bounds.last_index
