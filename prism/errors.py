"""Prism's exception tree, split by who is at fault.

::

    PrismError                    base of everything Prism raises on purpose
    ├── DecodeError               bytes from a peer we cannot accept (remote fault: counted)
    ├── ConfigError               a configuration value is out of range (local fault, at startup)
    └── RaftError                 a request the Raft core cannot serve right now
        ├── NotLeader             this node does not lead; ``leader_hint`` names who might
        └── ProposalDropped       the leader refused the proposal (overload, no quorum)

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


class RaftError(PrismError):
    """A Raft request that cannot be served by this node at this moment."""


class NotLeader(RaftError):
    """This node is not the leader. ``leader_hint`` is the last known leader, or None."""

    def __init__(self, leader_hint: str | None) -> None:
        self.leader_hint = leader_hint
        hint = f"; try {leader_hint}" if leader_hint else "; no leader known"
        super().__init__(f"not the leader{hint}")


class ProposalDropped(RaftError):
    """The leader refused a proposal, for the reason given (for example, too many uncommitted)."""
