"""Prism's exception tree, split by who is at fault.

::

    PrismError                    base of everything Prism raises on purpose
    ├── DecodeError               bytes from a peer we cannot accept (remote fault: counted)
    │   └── FrameError            a SWIM stream frame is oversize or cut short (swim.transport)
    ├── ConfigError               a configuration value is out of range (local fault, at startup)
    ├── StorageCorrupt            a data directory fails its checks; names the file and byte offset
    ├── NameConflict              SWIM: a live member already holds our name (swim.driver)
    ├── JoinFailed                SWIM: no seed answered within the attempts (swim.driver)
    ├── SubscriptionOverflow      SWIM: a subscriber fell behind; resync from members()
    │                             (swim.subscriptions)
    └── RaftError                 a request the Raft core cannot serve right now
        ├── NotLeader             this node does not lead; ``leader_hint`` (and
        │                         ``leader_address``, from a driver) name who might
        ├── ProposalDropped       the leader refused the proposal (overload, no quorum)
        │   ├── TransferInProgress    ... because it is handing leadership over
        │   └── Overloaded            ... because too many requests already wait on this node
        ├── ProposalTimeout       no outcome in time: a write may still commit (retry it with
        │                         the same client id and seq, and it applies once)
        ├── ProposalLost          another entry took the proposal's index: it never commits
        ├── ShuttingDown          the driver stopped: a pending write's outcome is unknown
        └── MembershipChangeRefused   a membership change cannot start now

Callers that misuse an API (wrong types, calls out of order) get ``TypeError`` /
``ValueError`` / ``RuntimeError`` as usual: those are bugs, not conditions to handle.
"""

from __future__ import annotations


class PrismError(Exception):
    """Base of every exception Prism raises on purpose."""


class DecodeError(PrismError):
    """Bytes from the network could not be decoded into a valid message.

    The one exception type the wire codec lets escape, whatever is wrong with the input.
    """


class ConfigError(PrismError):
    """A configuration is invalid; the message lists every problem, one per line."""


class StorageCorrupt(PrismError):
    """Durable Raft state on disk fails a check that a crash alone cannot explain.

    A torn write at the tail of the log is repaired on open, not raised; this is for what
    must not be papered over: a bad checksum with valid records after it, a missing segment,
    a log that does not continue, a snapshot file that fails its check. ``path`` names the
    file and ``offset`` the byte where the problem was found (None when the file is missing).
    """

    def __init__(self, path: str, offset: int | None, problem: str) -> None:
        self.path = path
        self.offset = offset
        self.problem = problem
        where = f"{path} at byte {offset}" if offset is not None else path
        super().__init__(f"{where}: {problem}")


class RaftError(PrismError):
    """A Raft request that cannot be served by this node at this moment."""


class NotLeader(RaftError):
    """This node is not the leader. ``leader_hint`` is the last known leader, or None;
    ``leader_address`` is where it listens (``host:port``), when the driver knows it."""

    def __init__(self, leader_hint: str | None, leader_address: str | None = None) -> None:
        self.leader_hint = leader_hint
        self.leader_address = leader_address
        if leader_hint and leader_address:
            hint = f"; try {leader_hint} at {leader_address}"
        elif leader_hint:
            hint = f"; try {leader_hint}"
        else:
            hint = "; no leader known"
        super().__init__(f"not the leader{hint}")


class ProposalDropped(RaftError):
    """The leader refused a proposal, for the reason given (for example, too many uncommitted)."""


class TransferInProgress(ProposalDropped):
    """The leader is handing leadership over and takes no proposals until that ends (it
    succeeds, or aborts after an election timeout)."""


class Overloaded(ProposalDropped):
    """A driver refused a request before the core saw it: too many proposals (or bytes of
    them), or too many reads, already wait on this node. Nothing was proposed; retry later."""


class ProposalTimeout(RaftError):
    """A proposal or read got no outcome within its timeout. A proposal may still commit
    later: retry it with the same ``client_id`` and ``seq`` so that it applies at most once."""


class ProposalLost(RaftError):
    """The proposal's entry was overwritten by another leader's entry at its index: it will
    never commit. Retrying is safe."""


class ShuttingDown(RaftError):
    """The driver is closing or was cancelled. A proposal pending at that moment may or may
    not have committed (retry elsewhere with the same ``client_id`` and ``seq``)."""


class MembershipChangeRefused(RaftError):
    """A membership change that cannot start now, for the reason given (another change is
    in progress, the new leader has not committed an entry of its term yet, the server is
    already a member, or it is the last voter)."""
