"""Builders and probes shared by the storage tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from prism.raft.disk import DiskStorage
from prism.raft.membership import Membership
from prism.raft.messages import Entry, EntryKind
from prism.raft.ready import HardState
from prism.raft.snapshot import Snapshot, SnapshotMeta
from prism.raft.storage import MemoryStorage

AnyStorage = MemoryStorage | DiskStorage
State = tuple[HardState, Snapshot | None, tuple[Entry, ...]]

MEMBERSHIP = Membership.of(["n1", "n2", "n3"], ["n4"], {"n1": "10.0.0.1:7000"})


def entry(index: int, term: int = 1, data: bytes | None = None) -> Entry:
    """An entry whose payload names it, so a misplaced entry shows in a failure."""
    payload = f"i{index}t{term}".encode() if data is None else data
    return Entry(term=term, index=index, data=payload, client_id="c", seq=index)


def entries(first: int, last: int, term: int = 1) -> list[Entry]:
    return [entry(index, term) for index in range(first, last + 1)]


def config_entry(index: int, term: int = 1) -> Entry:
    return Entry(term=term, index=index, kind=EntryKind.CONFIG, data=MEMBERSHIP.encode())


def snapshot(index: int, term: int = 1, data: bytes = b"") -> Snapshot:
    meta = SnapshotMeta(index=index, term=term, membership=MEMBERSHIP)
    return Snapshot(meta=meta, data=data or f"state@{index}".encode())


def state_of(storage: AnyStorage) -> State:
    return storage.hard_state, storage.snapshot, tuple(storage.entries)


def indexes(items: Sequence[Entry]) -> list[int]:
    return [item.index for item in items]


def segment_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("wal-*.log"))


def snapshot_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("snapshot-*.snap"))


def flip(path: Path, offset: int, mask: int = 0xFF) -> None:
    """XOR one byte of ``path`` with ``mask`` (non-zero), in place."""
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))
