"""The ``Storage`` contract (``prism.raft.storage``), run against ``MemoryStorage`` and
``DiskStorage`` alike; for the disk kind, every test also checks that a close and reopen
reads back exactly the same state.

Snapshot installation follows Raft Figure 13, rules 6 and 7: if the log holds an entry at
the snapshot's index with the snapshot's term, the entries after it stay; otherwise the
whole log goes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from prism.raft.disk import DiskStorage
from prism.raft.ready import HardState
from prism.raft.storage import MemoryStorage, Storage
from tests.storage.helpers import (
    AnyStorage,
    config_entry,
    entries,
    entry,
    indexes,
    snapshot,
    state_of,
)


class Harness:
    """One storage under test, and a way to restart it."""

    def __init__(self, kind: str, directory: Path) -> None:
        self.kind = kind
        self.directory = directory
        self.storage: AnyStorage = self._open()

    def _open(self) -> AnyStorage:
        if self.kind == "memory":
            return MemoryStorage()
        return DiskStorage.open(self.directory, segment_bytes=512)

    def check_restart(self) -> None:
        """Close and reopen (disk only): the state read back must be the state written."""
        if isinstance(self.storage, MemoryStorage):
            return
        before = state_of(self.storage)
        self.storage.close()
        reopened = DiskStorage.open(self.directory, segment_bytes=512)
        self.storage = reopened
        assert state_of(reopened) == before
        assert reopened.recovery_notes == []


@pytest.fixture(params=["memory", "disk"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(request.param, tmp_path / "raft")
    yield harness
    if isinstance(harness.storage, DiskStorage):
        harness.storage.close()


def test_both_kinds_satisfy_the_protocol(tmp_path: Path) -> None:
    with DiskStorage.open(tmp_path) as disk:
        kinds: list[Storage] = [MemoryStorage(), disk]
        for storage in kinds:
            assert storage.entries == []


def test_storage_starts_empty(harness: Harness) -> None:
    assert state_of(harness.storage) == (HardState(), None, ())
    harness.check_restart()


def test_save_appends_entries_and_sets_hard_state(harness: Harness) -> None:
    storage = harness.storage
    storage.save(HardState(term=1, vote="n1", commit=0), entries(1, 3))
    storage.save(HardState(term=2, vote=None, commit=3), [entry(4, 2), config_entry(5, 2)])
    assert indexes(storage.entries) == [1, 2, 3, 4, 5]
    assert storage.entries[4] == config_entry(5, 2)
    assert storage.hard_state == HardState(term=2, vote=None, commit=3)
    harness.check_restart()


def test_save_of_hard_state_alone_keeps_the_log(harness: Harness) -> None:
    harness.storage.save(HardState(term=1), entries(1, 3))
    harness.storage.save(HardState(term=5, vote="n2", commit=2), [])
    assert harness.storage.hard_state == HardState(term=5, vote="n2", commit=2)
    assert indexes(harness.storage.entries) == [1, 2, 3]
    harness.check_restart()


def test_save_of_entries_alone_keeps_the_hard_state(harness: Harness) -> None:
    harness.storage.save(HardState(term=3, vote="n3"), [])
    harness.storage.save(None, entries(1, 2, term=3))
    assert harness.storage.hard_state == HardState(term=3, vote="n3")
    harness.check_restart()


def test_save_from_a_middle_index_replaces_the_rest_of_the_log(harness: Harness) -> None:
    """Raft §5.3: a conflicting entry and all that follow it are deleted."""
    storage = harness.storage
    storage.save(HardState(term=1), entries(1, 10))
    storage.save(HardState(term=2), entries(4, 6, term=2))
    assert indexes(storage.entries) == [1, 2, 3, 4, 5, 6]
    assert [e.term for e in storage.entries] == [1, 1, 1, 2, 2, 2]
    harness.check_restart()
    storage = harness.storage
    storage.save(None, entries(1, 1, term=3))
    assert storage.entries == [entry(1, 3)]
    harness.check_restart()


def test_save_right_after_the_last_entry_extends_the_log(harness: Harness) -> None:
    harness.storage.save(None, entries(1, 3))
    harness.storage.save(None, entries(4, 4, term=2))
    assert indexes(harness.storage.entries) == [1, 2, 3, 4]
    harness.check_restart()


def test_save_past_the_end_of_the_log_raises_and_changes_nothing(harness: Harness) -> None:
    storage = harness.storage
    storage.save(HardState(term=1), entries(1, 3))
    before = state_of(storage)
    with pytest.raises(ValueError, match="gap: storage ends at 3, got 5"):
        storage.save(HardState(term=9), entries(5, 6))
    assert state_of(storage) == before
    harness.check_restart()


def test_save_at_or_behind_the_snapshot_raises(harness: Harness) -> None:
    storage = harness.storage
    storage.save(HardState(term=1), entries(1, 5))
    storage.save_snapshot(snapshot(4))
    with pytest.raises(ValueError, match="behind the snapshot at 4"):
        storage.save(None, entries(4, 6))
    harness.check_restart()


def test_installed_snapshot_with_matching_entry_keeps_the_entries_after_it(
    harness: Harness,
) -> None:
    """Raft Figure 13, rule 6: the log holds the snapshot's last entry, so what follows stays."""
    storage = harness.storage
    storage.save(HardState(term=1), entries(1, 10))
    storage.save(HardState(term=1, commit=6), [], snapshot(6, term=1))
    assert storage.snapshot == snapshot(6, term=1)
    assert indexes(storage.entries) == [7, 8, 9, 10]
    assert storage.hard_state.commit == 6
    harness.check_restart()


