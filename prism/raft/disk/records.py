"""WAL records: the frame around each one, its checksum, and the payload of each type.

Frame
-----
Every record in a segment file is one frame; frames follow each other with no padding.
Integers in the frame header are little endian::

    offset  size  field
    0       4     N, the payload length in bytes (u32)
    4       4     CRC-32 (zlib.crc32) of bytes 0..3, then bytes 8..(10+N-1): the length, the
                  type, the flags and the payload; everything in the frame but the CRC itself
    8       1     record type (``RecordType``)
    9       1     flags: bit 0 set on the last record of a save group; bits 1..7 are zero
    10      N     payload: one msgpack array, laid out by record type as below

Covering the length with the CRC means a flipped length byte is caught as surely as a flipped
payload byte, instead of sending the reader to a wrong offset with no complaint.

Payloads
--------
msgpack arrays, positional. Ints are non-negative (terms and indexes fit in u64), ``bytes``
are msgpack bin, ``str`` are msgpack str, an absent vote is nil::

    1 SEGMENT_START  [format, seq, term, vote, commit, snapshot_index, snapshot_term,
                      last_index]
    2 ENTRY          [term, index, kind, data, client_id, seq]   kind: EntryKind's value
    3 HARD_STATE     [term, vote, commit]
    4 SNAPSHOT       [index, term, action]   action: 0 TAKEN, 1 KEEP_AFTER, 2 DROP_ALL
    5 COMPACT        [index]
    6 ENTRIES        [[term, index, kind, data, client_id, seq], ...]   at least one entry,
                      consecutive indexes: an ENTRY body each

``format`` is ``WAL_FORMAT`` (1); a segment of any other format is refused.

A writer frames the entries of a save group together, as one ``ENTRIES`` record; it no
longer writes ``ENTRY``, which segments written before ``ENTRIES`` existed hold, and which is
read as an ``ENTRIES`` of one. A frame per entry cost each node about 1.5 µs per 1 KB
entry (two struct packs, two CRC calls, a msgpack call and a Python frame each); one frame
for the group's 30-odd entries costs 0.6 µs per entry, most of it the CRC and the copy.

``SEGMENT_START`` is the first record of every segment and nowhere else: the segment's
sequence number and everything a reader needs that earlier segments would otherwise hold
(the hard state, the snapshot in force, the last index), so older segments can be deleted.
``SNAPSHOT`` says a snapshot file became the one in force; ``action`` (``SnapshotAction``)
says what it did to the log, decided by the writer, so replay never needs the entries that
compaction may since have deleted. ``COMPACT`` records a ``compact(index)`` call. There is
no truncation record: an ``ENTRY`` at or below the last index replaces the log from there
on, on replay as when it was written.

Save groups
-----------
One ``save`` (or ``save_snapshot``, ``compact``) writes one group of records: all but the
last have flag bit 0 clear, the last has it set. A group is applied whole or not at all: a
crash that leaves part of the last group on disk loses that whole group on recovery, just as
a ``MemoryStorage`` in the simulator loses a save that did not complete.

Why zlib.crc32 rather than CRC-32C
----------------------------------
Both detect every burst error of up to 32 bits and miss random damage with probability
2**-32; CRC-32C's edge (hardware instruction, a better Hamming distance at some lengths)
needs a third-party C extension, while zlib's runs in C from the standard library. A later
``WAL_FORMAT`` could switch.
"""

from __future__ import annotations

import enum
import re
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import msgpack

from prism.raft.messages import Entry, EntryKind
from prism.raft.ready import HardState

HEADER: Final = struct.Struct("<IIBB")  # length, crc, type, flags
HEADER_BYTES: Final = HEADER.size  # 10
FLAG_GROUP_END: Final = 0x01
# What the CRC covers before the payload: the length, then the type and flags bytes.
_CRC_HEAD: Final = struct.Struct("<IBB")
# One packer for every frame (msgpack.packb builds one per call). Packing runs in C under
# the GIL, so the storage's worker thread and the event loop never interleave in it.
_PACK: Final = msgpack.Packer(use_bin_type=True).pack
MAX_PAYLOAD_BYTES: Final = 2**32 - 1
WAL_FORMAT: Final = 1


class RecordType(enum.IntEnum):
    """The type byte of a frame. Values are on disk: append only."""

    SEGMENT_START = 1
    ENTRY = 2
    HARD_STATE = 3
    SNAPSHOT = 4
    COMPACT = 5
    ENTRIES = 6


class SnapshotAction(enum.IntEnum):
    """What a snapshot did to the log when it came into force. Values are on disk."""

    TAKEN = 0  # taken of this node's own state machine: the log is left as it is
    KEEP_AFTER = 1  # installed; the log held its last entry: entries up to it dropped
    DROP_ALL = 2  # installed; the log did not hold its last entry: every entry dropped


