"""Snapshot files: one per snapshot, written atomically, checked whole when read.

A snapshot lives in ``snapshot-<index>-<term>.snap`` (both zero padded to 20 digits, so names
sort by index). Integers are little endian::

    offset     size  field
    0          8     magic b"PRSMSNAP"
    8          4     format version (u32), 1
    12         8     index (u64)
    20         8     term (u64)
    28         4     M, membership length (u32)
    32         M     membership: ``Membership.encode()`` (JSON, UTF-8)
    32+M       8     D, data length (u64)
    40+M       D     data: the state machine's bytes, opaque here
    40+M+D     4     CRC-32 (zlib.crc32) of bytes 0..(40+M+D-1): everything before it

The file is 44+M+D bytes long, exactly. It is written with ``files.atomic_write`` (temp
file, fsync, rename, directory fsync), so a crash never leaves a partial file under the
final name; a leftover ``.tmp`` is removed by recovery. Which snapshot file is in force is
decided by the WAL (its last ``SNAPSHOT`` record or segment header), not by the directory
listing: see ``prism.raft.disk``.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from prism.errors import StorageCorrupt
from prism.raft.disk.files import atomic_write
from prism.raft.membership import Membership
from prism.raft.snapshot import Snapshot, SnapshotMeta

MAGIC: Final = b"PRSMSNAP"
VERSION: Final = 1
_HEAD: Final = struct.Struct("<8sIQQI")  # magic, version, index, term, membership length
_DATA_LENGTH: Final = struct.Struct("<Q")
_CRC: Final = struct.Struct("<I")
MIN_BYTES: Final = _HEAD.size + _DATA_LENGTH.size + _CRC.size  # 44: empty membership, no data
_NAME: Final = re.compile(r"snapshot-(\d{20})-(\d{20})\.snap")


def snapshot_name(index: int, term: int) -> str:
    return f"snapshot-{index:020d}-{term:020d}.snap"


def parse_snapshot_name(name: str) -> tuple[int, int] | None:
    """``(index, term)`` if ``name`` is a snapshot file's name."""
    match = _NAME.fullmatch(name)
    return (int(match[1]), int(match[2])) if match else None


def write_snapshot(directory: Path, snapshot: Snapshot, *, fsync: bool) -> Path:
    """Write ``snapshot`` durably under its name in ``directory``; return the path."""
    meta = snapshot.meta
    path = directory / snapshot_name(meta.index, meta.term)
    atomic_write(path, _chunks(snapshot), fsync=fsync)
    return path


def _chunks(snapshot: Snapshot) -> Iterator[bytes]:
    """The file's bytes in pieces, so a large ``data`` is never copied into one buffer."""
    meta = snapshot.meta
    membership = meta.membership.encode()
    pieces = (
        _HEAD.pack(MAGIC, VERSION, meta.index, meta.term, len(membership)),
        membership,
        _DATA_LENGTH.pack(len(snapshot.data)),
        snapshot.data,
    )
    crc = 0
    for piece in pieces:
        crc = zlib.crc32(piece, crc)
        yield piece
    yield _CRC.pack(crc)


def read_snapshot(path: Path) -> Snapshot:
    """Read and check a snapshot file; StorageCorrupt (file, byte offset) if it fails."""
    data = memoryview(path.read_bytes())
    size = len(data)

    def corrupt(offset: int, problem: str) -> StorageCorrupt:
        return StorageCorrupt(str(path), offset, f"snapshot file: {problem}")

    if size < MIN_BYTES:
        raise corrupt(size, f"{size} bytes, shorter than the smallest snapshot ({MIN_BYTES})")
    magic, version, index, term, m = _HEAD.unpack_from(data, 0)
    if magic != MAGIC:
        raise corrupt(0, f"bad magic {bytes(magic)!r}")
    if version != VERSION:
        raise corrupt(8, f"unsupported format version {version}")
    # The checksum is the file's last four bytes whatever the length fields say, so damage
    # to a length is reported as the checksum failure it is.
    (stored,) = _CRC.unpack_from(data, size - _CRC.size)
    computed = zlib.crc32(data[: size - _CRC.size])
    if stored != computed:
        raise corrupt(
            size - _CRC.size,
            f"checksum mismatch (stored {stored:#010x}, computed {computed:#010x})",
        )
    if _HEAD.size + m + _DATA_LENGTH.size > size - _CRC.size:
        raise corrupt(28, f"membership length {m} runs past the end of the file")
    (d,) = _DATA_LENGTH.unpack_from(data, _HEAD.size + m)
    if MIN_BYTES + m + d != size:
        raise corrupt(_HEAD.size + m, f"data length {d} disagrees with the file size {size}")
    try:
        membership = Membership.decode(bytes(data[_HEAD.size : _HEAD.size + m]))
    except ValueError as exc:
        raise corrupt(_HEAD.size, f"bad membership: {exc}") from None
    if parse_snapshot_name(path.name) not in (None, (index, term)):
        raise corrupt(12, f"holds index {index} term {term}, which its name does not say")
    start = _HEAD.size + m + _DATA_LENGTH.size
    meta = SnapshotMeta(index=index, term=term, membership=membership)
    return Snapshot(meta=meta, data=bytes(data[start : start + d]))
