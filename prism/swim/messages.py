"""SWIM's messages, as frozen dataclasses that cannot be built invalid.

Names follow the SWIM paper (Das, Gupta, Motivala 2002) and Lifeguard (Dadgar et al.):
``Ping`` / ``Ack`` for direct probes, ``PingReq`` asking a member to probe on our behalf,
``Nack`` from such a relay when the target did not answer in time (Lifeguard §IV: it tells a
prober whether its own links are bad). The sender is not a field: the wire envelope carries
it and ``SwimCore.step`` takes it as ``src``, as in Raft, so a message cannot lie about who
sent it. Addresses are ``"host:port"`` strings, the *advertise* address of a member.

Membership news travels as ``Update`` records (alive / suspect / dead / left about one
member, at one incarnation), piggybacked on every datagram in the room its message leaves
(``updates``), and as whole-state lists in ``PushPull`` / ``PushPullReply``, which the
driver carries over TCP because a full state does not fit a datagram.

Every field type is one the wire codec carries (int >= 0, bool, str, bytes, IntEnum, tuples
and nested frozen dataclasses of those): no floats, no dicts, no Optional; "absent" is
``""`` or ``b""``. ``estimate_size`` is an upper bound of a value's msgpack size, used to pack
updates into the datagram budget without encoding them.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Final

MAX_NAME_BYTES: Final = 64
"""Longest member name (UTF-8 bytes); the wire's ``sender_id`` allows 64 characters."""
MAX_ADDRESS_BYTES: Final = 128
"""Longest ``host:port`` address (UTF-8 bytes); a DNS name has at most 253 characters, but an
advertise address is an IP or a short host name in practice, and datagram room is scarce."""
MAX_META_BYTES: Final = 512
"""Largest member metadata anyone may send (memberlist's limit)."""
MAX_REASON_BYTES: Final = 256
"""Longest human-readable reason in a ``JoinRefused``."""


class UpdateKind(enum.IntEnum):
    """What an ``Update`` says about a member. Values travel on the wire: append only."""

    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3


def _check_int(**fields: object) -> None:
    for name, value in fields.items():
        if type(value) is not int or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")


def _check_name(field: str, value: object, *, allow_empty: bool = False) -> None:
    if type(value) is not str:
        raise ValueError(f"{field} must be a str")
    if not value and not allow_empty:
        raise ValueError(f"{field} must not be empty")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise ValueError(f"{field} is longer than {MAX_NAME_BYTES} bytes")


def is_address(value: object) -> bool:
    """True for ``"host:port"`` with a non-empty host and a port in 1..65535."""
    if type(value) is not str or len(value.encode("utf-8", "surrogatepass")) > MAX_ADDRESS_BYTES:
        return False
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isascii() or not port.isdigit():
        return False
    return 0 < int(port) < 65536


def _check_address(field: str, value: object, *, allow_empty: bool = False) -> None:
    if allow_empty and value == "":
        return
    if not is_address(value):
        raise ValueError(f"{field} must be 'host:port' of at most {MAX_ADDRESS_BYTES} bytes")


def _check_updates(value: object) -> None:
    if type(value) is not tuple or not all(type(u) is Update for u in value):
        raise ValueError("updates must be a tuple of Update")


