"""Simulated clients: writes, linearizable reads and compare-and-sets sent to whichever node a
client believes leads, with per-attempt timeouts, retries and an overall deadline.

Each client is one Jepsen "process" performing one operation at a time, recorded in the
history as invoke then ok / fail / info:

* ok: the operation took effect (a write or cas was applied, a read was served);
* fail: it definitely did not take effect: a cas whose expectation did not hold, or an
  operation every attempt of which was refused before it could be proposed;
* info: unknown: some attempt may have been proposed and the client gave up waiting. As
  in Jepsen, the process is then considered crashed and the client continues under a new
  process number, since the operation may still take effect later.

Retries reuse the operation's (client id, sequence number), so the state machine applies
a write at most once however many attempts reach a leader (thesis §6.3).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import final

from prism.sim.cluster import ClientReply, ClientRequest, RaftSim, ReplyKind
from prism.sim.history import History, OpFunction, Value
from prism.sim.loop import NS_PER_MS, NS_PER_S
from prism.sim.rng import derive


@dataclass(frozen=True, slots=True, kw_only=True)
class Workload:
    clients: int = 3
    ops_per_s: float = 30.0  # for all clients together
    keys: int = 3
    read_fraction: float = 0.3
    cas_fraction: float = 0.2
    attempt_timeout_ms: float = 400.0
    deadline_ms: float = 2000.0  # an operation is given up (info or fail) after this
    backoff_ms: float = 20.0


@dataclass(slots=True)
class _Op:
    f: OpFunction
    key: str
    value: int | None
    expected: int | None
    seq: int
    deadline_ns: int
    request_id: int = 0
    maybe_applied: bool = False


@final
class ClientPool:
    """The clients of one run, recording into one ``History``."""

    def __init__(self, sim: RaftSim, workload: Workload, *, seed: int) -> None:
        self.sim = sim
        self.workload = workload
        self.history = History()
        self.stats: Counter[str] = Counter()
        self.running = False
        self._next_value = 0
        self._next_request = 0
        self._clients = [
            _Client(self, i, derive(seed, f"client/{i}")) for i in range(workload.clients)
        ]

    def start(self) -> None:
        self.running = True
        for client in self._clients:
            client.schedule_next()

    def stop(self) -> None:
        """Start no new operations; those under way run to their end."""
        self.running = False

    def busy(self) -> bool:
        return any(c.op is not None for c in self._clients)

    def new_value(self) -> int:
        self._next_value += 1
        return self._next_value

    def new_request_id(self) -> int:
        self._next_request += 1
        return self._next_request


@final
class _Client:
    def __init__(self, pool: ClientPool, number: int, rng: random.Random) -> None:
        self.pool = pool
        self.sim = pool.sim
        self.name = f"c{number + 1}"
        self.process = number
        self.rng = rng
        self.seq = 0
        self.target = rng.choice(self.sim.ids)
        self.op: _Op | None = None
        self.last_seen: dict[str, int | None] = {}

    def schedule_next(self) -> None:
        workload = self.pool.workload
        mean_gap_s = workload.clients / workload.ops_per_s
        delay_ns = int(self.rng.expovariate(1.0 / mean_gap_s) * NS_PER_S)
        self.sim.loop.call_later(delay_ns, self.begin)

    def begin(self) -> None:
        if not self.pool.running or self.op is not None:
            return
        workload = self.pool.workload
        key = f"k{self.rng.randrange(workload.keys)}"
        draw = self.rng.random()
        value: int | None = None
        expected: int | None = None
        f: OpFunction
        if draw < workload.read_fraction:
            f = "read"
        elif draw < workload.read_fraction + workload.cas_fraction:
            f = "cas"
            expected = self.last_seen.get(key)
            value = self.pool.new_value()
        else:
            f = "write"
            value = self.pool.new_value()
        self.seq += 1
        now = self.sim.loop.now_ns
        self.op = _Op(
            f, key, value, expected, self.seq, now + int(workload.deadline_ms * NS_PER_MS)
        )
        invoke_value: Value = (expected, value) if f == "cas" and value is not None else value
        self.pool.history.invoke(self.process, f, key, invoke_value, now)
        self.pool.stats[f"{f}.invoked"] += 1
        self.attempt()

    def attempt(self) -> None:
        op = self.op
        assert op is not None
        if self.sim.loop.now_ns >= op.deadline_ns:
            self.give_up()
            return
        op.request_id = self.pool.new_request_id()
        request = ClientRequest(
            op.request_id,
            self.name,
            op.seq,
            op.f,
            op.key,
            None if op.value is None else str(op.value),
            None if op.expected is None else str(op.expected),
        )
        self.sim.request(self.target, request, self.on_reply)
        request_id = op.request_id
        timeout_ns = int(self.pool.workload.attempt_timeout_ms * NS_PER_MS)
        self.sim.loop.call_later(timeout_ns, lambda: self.on_timeout(request_id))

    def retry(self, target: str | None) -> None:
        self.target = target if target is not None else self.rng.choice(self.sim.ids)
        backoff_ns = int(self.pool.workload.backoff_ms * NS_PER_MS)
        self.sim.loop.call_later(backoff_ns, self.attempt)

    def on_timeout(self, request_id: int) -> None:
        op = self.op
        if op is None or op.request_id != request_id:
            return
        op.request_id = 0  # a late reply to this attempt is ignored
        if op.f != "read":
            op.maybe_applied = True
        self.retry(None)

    def on_reply(self, reply: ClientReply) -> None:
        op = self.op
        if op is None or reply.request_id != op.request_id:
            return  # a late answer to an abandoned attempt
        op.request_id = 0
        if reply.kind is ReplyKind.OK:
            value = None if reply.value is None else int(reply.value)
            if op.f == "read":
                self.last_seen[op.key] = value
                self.finish("ok", value)
            elif op.f == "write":
                self.last_seen[op.key] = op.value
                self.finish("ok", op.value)
            else:
                self.last_seen[op.key] = op.value
                self.finish("ok", (op.expected, op.value) if op.value is not None else None)
        elif reply.kind is ReplyKind.FAIL and op.f == "cas":
            self.last_seen[op.key] = None if reply.value is None else int(reply.value)
            self.finish("fail", (op.expected, op.value) if op.value is not None else None)
        else:
            # Refused before proposing, or the attempt's entry was overwritten: this attempt
            # definitely did not apply. Try the hinted leader, or another node.
            self.retry(reply.leader_hint)

    def give_up(self) -> None:
        op = self.op
        assert op is not None
        outcome = "info" if op.maybe_applied else "fail"
        value: Value = (
            (op.expected, op.value) if op.f == "cas" and op.value is not None else op.value
        )
        if op.f == "read":
            value = None
        self.finish(outcome, value)

    def finish(self, outcome: str, value: Value) -> None:
        op = self.op
        assert op is not None
        self.pool.history.complete(self.process, outcome, value, self.sim.loop.now_ns)  # type: ignore[arg-type]
        self.pool.stats[f"{op.f}.{outcome}"] += 1
        if outcome == "ok" and op.f == "write":
            self.sim.timeline.add(
                self.sim.loop.now_ns,
                self.target,
                f"write w{op.value} ({op.key}) acknowledged to {self.name}",
                verbose=True,
            )
        self.op = None
        if outcome == "info":
            self.process += self.pool.workload.clients  # Jepsen: a crashed process is retired
        self.schedule_next()
