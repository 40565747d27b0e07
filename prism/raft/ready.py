"""``Ready``: everything a Raft core wants done, as data, and the order to do it in.

The handling loop, written once (every driver and the simulator run exactly this)::

    while core.has_ready():
        ready = core.ready()
        send(ready.messages)                        # may leave at once
        persist(ready.hard_state, ready.entries,    # snapshot first (Storage.save), then
                ready.snapshot)                     # entries and hard state; one fsync
        send(ready.messages_after_persist)          # votes and acknowledgements: after fsync
        if ready.snapshot: restore(ready.snapshot)  # the state machine becomes the snapshot
        apply(ready.committed_entries)              # to the state machine, in order
        core.advance(ready)
        if core.wants_snapshot(applied_index):      # the log has grown past its threshold
            snapshot = Snapshot(meta=core.snapshot_meta(applied_index), data=machine.snapshot())
            storage.save_snapshot(snapshot)         # durable before the log is trimmed
            storage.compact(core.snapshot_saved(snapshot))

A message in ``messages_after_persist`` promises something about this node's disk (a vote,
a term, entries held), so it must not leave before the write it depends on is durable
(Raft Figure 2: "updated on stable storage before responding to RPCs"). A crash before the
write completes loses the write and the messages together, which is what the simulator models.
"""

from __future__ import annotations

from dataclasses import dataclass

from prism.notes import Note as Note  # the cores' trace events, re-exported
from prism.raft.messages import Entry, RaftMessage
from prism.raft.snapshot import Snapshot


@dataclass(frozen=True, slots=True)
class HardState:
    """What must survive a crash besides the log: current term, vote in it, commit index."""

    term: int = 0
    vote: str | None = None
    commit: int = 0


@dataclass(frozen=True, slots=True)
class Outbound:
    """A message for one peer."""

    to: str
    message: RaftMessage


@dataclass(frozen=True, slots=True)
class ReadState:
    """A linearizable read may be served once the state machine has applied ``index``."""

    request_id: int
    index: int


@dataclass(frozen=True, slots=True)
class Ready:
    """One batch of work from a core; see the module docstring for the order."""

    hard_state: HardState | None
    entries: tuple[Entry, ...]
    messages: tuple[Outbound, ...]
    messages_after_persist: tuple[Outbound, ...]
    committed_entries: tuple[Entry, ...]
    read_states: tuple[ReadState, ...]
    dropped_reads: tuple[int, ...]
    notes: tuple[Note, ...]
    snapshot: Snapshot | None = None  # from the leader: persist, then restore the machine

    @property
    def must_persist(self) -> bool:
        return self.hard_state is not None or bool(self.entries) or self.snapshot is not None
