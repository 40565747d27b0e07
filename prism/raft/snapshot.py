"""A snapshot: the state machine's state up to a log index, and the membership at that index.

The state machine produces ``data`` (opaque bytes to Raft); the core records where it stands
in the log (``index``, ``term``) and who was in the cluster then, which is what a server
restoring from it needs to take part again (Raft §7, thesis §5.1).
"""

from __future__ import annotations

from dataclasses import dataclass

from prism.raft.membership import Membership


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotMeta:
    index: int
    term: int
    membership: Membership

    def __post_init__(self) -> None:
        for name in ("index", "term"):
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    meta: SnapshotMeta
    data: bytes

    def __post_init__(self) -> None:
        if type(self.data) is not bytes:
            raise ValueError("snapshot data must be bytes")
