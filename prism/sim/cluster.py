"""A simulated Raft cluster: N real ``RaftCore`` instances on virtual time and a simulated
network, run through the same handling loop as the driver (``prism.raft.ready``).

What a crash keeps: only what reached the node's ``MemoryStorage`` (its log, hard state and
snapshot). A Ready's durable part
takes ``disk_ms`` of virtual time to write; a crash before it completes loses the write
and the messages that were waiting for it. Everything else (role, leader, progress, the
state machine, pending client requests) is volatile and gone; on restart the node rebuilds
its core from storage and re-applies the committed log to a fresh state machine.

A paused node (SIGSTOP, a long GC pause) processes nothing: its ticks do not run, arriving
messages wait in its socket buffer (bounded, as a kernel's is), and a disk write in
progress completes only when it resumes.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import final

from prism.errors import NotLeader, ProposalDropped, RaftError
from prism.raft.config import RaftConfig
from prism.raft.core import RaftCore, Role
from prism.raft.kv import Command, KVStateMachine
from prism.raft.messages import RaftMessage
from prism.raft.notices import NoticeHold
from prism.raft.ready import Outbound, Ready
from prism.raft.snapshot import Snapshot
from prism.raft.storage import MemoryStorage
from prism.sim.invariants import Checkers
from prism.sim.loop import NS_PER_MS, EventLoop
from prism.sim.network import LinkSpec, Network
from prism.sim.rng import derive
from prism.sim.timeline import Timeline

SOCKET_BUFFER_MESSAGES = 1024  # what a paused node's socket holds before dropping

# Core notes shown in the timeline as they are (the others get handling of their own).
_NOTE_TEXT = {
    "raft.membership": "membership now voters {{{voters}}} learners {{{learners}}} (entry {index})",
    "raft.transfer_aborted": "abandons the leadership transfer to {target} ({reason})",
    "raft.timeout_now": "told by {sender} to campaign now (leadership transfer)",
    "raft.sending_snapshot": "sends its snapshot up to index {index} to {to}",
}


class ReplyKind(enum.StrEnum):
    OK = "ok"
    FAIL = "fail"  # definite: the operation did not and will not take effect
    NOT_LEADER = "not_leader"  # definite for this attempt; try the hinted leader
    LOST = "lost"  # this attempt's entry was overwritten: it will never commit
    REJECTED = "rejected"  # refused before proposing (overload, no quorum): retry later


@dataclass(frozen=True, slots=True)
class ClientRequest:
    request_id: int
    client: str
    seq: int
    f: str  # read | write | cas
    key: str
    value: str | None = None
    expected: str | None = None


@dataclass(frozen=True, slots=True)
class ClientReply:
    request_id: int
    kind: ReplyKind
    value: str | None = None
    leader_hint: str | None = None
    node: str = ""


ReplyHandler = Callable[[ClientReply], None]


@dataclass(frozen=True, slots=True)
class Ack:
    """A node told a client its write took effect (the entry's term and index)."""

    time_ns: int
    node: str
    term: int
    index: int


@dataclass(slots=True)
class SimNode:
    id: str
    storage: MemoryStorage = field(default_factory=MemoryStorage)
    core: RaftCore | None = None
    kv: KVStateMachine = field(default_factory=KVStateMachine)
    up: bool = True
    paused: bool = False
    persisting: bool = False
    incarnation: int = 0
    inbox: list[tuple[str, RaftMessage]] = field(default_factory=list)
    notices: NoticeHold = field(default_factory=NoticeHold)  # the driver's held notices
    deferred: list[Callable[[], None]] = field(default_factory=list)  # run on resume
    writes: dict[int, tuple[ClientRequest, int, ReplyHandler]] = field(default_factory=dict)
    reads: dict[int, tuple[ClientRequest, ReplyHandler]] = field(default_factory=dict)
    reads_ready: list[tuple[int, int]] = field(default_factory=list)  # (index, read id)
    leader_since_ns: int = -1
    disk_stalled_until_ns: int = 0  # a write that starts before then completes then


@final
class RaftSim:
    """N nodes, a network, a checker set and a timeline, all driven by one seed."""

    def __init__(
        self,
        *,
        nodes: int,
        seed: int,
        config: RaftConfig,
        link: LinkSpec,
        disk_ms: float = 0.5,
        client_ms: float = 0.5,
        clock_skew: float = 0.0,
        initial_voters: int | None = None,
    ) -> None:
        """``initial_voters`` servers (all by default) form the cluster; the others run but
        wait to be added by a membership change."""
        if not 1 <= nodes <= 64:
            raise ValueError("nodes must be between 1 and 64")
        if initial_voters is not None and not 1 <= initial_voters <= nodes:
            raise ValueError("initial_voters must be between 1 and nodes")
        self.seed = seed
        self.config = config
        self.ids = [f"n{i}" for i in range(1, nodes + 1)]
        self.bootstrap = self.ids[: initial_voters or nodes]
        self.snapshots_taken = 0
        self.snapshots_installed = 0
        self.loop = EventLoop(derive(seed, "loop"))
        self.network = Network(self.loop, self.ids, seed=seed, link=link)
        self.checkers = Checkers()
        self.timeline = Timeline()
        self.nodes = {node_id: SimNode(node_id) for node_id in self.ids}
        self.tick_ns = config.tick_ms * NS_PER_MS
        self.disk_ns = int(disk_ms * NS_PER_MS)
        self.client_ns = int(client_ms * NS_PER_MS)
        self.elections = 0
        self.acks: list[Ack] = []  # every write or cas a node acknowledged to a client
        self.max_leaders_at_once = 1
        self.overlap_ns = 0  # virtual time with more than one node believing it leads
        self._overlap_since = -1
        self._read_ids = 0
        self._phase_rng = derive(seed, "tick-phase")
        if not 0.0 <= clock_skew < 1.0:
            raise ValueError("clock_skew must be at least 0 and below 1")
        # Each node's clock runs at its own rate: a tick lasts tick_ms * rate of real time.
        # Raft's safety must not depend on it; only timeouts stretch or shrink.
        skew_rng = derive(seed, "clock-skew")
        self.tick_ns_of = {
            node_id: int(self.tick_ns * skew_rng.uniform(1.0 - clock_skew, 1.0 + clock_skew))
            for node_id in self.ids
        }
        for node in self.nodes.values():
            self._start(node)

    # ------------------------------------------------------------------ lifecycle

    def _start(self, node: SimNode) -> None:
        node.incarnation += 1
        node.up = True
        node.paused = False
        node.persisting = False
        node.inbox = []
        node.notices = NoticeHold()
        node.deferred = []
        node.writes = {}
        node.reads = {}
        node.reads_ready = []
        node.kv = KVStateMachine()
        snapshot = node.storage.snapshot
        if snapshot is not None:
            node.kv.restore(snapshot.data)
        node.core = RaftCore(
            node.id,
            self.bootstrap if node.id in self.bootstrap else [],
            config=self.config,
            rng=derive(self.seed, f"core/{node.id}/{node.incarnation}"),
            hard_state=node.storage.hard_state,
            entries=node.storage.entries,
            snapshot=snapshot,
        )
        incarnation = node.incarnation
        phase = self._phase_rng.randrange(1, self.tick_ns + 1)
        self.loop.call_later(phase, lambda: self._tick(node, incarnation))
        self._pump(node)

    def crash(self, node_id: str) -> None:
        node = self.nodes[node_id]
        if not node.up:
            return
        self.timeline.add(self.loop.now_ns, node_id, "crashes (volatile state lost)")
        self._left_leadership(node)
        node.up = False
        node.core = None
        node.incarnation += 1  # cancels its ticks and in-flight disk writes

    def restart(self, node_id: str) -> None:
        node = self.nodes[node_id]
        if node.up:
            return
        self.timeline.add(self.loop.now_ns, node_id, "restarts from its durable state")
        self._start(node)

    def stall_disk(self, node_id: str, seconds: float) -> None:
        """The node's disk stops answering for ``seconds``: a write started meanwhile
        completes only when the stall ends (a sick disk, not a dead process)."""
        node = self.nodes[node_id]
        node.disk_stalled_until_ns = self.loop.now_ns + int(seconds * 1e9)
        self.timeline.add(self.loop.now_ns, node_id, f"disk stalls for {seconds:g}s")

    def pause(self, node_id: str) -> None:
        node = self.nodes[node_id]
        if node.up and not node.paused:
            node.paused = True
            self.timeline.add(self.loop.now_ns, node_id, "paused (processes nothing)")

    def resume(self, node_id: str) -> None:
        node = self.nodes[node_id]
        if not (node.up and node.paused):
            return
        node.paused = False
        self.timeline.add(self.loop.now_ns, node_id, "resumed")
        inbox, node.inbox = node.inbox, []
        for src, msg in inbox:
            self._step(node, src, msg)
        deferred, node.deferred = node.deferred, []
        for callback in deferred:
            callback()
        self._pump(node)

    # ------------------------------------------------------------------ events

    def _tick(self, node: SimNode, incarnation: int) -> None:
        if node.incarnation != incarnation:
            return
        self.loop.call_later(self.tick_ns_of[node.id], lambda: self._tick(node, incarnation))
        core = node.core
        if node.paused or core is None:
            return
        # The driver's order: send the notices held since the last tick, then tick.
        if node.notices:
            leading = core.role is Role.LEADER
            for out in node.notices.release(leading=leading, term=core.term):
                self.network.send(node.id, out.to, out.message, self._deliver)
        core.tick()
        self._pump(node)

    def _deliver(self, src: str, dst: str, message: object) -> None:
        node = self.nodes[dst]
        if not node.up:
            return
        assert isinstance(message, RaftMessage)
        self.timeline.digest_message(self.loop.now_ns, src, dst, message)
        if node.paused:
            if len(node.inbox) < SOCKET_BUFFER_MESSAGES:
                node.inbox.append((src, message))
            return
        self._step(node, src, message)
        self._pump(node)

    def _step(self, node: SimNode, src: str, message: RaftMessage) -> None:
        assert node.core is not None
        node.core.step(src, message)

    def _pump(self, node: SimNode) -> None:
        """The handling loop of ``prism.raft.ready``, with a disk that takes time."""
        core = node.core
        if core is None or node.paused or node.persisting:
            return
        while core.has_ready():
            ready = core.ready()
            self._observe(node, core, ready)
            self._send(node, core, ready.messages)
            if ready.must_persist and (self.disk_ns > 0 or node.disk_stalled_until_ns):
                node.persisting = True
                delay = max(self.disk_ns, node.disk_stalled_until_ns - self.loop.now_ns)
                self.loop.call_later(delay, partial(self._persisted, node, node.incarnation, ready))
                return
            self._finish(node, core, ready)

    def _send(self, node: SimNode, core: RaftCore, messages: Sequence[Outbound]) -> None:
        leading = core.role is Role.LEADER
        admit = node.notices.admit
        send = self.network.send
        for out in messages:
            if admit(out, leading=leading):
                send(node.id, out.to, out.message, self._deliver)

    def _persisted(self, node: SimNode, incarnation: int, ready: Ready) -> None:
        if node.incarnation != incarnation:
            return  # crashed while writing: the write and its messages are lost
        if node.paused:  # the write finished; the process sees it when it runs again
            node.deferred.append(partial(self._persisted, node, incarnation, ready))
            return
        node.persisting = False
        assert node.core is not None
        self._finish(node, node.core, ready)
        self._pump(node)

    def _finish(self, node: SimNode, core: RaftCore, ready: Ready) -> None:
        now = self.loop.now_ns
        if ready.must_persist:
            node.storage.save(ready.hard_state, ready.entries, ready.snapshot)
            self.checkers.persisted(node.id, ready.entries, now, ready.snapshot)
        self._send(node, core, ready.messages_after_persist)
        if ready.snapshot is not None:
            node.kv.restore(ready.snapshot.data)
            self.snapshots_installed += 1
            self.checkers.snapshot_restored(node.id, ready.snapshot.meta, now)
            meta = ready.snapshot.meta
            self.timeline.add(
                now,
                node.id,
                f"installed the leader's snapshot up to index {meta.index} (term {meta.term})",
            )
        for entry in ready.committed_entries:
            result = node.kv.apply(entry)
            self.checkers.applied(node.id, entry, now)
            pending = node.writes.pop(entry.index, None)
            if pending is None:
                continue
            request, term, reply = pending
            if entry.term != term or entry.client_id != request.client or entry.seq != request.seq:
                self._reply(reply, ClientReply(request.request_id, ReplyKind.LOST, node=node.id))
                continue
            if request.f == "write" or result.ok:
                self.checkers.write_acknowledged(request.client, request.seq, entry.index)
                self.acks.append(Ack(self.loop.now_ns, node.id, entry.term, entry.index))
                kind = ReplyKind.OK
            else:
                kind = ReplyKind.FAIL  # compare-and-set whose expectation did not hold
            self._reply(reply, ClientReply(request.request_id, kind, result.value, node=node.id))
        for state in ready.read_states:
            node.reads_ready.append((state.index, state.request_id))
        for read_id in ready.dropped_reads:
            dropped = node.reads.pop(read_id, None)
            if dropped is not None:
                request, reply = dropped
                self._reply(
                    reply,
                    ClientReply(request.request_id, ReplyKind.NOT_LEADER, node=node.id),
                )
        self._serve_reads(node)
        core.advance(ready)
        if core.wants_snapshot(node.kv.applied_index):
            # The driver's rule (prism.raft.ready). Taking it costs no virtual time here.
            snapshot = Snapshot(
                meta=core.snapshot_meta(node.kv.applied_index), data=node.kv.snapshot()
            )
            node.storage.save_snapshot(snapshot)
            node.storage.compact(core.snapshot_saved(snapshot))
            self.snapshots_taken += 1
            self.timeline.add(
                now, node.id, f"snapshot at index {snapshot.meta.index}", verbose=True
            )

    def _serve_reads(self, node: SimNode) -> None:
        if not node.reads_ready:
            return
        waiting = []
        for index, read_id in node.reads_ready:
            if node.kv.applied_index < index:
                waiting.append((index, read_id))
                continue
            pending = node.reads.pop(read_id, None)
            if pending is not None:
                request, reply = pending
                value = node.kv.get(request.key)
                self._reply(
                    reply, ClientReply(request.request_id, ReplyKind.OK, value, node=node.id)
                )
        node.reads_ready = waiting

    def _observe(self, node: SimNode, core: RaftCore, ready: Ready) -> None:
        """Feed the checkers and the timeline with what the core did."""
        now = self.loop.now_ns
        for note in ready.notes:
            if note.event == "raft.became_leader":
                self._became_leader(node, core, int(note.fields["term"]), now)
            elif note.event == "raft.stepped_down":
                self._left_leadership(node, reason=str(note.fields.get("reason", "")))
            elif note.event == "raft.campaign":
                self.elections += 1
                self.timeline.add(now, node.id, f"campaigns for term {note.fields['term']}")
            elif note.event == "raft.pre_campaign":
                self.timeline.add(
                    now, node.id, f"asks for pre-votes for term {note.fields['term']}", verbose=True
                )
            elif note.event in _NOTE_TEXT:
                text = _NOTE_TEXT[note.event].format(**note.fields)
                # Every member notes each change; the operator's request is the headline.
                self.timeline.add(now, node.id, text, verbose=note.event == "raft.membership")
        if core.role is Role.LEADER:
            self.checkers.leader_stepped(node.id, core.term, core.log, now)
            if ready.hard_state is not None:
                self.checkers.leader_committed(core.log, core.commit, now)

    def _became_leader(self, node: SimNode, core: RaftCore, term: int, now: int) -> None:
        # The note's term, not the core's: a Ready held back behind a disk write (or a pause)
        # reaches us after the core may have moved on to a later term.
        still_leading = core.role is Role.LEADER and core.term == term
        others = [
            f"{other.id} (term {other.core.term})"
            for other in self.nodes.values()
            if other is not node and other.core is not None and other.core.role is Role.LEADER
        ]
        text = f"became leader of term {term}"
        if not still_leading:
            text += f" (reported late, from a Ready held back by its disk; now in term {core.term})"
        if others:
            text += "; still believing they lead: " + ", ".join(others)
        self.timeline.add(now, node.id, text)
        self.checkers.became_leader(node.id, term, core.log if still_leading else None, now)
        node.leader_since_ns = now
        leading = 1 + len(others)
        self.max_leaders_at_once = max(self.max_leaders_at_once, leading)
        if leading > 1 and self._overlap_since < 0:
            self._overlap_since = now

    def _left_leadership(self, node: SimNode, reason: str = "") -> None:
        if node.leader_since_ns < 0:
            return
        node.leader_since_ns = -1
        self.checkers.not_leading(node.id)
        if reason:
            text = {
                "check_quorum": "steps down: no quorum heard within the election timeout",
                "higher_term": "steps down: saw a higher term",
                "removed": "steps down: its own removal from the cluster committed",
                "disk_stall": "steps down: its disk stalled",
            }.get(reason, f"steps down ({reason})")
            self.timeline.add(self.loop.now_ns, node.id, text)
        if self._overlap_since >= 0 and len([x for x in self.leaders() if x != node.id]) <= 1:
            self.overlap_ns += self.loop.now_ns - self._overlap_since
            self._overlap_since = -1

    # ------------------------------------------------------------------ clients

    def request(self, node_id: str, request: ClientRequest, reply: ReplyHandler) -> None:
        """A client request arrives at ``node_id`` after the client link's delay."""
        self.loop.call_later(self.client_ns, lambda: self._serve(node_id, request, reply))

    def _reply(self, reply: ReplyHandler, message: ClientReply) -> None:
        self.loop.call_later(self.client_ns, lambda: reply(message))

    def _serve(self, node_id: str, request: ClientRequest, reply: ReplyHandler) -> None:
        node = self.nodes[node_id]
        if node.paused:  # served when it resumes, like a request in a socket buffer
            node.deferred.append(partial(self._serve, node_id, request, reply))
            return
        core = node.core
        if core is None:
            return  # a crashed node answers nothing; the client times out
        try:
            if request.f == "read":
                self._read_ids += 1
                node.reads[self._read_ids] = (request, reply)
                core.read_index(self._read_ids)
            else:
                command = Command(
                    op="put" if request.f == "write" else "cas",
                    key=request.key,
                    value=request.value,
                    expected=request.expected,
                )
                index, term = core.propose(
                    command.encode(), client_id=request.client, seq=request.seq
                )
                node.writes[index] = (request, term, reply)
        except NotLeader as exc:
            if request.f == "read":
                node.reads.pop(self._read_ids, None)
            self._reply(
                reply,
                ClientReply(
                    request.request_id,
                    ReplyKind.NOT_LEADER,
                    leader_hint=exc.leader_hint,
                    node=node_id,
                ),
            )
            return
        except ProposalDropped:
            self._reply(reply, ClientReply(request.request_id, ReplyKind.REJECTED, node=node_id))
            return
        self._pump(node)

    # ------------------------------------------------------------------ operator

    def change_membership(self, action: str, server: str) -> str | None:
        """Ask the current leader to ``add`` (as a voter), ``add-learner`` or ``remove``
        ``server``. Returns None when the change started, else why it could not."""
        node = self._leader_node()
        if node is None or node.core is None:
            return "no leader"
        core, leader = node.core, node.id
        try:
            if action == "remove":
                core.remove_server(server)
            else:
                core.add_server(server, voter=action == "add")
        except RaftError as exc:
            return str(exc)
        self.timeline.add(self.loop.now_ns, leader, f"starts membership change: {action} {server}")
        self._pump(node)
        return None

    def transfer_leadership(self, target: str | None) -> str | None:
        """Ask the leader to hand over to ``target`` (None: the most caught-up voter).
        Returns None when the transfer started, else why it could not."""
        node = self._leader_node()
        if node is None or node.core is None:
            return "no leader"
        core, leader = node.core, node.id
        try:
            chosen = core.transfer_leadership(target)
        except RaftError as exc:
            return str(exc)
        self.timeline.add(self.loop.now_ns, leader, f"starts leadership transfer to {chosen}")
        self._pump(node)
        return None

    def _leader_node(self) -> SimNode | None:
        leader = self.leader()
        return self.nodes[leader] if leader is not None else None

    def members(self) -> tuple[str, ...]:
        """The membership the leader (or, leaderless, the most advanced node) has in force."""
        leader = self.leader()
        cores = [n.core for n in self.nodes.values() if n.core is not None]
        if leader is not None:
            core = self.nodes[leader].core
            assert core is not None
            return core.membership.members
        if not cores:
            return tuple(self.bootstrap)
        best = max(cores, key=lambda c: (c.log.last_term, c.log.last_index))
        return best.membership.members

    # ------------------------------------------------------------------ queries

    def leaders(self) -> list[str]:
        return [
            n.id
            for n in self.nodes.values()
            if n.core is not None and n.core.role is Role.LEADER and not n.paused
        ]

    def leader(self) -> str | None:
        """The leader of the highest term among nodes that believe they lead."""
        best: tuple[int, str] | None = None
        for node in self.nodes.values():
            core = node.core
            if (
                core is not None
                and core.role is Role.LEADER
                and not node.paused
                and (best is None or core.term > best[0])
            ):
                best = (core.term, node.id)
        return best[1] if best else None

    def run_for(self, seconds: float, stop: Callable[[], bool] | None = None) -> bool:
        return self.loop.run_until(self.loop.now_ns + int(seconds * 1e9), stop)

    def up_nodes(self) -> Sequence[SimNode]:
        return [n for n in self.nodes.values() if n.up]
