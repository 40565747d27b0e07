"""A crash test with real OS processes: three ``python -m prism.raft.serve`` nodes on loopback
(UDP for Raft, the JSON-lines client protocol over TCP, ``DiskStorage`` with fsync on) under a
stream of writes; ``kill -9`` the leader, then random nodes, twenty times, restarting each
from its data directory; at the end every acknowledged write is present exactly once on
every node.

The writer
----------
``LANES`` lanes write at once, so that a kill lands in the middle of a batch. A lane is one
KV client (``crash-test-<lane>``) with one write outstanding at a time: the KV machine keeps
one session slot per client (its last applied ``seq`` and that result), so a client with
several writes in flight could have a later ``seq`` applied first and then its earlier one
answered as a "duplicate" carrying the later one's result, never applied. The seqs come from
one counter shared by the lanes, so each lane's seqs increase and key ``k<seq>`` (value
``v<seq>``) is written by a single (client, seq). A write is retried with the same
(client, seq) after a client-side timeout, a lost connection, ``timeout``, ``shutting_down``,
``lost``, ``overloaded`` or ``dropped``, on whichever node leads (``not_leader`` redirects
to it); it is acknowledged only by an ``ok`` reply, which must carry its own value. A third
of the lane writes whose request reached a node but got no reply (the node was killed, or was
too slow) are abandoned instead, and the lane moves on to a new seq: those stay
unacknowledged, whether or not they committed.

The rounds
----------
Round 1 kills the leader with SIGKILL, later rounds a node drawn from
``random.Random(seed)``. After each kill the test waits 0-300 ms under load, restarts the
node from the same data directory, then waits, polling with a deadline, until a write of
the client ``crash-probe`` is acknowledged: a leader accepts writes again.

The verdict, offline
--------------------
The writer stops; once every node has applied the leader's commit index (the same in two
polls: the cluster is quiet) the nodes get SIGTERM and must exit with status 0. Then each
data directory is opened with ``DiskStorage`` and its committed log (up to
``hard_state.commit``) is replayed through a fresh ``KVStateMachine``.

How exactly-once is established: a snapshot would hide the applications it covers (its
sessions remember only a window of each client's seqs), so the log is kept below
``snapshot_threshold_entries``: the lanes take no new seq once a reply's index passes
``LOG_LIMIT``, and the test fails if any node holds a snapshot. Every node's log is then
whole from index 1, and the replay sees every application: for each (client, seq) it counts
the applications that were not duplicates, which is how many times the command took effect.
Every acknowledged write must have taken effect exactly once, and its key must hold its
value, on every node; the entry at the index its reply named must be that write; an
unacknowledged write may have taken effect at most once. Each client's session must end at
its last acknowledged seq; the three nodes must have stopped at the same commit index, with
the same committed log entry for entry and identical replayed states (data and sessions).

``PRISM_CRASH_SEED`` replays a failed run's kill schedule (victims and pauses, not timing).
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pytest
import trio

from prism.raft.config import RaftConfig
from prism.raft.disk import DiskStorage
from prism.raft.kv import KVStateMachine
from prism.raft.messages import Entry, EntryKind
from tests.crash.nodes import (
    CONNECTION_ERRORS,
    START_TIMEOUT_S,
    LineConnection,
    NodeProcess,
    Reply,
    close_all,
    find_leader,
    free_ports,
    status_of,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not sys.platform.startswith("linux"),
        reason="kills node processes with SIGKILL and picks ports outside Linux's ephemeral "
        "range (/proc/sys/net/ipv4/ip_local_port_range)",
    ),
]

NODE_NAMES: Final = ("n1", "n2", "n3")
ROUNDS: Final = 20
LANES: Final = 6
LANE_PAUSE_S: Final = 0.02
"""A lane's pause after each acknowledged write: paces the load (a few hundred writes a
second) so that the log stays well below the snapshot threshold for the whole run."""
WARM_UP_ACKS: Final = 50
"""Acknowledged writes before the first kill, so that it lands under load."""
LOG_LIMIT: Final = RaftConfig.lan().snapshot_threshold_entries * 3 // 4
"""No new seq once a reply names an index past this: retries, no-ops and probes still fit
below the snapshot threshold."""
CLIENT_REQUEST_TIMEOUT_S: Final = 3.0
RETRY_PAUSE_S: Final = 0.02
RECOVERY_TIMEOUT_S: Final = 20.0
WRITE_TIMEOUT_S: Final = 30.0
SETTLE_TIMEOUT_S: Final = 20.0
MAX_KILL_PAUSE_S: Final = 0.3
MAX_DWELL_S: Final = 0.5
"""After a round's probe, the load runs this long at most (a random time) before the next kill:
some kills land while the restarted node is still catching up, some once it has."""
ABANDON_FRACTION: Final = 1 / 3
"""The share of lane writes given up (left unacknowledged) when a request that reached a node
gets no reply: the kill came before or after they committed; each takes effect at most once."""
RETRYABLE_ERRORS: Final = frozenset({"timeout", "shutting_down", "lost", "overloaded", "dropped"})
PROBE_CLIENT: Final = "crash-probe"
SEED_VARIABLE: Final = "PRISM_CRASH_SEED"

WriteId = tuple[str, int]  # (client, seq)

"""What a request meets when its node is killed, restarting, or too slow. A reply that is not
a JSON object is not among them: it fails the test."""


@dataclass
class Attempt:
    """One write: its command, and the reply that acknowledged it, if one did."""

    client: str
    seq: int
    key: str
    value: str
    acked_index: int | None = None
    acked_as_duplicate: bool = False


@dataclass
class Writer:
    """The stream of writes: ``LANES`` lanes and the round probes, sharing a leader hint."""

    nodes: Mapping[str, NodeProcess]
    rng: random.Random
    attempts: dict[WriteId, Attempt] = field(default_factory=dict)
    leader_hint: str | None = None
    next_seq: int = 1
    max_index: int = 0
    stopping: bool = False
    capped: bool = False
    acked: int = 0
    retries: int = 0
    redirects: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    lanes_running: int = 0
    warm: trio.Event = field(default_factory=trio.Event)
    idle: trio.Event = field(default_factory=trio.Event)

    async def lane(self, lane: int) -> None:
        client = f"crash-test-{lane}"
        connections: dict[str, LineConnection] = {}
        try:
            while not self.stopping:
                if self.max_index >= LOG_LIMIT:
                    self.capped = True
                    break
                seq = self.next_seq
                self.next_seq += 1
                await self.put(connections, client, seq, f"k{seq}", f"v{seq}")
                await trio.sleep(LANE_PAUSE_S)
        finally:
            await close_all(connections)
            self.lanes_running -= 1
            if self.lanes_running == 0:
                self.idle.set()

    async def put(
        self, connections: dict[str, LineConnection], client: str, seq: int, key: str, value: str
    ) -> None:
        """Write until an ``ok`` reply, retrying the same (client, seq) wherever leads; a
        lane's write may instead be abandoned after a request that got no reply."""
        write_id = (client, seq)
        assert write_id not in self.attempts, write_id
        attempt = self.attempts[write_id] = Attempt(client, seq, key, value)
        try:
            with trio.fail_after(WRITE_TIMEOUT_S):
                await self._put_until_ok(connections, attempt)
        except trio.TooSlowError as exc:
            exc.add_note(f"{client} seq {seq}: no ok reply within {WRITE_TIMEOUT_S} s")
            raise

    async def _put_until_ok(self, connections: dict[str, LineConnection], attempt: Attempt) -> None:
        client, seq = attempt.client, attempt.seq
        request = {
            "id": seq,
            "op": "put",
            "key": attempt.key,
            "value": attempt.value,
            "client": client,
            "seq": seq,
        }
        while True:
            node = self.leader_hint or self.rng.choice(NODE_NAMES)
            reply, reached = await self._call(connections, node, request)
            if reply is None:
                if reached and client != PROBE_CLIENT and self.rng.random() < ABANDON_FRACTION:
                    self.outcomes["abandoned"] += 1
                    return
                self._retried("no_reply" if reached else "unreachable")
                await trio.sleep(RETRY_PAUSE_S)
                continue
            if reply.get("ok") is True:
                self._acknowledged(attempt, node, reply)
                return
            error = reply.get("error")
            if error == "not_leader":
                self.redirects += 1
                leader = reply.get("leader_id")
                self.leader_hint = leader if leader in self.nodes and leader != node else None
                await trio.sleep(RETRY_PAUSE_S if self.leader_hint is None else 0.001)
                continue
            if error in RETRYABLE_ERRORS:
                self._retried(str(error))
                if error != "timeout":
                    self.leader_hint = None
                await trio.sleep(RETRY_PAUSE_S)
                continue
            raise AssertionError(f"{client} seq {seq} on {node}: unexpected reply {reply}")

    async def _call(
        self, connections: dict[str, LineConnection], node: str, request: Mapping[str, Any]
    ) -> tuple[Reply | None, bool]:
        """The reply, or None and whether the node was reached (then the write may or may
        not be in its log)."""
        reached = False
        try:
            with trio.fail_after(CLIENT_REQUEST_TIMEOUT_S):
                connection = connections.get(node)
                if connection is None:
                    connection = await LineConnection.open(self.nodes[node].client_port)
                    connections[node] = connection
                reached = True
                return await connection.call(request), True
        except CONNECTION_ERRORS:
            dropped = connections.pop(node, None)
            if dropped is not None:
                await dropped.aclose()
            if self.leader_hint == node:
                self.leader_hint = None
            return None, reached

    def _retried(self, reason: str) -> None:
        self.retries += 1
        self.outcomes[reason] += 1

    def _acknowledged(self, attempt: Attempt, node: str, reply: Reply) -> None:
        if type(reply.get("index")) is not int:  # the verdict checks the entry there
            raise AssertionError(
                f"{attempt.client} seq {attempt.seq} acknowledged by {node} without the "
                f"index it applied at: {reply}"
            )
        attempt.acked_index = reply["index"]
        attempt.acked_as_duplicate = bool(reply.get("duplicate"))
        self.outcomes["duplicate_ack" if attempt.acked_as_duplicate else "ack"] += 1
        self.max_index = max(self.max_index, reply["index"])
        self.leader_hint = node
        if attempt.client != PROBE_CLIENT:
            self.acked += 1
            if self.acked >= WARM_UP_ACKS:
                self.warm.set()