@dataclass(frozen=True, slots=True, kw_only=True)
class Update:
    """One piece of membership news about ``node`` at ``incarnation``.

    ``ALIVE`` carries the member's advertise ``address`` and ``meta``; ``SUSPECT`` and ``DEAD``
    name their ``origin`` (who suspects, or who declared the death), because distinct
    origins are what confirm a suspicion (Lifeguard); ``LEFT`` is said by the member itself.

    A ``DEAD`` verdict also says how long its ``origin`` had suspected the member when it
    declared it dead (``suspected_ms``, 0 when unknown): the age of its evidence. A member
    that heard from the accused itself after that evidence began knows the verdict is
    stale (``SwimCore`` takes it as a suspicion); no clock is compared, only two durations.
    """

    kind: UpdateKind
    node: str
    incarnation: int
    address: str = ""
    meta: bytes = b""
    origin: str = ""
    suspected_ms: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.kind, UpdateKind):
            raise ValueError(f"kind must be an UpdateKind, got {self.kind!r}")
        _check_name("node", self.node)
        _check_int(incarnation=self.incarnation, suspected_ms=self.suspected_ms)
        if self.suspected_ms and self.kind is not UpdateKind.DEAD:
            raise ValueError("suspected_ms belongs to a DEAD verdict only")
        alive = self.kind is UpdateKind.ALIVE
        _check_address("address", self.address, allow_empty=not alive)
        if type(self.meta) is not bytes or len(self.meta) > MAX_META_BYTES:
            raise ValueError(f"meta must be bytes of at most {MAX_META_BYTES}")
        _check_name(
            "origin",
            self.origin,
            allow_empty=self.kind not in (UpdateKind.SUSPECT, UpdateKind.DEAD),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Ping:
    """A direct probe of ``target`` (checked by the receiver: an address may have been
    reused by another member). Answered with an ``Ack`` to ``reply_to``."""

    seq: int
    target: str
    reply_to: str
    updates: tuple[Update, ...] = ()

    def __post_init__(self) -> None:
        _check_int(seq=self.seq)
        _check_name("target", self.target)
        _check_address("reply_to", self.reply_to)
        _check_updates(self.updates)


@dataclass(frozen=True, slots=True, kw_only=True)
class Ack:
    """``target`` answered the probe numbered ``seq`` (directly, or through a relay)."""

    seq: int
    target: str
    updates: tuple[Update, ...] = ()

    def __post_init__(self) -> None:
        _check_int(seq=self.seq)
        _check_name("target", self.target)
        _check_updates(self.updates)


@dataclass(frozen=True, slots=True, kw_only=True)
class PingReq:
    """Ask the receiver to ping ``target`` at ``target_address`` and to forward the ack (or
    send a ``Nack``) for ``seq`` to ``reply_to`` (SWIM's indirect probe)."""

    seq: int
    target: str
    target_address: str
    reply_to: str
    updates: tuple[Update, ...] = ()

    def __post_init__(self) -> None:
        _check_int(seq=self.seq)
        _check_name("target", self.target)
        _check_address("target_address", self.target_address)
        _check_address("reply_to", self.reply_to)
        _check_updates(self.updates)


@dataclass(frozen=True, slots=True, kw_only=True)
class Nack:
    """The relay asked to probe ``target`` for ``seq`` heard nothing in time: it is alive
    and reachable, so the prober's links are not the problem (Lifeguard)."""

    seq: int
    target: str
    updates: tuple[Update, ...] = ()

    def __post_init__(self) -> None:
        _check_int(seq=self.seq)
        _check_name("target", self.target)
        _check_updates(self.updates)


@dataclass(frozen=True, slots=True, kw_only=True)
class Gossip:
    """A datagram of updates only: the dedicated gossip round."""

    updates: tuple[Update, ...]

    def __post_init__(self) -> None:
        _check_updates(self.updates)


def _check_members(value: object) -> None:
    if type(value) is not tuple or not all(type(u) is Update for u in value):
        raise ValueError("members must be a tuple of Update")


@dataclass(frozen=True, slots=True, kw_only=True)
class PushPull:
    """The sender's whole member list (its own entry included: that is where the answer
    goes), over a stream. ``join`` marks a joining node's first exchange, which is where a
    name conflict is detected."""

    join: bool
    members: tuple[Update, ...]

    def __post_init__(self) -> None:
        if type(self.join) is not bool:
            raise ValueError("join must be bool")
        _check_members(self.members)


@dataclass(frozen=True, slots=True, kw_only=True)
class PushPullReply:
    """The answer to ``PushPull``: the receiver's whole member list, after merging."""

    members: tuple[Update, ...]

    def __post_init__(self) -> None:
        _check_members(self.members)


@dataclass(frozen=True, slots=True, kw_only=True)
class JoinRefused:
    """The answer to a joining ``PushPull`` whose name is held by a live member at another
    address: ``name`` is taken by the member at ``address``."""

    name: str
    address: str
    reason: str

    def __post_init__(self) -> None:
        _check_name("name", self.name)
        _check_address("address", self.address)
        if type(self.reason) is not str or len(self.reason.encode()) > MAX_REASON_BYTES:
            raise ValueError(f"reason must be a str of at most {MAX_REASON_BYTES} bytes")


SwimMessage = Ping | Ack | PingReq | Nack | Gossip | PushPull | PushPullReply | JoinRefused
"""Every message the SWIM core sends or accepts."""

DATAGRAM_MESSAGES: Final = (Ping, Ack, PingReq, Nack, Gossip)
"""Messages that travel in one datagram, within ``SwimConfig.max_datagram_bytes``."""
STREAM_MESSAGES: Final = (PushPull, PushPullReply, JoinRefused, Ping, Ack)
"""Messages a driver carries over a stream (TCP): the state exchanges, which may exceed a
datagram, and the fallback probe (a ``Ping`` answered by an ``Ack`` on its connection)."""
STREAM_ANSWERS: Final = (PushPullReply, JoinRefused, Ack)
"""The stream messages that answer a question (a ``PushPull`` or a ``Ping``): they go back
on the connection the question came in on."""


def estimate_size(value: object) -> int:
    """An upper bound of ``value``'s msgpack size as the wire codec writes it.

    Every int costs at most 9 bytes (uint64), every str/bin/array header at most 5, a
    dataclass is an array of its fields. Exact sizes would need the codec, which a core
    may not import; a bound is all packing needs.
    """
    if type(value) is Update:
        return _update_size(value)
    if isinstance(value, bool):
        return 1
    if isinstance(value, int):
        return 9
    if isinstance(value, str):
        return 5 + len(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, bytes):
        return 5 + len(value)
    if isinstance(value, tuple):
        return 5 + sum(estimate_size(item) for item in value)
    names = _FIELD_NAMES.get(type(value))
    if names is None and dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = _FIELD_NAMES[type(value)] = tuple(f.name for f in dataclasses.fields(value))
    if names is not None:
        return 5 + sum(estimate_size(getattr(value, name)) for name in names)
    raise TypeError(f"cannot size a {type(value).__name__}")


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}
"""Field names by dataclass: ``dataclasses.fields`` is slow, and sizing is a hot path."""


