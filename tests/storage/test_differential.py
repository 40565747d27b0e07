"""``DiskStorage`` against ``MemoryStorage`` under random sequences of writes, restarts
included: the same calls succeed or fail alike and leave the same state, with small segments
so that rotation and compaction's segment deletion run all the time.

The one documented difference (``prism.raft.disk``): where ``MemoryStorage`` would leave
entries in front of a gap (they are all covered by the snapshot), the disk kind drops them.
The model applies that rule to ``MemoryStorage``'s list after every call.
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from prism.raft.disk import DiskStorage
from prism.raft.messages import Entry
from prism.raft.ready import HardState
from prism.raft.storage import MemoryStorage
from tests.storage.helpers import AnyStorage, entries, snapshot, state_of

Write = Callable[[AnyStorage], None]


def consecutive_tail(log: list[Entry]) -> list[Entry]:
    """The entries after the last gap in ``log``."""
    start = 0
    for position in range(1, len(log)):
        if log[position].index != log[position - 1].index + 1:
            start = position
    return log[start:]


def term_at(storage: MemoryStorage, index: int) -> int | None:
    for item in storage.entries:
        if item.index == index:
            return item.term
    return None


def draw_hard_state(data: st.DataObject) -> HardState | None:
    hard_state: HardState | None = data.draw(
        st.none()
        | st.builds(
            HardState,
            term=st.integers(0, 9),
            vote=st.none() | st.sampled_from(["n1", "n2"]),
            commit=st.integers(0, 50),
        )
    )
    return hard_state


# Hypothesis leans towards the first choice: a valid write, four times in five.
_MOSTLY_VALID = st.sampled_from([True, True, True, True, False])


def draw_write(data: st.DataObject, model: MemoryStorage) -> tuple[str, str, Write]:
    """A write, valid four times in five, chosen for the model's current shape."""
    last, snap = model.last_index, model.snapshot_index
    kind = data.draw(st.sampled_from(["append", "append", "install", "take", "compact", "hard"]))
    hard_state = draw_hard_state(data)
    if kind == "append":
        wrong = [last + 2] + ([snap] if snap else [])  # a gap, or behind the snapshot
        valid = data.draw(_MOSTLY_VALID)
        first = data.draw(st.integers(snap + 1, last + 1) if valid else st.sampled_from(wrong))
        count = data.draw(st.integers(1, 4))
        term = data.draw(st.integers(1, 6))
        batch = entries(first, first + count - 1, term)
        return (
            kind,
            f"save({hard_state}, {first}..{first + count - 1}@{term})",
            (lambda s: s.save(hard_state, batch)),
        )
    if kind == "install":
        index = data.draw(st.integers(snap + 1, last + 3))
        held = term_at(model, index)
        term = data.draw(st.sampled_from([held or 1, 7]))
        after = entries(index + 1, index + data.draw(st.integers(0, 3)), term)
        return (
            kind,
            f"save({hard_state}, {len(after)} entries, snapshot {index}@{term})",
            (lambda s: s.save(hard_state, after, snapshot(index, term))),
        )
    if kind == "take":
        index = data.draw(st.integers(1, last + 2))
        term = term_at(model, index) or 1
        return (
            kind,
            f"save_snapshot({index}@{term})",
            (lambda s: s.save_snapshot(snapshot(index, term))),
        )
    if kind == "compact":
        valid = data.draw(_MOSTLY_VALID)
        index = data.draw(st.integers(0, snap)) if valid else snap + 1
        return kind, f"compact({index})", lambda s: s.compact(index)
    return kind, f"save({hard_state}, [])", lambda s: s.save(hard_state, [])


_cases = itertools.count()


@pytest.mark.slow
def test_disk_storage_matches_memory_storage(tmp_path: Path) -> None:
    @settings(max_examples=80, deadline=None)
    @given(st.data(), st.sampled_from([80, 300, 1 << 20]))
    def check(data: st.DataObject, segment_bytes: int) -> None:
        directory = tmp_path / f"case{next(_cases)}"
        model = MemoryStorage()

        def reopen() -> DiskStorage:
            return DiskStorage.open(directory, fsync=False, segment_bytes=segment_bytes)

        disk = reopen()
        try:
            for _ in range(data.draw(st.integers(1, 30), label="writes")):
                if data.draw(st.integers(0, 5)) == 0:
                    disk.close()
                    disk = reopen()
                    assert disk.recovery_notes == []
                    assert state_of(disk) == state_of(model)
                kind, description, write = draw_write(data, model)
                trial = copy.deepcopy(model)
                try:
                    write(trial)
                except ValueError as refusal:
                    event(f"{kind} refused")
                    before = state_of(disk)
                    with pytest.raises(ValueError, match=re.escape(str(refusal))):
                        write(disk)
                    assert state_of(disk) == before, description
                    continue
                write(disk)
                event(kind)
                if consecutive_tail(trial.entries) != trial.entries:
                    event("entries before a gap dropped")
                    trial.entries[:] = consecutive_tail(trial.entries)
                model = trial
                assert state_of(disk) == state_of(model), description
            event(f"segments at the end: {min(len(list(directory.glob('wal-*'))), 4)}+")
            disk.close()
            disk = reopen()
            assert state_of(disk) == state_of(model)
        finally:
            disk.close()

    check()