# ---------------------------------------------------------------------------------------------
# The run


@dataclass(frozen=True)
class Round:
    victim: str
    was_leader: bool
    pause_s: float
    recovery_s: float  # from the kill to the probe's acknowledgement


@dataclass(frozen=True)
class RunOutcome:
    attempts: dict[WriteId, Attempt]
    rounds: list[Round]
    writer: Writer
    final_statuses: dict[str, Reply]


async def _wait_converged(nodes: Mapping[str, NodeProcess]) -> dict[str, Reply]:
    """Poll until one node leads, every node follows it in its term, and every node has
    committed and applied the leader's commit index, the same in two polls 200 ms (four
    heartbeats) apart: the cluster is quiet, so each node's durable commit index is that one
    when it gets SIGTERM. No deadline of its own."""
    previous: tuple[str, int, int] | None = None
    while True:
        statuses = {name: await status_of(node) for name, node in nodes.items()}
        answered = {name: s for name, s in statuses.items() if s is not None}
        leaders = [name for name, s in answered.items() if s.get("state") == "leader"]
        current: tuple[str, int, int] | None = None
        if len(answered) == len(nodes) and len(leaders) == 1:
            lead = answered[leaders[0]]
            if all(
                (s.get("leader_id"), s["term"], s["commit"], s["applied"])
                == (leaders[0], lead["term"], lead["commit"], lead["commit"])
                for s in answered.values()
            ):
                current = (leaders[0], lead["term"], lead["commit"])
        if current is not None and current == previous:
            return answered
        previous = current
        await trio.sleep(0.2)


