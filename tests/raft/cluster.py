"""A synchronous harness for ``RaftCore`` tests: N cores, their storage, one message queue.

Nothing runs on its own: a test ticks nodes and delivers messages explicitly, so every
interleaving is written down in the test. ``run_ready`` is the handling loop of
``prism.raft.ready``, step for step.
"""

from __future__ import annotations

import dataclasses
import random
from collections import deque
from collections.abc import Callable, Iterable, Sequence

from prism.raft.config import RaftConfig
from prism.raft.core import RaftCore, Role
from prism.raft.kv import ApplyResult, Command, KVStateMachine
from prism.raft.messages import Entry, RaftMessage
from prism.raft.ready import HardState, Note, Outbound, ReadState, Ready
from prism.raft.snapshot import Snapshot
from prism.raft.storage import MemoryStorage

LAN = RaftConfig.lan()
ELECTION = LAN.election_timeout_max_ticks  # ticks within which any follower campaigns
# Snapshot every 10 applied entries, keep 3 behind it, and send it 64 bytes at a time.
SMALL_SNAPSHOTS = dataclasses.replace(
    LAN, snapshot_threshold_entries=10, snapshot_trailing_entries=3, snapshot_chunk_bytes=64
)

Wire = tuple[str, str, RaftMessage]  # (src, dst, message)
Drop = Callable[[str, str, RaftMessage], bool]


def put(key: str, value: str) -> bytes:
    return Command(op="put", key=key, value=value).encode()


def entries_with_terms(terms: Sequence[int]) -> list[Entry]:
    """A log whose entry ``i`` (1-based) has term ``terms[i - 1]``."""
    return [
        Entry(term=term, index=index, data=put(f"k{index}", f"t{term}"))
        for index, term in enumerate(terms, start=1)
    ]


def drain(core: RaftCore, storage: MemoryStorage | None = None) -> list[Ready]:
    """The Ready loop of a core with no peers attached: persist, advance, hand back the work."""
    readies = []
    while core.has_ready():
        ready = core.ready()
        if storage is not None:
            storage.save(ready.hard_state, ready.entries)
        readies.append(ready)
        core.advance(ready)
    return readies