def _text_bytes(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _update_size(update: Update) -> int:
    """``estimate_size`` of an ``Update``, without the generic walk (the packing hot path):
    the array header (5), kind (1: its values are msgpack fixints), incarnation (9), four
    strings or bytes (5 each plus their length), and ``suspected_ms`` (9, or 1 for the 0
    that all but verdicts carry). Tighter than the walk, which counts 9 for every int: the
    fewer bytes an estimate wastes, the more updates ride each datagram."""
    return (
        (44 if update.suspected_ms else 36)
        + _text_bytes(update.node)
        + _text_bytes(update.address)
        + len(update.meta)
        + _text_bytes(update.origin)
    )


_LONG_NAME: Final = "n" * MAX_NAME_BYTES
_LONG_ADDRESS: Final = "h" * (MAX_ADDRESS_BYTES - 6) + ":65535"
MAX_UPDATE_BYTES: Final = estimate_size(
    Update(
        kind=UpdateKind.ALIVE,
        node=_LONG_NAME,
        incarnation=0,
        address=_LONG_ADDRESS,
        meta=b"m" * MAX_META_BYTES,
        origin=_LONG_NAME,
    )
)
"""The largest estimate of one update: every update fits a datagram on its own."""
MAX_BASE_BYTES: Final = max(
    estimate_size(
        PingReq(seq=0, target=_LONG_NAME, target_address=_LONG_ADDRESS, reply_to=_LONG_ADDRESS)
    ),
    estimate_size(Ping(seq=0, target=_LONG_NAME, reply_to=_LONG_ADDRESS)),
)
"""The largest estimate of a datagram message without its updates."""
MIN_UPDATE_BYTES: Final = estimate_size(Update(kind=UpdateKind.LEFT, node="n", incarnation=0))
"""The smallest estimate of one update: a datagram with less room left carries no more."""