def test_installed_snapshot_with_another_term_drops_every_entry(harness: Harness) -> None:
    """Raft Figure 13, rule 7: the entry at the snapshot's index differs, so the log goes."""
    storage = harness.storage
    storage.save(HardState(term=1), entries(1, 10))
    storage.save(HardState(term=2, commit=6), [], snapshot(6, term=2))
    assert storage.snapshot == snapshot(6, term=2)
    assert storage.entries == []
    harness.check_restart()


def test_installed_snapshot_past_the_log_drops_every_entry(harness: Harness) -> None:
    storage = harness.storage
    storage.save(HardState(term=1), entries(1, 3))
    storage.save(HardState(term=4, commit=20), entries(21, 22, term=4), snapshot(20, term=3))
    assert storage.snapshot == snapshot(20, term=3)
    assert indexes(storage.entries) == [21, 22]
    harness.check_restart()


def test_installed_snapshot_with_entries_after_it_in_one_save(harness: Harness) -> None:
    storage = harness.storage
    storage.save(HardState(term=1), entries(1, 8))
    storage.save(HardState(term=2), entries(7, 9, term=2), snapshot(6, term=1))
    assert indexes(storage.entries) == [7, 8, 9]
    assert [e.term for e in storage.entries] == [2, 2, 2]
    harness.check_restart()


def test_snapshot_not_newer_than_the_one_in_force_is_ignored(harness: Harness) -> None:
    storage = harness.storage
    storage.save(HardState(term=1), entries(1, 10))
    storage.save(None, [], snapshot(6))
    storage.save(None, [], snapshot(5, data=b"older"))
    storage.save_snapshot(snapshot(6, data=b"same index"))
    assert storage.snapshot == snapshot(6)
    assert indexes(storage.entries) == [7, 8, 9, 10]
    harness.check_restart()


def test_save_snapshot_leaves_the_log_until_compact(harness: Harness) -> None:
    """A node's own snapshot: entries behind it stay for slow followers until compacted."""
    storage = harness.storage
    storage.save(HardState(term=1, commit=10), entries(1, 10))
    storage.save_snapshot(snapshot(8))
    assert storage.snapshot == snapshot(8)
    assert indexes(storage.entries) == list(range(1, 11))
    harness.check_restart()
    harness.storage.compact(5)
    assert indexes(harness.storage.entries) == [6, 7, 8, 9, 10]
    harness.check_restart()
    harness.storage.compact(8)
    assert indexes(harness.storage.entries) == [9, 10]
    harness.check_restart()
    harness.storage.save(None, entries(11, 12))
    assert indexes(harness.storage.entries) == [9, 10, 11, 12]
    harness.check_restart()


def test_compact_past_the_snapshot_raises(harness: Harness) -> None:
    storage = harness.storage
    storage.save(HardState(term=1), entries(1, 10))
    with pytest.raises(ValueError, match="cannot compact to 1, past the snapshot at 0"):
        storage.compact(1)
    storage.save_snapshot(snapshot(5))
    with pytest.raises(ValueError, match="past the snapshot at 5"):
        storage.compact(6)
    assert indexes(storage.entries) == list(range(1, 11))
    harness.check_restart()


def test_compact_to_the_snapshot_empties_a_log_that_ends_there(harness: Harness) -> None:
    storage = harness.storage
    storage.save(HardState(term=1, commit=4), entries(1, 4))
    storage.save_snapshot(snapshot(4))
    storage.compact(4)
    assert storage.entries == []
    harness.check_restart()
    harness.storage.save(None, entries(5, 5))
    assert indexes(harness.storage.entries) == [5]
    harness.check_restart()


def test_overwrite_after_compaction_keeps_the_log_consecutive(harness: Harness) -> None:
    storage = harness.storage
    storage.save(HardState(term=1), entries(1, 20))
    storage.save_snapshot(snapshot(10))
    storage.compact(10)
    storage.save(HardState(term=2), entries(15, 16, term=2))
    assert indexes(storage.entries) == [11, 12, 13, 14, 15, 16]
    harness.check_restart()


def test_large_entry_round_trips(harness: Harness) -> None:
    big = entry(1, data=bytes(range(256)) * 400)
    harness.storage.save(HardState(term=1), [big, entry(2)])
    assert harness.storage.entries[0] == big
    harness.check_restart()
