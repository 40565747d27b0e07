"""The wire codec: every message between Prism nodes, as one msgpack datagram.

Format
------
A datagram is exactly one msgpack array, the envelope::

    [version, cluster_id, sender_id, tag, fields]

``version``
    An int, ``PROTOCOL_VERSION``. Datagrams of any other version are rejected.
``cluster_id``, ``sender_id``
    Non-empty str of at most ``MAX_ID_LEN`` characters. The sender travels in the envelope,
    not in the message (see ``prism.raft.messages``); the cluster id lets a node drop traffic
    from another cluster that shares the network.
``tag``
    An int naming the message type, from ``TAGS``.
``fields``
    The message's field values as an array, in dataclass field order, without names: a
    heartbeat costs a dozen bytes, not a hundred. Inside it, a nested dataclass (``Entry``)
    is an array the same way, an ``IntEnum`` is its int, a tuple is an array, ``bytes`` is
    msgpack bin and ``str`` is msgpack str. Every int is in ``0..MAX_WIRE_INT`` on the way
    out (so any implementation can hold it in a signed 64-bit integer), and anything above
    is rejected on the way in.

Why this shape
--------------
Tags are append-only, as memberlist's message types are: a number, once shipped, keeps its
meaning forever, so nodes built at different times never disagree about what a datagram is.
Since fields are positional, changing a message's fields means a new tag (or a new
``PROTOCOL_VERSION``), never an edit in place.

Decoding has one failure mode, as h11 has one protocol error: whatever is wrong with the
bytes (garbage, truncation, trailing bytes, a wrong type, a value the message's dataclass
refuses, a hostile length or nesting depth), ``decode`` raises ``DecodeError`` and nothing
else, so a receive loop counts and drops bad datagrams without ever crashing on them. Input
is bounded before it is unpacked (``MAX_DATAGRAM_BYTES``), msgpack's own limits bound every
declared length, and every value is type-checked exactly (a bool is not an int here, nor is
a float) before the dataclass runs its own validation.

The codec is driven by the dataclasses: field order and field types come from
``dataclasses.fields`` and the type annotations. Adding a message type is one line in
``TAGS``; a field of a type the codec cannot carry fails at import, not at run time.

``Entry``, the one struct that travels by the hundred, has a hand-written codec for an
append's ``tuple[Entry, ...]`` with the same wire form and the same checks (``_EntryKind``):
one loop over the entries, each well-formed one checked and built directly, slot by slot,
without the dataclass's ``__init__``; anything else goes through the generic path, so
errors read the same. An import-time check ties it to
``Entry``'s fields, and a differential test to ``Entry``'s own validation.
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeGuard

import msgpack

from prism.errors import DecodeError
from prism.raft.messages import (
    AppendEntries,
    AppendEntriesReply,
    Entry,
    EntryKind,
    Heartbeat,
    HeartbeatReply,
    InstallSnapshot,
    InstallSnapshotReply,
    RaftMessage,
    RequestVote,
    RequestVoteReply,
    TimeoutNow,
    build_entry,
)
from prism.swim.messages import (
    Ack,
    Gossip,
    JoinRefused,
    Nack,
    Ping,
    PingReq,
    PushPull,
    PushPullReply,
    SwimMessage,
)

WireMessage = RaftMessage | SwimMessage
"""Every message the codec carries: Raft's (tags 1..31) and SWIM's (32..63)."""

PROTOCOL_VERSION: Final = 1
MAX_DATAGRAM_BYTES: Final = 65_000
"""The largest datagram ``decode`` accepts by default: below the 65,507-byte UDP payload limit."""
MAX_ID_LEN: Final = 64
"""The longest ``cluster_id`` or ``sender_id``, in characters."""
MAX_WIRE_INT: Final = 2**63 - 1
"""The largest int any field may hold."""

# APPEND-ONLY. A tag, once released, keeps its message forever: never renumber a tag, never
# reuse a retired one, add new messages at the end of their range.
#   1..31   Raft messages
#   32..63  SWIM messages (prism.swim); 37..39 travel over TCP (push-pull, join refusal)
TAGS: Final[dict[int, type[WireMessage]]] = {
    1: RequestVote,
    2: RequestVoteReply,
    3: AppendEntries,
    4: AppendEntriesReply,
    5: Heartbeat,
    6: HeartbeatReply,
    7: InstallSnapshot,
    8: InstallSnapshotReply,
    9: TimeoutNow,
    32: Ping,
    33: Ack,
    34: PingReq,
    35: Nack,
    36: Gossip,
    37: PushPull,
    38: PushPullReply,
    39: JoinRefused,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    """A decoded datagram: the message and who sent it, from which cluster."""

    version: int
    cluster_id: str
    sender_id: str
    message: WireMessage


def encode(msg: WireMessage, *, cluster_id: str, sender_id: str) -> bytes:
    """Encode ``msg`` as one datagram.

    Raises ValueError for an empty or too long id, or an int above ``MAX_WIRE_INT``, and
    TypeError for an object that is not a wire message: those are the caller's bugs.
    """
    if not _is_id(cluster_id):
        raise ValueError(f"cluster_id must be a str of 1 to {MAX_ID_LEN} characters")
    if not _is_id(sender_id):
        raise ValueError(f"sender_id must be a str of 1 to {MAX_ID_LEN} characters")
    tag = _TAG_OF.get(type(msg))
    if tag is None:
        raise TypeError(f"not a wire message: {type(msg).__name__}")
    fields = _MESSAGES[tag].encode(msg)
    envelope = [PROTOCOL_VERSION, cluster_id, sender_id, tag, fields]
    return _PACK(envelope)


# bytes as bin, str as str. One packer for every datagram (msgpack.packb builds one per
# call); packing runs in C under the GIL, so threads never interleave in it.
_PACK: Final = msgpack.Packer(use_bin_type=True).pack


def decode(data: bytes, *, max_bytes: int = MAX_DATAGRAM_BYTES) -> Envelope:
    """Decode one datagram. Raises ``DecodeError``, and nothing else, if it is not valid."""
    if len(data) > max_bytes:
        raise DecodeError(f"datagram of {len(data)} bytes exceeds the limit of {max_bytes}")
    raw = _unpack(data)
    if type(raw) is not list or not raw:
        raise DecodeError("a datagram must be a non-empty msgpack array")
    version = raw[0]
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise DecodeError(f"unsupported protocol version {_show(version)}")
    if len(raw) != 5:
        raise DecodeError(f"an envelope has 5 items, got {len(raw)}")
    _, cluster_id, sender_id, tag, fields = raw
    if not _is_id(cluster_id):
        raise DecodeError(f"bad cluster_id {_show(cluster_id)}")
    if not _is_id(sender_id):
        raise DecodeError(f"bad sender_id {_show(sender_id)}")
    if type(tag) is not int or tag not in _MESSAGES:
        raise DecodeError(f"unknown message tag {_show(tag)}")
    message: WireMessage = _MESSAGES[tag].decode(fields)
    return Envelope(version=version, cluster_id=cluster_id, sender_id=sender_id, message=message)


def _unpack(data: bytes) -> object:
    """Unpack exactly one msgpack value, with every length bounded by the input's size.

    ``unpackb`` rejects trailing bytes, and bounds its buffer by the input itself (already
    at most ``max_bytes``): ``max_buffer_size`` only matters to a streaming ``Unpacker``.
    """
    limit = len(data)  # nothing declared in the input can be longer than the input
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_str_len=limit,
            max_bin_len=limit,
            max_array_len=limit,
            max_map_len=0,  # the format has no maps
            max_ext_len=0,  # nor ext types; _reject_ext catches the zero-length ones
            ext_hook=_reject_ext,
        )
    except Exception as exc:
        # A broad catch on purpose: msgpack reports bad input with many exception types
        # (ExtraData, FormatError, StackError, OutOfData, ValueError, UnicodeDecodeError,
        # ...) and hostile input could end in RecursionError or MemoryError. To the caller
        # they all mean the same thing: these bytes are not a datagram.
        raise DecodeError(f"malformed msgpack: {type(exc).__name__}: {exc}") from exc


def _reject_ext(code: int, data: bytes) -> object:
    raise DecodeError(f"msgpack ext type {code} is not allowed")


def _is_id(value: object) -> TypeGuard[str]:
    return type(value) is str and 0 < len(value) <= MAX_ID_LEN


def _show(value: object) -> str:
    """A short description of a peer's value for an error message (never a huge repr)."""
    if type(value) is int:
        return str(value)
    return f"of type {type(value).__name__}"


