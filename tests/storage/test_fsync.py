"""What each write fsyncs, counted by replacing ``os.fsync``: one save is one fsync of the
WAL, however many entries it holds; an atomic file write fsyncs the file, then the
directory; ``fsync=False`` fsyncs nothing."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from prism.raft.disk import DiskStorage
from prism.raft.ready import HardState
from tests.storage.helpers import entries, segment_files, snapshot, snapshot_files


class FsyncLog:
    """Each fsync as ("dir", inode) or ("file", inode)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def __call__(self, fd: int) -> None:
        info = os.fstat(fd)
        self.calls.append(("dir" if stat.S_ISDIR(info.st_mode) else "file", info.st_ino))

    def take(self) -> list[tuple[str, int]]:
        calls, self.calls = self.calls, []
        return calls


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> FsyncLog:
    log = FsyncLog()
    monkeypatch.setattr(os, "fsync", log)
    return log


def inode(path: Path) -> int:
    return path.stat().st_ino


def test_one_save_of_many_entries_is_one_fsync_of_the_wal(tmp_path: Path, fsyncs: FsyncLog) -> None:
    directory = tmp_path / "raft"
    with DiskStorage.open(directory) as storage:
        fsyncs.take()
        storage.save(HardState(term=1, vote="n1", commit=0), entries(1, 1000))
        assert fsyncs.take() == [("file", inode(segment_files(directory)[-1]))]
        storage.save(HardState(term=1, vote="n1", commit=1000), [])
        storage.save(None, entries(1001, 1001))
        assert len(fsyncs.take()) == 2
        storage.save(None, [])  # nothing to make durable
        assert fsyncs.take() == []


def test_snapshot_file_is_fsynced_then_its_directory_then_the_wal(
    tmp_path: Path, fsyncs: FsyncLog
) -> None:
    directory = tmp_path / "raft"
    with DiskStorage.open(directory) as storage:
        storage.save(HardState(term=1, commit=10), entries(1, 10))
        fsyncs.take()
        storage.save_snapshot(snapshot(8))
        wal = ("file", inode(segment_files(directory)[-1]))
        (snapshot_file,) = snapshot_files(directory)
        # The temp file is renamed, not copied: the same inode is fsynced, then the rename.
        assert fsyncs.take() == [("file", inode(snapshot_file)), ("dir", inode(directory)), wal]
        storage.save(HardState(term=2, commit=12), entries(13, 14, 2), snapshot(12, 2))
        (snapshot_file,) = snapshot_files(directory)
        assert fsyncs.take() == [("file", inode(snapshot_file)), ("dir", inode(directory)), wal]


def test_new_segment_is_fsynced_with_its_directory(tmp_path: Path, fsyncs: FsyncLog) -> None:
    directory = tmp_path / "raft"
    with DiskStorage.open(directory, segment_bytes=100) as storage:
        assert fsyncs.take() == [
            ("dir", inode(tmp_path)),  # the new data directory's own name
            ("file", inode(segment_files(directory)[0])),
            ("dir", inode(directory)),
        ]
        storage.save(HardState(term=1), entries(1, 10))  # fills the first segment
        fsyncs.take()
        storage.save(HardState(term=1, commit=10), [])
        second = segment_files(directory)[1]
        assert fsyncs.take() == [("file", inode(second)), ("dir", inode(directory))]


def test_compact_fsyncs_its_record_and_each_deletion(tmp_path: Path, fsyncs: FsyncLog) -> None:
    directory = tmp_path / "raft"
    with DiskStorage.open(directory, segment_bytes=100) as storage:
        for index in range(1, 4):
            storage.save(None, entries(index * 10 - 9, index * 10))
        storage.save_snapshot(snapshot(20))
        assert len(segment_files(directory)) == 4
        fsyncs.take()
        storage.compact(20)
        assert len(segment_files(directory)) == 2
        wal = ("file", inode(segment_files(directory)[-1]))
        assert fsyncs.take() == [wal, ("dir", inode(directory)), ("dir", inode(directory))]


def test_no_fsync_at_all_when_turned_off(tmp_path: Path, fsyncs: FsyncLog) -> None:
    directory = tmp_path / "raft"
    with DiskStorage.open(directory, fsync=False, segment_bytes=100) as storage:
        for index in range(1, 4):
            storage.save(HardState(term=1), entries(index * 10 - 9, index * 10))
        storage.save_snapshot(snapshot(20))
        storage.save(HardState(term=2), [], snapshot(25, 1))
        storage.compact(25)
    with DiskStorage.open(directory, fsync=False) as storage:
        assert storage.snapshot == snapshot(25, 1)
    assert fsyncs.calls == []