async def _kill_rounds(
    nodes: Mapping[str, NodeProcess], writer: Writer, rng: random.Random
) -> list[Round]:
    rounds: list[Round] = []
    probe_connections: dict[str, LineConnection] = {}
    try:
        for number in range(1, ROUNDS + 1):
            if number == 1:
                with trio.fail_after(RECOVERY_TIMEOUT_S):
                    victim = await find_leader(nodes)
                was_leader = True
            else:
                victim = rng.choice(NODE_NAMES)
                status = await status_of(nodes[victim])  # for the summary only
                was_leader = status is not None and status.get("state") == "leader"
            pause_s = rng.uniform(0.0, MAX_KILL_PAUSE_S)
            killed_at = trio.current_time()
            await nodes[victim].kill()
            await trio.sleep(pause_s)
            await nodes[victim].start()
            try:
                with trio.fail_after(RECOVERY_TIMEOUT_S):
                    await writer.put(
                        probe_connections, PROBE_CLIENT, number, f"p{number}", f"probe{number}"
                    )
            except trio.TooSlowError as exc:
                exc.add_note(
                    f"round {number}: no leader accepted a write within {RECOVERY_TIMEOUT_S} s "
                    f"after {victim} was killed and restarted"
                )
                raise
            rounds.append(Round(victim, was_leader, pause_s, trio.current_time() - killed_at))
            await trio.sleep(rng.uniform(0.0, MAX_DWELL_S))
    finally:
        await close_all(probe_connections)
    return rounds


