"""Raft's messages, as frozen dataclasses that cannot be built invalid.

Names follow the Raft paper (Ongaro & Ousterhout 2014, Figure 2). The sender of a message is
not a field: the transport knows it (the wire envelope carries it, the simulator passes it to
``RaftCore.step``), so a message cannot lie about who sent it.

Heartbeats are separate from AppendEntries, as in etcd-io/raft: a heartbeat carries no log
position, so it never fails a consistency check while pipelined appends are still in flight,
and it carries the ReadIndex context that confirms leadership for linearizable reads.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class EntryKind(enum.IntEnum):
    """What a log entry holds. Values travel on the wire: append only."""

    NORMAL = 0  # a client command for the state machine
    NOOP = 1  # appended by every new leader (Raft §8): commits earlier terms' entries
    CONFIG = 2  # data is an encoded ``Membership``; in force from the moment it is appended


def _all_non_negative(*values: int) -> bool:
    """Whether every value is a non-negative int (no bool): the check of
    ``_check_non_negative``, without the names it needs only to word an error. A plain
    loop: ``all()`` over a generator costs a third more, on every message built."""
    for value in values:  # noqa: SIM110
        if type(value) is not int or value < 0:
            return False
    return True


def _check_non_negative(**fields: int) -> None:
    for name, value in fields.items():
        if type(value) is not int or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """One log entry. ``client_id`` and ``seq`` identify a command so a retry applies once."""

    term: int
    index: int
    kind: EntryKind = EntryKind.NORMAL
    data: bytes = b""
    client_id: str = ""
    seq: int = 0

    def __post_init__(self) -> None:
        term, index, seq = self.term, self.index, self.seq
        if (
            type(term) is int
            and type(index) is int
            and type(seq) is int
            and term >= 0
            and index > 0
            and seq >= 0
            and type(self.data) is bytes
            and type(self.client_id) is str
            and isinstance(self.kind, EntryKind)
        ):
            return  # the common case, checked in one go (entries are built by the thousand)
        _check_non_negative(term=term, index=index, seq=seq)
        if index == 0:
            raise ValueError("log indexes start at 1")
        if not isinstance(self.kind, EntryKind):
            raise ValueError(f"kind must be an EntryKind, got {self.kind!r}")
        if type(self.data) is not bytes:
            raise ValueError("data must be bytes")
        if type(self.client_id) is not str:
            raise ValueError("client_id must be str")


_ENTRY_SLOT_SETTERS = tuple(
    Entry.__dict__[name].__set__ for name in ("term", "index", "kind", "data", "client_id", "seq")
)


def build_entry(
    term: int, index: int, kind: EntryKind, data: bytes, client_id: str, seq: int
) -> Entry:
    """An ``Entry`` of values the caller has already checked as ``__post_init__`` checks them
    (exact types, term and seq non-negative, index positive), set slot by slot: a frozen
    dataclass's ``__init__`` sets each field through ``object.__setattr__`` and costs about a
    microsecond, and a leader builds one entry per write, each follower decodes one. Tests
    hold every caller's checks to the dataclass's verdicts."""
    set_term, set_index, set_kind, set_data, set_client_id, set_seq = _ENTRY_SLOT_SETTERS
    entry: Entry = object.__new__(Entry)
    set_term(entry, term)
    set_index(entry, index)
    set_kind(entry, kind)
    set_data(entry, data)
    set_client_id(entry, client_id)
    set_seq(entry, seq)
    return entry


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestVote:
    """Ask for a vote (Raft §5.2), or, with ``pre_vote``, ask whether a vote would be granted
    (thesis §9.6) without anyone changing term. For a pre-vote, ``term`` is the term the
    candidate would campaign in (its own plus one)."""

    term: int
    last_log_index: int
    last_log_term: int
    pre_vote: bool = False
    transfer: bool = False  # sent after TimeoutNow: the old leader asked for this election

    def __post_init__(self) -> None:
        _check_non_negative(
            term=self.term, last_log_index=self.last_log_index, last_log_term=self.last_log_term
        )
        if type(self.pre_vote) is not bool or type(self.transfer) is not bool:
            raise ValueError("pre_vote and transfer must be bool")


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestVoteReply:
    """A (pre-)vote answer. A granted reply carries the request's term (etcd-io/etcd#8243)."""

    term: int
    granted: bool
    pre_vote: bool = False

    def __post_init__(self) -> None:
        _check_non_negative(term=self.term)
        if type(self.granted) is not bool or type(self.pre_vote) is not bool:
            raise ValueError("granted and pre_vote must be bool")


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendEntries:
    """Replicate ``entries`` after (``prev_log_index``, ``prev_log_term``) (Raft §5.3)."""

    term: int
    prev_log_index: int
    prev_log_term: int
    entries: tuple[Entry, ...]
    leader_commit: int

    def __post_init__(self) -> None:
        term, prev_log_index, entries = self.term, self.prev_log_index, self.entries
        if (
            _all_non_negative(term, prev_log_index, self.prev_log_term, self.leader_commit)
            and type(entries) is tuple
        ):
            # The common case in one pass (two appends per round trip on a leader, one
            # decoded on each follower); anything odd is checked again below, in order, so
            # the error is the same.
            expected = prev_log_index + 1
            for entry in entries:
                if type(entry) is not Entry or entry.index != expected or entry.term > term:
                    break
                expected += 1
            else:
                return
        _check_non_negative(
            term=self.term,
            prev_log_index=self.prev_log_index,
            prev_log_term=self.prev_log_term,
            leader_commit=self.leader_commit,
        )
        if type(self.entries) is not tuple or not all(type(e) is Entry for e in self.entries):
            raise ValueError("entries must be a tuple of Entry")
        expected = self.prev_log_index + 1
        for entry in self.entries:
            if entry.index != expected:
                raise ValueError("entries must be consecutive, following prev_log_index")
            if entry.term > self.term:
                raise ValueError("an entry cannot be newer than the leader's term")
            expected += 1


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendEntriesReply:
    """Answer to AppendEntries. On success ``match_index`` is the last index now known to
    match the leader. On rejection, (``hint_index``, ``hint_term``) let the leader skip back
    a whole term at a time instead of one entry (Raft §5.3, the "fast back-off")."""

    term: int
    success: bool
    match_index: int = 0
    rejected_index: int = 0
    hint_index: int = 0
    hint_term: int = 0

    def __post_init__(self) -> None:
        if type(self.success) is bool and _all_non_negative(
            self.term, self.match_index, self.rejected_index, self.hint_index, self.hint_term
        ):
            return  # the common case, checked in one go
        _check_non_negative(
            term=self.term,
            match_index=self.match_index,
            rejected_index=self.rejected_index,
            hint_index=self.hint_index,
            hint_term=self.hint_term,
        )
        if type(self.success) is not bool:
            raise ValueError("success must be bool")


@dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat:
    """Leader liveness and commit propagation. ``commit`` is capped at what the follower is
    known to match; ``read_ctx`` is the leader's latest ReadIndex round (thesis §6.4)."""

    term: int
    commit: int
    read_ctx: int = 0

    def __post_init__(self) -> None:
        _check_non_negative(term=self.term, commit=self.commit, read_ctx=self.read_ctx)


@dataclass(frozen=True, slots=True, kw_only=True)
class HeartbeatReply:
    """Echoes the heartbeat's ``read_ctx`` so the leader can count ReadIndex confirmations."""

    term: int
    read_ctx: int = 0

    def __post_init__(self) -> None:
        _check_non_negative(term=self.term, read_ctx=self.read_ctx)


@dataclass(frozen=True, slots=True, kw_only=True)
class InstallSnapshot:
    """One chunk of the leader's snapshot (Raft §7, Figure 13), for a follower whose next
    entry the leader has compacted away. ``membership`` is an encoded ``Membership``;
    ``total`` is the size of the whole snapshot, ``offset`` where this chunk starts."""

    term: int
    index: int
    snapshot_term: int
    membership: bytes
    total: int
    offset: int
    data: bytes

    def __post_init__(self) -> None:
        _check_non_negative(
            term=self.term,
            index=self.index,
            snapshot_term=self.snapshot_term,
            total=self.total,
            offset=self.offset,
        )
        if type(self.data) is not bytes or type(self.membership) is not bytes:
            raise ValueError("data and membership must be bytes")
        if self.offset + len(self.data) > self.total:
            raise ValueError("chunk runs past the snapshot's total size")
        if self.index == 0:
            raise ValueError("a snapshot covers at least index 1")

    @property
    def last(self) -> bool:
        return self.offset + len(self.data) == self.total


@dataclass(frozen=True, slots=True, kw_only=True)
class InstallSnapshotReply:
    """``next_offset`` is the byte the follower wants next; ``done`` means the snapshot at
    ``index`` is installed and durable (or the follower already had everything it covers)."""

    term: int
    index: int
    next_offset: int
    done: bool

    def __post_init__(self) -> None:
        _check_non_negative(term=self.term, index=self.index, next_offset=self.next_offset)
        if type(self.done) is not bool:
            raise ValueError("done must be bool")


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeoutNow:
    """From a leader handing over leadership (thesis §3.10): campaign now, without pre-vote;
    the target's log is known to be as up to date as the leader's."""

    term: int

    def __post_init__(self) -> None:
        _check_non_negative(term=self.term)


RaftMessage = (
    RequestVote
    | RequestVoteReply
    | AppendEntries
    | AppendEntriesReply
    | Heartbeat
    | HeartbeatReply
    | InstallSnapshot
    | InstallSnapshotReply
    | TimeoutNow
)
"""Every message the Raft core sends or accepts."""