# --- Field kinds: how each annotated field type travels ------------------------------------


@dataclass(frozen=True, slots=True)
class _Kind:
    """One field type's codec: to its wire form, and back with an exact type check."""

    encode: Callable[[Any], object]
    decode: Callable[[object], Any]


def _encode_int(value: int) -> int:
    if value > MAX_WIRE_INT:
        raise ValueError(f"{value} is above the wire limit of {MAX_WIRE_INT}")
    return value


def _decode_int(raw: object) -> int:
    # `type(...) is int`, not isinstance: a bool is an int in Python but not on the wire.
    if type(raw) is not int:
        raise DecodeError(f"expected an int, got {type(raw).__name__}")
    if raw > MAX_WIRE_INT:
        raise DecodeError(f"int {raw} is above the wire limit")
    return raw


def _exact(expected: type) -> _Kind:
    """A kind msgpack carries as is (bool, str, bytes), checked by exact type."""

    def decode(raw: object) -> object:
        if type(raw) is not expected:
            raise DecodeError(f"expected {expected.__name__}, got {type(raw).__name__}")
        return raw

    return _Kind(encode=lambda value: value, decode=decode)


def _int_enum(cls: type[enum.IntEnum]) -> _Kind:
    def decode(raw: object) -> enum.IntEnum:
        value = _decode_int(raw)
        try:
            return cls(value)
        except ValueError:
            raise DecodeError(f"{value} is not a valid {cls.__name__}") from None

    return _Kind(encode=int, decode=decode)