@dataclass(frozen=True, slots=True, kw_only=True)
class SegmentStart:
    """The first record of a segment: its number, and the state the segments before it left."""

    seq: int
    hard_state: HardState
    snapshot_index: int
    snapshot_term: int
    last_index: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotMark:
    """A snapshot file (named by index and term) came into force."""

    index: int
    term: int
    action: SnapshotAction


@dataclass(frozen=True, slots=True, kw_only=True)
class Compact:
    """``compact(index)``: entries up to ``index`` were dropped."""

    index: int


Record = SegmentStart | Entry | HardState | SnapshotMark | Compact


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame read back from a segment: where it lies, its type, and its raw payload."""

    offset: int
    end: int
    kind: RecordType
    group_end: bool
    payload: memoryview


# ---------------------------------------------------------------------------------------
# Framing


def encode_group(records: Sequence[Record]) -> bytes:
    """The bytes of one save group: each run of entries framed as one ENTRIES record, any
    other record framed alone, the last frame flagged."""
    payloads: list[tuple[int, bytes]] = []
    run: list[list[object]] = []
    for record in records:
        if type(record) is Entry:
            # An ENTRY body, built inline (a call per entry is a tenth of its cost); the
            # kind goes as it is: msgpack packs an IntEnum as its int.
            run.append(
                [
                    record.term,
                    record.index,
                    record.kind,
                    record.data,
                    record.client_id,
                    record.seq,
                ]
            )
            continue
        if run:
            payloads.append((_ENTRIES, _PACK(run)))
            run = []
        kind, body = _encode_payload(record)
        payloads.append((kind, _PACK(body)))
    if run:
        payloads.append((_ENTRIES, _PACK(run)))
    last = len(payloads) - 1
    return b"".join(
        [
            _frame(kind, payload, FLAG_GROUP_END if i == last else 0)
            for i, (kind, payload) in enumerate(payloads)
        ]
    )


def _frame(kind: int, payload: bytes, flags: int) -> bytes:
    size = len(payload)
    if size > MAX_PAYLOAD_BYTES:
        raise ValueError(f"a record of {size} bytes does not fit a u32 length")
    crc = zlib.crc32(payload, zlib.crc32(_CRC_HEAD.pack(size, kind, flags)))
    return HEADER.pack(size, crc, kind, flags) + payload


def read_frame(data: memoryview, offset: int) -> Frame | str:
    """The frame at ``offset`` of ``data``, or a sentence saying why there is none."""
    remaining = len(data) - offset
    if remaining < HEADER_BYTES:
        return f"incomplete record header ({remaining} of {HEADER_BYTES} bytes)"
    length, crc, kind, flags = HEADER.unpack_from(data, offset)
    end = offset + HEADER_BYTES + length
    if end > len(data):
        present = remaining - HEADER_BYTES
        return f"incomplete record: header promises {length} payload bytes, {present} present"
    actual = zlib.crc32(data[offset + 8 : end], zlib.crc32(data[offset : offset + 4]))
    if actual != crc:
        return f"checksum mismatch (stored {crc:#010x}, computed {actual:#010x})"
    if kind not in _RECORD_TYPES:
        return f"unknown record type {kind}"
    if flags & ~FLAG_GROUP_END:
        return f"unknown flags {flags:#04x}"
    return Frame(
        offset, end, RecordType(kind), bool(flags & FLAG_GROUP_END), data[offset + 10 : end]
    )


_RECORD_TYPES: Final = frozenset(int(kind) for kind in RecordType)
# Where a frame could start: its type and flags bytes (offsets 8 and 9) hold legal values.
# Zero-width, so overlapping candidates are all found; the regex engine skips the rest in C.
_CANDIDATE: Final = re.compile(
    b"(?=[" + b"".join(re.escape(bytes((kind,))) for kind in sorted(_RECORD_TYPES)) + b"]"
    b"[\\x00\\x01])"
)


def find_valid_frame(data: memoryview, start: int) -> int | None:
    """The offset of the first well-formed frame (checksum included) at or after ``start``.

    Used after a bad frame to tell a torn tail (nothing valid follows) from damage in the
    middle (valid records follow, which a torn write cannot produce and which must not be
    silently dropped). Frames are looked for at every byte offset, since the bad frame's
    length field cannot be trusted to say where the next one starts.
    """
    for match in _CANDIDATE.finditer(data, start + 8):
        offset = match.start() - 8
        if isinstance(read_frame(data, offset), Frame):
            return offset
    return None


# ---------------------------------------------------------------------------------------
# Payloads


# The record types as plain ints: struct packs them without a call to IntEnum.__index__.
_ENTRIES: Final = int(RecordType.ENTRIES)
_HARD_STATE: Final = int(RecordType.HARD_STATE)
_SNAPSHOT: Final = int(RecordType.SNAPSHOT)
_COMPACT: Final = int(RecordType.COMPACT)
_SEGMENT_START: Final = int(RecordType.SEGMENT_START)


def _encode_payload(record: Record) -> tuple[int, list[object]]:
    """The type and payload of a record framed alone: any but an entry."""
    match record:
        case Entry():
            raise TypeError("entries are framed in runs, as ENTRIES records")
        case HardState():
            return _HARD_STATE, [record.term, record.vote, record.commit]
        case SnapshotMark():
            return _SNAPSHOT, [record.index, record.term, int(record.action)]
        case Compact():
            return _COMPACT, [record.index]
        case SegmentStart():
            hard = record.hard_state
            return _SEGMENT_START, [
                WAL_FORMAT,
                record.seq,
                hard.term,
                hard.vote,
                hard.commit,
                record.snapshot_index,
                record.snapshot_term,
                record.last_index,
            ]


def decode_records(frame: Frame) -> list[Record]:
    """The records a checksummed frame holds: one, or an ENTRIES record's entries. Raises
    ValueError if the payload is malformed, which a checksum that matches means a writer bug
    or deliberate damage, never a crash."""
    try:
        body = msgpack.unpackb(frame.payload, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:
        # msgpack reports bad input with many exception types (ExtraData, FormatError,
        # StackError, ValueError, UnicodeDecodeError...); here they all mean one thing.
        raise ValueError(f"malformed msgpack: {type(exc).__name__}: {exc}") from None
    if type(body) is not list:
        raise ValueError("payload is not a msgpack array")
    if frame.kind is RecordType.ENTRIES:
        return _decode_entries(body)
    return [_DECODERS[frame.kind](body)]


def _ints(body: list[object], *positions: int) -> list[int]:
    values = []
    for position in positions:
        value = body[position]
        if type(value) is not int or value < 0:
            raise ValueError(f"field {position} must be a non-negative int, got {value!r}")
        values.append(value)
    return values


def _shape(body: list[object], size: int, name: str) -> None:
    if len(body) != size:
        raise ValueError(f"a {name} record has {size} fields, got {len(body)}")


def _vote(value: object) -> str | None:
    if value is not None and type(value) is not str:
        raise ValueError(f"vote must be str or nil, got {value!r}")
    return value


def _decode_entry(body: list[object]) -> Entry:
    _shape(body, 6, "ENTRY")
    term, index, kind, seq = _ints(body, 0, 1, 2, 5)
    data, client_id = body[3], body[4]
    if type(data) is not bytes or type(client_id) is not str:
        raise ValueError("entry data must be bin and client_id str")
    return Entry(
        term=term, index=index, kind=EntryKind(kind), data=data, client_id=client_id, seq=seq
    )


def _decode_entries(body: list[object]) -> list[Record]:
    if not body:
        raise ValueError("an ENTRIES record holds no entry")
    entries: list[Record] = []
    follows: int | None = None  # the index the next entry must have
    for item in body:
        if type(item) is not list:
            raise ValueError(f"an ENTRIES record holds {type(item).__name__}, not an entry")
        entry = _decode_entry(item)
        if follows is not None and entry.index != follows:
            raise ValueError(f"entry {entry.index} where {follows} should follow")
        follows = entry.index + 1
        entries.append(entry)
    return entries


def _decode_hard_state(body: list[object]) -> HardState:
    _shape(body, 3, "HARD_STATE")
    term, commit = _ints(body, 0, 2)
    return HardState(term=term, vote=_vote(body[1]), commit=commit)


def _decode_snapshot(body: list[object]) -> SnapshotMark:
    _shape(body, 3, "SNAPSHOT")
    index, term, action = _ints(body, 0, 1, 2)
    return SnapshotMark(index=index, term=term, action=SnapshotAction(action))


def _decode_compact(body: list[object]) -> Compact:
    _shape(body, 1, "COMPACT")
    return Compact(index=_ints(body, 0)[0])


def _decode_segment_start(body: list[object]) -> SegmentStart:
    _shape(body, 8, "SEGMENT_START")
    if body[0] != WAL_FORMAT or type(body[0]) is not int:
        raise ValueError(f"unsupported WAL format {body[0]!r} (this code reads {WAL_FORMAT})")
    seq, term, commit, snapshot_index, snapshot_term, last_index = _ints(body, 1, 2, 4, 5, 6, 7)
    return SegmentStart(
        seq=seq,
        hard_state=HardState(term=term, vote=_vote(body[3]), commit=commit),
        snapshot_index=snapshot_index,
        snapshot_term=snapshot_term,
        last_index=last_index,
    )


_DECODERS: Final[dict[RecordType, Callable[[list[object]], Record]]] = {
    RecordType.SEGMENT_START: _decode_segment_start,
    RecordType.ENTRY: _decode_entry,
    RecordType.HARD_STATE: _decode_hard_state,
    RecordType.SNAPSHOT: _decode_snapshot,
    RecordType.COMPACT: _decode_compact,
}