async def _run_cluster(workdir: Path, seed: int) -> RunOutcome:
    ports = free_ports(2 * len(NODE_NAMES))
    raft_ports = dict(zip(NODE_NAMES, ports[: len(NODE_NAMES)], strict=True))
    client_ports = dict(zip(NODE_NAMES, ports[len(NODE_NAMES) :], strict=True))
    nodes = {name: NodeProcess(name, raft_ports, client_ports, workdir) for name in NODE_NAMES}
    rng = random.Random(seed)
    writer = Writer(nodes, random.Random(seed + 1))
    try:
        for node in nodes.values():
            await node.start()
        async with trio.open_nursery() as nursery:
            writer.lanes_running = LANES
            for lane in range(LANES):
                nursery.start_soon(writer.lane, lane)
            with trio.fail_after(START_TIMEOUT_S):
                await writer.warm.wait()
            rounds = await _kill_rounds(nodes, writer, rng)
            writer.stopping = True
            with trio.fail_after(WRITE_TIMEOUT_S):
                await writer.idle.wait()
        with trio.fail_after(SETTLE_TIMEOUT_S):
            final_statuses = await _wait_converged(nodes)
        for node in nodes.values():
            node.terminate()
        for name, node in nodes.items():
            code = await node.wait_stopped()
            assert code == 0, f"{name} exited with {code} on SIGTERM:\n{node.log_tail()}"
        return RunOutcome(dict(writer.attempts), rounds, writer, final_statuses)
    finally:
        for node in nodes.values():
            await node.reap()


# ---------------------------------------------------------------------------------------------
# The offline verdict


@dataclass(frozen=True)
class Replayed:
    """One node's data directory, replayed: its committed log through a fresh KV machine."""

    name: str
    commit: int
    log: list[Entry]  # log[i] has index i + 1, up to the commit index
    machine: KVStateMachine
    applications: Counter[WriteId]  # non-duplicate applications of each (client, seq)
    recovery_notes: list[str]

    def state(self) -> dict[str, Any]:
        """Data and sessions (not the applied index: a last no-op may differ)."""
        body: dict[str, Any] = json.loads(self.machine.snapshot())
        return {"data": body["data"], "sessions": body["sessions"]}


def _replay(name: str, data_dir: Path) -> Replayed:
    with DiskStorage.open(data_dir, fsync=False) as storage:
        notes = list(storage.recovery_notes)
        snapshot = storage.snapshot
        commit = storage.hard_state.commit
        log = [entry for entry in storage.entries if entry.index <= commit]
    assert snapshot is None, (
        f"{name} holds a snapshot at {snapshot.meta.index}: the applications it covers cannot "
        f"be counted, lower LOG_LIMIT (now {LOG_LIMIT})"
    )
    indexes = [entry.index for entry in log]
    assert indexes == list(range(1, commit + 1)), (
        f"{name}: the committed log is not whole from 1 to {commit} "
        f"(first {indexes[:1]}, last {indexes[-1:]}, {len(indexes)} entries)"
    )
    machine = KVStateMachine()
    applications: Counter[WriteId] = Counter()
    for entry in log:
        result = machine.apply(entry)
        if entry.kind is EntryKind.NORMAL and entry.client_id and not result.duplicate:
            applications[entry.client_id, entry.seq] += 1
    return Replayed(name, commit, log, machine, applications, notes)