def _tuple_of(item: _Kind) -> _Kind:
    item_decode, item_encode = item.decode, item.encode

    def decode(raw: object) -> tuple[object, ...]:
        if type(raw) is not list:
            raise DecodeError(f"expected an array, got {type(raw).__name__}")
        return tuple([item_decode(element) for element in raw])

    return _Kind(encode=lambda values: [item_encode(v) for v in values], decode=decode)


class _Struct:
    """A dataclass as an array of its field values, in field order."""

    def __init__(self, cls: type[Any]) -> None:
        hints = typing.get_type_hints(cls)
        self.cls = cls
        self.fields = tuple((f.name, _kind_for(hints[f.name])) for f in dataclasses.fields(cls))

    def encode(self, value: object) -> list[object]:
        return [kind.encode(getattr(value, name)) for name, kind in self.fields]

    def decode(self, raw: object) -> Any:
        name = self.cls.__name__
        if type(raw) is not list:
            raise DecodeError(f"{name} must be an array, got {type(raw).__name__}")
        if len(raw) != len(self.fields):
            raise DecodeError(f"{name} has {len(self.fields)} fields, got {len(raw)}")
        values = {
            field: kind.decode(item) for (field, kind), item in zip(self.fields, raw, strict=True)
        }
        try:
            return self.cls(**values)
        except (TypeError, ValueError) as exc:  # the dataclass refuses the values
            raise DecodeError(f"invalid {name}: {exc}") from exc

    def as_kind(self) -> _Kind:
        return _Kind(encode=self.encode, decode=self.decode)


_ENTRY_FIELDS: Final = ("term", "index", "kind", "data", "client_id", "seq")
_ENTRY_KINDS: Final = {int(kind): kind for kind in EntryKind}


class _EntryKind:
    """``tuple[Entry, ...]``'s codec: what ``_tuple_of(_Struct(Entry))`` does, without a call
    per entry or per field."""

    def __init__(self) -> None:
        fields = tuple(f.name for f in dataclasses.fields(Entry))
        if fields != _ENTRY_FIELDS:
            raise TypeError(f"Entry's fields changed to {fields}: update _EntryKind")
        self._generic = _Struct(Entry)

    def encode(self, entries: tuple[Entry, ...]) -> list[list[object]]:
        """One loop over the entries. The kind goes as it is: msgpack packs an IntEnum as
        its int."""
        bodies = []
        for entry in entries:
            term, index, seq = entry.term, entry.index, entry.seq
            if term > MAX_WIRE_INT or index > MAX_WIRE_INT or seq > MAX_WIRE_INT:
                self._generic.encode(entry)  # raises the ValueError
            bodies.append([term, index, entry.kind, entry.data, entry.client_id, seq])
        return bodies

    def decode(self, raw: object) -> tuple[Entry, ...]:
        """One loop over the array, no call per entry but ``build_entry`` (a follower decodes
        every entry of every append)."""
        if type(raw) is not list:
            raise DecodeError(f"expected an array, got {type(raw).__name__}")
        kinds = _ENTRY_KINDS
        entries = []
        for item in raw:
            if type(item) is not list or len(item) != 6:
                entries.append(self._refuse(item))
                continue
            term, index, kind, data, client_id, seq = item
            if (
                type(term) is not int
                or type(index) is not int
                or type(kind) is not int
                or type(seq) is not int
                or type(data) is not bytes
                or type(client_id) is not str
                or term > MAX_WIRE_INT
                or index > MAX_WIRE_INT
                or seq > MAX_WIRE_INT
                or kind not in kinds
                or term < 0
                or index <= 0
                or seq < 0
            ):
                entries.append(self._refuse(item))
                continue
            entries.append(build_entry(term, index, kinds[kind], data, client_id, seq))
        return tuple(entries)

    def _refuse(self, raw: object) -> Entry:
        """The generic path, for what the fast one does not take: it raises the DecodeError
        (or, should the two ever disagree, decodes the entry just the same)."""
        entry: Entry = self._generic.decode(raw)
        return entry

    def as_kind(self) -> _Kind:
        return _Kind(encode=self.encode, decode=self.decode)


def _kind_for(hint: object) -> _Kind:
    """The codec for a field annotated ``hint``; TypeError if the wire cannot carry it."""
    if hint == tuple[Entry, ...]:
        return _EntryKind().as_kind()
    if hint is int:
        return _Kind(encode=_encode_int, decode=_decode_int)
    if hint is bool or hint is str or hint is bytes:
        return _exact(hint)
    if isinstance(hint, type) and issubclass(hint, enum.IntEnum):
        return _int_enum(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _Struct(hint).as_kind()
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return _tuple_of(_kind_for(args[0]))
    raise TypeError(f"the wire codec cannot carry a field of type {hint!r}")


_MESSAGES: Final = {tag: _Struct(cls) for tag, cls in TAGS.items()}
_TAG_OF: Final = {cls: tag for tag, cls in TAGS.items()}