class Cluster:
    def __init__(
        self,
        size: int = 3,
        *,
        seed: int = 0,
        config: RaftConfig | None = None,
        voters: int | None = None,
    ) -> None:
        """``size`` servers; the first ``voters`` of them (all by default) form the cluster,
        the others start empty and wait to be added."""
        self.ids = [f"n{i}" for i in range(1, size + 1)]
        self.bootstrap = self.ids[: size if voters is None else voters]
        self.seed = seed
        self.config = config or RaftConfig.lan()
        self.storage = {node: MemoryStorage() for node in self.ids}
        self.cores: dict[str, RaftCore] = {}
        self.kv: dict[str, KVStateMachine] = {}
        self.applied: dict[str, list[ApplyResult]] = {}
        self.queue: deque[Wire] = deque()
        self.sent: list[Wire] = []  # every message that left a node, in order
        self.readies: list[tuple[str, Ready]] = []
        self.notes: list[tuple[str, Note]] = []
        self.read_states: dict[str, list[ReadState]] = {node: [] for node in self.ids}
        self.dropped_reads: dict[str, list[int]] = {node: [] for node in self.ids}
        self.down: set[str] = set()
        self.cuts: set[frozenset[str]] = set()
        for node in self.ids:
            self._boot(node)

    def __getitem__(self, node: str) -> RaftCore:
        return self.cores[node]

    def _boot(self, node: str) -> None:
        stored = self.storage[node]
        self.cores[node] = RaftCore(
            node,
            self.bootstrap if node in self.bootstrap else [],
            config=self.config,
            rng=random.Random(f"{self.seed}/{node}"),
            hard_state=stored.hard_state,
            entries=list(stored.entries),
            snapshot=stored.snapshot,
        )
        self.kv[node] = KVStateMachine()
        if stored.snapshot is not None:
            self.kv[node].restore(stored.snapshot.data)
        self.applied[node] = []

    # ------------------------------------------------------------------ the Ready loop

    def run_ready(self, node: str) -> None:
        core = self.cores[node]
        for _ in range(10_000):
            if not core.has_ready():
                return
            ready = core.ready()
            self.readies.append((node, ready))
            self.send(node, ready.messages)
            self.storage[node].save(ready.hard_state, ready.entries, ready.snapshot)
            self.send(node, ready.messages_after_persist)
            if ready.snapshot is not None:
                self.kv[node].restore(ready.snapshot.data)
            for entry in ready.committed_entries:
                self.applied[node].append(self.kv[node].apply(entry))
            self.read_states[node].extend(ready.read_states)
            self.dropped_reads[node].extend(ready.dropped_reads)
            self.notes.extend((node, note) for note in ready.notes)
            core.advance(ready)
            self.maybe_snapshot(node)
        raise AssertionError(f"{node} always has a Ready")

    def maybe_snapshot(self, node: str) -> None:
        """Snapshot the state machine when the core asks for it (the driver's rule)."""
        core, kv, storage = self.cores[node], self.kv[node], self.storage[node]
        if core.wants_snapshot(kv.applied_index):
            snapshot = Snapshot(meta=core.snapshot_meta(kv.applied_index), data=kv.snapshot())
            storage.save_snapshot(snapshot)
            storage.compact(core.snapshot_saved(snapshot))

    def send(self, src: str, outbound: Iterable[Outbound]) -> None:
        """Put messages on the wire (``run_ready`` does this; tests driving a Ready by hand
        call it themselves)."""
        for out in outbound:
            wire = (src, out.to, out.message)
            self.sent.append(wire)
            self.queue.append(wire)

    # ------------------------------------------------------------------ inputs

    def connected(self, a: str, b: str) -> bool:
        return a not in self.down and b not in self.down and frozenset((a, b)) not in self.cuts

    def deliver_all(self, drop: Drop | None = None) -> int:
        """Deliver queued messages (and what they cause) until quiet; returns how many."""
        delivered = 0
        while self.queue:
            src, dst, msg = self.queue.popleft()
            if not self.connected(src, dst) or (drop is not None and drop(src, dst, msg)):
                continue
            self.cores[dst].step(src, msg)
            self.run_ready(dst)
            delivered += 1
            if delivered > 100_000:
                raise AssertionError("the cluster never goes quiet")
        return delivered

    def step(self, dst: str, src: str, msg: RaftMessage) -> None:
        """Hand ``dst`` a message from ``src`` directly (an injected or forged message)."""
        self.cores[dst].step(src, msg)
        self.run_ready(dst)

    def tick(self, node: str, n: int = 1) -> None:
        """Tick one node ``n`` times; what it sends stays queued."""
        for _ in range(n):
            if node not in self.down:
                self.cores[node].tick()
                self.run_ready(node)

    def tick_all(self, n: int = 1) -> None:
        """``n`` rounds of: tick every live node once, then deliver until quiet."""
        for _ in range(n):
            for node in self.ids:
                self.tick(node)
            self.deliver_all()

    def campaign(self, node: str) -> None:
        self.cores[node].campaign()
        self.run_ready(node)

    def elect(self, node: str = "n1") -> str:
        """Make ``node`` campaign now and deliver until quiet; it must win."""
        self.campaign(node)
        self.deliver_all()
        assert self.leader() == node, f"{node} did not win: {self.leader()} leads"
        return node

    def propose(self, node: str, data: bytes, *, client_id: str = "", seq: int = 0) -> int:
        index, _ = self.cores[node].propose(data, client_id=client_id, seq=seq)
        self.run_ready(node)
        return index

    def write(self, leader: str, count: int, prefix: str = "k") -> None:
        """``count`` puts through ``leader``, each delivered (so committed) before the next."""
        for i in range(count):
            self.propose(leader, put(f"{prefix}{i}", f"value-{prefix}{i}"))
            self.deliver_all()

    def read_index(self, node: str, request_id: int) -> None:
        self.cores[node].read_index(request_id)
        self.run_ready(node)

    # ------------------------------------------------------------------ faults

    def cut(self, a: str, b: str) -> None:
        self.cuts.add(frozenset((a, b)))

    def isolate(self, node: str) -> None:
        for other in self.ids:
            if other != node:
                self.cut(node, other)

    def heal(self) -> None:
        self.cuts.clear()

    def crash(self, node: str) -> None:
        """Stop ``node``: it loses everything but its storage; messages to it are lost."""
        self.down.add(node)

    def restart(self, node: str) -> None:
        """Rebuild ``node`` from its storage (its state machine replays the log)."""
        self.down.discard(node)
        self._boot(node)

    def preload(self, node: str, terms: Sequence[int], hard_state: HardState) -> None:
        """Replace ``node``'s storage with a log of these terms, then restart it."""
        self.storage[node].entries = entries_with_terms(terms)
        self.storage[node].hard_state = hard_state
        self.restart(node)

    # ------------------------------------------------------------------ queries

    def leader(self) -> str | None:
        """The live leader of the highest term, if any."""
        leaders = [n for n in self.ids if n not in self.down and self[n].role is Role.LEADER]
        return max(leaders, key=lambda n: self[n].term, default=None)

    def noted(self, node: str, event: str) -> list[Note]:
        return [note for n, note in self.notes if n == node and note.event == event]