def _problems_of_node(node: Replayed, attempts: Mapping[WriteId, Attempt]) -> list[str]:
    problems = [f"{node.name}: reopening after SIGTERM repaired: {n}" for n in node.recovery_notes]
    for write_id, attempt in attempts.items():
        count = node.applications[write_id]
        held = node.machine.get(attempt.key)
        if attempt.acked_index is None:
            if count > 1:
                problems.append(f"{node.name}: unacknowledged {write_id} took effect {count}x")
            continue
        if count != 1:
            problems.append(f"{node.name}: acknowledged {write_id} took effect {count} times")
        if held != attempt.value:
            problems.append(f"{node.name}: {attempt.key}={held!r}, acknowledged {attempt.value!r}")
        if attempt.acked_index > node.commit:
            problems.append(
                f"{node.name}: {write_id} acknowledged at {attempt.acked_index}, "
                f"past the commit index {node.commit}"
            )
        else:
            entry = node.log[attempt.acked_index - 1]
            if (entry.client_id, entry.seq) != write_id:
                problems.append(
                    f"{node.name}: {write_id} acknowledged at {attempt.acked_index}, which "
                    f"holds {(entry.client_id, entry.seq)}"
                )
    problems.extend(
        f"{node.name}: {write_id} took effect but was never sent"
        for write_id in node.applications.keys() - attempts.keys()
    )
    written_keys = {attempt.key for attempt in attempts.values()}
    problems.extend(
        f"{node.name}: key {key!r} was never written"
        for key in node.machine.data.keys() - written_keys
    )
    sessions = node.state()["sessions"]
    last_seq: dict[str, int] = {}
    for client, seq in attempts:
        last_seq[client] = max(seq, last_seq.get(client, 0))
    for client, seq in last_seq.items():
        if attempts[client, seq].acked_index is None:
            continue
        # A session remembers the results of its client's latest applied seqs.
        remembered = [entry[0] for entry in sessions.get(client, {}).get("results", [])]
        session_seq = max(remembered, default=None)
        if session_seq != seq:
            problems.append(f"{node.name}: session of {client} at {session_seq}, last ack {seq}")
    return problems


def _problems_between_nodes(nodes: list[Replayed]) -> list[str]:
    problems: list[str] = []
    first = nodes[0]
    for other in nodes[1:]:
        if other.commit != first.commit:
            problems.append(
                f"{first.name} and {other.name} stopped at commit {first.commit} and "
                f"{other.commit}, after a quiet cluster had applied the same commit index"
            )
        if other.state() != first.state():
            differ = {
                key
                for key in first.machine.data.keys() | other.machine.data.keys()
                if first.machine.get(key) != other.machine.get(key)
            }
            problems.append(
                f"{first.name} and {other.name} replay to different states "
                f"(keys that differ: {sorted(differ)[:10]}, sessions equal: "
                f"{first.state()['sessions'] == other.state()['sessions']})"
            )
        common = min(first.commit, other.commit)
        mismatch = next(
            (i + 1 for i in range(common) if first.log[i] != other.log[i]),
            None,
        )
        if mismatch is not None:
            problems.append(
                f"{first.name} and {other.name} committed different entries at {mismatch}"
            )
    return problems


def _seed() -> int:
    text = os.environ.get(SEED_VARIABLE)
    return int(text) if text else random.randrange(2**32)


def _elections_seen(workdir: Path) -> int:
    return sum(
        (workdir / f"{name}.log").read_text(errors="replace").count("raft.became_leader")
        for name in NODE_NAMES
    )


def test_kill9_leader_then_random_nodes_loses_and_duplicates_no_acknowledged_write(
    tmp_path: Path,
) -> None:
    seed = _seed()
    started = time.monotonic()
    try:
        outcome = trio.run(_run_cluster, tmp_path, seed)
        replayed = [_replay(name, tmp_path / name) for name in NODE_NAMES]
        problems = [
            problem for node in replayed for problem in _problems_of_node(node, outcome.attempts)
        ]
        problems += _problems_between_nodes(replayed)
        assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:40])
        assert len(outcome.rounds) == ROUNDS
    except BaseException as exc:
        exc.add_note(
            f"crash test seed={seed}: {SEED_VARIABLE}={seed} replays the kill schedule (not "
            f"the timing); node logs and data directories are in {tmp_path}"
        )
        raise
    writer = outcome.writer
    acked = [a for a in outcome.attempts.values() if a.acked_index is not None]
    unacked = [w for w, a in outcome.attempts.items() if a.acked_index is None]
    unacked_applied = sum(1 for w in unacked if replayed[0].applications[w])
    victims = Counter(r.victim for r in outcome.rounds)
    print(
        f"crash test seed={seed}: writes_acked={writer.acked} (+{len(acked) - writer.acked} "
        f"probes) unacked={len(unacked)} (applied {unacked_applied}) "
        f"retries={writer.retries} {dict(writer.outcomes)} "
        f"redirects={writer.redirects} elections={_elections_seen(tmp_path)} "
        f"leader_kills={sum(r.was_leader for r in outcome.rounds)} victims={dict(victims)} "
        f"max_recovery_s={max(r.recovery_s for r in outcome.rounds):.2f} "
        f"log={min(n.commit for n in replayed)} capped={writer.capped} "
        f"wall_s={time.monotonic() - started:.1f}"
    )
