"""The Raft log held by one core: entries in memory, a compaction marker, and how much of it
is durable.

Theory of operation. The log is a list of consecutive entries following a compaction marker
(``snapshot_index``, ``snapshot_term``); index 0 with term 0 is the marker of an empty log.
Two cursors track persistence (the contract of ``Ready``):

* ``stable_index``: entries up to here are known durable on this node's disk;
* ``_unpersisted_from``: the first index not yet handed to the caller in a ``Ready``.

``take_unpersisted()`` hands out the tail to persist; ``stable_to()`` confirms it later,
but only if the entry at that index is still the one that was written: a conflict may have
truncated and replaced it in between (etcd-io/etcd#1690, the unstable-log ABA race).
Truncation only ever happens on a term conflict (Raft §5.3, AppendEntries rule 3); a stale or
duplicated AppendEntries whose entries are already present truncates nothing, which matters
on UDP where datagrams are duplicated and reordered.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import final

from prism.raft.messages import Entry


@final
class RaftLog:
    """Entries ``snapshot_index + 1 .. last_index``, in order.

    Invariant: ``self._entries[i].index == self.snapshot_index + 1 + i``.
    Invariant: ``snapshot_index <= stable_index <= last_index``.
    Invariant: ``stable_index < _unpersisted_from <= last_index + 1``.
    """

    def __init__(
        self,
        entries: Sequence[Entry] = (),
        *,
        snapshot_index: int = 0,
        snapshot_term: int = 0,
    ) -> None:
        self.snapshot_index = snapshot_index
        self.snapshot_term = snapshot_term
        self._entries: list[Entry] = []
        expected = snapshot_index + 1
        for entry in entries:
            if entry.index != expected:
                raise ValueError(f"entry {entry.index} does not follow {expected - 1}")
            self._entries.append(entry)
            expected += 1
        # Entries given at construction come from storage: they are durable.
        self.stable_index = self.last_index
        self._unpersisted_from = self.last_index + 1

    @property
    def first_index(self) -> int:
        return self.snapshot_index + 1

    @property
    def last_index(self) -> int:
        return self.snapshot_index + len(self._entries)

    @property
    def last_term(self) -> int:
        return self._entries[-1].term if self._entries else self.snapshot_term

    def term_at(self, index: int) -> int | None:
        """The term of the entry at ``index``; None when compacted away or not present."""
        if index == self.snapshot_index:
            return self.snapshot_term
        if index < self.snapshot_index or index > self.last_index:
            return None
        return self._entries[index - self.snapshot_index - 1].term

    def entry(self, index: int) -> Entry:
        if index <= self.snapshot_index or index > self.last_index:
            raise IndexError(f"no entry {index} in log ({self.first_index}..{self.last_index})")
        return self._entries[index - self.snapshot_index - 1]

    def slice(self, lo: int, hi: int) -> list[Entry]:
        """Entries with ``lo <= index < hi`` (clipped to what the log holds)."""
        lo = max(lo, self.first_index)
        hi = min(hi, self.last_index + 1)
        if lo >= hi:
            return []
        base = self.snapshot_index + 1
        return self._entries[lo - base : hi - base]

    def batch_from(self, lo: int, *, max_bytes: int, max_entries: int) -> list[Entry]:
        """Entries from ``lo`` up to a byte and count budget; at least one if any exists."""
        out: list[Entry] = []
        size = 0
        for entry in self.slice(lo, lo + max_entries):
            size += len(entry.data) + len(entry.client_id) + 16
            if out and size > max_bytes:
                break
            out.append(entry)
        return out

    def match_term(self, index: int, term: int) -> bool:
        return self.term_at(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Whether a log ending at (last_index, last_term) is at least as up to date as this
        one (Raft §5.4.1: compare last terms, then lengths)."""
        return last_term > self.last_term or (
            last_term == self.last_term and last_index >= self.last_index
        )

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest index <= ``index`` whose term is <= ``term``, with its term.

        Used on both sides of the fast back-off: the follower names where the leader could
        resume, and the leader maps that hint onto its own log, so a divergent tail costs
        one round trip per term rather than one per entry.
        """
        index = min(index, self.last_index)
        while index > self.snapshot_index:
            at = self.term_at(index)
            if at is not None and at <= term:
                return index, at
            index -= 1
        return self.snapshot_index, self.snapshot_term

    def append(self, entries: Sequence[Entry]) -> None:
        """Append entries that directly follow the last one (the leader's own proposals)."""
        for entry in entries:
            if entry.index != self.last_index + 1:
                raise ValueError(f"entry {entry.index} does not follow {self.last_index}")
            self._entries.append(entry)

    def append_next(self, entry: Entry) -> None:
        """``append([entry])`` for one entry, as a leader appends each proposal."""
        if entry.index != self.snapshot_index + len(self._entries) + 1:
            raise ValueError(f"entry {entry.index} does not follow {self.last_index}")
        self._entries.append(entry)

    def maybe_append(self, prev_index: int, prev_term: int, entries: Sequence[Entry]) -> int | None:
        """Follower side of AppendEntries (Raft Figure 2, receiver rules 2-4).

        Returns the index of the last entry the leader sent (now matching the leader), or
        None when the log has no entry ``prev_index`` with ``prev_term``.
        """
        if not self.match_term(prev_index, prev_term):
            return None
        if prev_index == self.last_index:
            # At the end of the log, the steady state: nothing to compare or truncate, so
            # no lookup per entry; the indexes are still checked, in one plain loop.
            expected = prev_index + 1
            for entry in entries:
                if entry.index != expected:
                    raise ValueError(f"entry {entry.index} does not follow {expected - 1}")
                expected += 1
            self._entries.extend(entries)
            return prev_index + len(entries)
        for position, entry in enumerate(entries):
            existing = self.term_at(entry.index)
            if existing == entry.term:
                continue  # already present: a duplicate must not truncate anything
            if existing is None and entry.index <= self.snapshot_index:
                continue  # compacted, therefore committed, therefore identical
            self._truncate_from(entry.index)
            self.append(entries[position:])
            break
        return prev_index + len(entries)

    def _truncate_from(self, index: int) -> None:
        """Remove entries ``index..last``; they were never durable-and-committed."""
        if index <= self.snapshot_index:
            raise ValueError("cannot truncate compacted entries")
        del self._entries[index - self.snapshot_index - 1 :]
        self.stable_index = min(self.stable_index, index - 1)
        self._unpersisted_from = min(self._unpersisted_from, index)

    def has_unpersisted(self) -> bool:
        return self._unpersisted_from <= self.last_index

    def take_unpersisted(self) -> tuple[Entry, ...]:
        """The entries not yet handed out for persistence; hands them out."""
        out = tuple(self.slice(self._unpersisted_from, self.last_index + 1))
        self._unpersisted_from = self.last_index + 1
        return out

    def stable_to(self, index: int, term: int) -> None:
        """Entries up to (index, term) are durable, if that entry is still in the log.

        Only one write may be in flight (the ``Ready`` / ``advance`` contract). If a
        conflict replaced entries of that write and a later append restored the same
        (index, term), log matching makes the restored entries identical to the written
        ones, so they are durable too and need not be handed out again.
        """
        if self.term_at(index) == term and index > self.stable_index:
            self.stable_index = index
            self._unpersisted_from = max(self._unpersisted_from, index + 1)

    def install_snapshot(self, index: int, term: int) -> None:
        """A snapshot up to (``index``, ``term``) from the leader replaces the log's prefix
        (Raft Figure 13): entries after it are kept if the entry at ``index`` has ``term``
        (rule 6), otherwise the whole log is discarded (rule 7). Storage applies the same
        rule when the snapshot is saved, so memory and disk agree."""
        if index <= self.snapshot_index:
            return
        if self.term_at(index) == term:
            del self._entries[: index - self.snapshot_index]
            self.stable_index = max(self.stable_index, index)
            self._unpersisted_from = max(self._unpersisted_from, index + 1)
        else:
            # Discarded entries were durable, but what later takes their indexes is not.
            self._entries = []
            self.stable_index = index
            self._unpersisted_from = index + 1
        self.snapshot_index = index
        self.snapshot_term = term

    def compact(self, index: int) -> None:
        """Drop entries up to ``index`` (already durable and applied, behind a snapshot)."""
        if index <= self.snapshot_index:
            return
        if index > self.stable_index:
            raise ValueError(f"cannot compact past the durable index {self.stable_index}")
        term = self.term_at(index)
        assert term is not None
        del self._entries[: index - self.snapshot_index]
        self.snapshot_index = index
        self.snapshot_term = term
