"""``DiskStorage``: the ``Storage`` contract kept in a directory; see ``prism.raft.disk``."""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Final, final

from prism.raft.disk.files import sync_directory, sync_fd, write_all
from prism.raft.disk.logstate import check_group
from prism.raft.disk.records import Compact, Record, SnapshotAction, SnapshotMark, encode_group
from prism.raft.disk.recovery import Recovery, SegmentInfo, recover
from prism.raft.disk.segments import segment_name
from prism.raft.disk.snapshots import write_snapshot
from prism.raft.messages import Entry
from prism.raft.ready import HardState
from prism.raft.snapshot import Snapshot

logger = logging.getLogger("prism.raft.disk")

DEFAULT_SEGMENT_BYTES: Final = 64 * 1024 * 1024


@final
class DiskStorage:
    """A Raft node's durable state in one directory. Build it with ``DiskStorage.open``.

    Blocking and not thread safe: one thread at a time calls it (a trio driver runs each
    call through ``trio.to_thread.run_sync``, one at a time), and one ``DiskStorage`` at a
    time owns the directory.
    """

    def __init__(
        self, directory: Path, recovery: Recovery, *, fsync: bool, segment_bytes: int
    ) -> None:
        self._directory = directory
        self._fsync = fsync
        self._segment_bytes = segment_bytes
        self._state = recovery.state
        self._snapshot = recovery.snapshot
        self._snapshot_path = recovery.snapshot_path
        self._segments = recovery.segments
        self._fd: int | None = None
        self._closed = False
        # Set when a write failed half way: what is on disk is then unknown (after a failed
        # fsync the kernel may have dropped the dirty pages), so every later write refuses
        # and the node must reopen, which recovers from what the disk really holds.
        self._failure: BaseException | None = None
        self.recovery_notes: list[str] = recovery.notes

    @classmethod
    def open(
        cls,
        directory: Path,
        *,
        fsync: bool = True,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    ) -> DiskStorage:
        """Open the storage in ``directory``, creating it if missing, recovering it if not.

        ``fsync=False`` skips every fsync (for benchmarks: a power cut may then lose
        acknowledged writes); everything else is the same. A segment is closed for writing
        once it reaches ``segment_bytes``. Raises ``StorageCorrupt`` if the directory holds
        damage that a crash cannot explain; ``recovery_notes`` lists what was repaired.
        """
        if type(segment_bytes) is not int or segment_bytes <= 0:
            raise ValueError(f"segment_bytes must be a positive int, got {segment_bytes!r}")
        if not directory.is_dir():
            directory.mkdir(parents=True)
            sync_directory(directory.parent, fsync=fsync)
        recovery = recover(directory, fsync=fsync)
        storage = cls(directory, recovery, fsync=fsync, segment_bytes=segment_bytes)
        storage._open_last_segment(needs_segment_start=recovery.needs_segment_start)
        return storage

    # --- the Storage contract: reading ----------------------------------------------------

    @property
    def hard_state(self) -> HardState:
        return self._state.hard_state

    @property
    def snapshot(self) -> Snapshot | None:
        return self._snapshot

    @property
    def entries(self) -> Sequence[Entry]:
        """The log (consecutive entries); a live view, not to be modified."""
        return self._state.entries

    @property
    def snapshot_index(self) -> int:
        return self._state.snapshot_index

    @property
    def last_index(self) -> int:
        """The last index the storage covers, by an entry or by the snapshot."""
        return self._state.last_index

    @property
    def directory(self) -> Path:
        return self._directory

    # --- the Storage contract: writing ----------------------------------------------------

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None = None,
    ) -> None:
        """Install ``snapshot`` (if newer), replace the log from ``entries[0].index`` on, set
        the hard state: durable, all or nothing, when this returns (see ``prism.raft.disk``).

        Raises ValueError, writing nothing, for a gap after the log, entries at or behind the
        snapshot, or entries that are not consecutive.
        """
        self._check_writable()
        records: list[Record] = []
        installing = snapshot
        if snapshot is not None and snapshot.meta.index <= self._state.snapshot_index:
            installing = None  # not newer than the one in force: ignored, as MemoryStorage does
        if installing is not None:
            meta = installing.meta
            action = self._state.install_action(meta.index, meta.term)
            records.append(SnapshotMark(index=meta.index, term=meta.term, action=action))
        _check_consecutive(entries)
        records.extend(entries)
        if hard_state is not None:
            records.append(hard_state)
        if not records:
            return
        check_group(self._state.bounds, records)
        with self._writing():
            # The snapshot file is durable before the record that puts it in force.
            path = None if installing is None else self._write_snapshot_file(installing)
            self._write_group(records)
        self._apply(records)
        if installing is not None and path is not None:
            self._replace_snapshot(installing, path)

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Make ``snapshot`` (taken of this node's state machine) the one in force, if it is
        newer; the log is left as it is. Durable when this returns."""
        self._check_writable()
        meta = snapshot.meta
        if meta.index <= self._state.snapshot_index:
            return
        records: list[Record] = [
            SnapshotMark(index=meta.index, term=meta.term, action=SnapshotAction.TAKEN)
        ]
        with self._writing():
            path = self._write_snapshot_file(snapshot)
            self._write_group(records)
        self._apply(records)
        self._replace_snapshot(snapshot, path)

    def compact(self, index: int) -> None:
        """Drop entries up to ``index`` (ValueError past the snapshot), then delete the oldest
        segments while every entry they hold is at or below ``index``."""
        self._check_writable()
        records: list[Record] = [Compact(index=index)]
        check_group(self._state.bounds, records)
        entries = self._state.entries
        if entries and entries[0].index <= index:
            with self._writing():
                self._write_group(records)
            self._apply(records)
        with self._writing():
            self._delete_segments_through(index)

    def close(self) -> None:
        """Release the open segment. Everything saved is already durable; idempotent."""
        self._closed = True
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def __enter__(self) -> DiskStorage:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- internals --------------------------------------------------------------------------

    def _check_writable(self) -> None:
        if self._closed:
            raise RuntimeError("DiskStorage is closed")
        if self._failure is not None:
            raise RuntimeError(
                "an earlier write failed, so what is on disk is unknown: reopen the storage"
            ) from self._failure

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        try:
            yield
        except BaseException as exc:
            self._failure = exc
            raise

    def _apply(self, records: list[Record]) -> None:
        self._state.apply_all(records)

    def _open_last_segment(self, *, needs_segment_start: bool) -> None:
        if not self._segments:
            self._start_segment(1, b"")
            return
        last = self._segments[-1]
        self._fd = os.open(last.path, os.O_WRONLY | os.O_APPEND)
        if needs_segment_start:
            start = encode_group([self._state.segment_start(last.seq)])
            write_all(self._fd, start)
            sync_fd(self._fd, fsync=self._fsync)
            last.size += len(start)

    def _start_segment(self, seq: int, group: bytes) -> None:
        """Create segment ``seq``: its SEGMENT_START (the state before ``group``), then
        ``group``, one fsync, then a directory fsync so the new name survives a crash."""
        path = self._directory / segment_name(seq)
        data = encode_group([self._state.segment_start(seq)]) + group
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            write_all(fd, data)
            sync_fd(fd, fsync=self._fsync)
            sync_directory(self._directory, fsync=self._fsync)
        except BaseException:
            os.close(fd)
            raise
        if self._fd is not None:
            os.close(self._fd)
        self._fd = fd
        self._segments.append(SegmentInfo(seq, path, len(data)))

    def _write_group(self, records: list[Record]) -> None:
        """Append one save group to the WAL with one fsync, starting a new segment first if
        the current one has reached ``segment_bytes``."""
        group = encode_group(records)
        current = self._segments[-1]
        if current.size >= self._segment_bytes:
            self._start_segment(current.seq + 1, group)
        else:
            assert self._fd is not None
            write_all(self._fd, group)
            sync_fd(self._fd, fsync=self._fsync)
            current.size += len(group)
        current = self._segments[-1]
        for record in reversed(records):
            if type(record) is Entry:
                # A group's entries are consecutive: the last one has the highest index.
                current.max_entry_index = max(current.max_entry_index, record.index)
                break

    def _write_snapshot_file(self, snapshot: Snapshot) -> Path:
        return write_snapshot(self._directory, snapshot, fsync=self._fsync)

    def _replace_snapshot(self, snapshot: Snapshot, path: Path) -> None:
        """The new snapshot is in force (its SNAPSHOT record is durable): drop the old file.
        Not fsynced: if the deletion is lost, recovery deletes the file again."""
        old, self._snapshot, self._snapshot_path = self._snapshot_path, snapshot, path
        if old is not None and old != path:
            try:
                old.unlink()
            except OSError as exc:
                logger.warning("could not remove superseded snapshot %s: %s", old.name, exc)

    def _delete_segments_through(self, index: int) -> None:
        """Delete the oldest segments while all their entries are at or below ``index``.

        Never the newest (it is being written), and only from the front, one durable
        deletion at a time, so a crash leaves the segments a contiguous run. What a deleted
        segment held that recovery still needs (hard state, snapshot in force, last index) is
        repeated in the SEGMENT_START of every later segment.
        """
        while len(self._segments) > 1 and self._segments[0].max_entry_index <= index:
            oldest = self._segments.pop(0)
            os.unlink(oldest.path)
            sync_directory(self._directory, fsync=self._fsync)


def _check_consecutive(entries: Sequence[Entry]) -> None:
    for before, after in itertools.pairwise(entries):
        if after.index != before.index + 1:
            raise ValueError(f"entries must be consecutive: {after.index} follows {before.index}")
