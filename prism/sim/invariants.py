"""Online invariant checkers for a simulated Raft cluster (thesis Figure 3.2, plus client-level
promises), evaluated as the run goes, not only at its end.

Each check records its *first* violation with the simulated time, and the run goes on, so a
report shows everything that broke. What each check observes:

* election-safety: at most one leader per term, from every ``raft.became_leader``;
* leader-append-only: while a node leads a term, the entry at its previous last index keeps
  its term and the log never shrinks;
* log-matching: every durable write is folded into a per-node chain hash
  (hash of the previous entry's chain, this entry's term and content); two nodes holding an
  entry with the same index and term must hold the same chain hash there, that is,
  identical prefixes;
* leader-completeness: a new leader's log holds every entry any leader has committed;
* state-machine-safety: no two nodes apply different entries at one index, and a snapshot
  a node restores from ends at the committed entry of its index;
* no-lost-acked-write: a new leader's log, and at the end the cluster's committed log, hold
  every write a client was told succeeded.

Linearizability of the client history is judged at the end (``prism.sim.linearizability``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import final

from prism.raft.log import RaftLog
from prism.raft.messages import Entry, EntryKind
from prism.raft.snapshot import Snapshot, SnapshotMeta

INVARIANTS = (
    "election-safety",
    "leader-append-only",
    "log-matching",
    "leader-completeness",
    "state-machine-safety",
    "no-lost-acked-write",
    "linearizable",
    "liveness",
)


def entry_digest(entry: Entry) -> bytes:
    h = hashlib.blake2b(digest_size=12)
    h.update(
        f"{entry.term}/{entry.index}/{int(entry.kind)}/{entry.client_id}/{entry.seq}/".encode()
    )
    h.update(entry.data)
    return h.digest()


@dataclass(frozen=True, slots=True)
class Violation:
    invariant: str
    time_ns: int
    detail: str


@final
class Checkers:
    def __init__(self) -> None:
        self.violations: dict[str, Violation] = {}
        self.unknown: dict[str, str] = {}  # invariants that could not be decided, and why
        self.leaders_by_term: dict[int, str] = {}
        self._leading: dict[str, tuple[int, int, int]] = {}  # node -> (term, last, last term)
        self._chains: dict[str, list[bytes]] = {}  # node -> chain hash per durable index
        self._chain_at: dict[tuple[int, int], bytes] = {}  # (index, term) -> chain hash
        self.committed: dict[int, tuple[int, bytes]] = {}  # index -> (term, entry digest)
        self.max_committed = 0  # Invariant: max(self.committed, default=0)
        self.acked: dict[tuple[str, int], int] = {}  # (client, seq) -> index acknowledged at
        # Client commands committed, counted once however often they were retried.
        self.committed_writes: set[tuple[str, int]] = set()

    @property
    def ok(self) -> bool:
        return not self.violations

    def fail(self, invariant: str, now_ns: int, detail: str) -> None:
        if invariant not in self.violations:
            self.violations[invariant] = Violation(invariant, now_ns, detail)

    # ---- hooks, called by the simulated cluster

    def became_leader(self, node: str, term: int, log: RaftLog | None, now_ns: int) -> None:
        """``log`` is the new leader's log, or None when the node has already moved past
        ``term`` by the time its note is seen: then only election safety can be judged."""
        other = self.leaders_by_term.setdefault(term, node)
        if other != node:
            self.fail(
                "election-safety", now_ns, f"{other} and {node} both became leader of term {term}"
            )
        if log is None:
            return
        if self.max_committed:
            index = self.max_committed
            if not self._log_holds(log, index):
                self.fail(
                    "leader-completeness",
                    now_ns,
                    f"{node} leads term {term} without committed entry {index}",
                )
        for (client, seq), index in sorted(self.acked.items()):
            if not self._log_holds(log, index):
                self.fail(
                    "no-lost-acked-write",
                    now_ns,
                    f"{node} leads term {term} without acknowledged write {client}#{seq} "
                    f"at index {index}",
                )
                break
        self._leading[node] = (term, log.last_index, log.last_term)

    def _log_holds(self, log: RaftLog, index: int) -> bool:
        if index <= log.snapshot_index:
            # Compacted into a snapshot, which holds only committed entries (checked when a
            # snapshot is restored, and by the applies it was taken from).
            return True
        term, digest = self.committed[index]
        if log.term_at(index) != term:
            return False
        return entry_digest(log.entry(index)) == digest

    def leader_stepped(self, node: str, term: int, log: RaftLog, now_ns: int) -> None:
        """After every event handled by a node that leads ``term``."""
        seen = self._leading.get(node)
        if seen is None or seen[0] != term:
            self._leading[node] = (term, log.last_index, log.last_term)
            return
        _, last, last_term = seen
        if last < log.snapshot_index:
            pass  # compacted behind a snapshot of committed (so unchanged) entries
        elif log.last_index < last or log.term_at(last) != last_term:
            self.fail(
                "leader-append-only",
                now_ns,
                f"{node}, leader of term {term}, lost or rewrote entry {last}",
            )
        self._leading[node] = (term, log.last_index, log.last_term)

    def not_leading(self, node: str) -> None:
        self._leading.pop(node, None)

    def persisted(
        self,
        node: str,
        entries: tuple[Entry, ...],
        now_ns: int,
        snapshot: Snapshot | None = None,
    ) -> None:
        chain = self._chains.setdefault(node, [b""])
        if snapshot is not None:
            self._snapshot_persisted(node, chain, snapshot.meta, now_ns)
        if not entries:
            return
        del chain[entries[0].index :]
        for entry in entries:
            h = hashlib.blake2b(chain[-1], digest_size=12)
            h.update(entry_digest(entry))
            value = h.digest()
            chain.append(value)
            seen = self._chain_at.setdefault((entry.index, entry.term), value)
            if seen != value:
                self.fail(
                    "log-matching",
                    now_ns,
                    f"{node} holds entry {entry.index} of term {entry.term} after a prefix "
                    "that differs from another node's",
                )

    def _snapshot_persisted(
        self, node: str, chain: list[bytes], meta: SnapshotMeta, now_ns: int
    ) -> None:
        """A snapshot from the leader replaced ``node``'s log prefix: its chain at the
        snapshot's index is the chain of the entry the snapshot ends at (rule 6 kept what
        follows when it matched; rule 7 dropped it otherwise)."""
        value = self._chain_at.get((meta.index, meta.term))
        if value is None:
            self.fail(
                "log-matching",
                now_ns,
                f"{node} installed a snapshot ending at entry {meta.index} of term {meta.term},"
                " which no node ever held",
            )
            return
        if len(chain) > meta.index and chain[meta.index] == value:
            return  # rule 6: the log already held that entry; what follows stays
        del chain[meta.index :]
        chain.extend([b""] * (meta.index - len(chain)))  # compacted: never compared again
        chain.append(value)

    def snapshot_restored(self, node: str, meta: SnapshotMeta, now_ns: int) -> None:
        """``node``'s state machine became a snapshot up to ``meta.index``."""
        seen = self.committed.get(meta.index)
        if seen is None or seen[0] != meta.term:
            self.fail(
                "state-machine-safety",
                now_ns,
                f"{node} restored a snapshot ending at entry {meta.index} of term {meta.term}, "
                + (
                    "which was never committed"
                    if seen is None
                    else f"but the entry of term {seen[0]} was committed there"
                ),
            )

    def leader_committed(self, log: RaftLog, upto: int, now_ns: int) -> None:
        """A leader's commit index reached ``upto``: record what it committed."""
        for index in range(max(self.max_committed + 1, log.first_index), upto + 1):
            self._record_commit(log.entry(index), now_ns, "leader")

    def applied(self, node: str, entry: Entry, now_ns: int) -> None:
        self._record_commit(entry, now_ns, node)

    def _record_commit(self, entry: Entry, now_ns: int, who: str) -> None:
        digest = entry_digest(entry)
        if entry.kind is EntryKind.NORMAL:
            self.committed_writes.add((entry.client_id, entry.seq))
        seen = self.committed.setdefault(entry.index, (entry.term, digest))
        self.max_committed = max(self.max_committed, entry.index)
        if seen != (entry.term, digest):
            self.fail(
                "state-machine-safety",
                now_ns,
                f"{who} applied entry {entry.index} of term {entry.term}, but the entry of "
                f"term {seen[0]} was committed there",
            )

    def write_acknowledged(self, client: str, seq: int, index: int) -> None:
        self.acked.setdefault((client, seq), index)

    def lost_writes(self, final_log: RaftLog | None, commit: int) -> list[tuple[str, int]]:
        """Acknowledged writes not held by the final committed log (up to ``commit``)."""
        lost = []
        for (client, seq), index in sorted(self.acked.items()):
            if final_log is None or index > commit or not self._log_holds(final_log, index):
                lost.append((client, seq))
        return lost
