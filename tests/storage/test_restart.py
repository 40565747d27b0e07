"""Restarting a long-lived disk storage: thousands of entries over many segments, a snapshot,
compaction deleting whole segments, then reopening and carrying on."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from prism.raft.disk import DiskStorage
from prism.raft.ready import HardState
from tests.storage.helpers import entries, indexes, segment_files, snapshot, state_of


@pytest.mark.slow
def test_restart_after_thousands_of_entries_snapshot_and_compaction(tmp_path: Path) -> None:
    directory = tmp_path / "raft"
    segment_bytes = 8 * 1024
    with DiskStorage.open(directory, segment_bytes=segment_bytes) as storage:
        for first in range(1, 5001, 50):
            term = 1 + first // 1000
            storage.save(
                HardState(term=term, vote="n1", commit=first - 1), entries(first, first + 49, term)
            )
            if first + 49 == 3000:
                storage.save_snapshot(snapshot(3000, term=3, data=b"s" * 10_000))
        segments_before = segment_files(directory)
        storage.compact(3000)
        segments_after = segment_files(directory)
        written = state_of(storage)
    assert len(segments_before) > 10
    assert segments_after == segments_before[-len(segments_after) :]
    assert len(segments_after) < len(segments_before) / 2

    with DiskStorage.open(directory, segment_bytes=segment_bytes) as storage:
        assert storage.recovery_notes == []
        assert state_of(storage) == written
        assert indexes(storage.entries) == list(range(3001, 5001))
        assert storage.hard_state == HardState(term=5, vote="n1", commit=4950)
        assert storage.snapshot == snapshot(3000, term=3, data=b"s" * 10_000)
        # Carry on: overwrite a tail, snapshot again, compact everything but the last segment.
        storage.save(HardState(term=6, vote="n2", commit=4990), entries(4990, 5100, 6))
        storage.save_snapshot(snapshot(5050, term=6))
        storage.compact(5050)
        written = state_of(storage)
    assert len(segment_files(directory)) <= 2
    with DiskStorage.open(directory, segment_bytes=segment_bytes) as storage:
        assert state_of(storage) == written
        assert indexes(storage.entries) == list(range(5051, 5101))


def test_usable_from_a_worker_thread(tmp_path: Path) -> None:
    """The intended use from a trio driver: each blocking call in a worker thread."""

    async def main() -> tuple[object, ...]:
        storage = await trio.to_thread.run_sync(DiskStorage.open, tmp_path / "raft")
        await trio.to_thread.run_sync(storage.save, HardState(term=1), entries(1, 100))
        await trio.to_thread.run_sync(storage.save_snapshot, snapshot(50))
        await trio.to_thread.run_sync(storage.compact, 50)
        await trio.to_thread.run_sync(storage.close)
        return state_of(storage)

    written = trio.run(main)
    with DiskStorage.open(tmp_path / "raft") as storage:
        assert state_of(storage) == written


def test_closed_storage_refuses_writes(tmp_path: Path) -> None:
    storage = DiskStorage.open(tmp_path / "raft")
    storage.close()
    storage.close()
    with pytest.raises(RuntimeError, match="closed"):
        storage.save(HardState(term=1), [])


def test_segment_bytes_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="segment_bytes"):
        DiskStorage.open(tmp_path / "raft", segment_bytes=0)


def test_failed_write_poisons_the_storage_until_reopened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a failed fsync nothing is known about the disk (the kernel may have dropped the
    pages): later writes refuse, and reopening recovers from what the disk really holds."""
    storage = DiskStorage.open(tmp_path / "raft")
    storage.save(HardState(term=1), entries(1, 3))

    def failing_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr("os.fsync", failing_fsync)
    with pytest.raises(OSError, match="Input/output"):
        storage.save(HardState(term=2), entries(4, 4))
    assert indexes(storage.entries) == [1, 2, 3]
    monkeypatch.undo()
    with pytest.raises(RuntimeError, match="reopen"):
        storage.save(None, entries(4, 4))
    storage.close()
    with DiskStorage.open(tmp_path / "raft") as reopened:
        assert indexes(reopened.entries) in ([1, 2, 3], [1, 2, 3, 4])
