"""``RaftLog`` against a naive model: a plain list of every entry ever kept, a compaction
marker and the two persistence cursors, updated the obvious way.

Generated logs respect Raft's Log Matching property (§5.3): an (index, term) pair names one
entry and one history before it, as it does when one leader per term creates entries. Writes
complete in the order they were handed out, as on a disk; a write may complete after a
conflict replaced its entries in memory (the ABA race of ``RaftLog.stable_to``).
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from prism.raft.log import RaftLog
from prism.raft.messages import Entry

_serial = itertools.count()


class RaftLogMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.log = RaftLog()
        # The model. ``entries[i - 1]`` is entry ``i``; entries up to ``snapshot`` stay in the
        # list (compacted) so the marker's term is at hand.
        self.entries: list[Entry] = []
        self.snapshot = 0
        self.stable = 0
        self.unpersisted_from = 1
        self.writes: list[tuple[Entry, ...]] = []  # handed out, not yet completed, oldest first
        self.disk: list[Entry] = []  # what completed writes left on disk
        # (index, term) -> (terms before it, the entry): the one entry that pair can name.
        self.canon: dict[tuple[int, int], tuple[tuple[int, ...], Entry]] = {}

    # ------------------------------------------------------------------ the model

    @property
    def last(self) -> int:
        return len(self.entries)

    def term_at(self, index: int) -> int | None:
        if index == self.snapshot:
            return self.entries[index - 1].term if index else 0
        if index < self.snapshot or index > self.last:
            return None
        return self.entries[index - 1].term

    @property
    def max_term(self) -> int:
        return max((e.term for e in self.entries), default=0)

    def make(self, index: int, term: int, before: tuple[int, ...]) -> Entry | None:
        """The entry (index, term) after a log of terms ``before``; None if that pair already
        names an entry with another history (Log Matching forbids a second one)."""
        known = self.canon.get((index, term))
        if known is not None:
            return known[1] if known[0] == before else None
        # Unique data, so comparing entries tells two entries with the same pair apart.
        entry = Entry(term=term, index=index, data=f"{next(_serial)}".encode())
        self.canon[(index, term)] = (before, entry)
        return entry

    def make_fresh(self, index: int, term: int, before: tuple[int, ...]) -> Entry:
        """``make``, moving to a term no entry has used yet when the pair is taken."""
        entry = self.make(index, term, before)
        if entry is None:
            entry = self.make(index, max(t for _, t in self.canon) + 1, before)
            assert entry is not None
        return entry

    def truncate_from(self, index: int) -> None:
        del self.entries[index - 1 :]
        self.stable = min(self.stable, index - 1)
        self.unpersisted_from = min(self.unpersisted_from, index)

    # ------------------------------------------------------------------ rules

    @initialize(terms=st.lists(st.integers(1, 3), max_size=4))
    def start(self, terms: list[int]) -> None:
        """Start from entries read back from storage (durable by definition)."""
        ordered = sorted(terms)
        entries = [
            self.make_fresh(i, t, tuple(ordered[: i - 1])) for i, t in enumerate(ordered, start=1)
        ]
        self.log = RaftLog(entries)
        self.entries = list(entries)
        self.disk = list(entries)
        self.stable = self.last
        self.unpersisted_from = self.last + 1

    @rule(count=st.integers(1, 4), bump=st.integers(0, 2), one_by_one=st.booleans())
    def append(self, count: int, bump: int, one_by_one: bool) -> None:
        """A leader's appends: as a list, or each proposal alone (``append_next``)."""
        term = (self.log.last_term or 1) + bump
        for _ in range(count):
            before = tuple(e.term for e in self.entries)
            entry = self.make_fresh(self.last + 1, term, before)
            term = entry.term
            if one_by_one:
                self.log.append_next(entry)
            else:
                self.log.append([entry])
            self.entries.append(entry)

    @rule(data=st.data())
    def maybe_append(self, data: st.DataObject) -> None:
        prev = data.draw(st.integers(max(0, self.snapshot - 1), self.last + 1), label="prev")
        actual = self.term_at(prev)
        prev_term = data.draw(
            st.one_of(st.just(actual if actual is not None else 0), st.integers(0, 6)),
            label="prev_term",
        )
        # The entries a leader would send: they follow the history our log has up to prev.
        before = [e.term for e in self.entries[:prev]]
        new: list[Entry] = []
        floor = prev_term
        diverged = False
        for index in range(prev + 1, prev + 1 + data.draw(st.integers(0, 5), label="count")):
            existing = self.term_at(index)
            if (
                not diverged
                and existing is not None
                and existing >= floor
                and data.draw(st.booleans(), label="duplicate")
            ):
                entry = self.entries[index - 1]  # what the log holds already
            else:
                term = data.draw(st.integers(floor, floor + 2), label="term")
                entry = self.make_fresh(index, term, tuple(before))
            diverged = diverged or entry.term != existing
            new.append(entry)
            before.append(entry.term)
            floor = entry.term

        got = self.log.maybe_append(prev, prev_term, new)

        if actual is None or actual != prev_term:
            assert got is None
            return
        assert got == prev + len(new)
        for position, entry in enumerate(new):
            if self.term_at(entry.index) == entry.term:
                continue
            event("maybe_append: conflict truncates" if entry.index <= self.last else "appends")
            self.truncate_from(entry.index)
            self.entries.extend(new[position:])
            break

    @precondition(lambda self: not self.writes)  # one write in flight: the Ready contract
    @rule()
    def take_unpersisted(self) -> None:
        handed = self.log.take_unpersisted()
        assert list(handed) == self.entries[self.unpersisted_from - 1 :]
        self.unpersisted_from = self.last + 1
        if handed:
            self.writes.append(handed)

    @precondition(lambda self: self.writes)
    @rule()
    def stable_to(self) -> None:
        """The oldest outstanding write completes: it reaches the disk, then the log hears."""
        write = self.writes.pop(0)
        del self.disk[write[0].index - 1 :]
        self.disk.extend(write)
        index, term = write[-1].index, write[-1].term
        self.log.stable_to(index, term)
        if self.term_at(index) == term and index > self.stable:
            self.stable = index
            # Restored after a conflict: identical by log matching, so already written.
            self.unpersisted_from = max(self.unpersisted_from, index + 1)
        else:
            event("stable_to: a replaced or older write completes")

    @precondition(lambda self: self.stable > self.snapshot)
    @rule(data=st.data())
    def compact(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(self.snapshot, self.stable))
        self.log.compact(index)
        self.snapshot = index

    @precondition(lambda self: self.stable < self.last)
    @rule(data=st.data())
    def compact_past_stable_refused(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(self.stable + 1, self.last))
        with pytest.raises(ValueError, match="durable"):
            self.log.compact(index)

    @rule(data=st.data())
    def find_conflict_by_term(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(0, self.last + 2))
        term = data.draw(st.integers(0, self.max_term + 1))
        got_index, got_term = self.log.find_conflict_by_term(index, term)
        candidates = [
            i
            for i in range(self.snapshot + 1, min(index, self.last) + 1)
            if self.entries[i - 1].term <= term
        ]
        if candidates:
            assert got_index == max(candidates)
            assert got_term == self.entries[got_index - 1].term <= term
        else:
            assert got_index == self.snapshot
            assert got_term == self.term_at(self.snapshot)

    @rule(
        offset=st.integers(0, 8),
        max_bytes=st.integers(1, 60),
        max_entries=st.integers(1, 6),
    )
    def batch_from(self, offset: int, max_bytes: int, max_entries: int) -> None:
        lo = self.snapshot + 1 + offset  # the core never asks for compacted entries
        batch = self.log.batch_from(lo, max_bytes=max_bytes, max_entries=max_entries)
        available = self.entries[max(lo, self.snapshot + 1) - 1 :]
        assert batch == available[: len(batch)]
        assert len(batch) <= max_entries
        assert bool(batch) == bool(available)
        assert len(batch) <= 1 or sum(len(e.data) for e in batch) <= max_bytes

    # ------------------------------------------------------------------ invariants

    @invariant()
    def matches_model(self) -> None:
        log = self.log
        assert log.snapshot_index == self.snapshot
        assert log.first_index == self.snapshot + 1
        assert log.last_index == self.last
        assert log.last_term == self.term_at(self.last)
        assert log.snapshot_term == self.term_at(self.snapshot)
        for index in range(self.last + 3):
            assert log.term_at(index) == self.term_at(index), index
        assert log.slice(0, self.last + 5) == self.entries[self.snapshot :]
        if self.last > self.snapshot:
            assert log.entry(self.last) == self.entries[-1]
        with pytest.raises(IndexError):
            log.entry(self.snapshot)

    @invariant()
    def persistence_cursors(self) -> None:
        log = self.log
        assert self.snapshot <= log.stable_index <= log.last_index
        assert log.stable_index == self.stable
        assert log.has_unpersisted() == (self.unpersisted_from <= self.last)

    @invariant()
    def stable_entries_are_on_disk(self) -> None:
        """What the log calls durable is what the disk holds (Raft Figure 2)."""
        for index in range(self.snapshot + 1, self.log.stable_index + 1):
            assert self.disk[index - 1] == self.log.entry(index), index

    @invariant()
    def terms_never_decrease(self) -> None:
        terms = [entry.term for entry in self.entries]
        assert terms == sorted(terms)


TestRaftLog = pytest.mark.slow(RaftLogMachine.TestCase)
TestRaftLog.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


def test_log_refuses_entries_that_do_not_follow() -> None:
    """The log's index invariant holds at construction and on append."""
    with pytest.raises(ValueError, match="follow"):
        RaftLog([Entry(term=1, index=2)])
    log = RaftLog([Entry(term=1, index=1)])
    with pytest.raises(ValueError, match="follow"):
        log.append([Entry(term=1, index=3)])
    with pytest.raises(ValueError, match="does not follow 1"):
        log.append_next(Entry(term=1, index=3))
    with pytest.raises(ValueError, match="does not follow 1"):
        log.append_next(Entry(term=1, index=1))
