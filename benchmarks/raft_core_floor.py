"""The floor under the simulator's speed: what the Raft cores alone cost, and the speed that
leaves at most.

Five ``RaftCore`` instances driven directly, with no simulator: no event loop, no network
model, no checkers, no history, no timeline. Each core runs the handling loop of
``prism.raft.ready`` with a ``MemoryStorage`` that is durable at once and the project's
``KVStateMachine``; every message a core puts out goes into one FIFO deque and from there
straight into ``step`` of its target, with no latency. The CPU time (``time.process_time``)
of three things is measured, once a leader is elected and every node has applied its no-op:

* ``ticks``: ``tick()`` on every node of the idle cluster, round after round, heartbeats and
  their answers delivered and handled; per tick;
* ``writes``: one put at a time through the leader, encoded as the simulator's clients encode
  it (``Command(op="put", ...)``, keys ``k0``..``k2``, values the running counter, five
  client ids with their own sequence numbers), everything delivered until the entry is
  committed and applied on all nodes before the next is proposed; per write. The leader sends
  each commit index at once, in an append of its own (the core's behaviour; the driver and the
  simulator hold it until the next tick, which costs the same messages);
* ``writes_piggybacked``: the same, but the leader's commit-only appends go through
  ``NoticeHold`` and are never released until the end, so followers learn that an entry
  committed from the next write's append: half the messages, the least Raft can do per write.

From those, the fastest the steady workload (``--rate`` writes per simulated second, every node
ticking every ``tick_ms``) could run if the simulator itself cost nothing:
``1 / (rate * cpu_per_write + ticks_per_second * cpu_per_tick)`` x real time.

Every repetition builds a fresh cluster and checks its work: the leader and term never
changed, every write is applied on every node before the next one (at the end, for the
piggybacked run), every node's log holds exactly the proposed commands in order, and every
node's key-value data equals the expected map.

    python -m benchmarks.raft_core_floor
    python -m benchmarks.raft_core_floor --writes 5000 --repeats 5
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections import deque
from collections.abc import Sequence

import prism.raft.core
import prism.raft.kv
import prism.raft.log
import prism.raft.messages
from benchmarks._report import emit
from prism.raft.config import RaftConfig
from prism.raft.core import RaftCore, Role
from prism.raft.kv import Command, KVStateMachine
from prism.raft.messages import EntryKind, RaftMessage
from prism.raft.notices import NoticeHold
from prism.raft.ready import Outbound
from prism.raft.snapshot import Snapshot
from prism.raft.storage import MemoryStorage

TARGET_SPEEDUP = 500.0


class FloorError(AssertionError):
    """The harness did not do the work it claims to have measured."""


class Cluster:
    """N cores, their storages and state machines, and one FIFO of messages in flight."""

    def __init__(self, nodes: int, seed: int, *, hold_notices: bool) -> None:
        self.config = RaftConfig.lan()
        self.ids = [f"n{i}" for i in range(1, nodes + 1)]
        self.cores = {
            node: RaftCore(
                node, self.ids, config=self.config, rng=random.Random(f"{seed}/core/{node}")
            )
            for node in self.ids
        }
        self.storages = {node: MemoryStorage() for node in self.ids}
        self.machines = {node: KVStateMachine() for node in self.ids}
        self.holds = {node: NoticeHold() for node in self.ids} if hold_notices else None
        self.queue: deque[tuple[str, str, RaftMessage]] = deque()
        self.delivered = 0
        self.readies = 0

    def _send(self, node: str, core: RaftCore, messages: Sequence[Outbound]) -> None:
        push = self.queue.append
        if self.holds is None:
            for out in messages:
                push((node, out.to, out.message))
            return
        admit = self.holds[node].admit
        leading = core.role is Role.LEADER
        for out in messages:
            if admit(out, leading=leading):
                push((node, out.to, out.message))

    def pump(self, node: str) -> None:
        """The handling loop of ``prism.raft.ready``, with a disk that is durable at once."""
        core = self.cores[node]
        storage = self.storages[node]
        machine = self.machines[node]
        while core.has_ready():
            ready = core.ready()
            self.readies += 1
            self._send(node, core, ready.messages)
            if ready.must_persist:
                storage.save(ready.hard_state, ready.entries, ready.snapshot)
            self._send(node, core, ready.messages_after_persist)
            if ready.snapshot is not None:
                machine.restore(ready.snapshot.data)
            for entry in ready.committed_entries:
                if not machine.apply(entry).ok:
                    raise FloorError(f"{node} failed to apply entry {entry.index}")
            core.advance(ready)
            if core.wants_snapshot(machine.applied_index):
                snapshot = Snapshot(
                    meta=core.snapshot_meta(machine.applied_index), data=machine.snapshot()
                )
                storage.save_snapshot(snapshot)
                storage.compact(core.snapshot_saved(snapshot))

    def deliver(self) -> None:
        """Hand every message in flight to its target, and those they cause, until none is."""
        queue = self.queue
        cores = self.cores
        pump = self.pump
        while queue:
            src, dst, message = queue.popleft()
            cores[dst].step(src, message)
            pump(dst)
            self.delivered += 1

    def tick_round(self) -> None:
        """Every node ticks once, in turn, and what each tick causes is delivered. With
        notices held, a node first sends those held since its last tick (the driver's order)."""
        for node, core in self.cores.items():
            if self.holds is not None:
                hold = self.holds[node]
                if hold:
                    leading = core.role is Role.LEADER
                    for out in hold.release(leading=leading, term=core.term):
                        self.queue.append((node, out.to, out.message))
                    self.deliver()
            core.tick()
            self.pump(node)
            self.deliver()

    def leader(self) -> str | None:
        leaders = [n for n, c in self.cores.items() if c.role is Role.LEADER]
        if len(leaders) > 1:
            raise FloorError(f"more than one leader: {leaders}")
        return leaders[0] if leaders else None

    def settled(self) -> bool:
        """One leader, known to all, and every node has applied the whole log."""
        leader = self.leader()
        if leader is None:
            return False
        last = self.cores[leader].log.last_index
        return all(
            core.leader == leader and self.machines[node].applied_index == last
            for node, core in self.cores.items()
        )

    def elect(self, max_rounds: int = 10_000) -> str:
        """Tick until a leader is elected and every node has applied its no-op."""
        for _ in range(max_rounds):
            if self.settled():
                leader = self.leader()
                assert leader is not None
                return leader
            self.tick_round()
        raise FloorError(f"no settled leader after {max_rounds} tick rounds")

    def release_notices(self) -> None:
        """Send every held notice, as each node's next tick would, without ticking."""
        if self.holds is None:
            return
        for node, core in self.cores.items():
            leading = core.role is Role.LEADER
            for out in self.holds[node].release(leading=leading, term=core.term):
                self.queue.append((node, out.to, out.message))
        self.deliver()


def client_writes(
    count: int, *, clients: int, keys: int, seed: int
) -> list[tuple[str, int, str, str]]:
    """``count`` puts as the simulator's clients make them: (client id, seq, key, value)."""
    rng = random.Random(f"{seed}/clients")
    seqs = [0] * clients
    writes = []
    for n in range(count):
        client = n % clients
        seqs[client] += 1
        writes.append((f"c{client + 1}", seqs[client], f"k{rng.randrange(keys)}", str(n + 1)))
    return writes


def measure_ticks(cluster: Cluster, rounds: int) -> tuple[float, int]:
    """CPU seconds per ``tick()`` over ``rounds`` rounds of the idle cluster, and the
    messages delivered meanwhile."""
    leader = cluster.leader()
    term = cluster.cores[leader].term if leader is not None else -1
    delivered = cluster.delivered
    started = time.process_time()
    for _ in range(rounds):
        cluster.tick_round()
    cpu = time.process_time() - started
    if cluster.leader() != leader or any(c.term != term for c in cluster.cores.values()):
        raise FloorError("leadership changed while idle")
    return cpu / (rounds * len(cluster.ids)), cluster.delivered - delivered


def measure_writes(
    cluster: Cluster, writes: list[tuple[str, int, str, str]]
) -> tuple[float, int, int]:
    """CPU seconds per write, one at a time, and the messages and Readys handled in all."""
    leader_id = cluster.leader()
    if leader_id is None:
        raise FloorError("no leader")
    leader = cluster.cores[leader_id]
    term = leader.term
    first = leader.log.last_index + 1
    machines = list(cluster.machines.values())
    leader_machine = cluster.machines[leader_id]
    piggybacked = cluster.holds is not None
    pump = cluster.pump
    deliver = cluster.deliver
    delivered, readies = cluster.delivered, cluster.readies
    before = dict(leader_machine.data)
    expected = first
    started = time.process_time()
    for client, seq, key, value in writes:
        data = Command(op="put", key=key, value=value).encode()
        index, entry_term = leader.propose(data, client_id=client, seq=seq)
        pump(leader_id)
        deliver()
        if index != expected or entry_term != term:
            raise FloorError(f"write went to ({index}, {entry_term}), not ({expected}, {term})")
        if piggybacked:
            # Followers learn that this write committed from the next write's append.
            if leader_machine.applied_index != index:
                raise FloorError(f"write {index} not applied on the leader")
            for machine in machines:
                if machine.applied_index < index - 1:
                    raise FloorError(f"write {index - 1} not applied on every node")
        else:
            for machine in machines:
                if machine.applied_index != index:
                    raise FloorError(f"write {index} not applied on every node")
        expected += 1
    cpu = time.process_time() - started
    cluster.release_notices()
    check_outcome(cluster, leader_id, term, first, writes, before)
    return cpu / len(writes), cluster.delivered - delivered, cluster.readies - readies


def check_outcome(
    cluster: Cluster,
    leader_id: str,
    term: int,
    first: int,
    writes: list[tuple[str, int, str, str]],
    before: dict[str, str],
) -> None:
    """Every write committed, durable and applied on every node, in order, and nothing else."""
    if cluster.leader() != leader_id or any(c.term != term for c in cluster.cores.values()):
        raise FloorError("leadership changed during the writes")
    last = first + len(writes) - 1
    model = dict(before)
    for node in cluster.ids:
        if cluster.cores[node].commit != last or cluster.machines[node].applied_index != last:
            raise FloorError(f"{node} did not commit and apply up to {last}")
        if cluster.storages[node].hard_state.commit != last:
            raise FloorError(f"{node} did not persist commit index {last}")
        held = [e for e in cluster.storages[node].entries if e.index >= first]
        found = [(e.client_id, e.seq, e.data, e.term, e.kind) for e in held]
        proposed = [
            (c, s, Command(op="put", key=k, value=v).encode(), term, EntryKind.NORMAL)
            for c, s, k, v in writes
        ]
        if found != proposed or [e.index for e in held] != list(range(first, last + 1)):
            raise FloorError(f"{node}'s log does not hold exactly the proposed writes")
    model.update((key, value) for _client, _seq, key, value in writes)
    for node in cluster.ids:
        if cluster.machines[node].data != model:
            raise FloorError(f"{node}'s key-value data differs from the expected map")


def compiled_modules() -> list[str]:
    """The Raft modules this run imported as extension modules (mypyc), not as source."""
    modules = (prism.raft.core, prism.raft.log, prism.raft.messages, prism.raft.kv)
    return [m.__name__ for m in modules if not (m.__file__ or "").endswith(".py")]


def run(args: argparse.Namespace) -> None:
    ticks_per_second = float(args.nodes * 1000 / RaftConfig.lan().tick_ms)
    rounds = int(args.idle_seconds * 1000 / RaftConfig.lan().tick_ms)
    writes = client_writes(args.writes, clients=args.clients, keys=args.keys, seed=args.seed)
    tick_cpu: list[float] = []
    write_cpu: list[float] = []
    piggy_cpu: list[float] = []
    tick_messages = write_messages = write_readies = piggy_messages = piggy_readies = 0
    for repeat in range(args.repeats):
        cluster = Cluster(args.nodes, args.seed + repeat, hold_notices=False)
        cluster.elect()
        per_tick, tick_messages = measure_ticks(cluster, rounds)
        tick_cpu.append(per_tick)
        per_write, write_messages, write_readies = measure_writes(cluster, writes)
        write_cpu.append(per_write)
        cluster = Cluster(args.nodes, args.seed + repeat, hold_notices=True)
        cluster.elect()
        per_write, piggy_messages, piggy_readies = measure_writes(cluster, writes)
        piggy_cpu.append(per_write)
    tick_s = statistics.median(tick_cpu)
    write_s = statistics.median(write_cpu)
    piggy_s = statistics.median(piggy_cpu)
    rate = float(args.rate)

    def speedup(per_write: float) -> float:
        return round(1.0 / (rate * per_write + ticks_per_second * tick_s), 1)

    def us(values: list[float]) -> list[float]:
        return [round(v * 1e6, 2) for v in values]

    emit(
        "raft_core_floor",
        {
            "nodes": args.nodes,
            "writes": args.writes,
            "idle_sim_seconds": args.idle_seconds,
            "repeats": args.repeats,
            "rate": args.rate,
            "ticks_per_sim_second": ticks_per_second,
            "clients": args.clients,
            "keys": args.keys,
            "seed": args.seed,
            "config": "RaftConfig.lan()",
            "clock": "time.process_time",
            "compiled_modules": compiled_modules(),
        },
        {
            "us_per_tick": round(tick_s * 1e6, 2),
            "us_per_tick_runs": us(tick_cpu),
            "messages_per_tick": round(tick_messages / (rounds * args.nodes), 3),
            "us_per_write": round(write_s * 1e6, 2),
            "us_per_write_runs": us(write_cpu),
            "messages_per_write": round(write_messages / args.writes, 2),
            "readies_per_write": round(write_readies / args.writes, 2),
            "us_per_write_piggybacked": round(piggy_s * 1e6, 2),
            "us_per_write_piggybacked_runs": us(piggy_cpu),
            "messages_per_write_piggybacked": round(piggy_messages / args.writes, 2),
            "readies_per_write_piggybacked": round(piggy_readies / args.writes, 2),
            "cpu_ms_per_sim_second": round((rate * write_s + ticks_per_second * tick_s) * 1e3, 3),
            "implied_max_speedup": speedup(write_s),
            "implied_max_speedup_piggybacked": speedup(piggy_s),
            "target_speedup": TARGET_SPEEDUP,
            "budget_ms_per_sim_second": round(1e3 / TARGET_SPEEDUP, 3),
        },
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.raft_core_floor",
        description=(
            "CPU per tick and per write of five RaftCores driven directly (no simulator), "
            "and the simulator speed that leaves at most. Prints one JSON line."
        ),
    )
    parser.add_argument("--nodes", type=int, default=5, help="cluster size (default: 5)")
    parser.add_argument(
        "--writes", type=int, default=3000, help="writes per repetition (default: 3000)"
    )
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=20.0,
        help="simulated seconds of idle ticking per repetition (default: 20)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="repetitions (default: 3)")
    parser.add_argument(
        "--rate",
        type=float,
        default=100.0,
        help="writes per simulated second for the implied speed (default: 100)",
    )
    parser.add_argument("--clients", type=int, default=5, help="client ids (default: 5)")
    parser.add_argument("--keys", type=int, default=3, help="keys written (default: 3)")
    parser.add_argument("--seed", type=int, default=1, help="first seed (default: 1)")
    args = parser.parse_args(argv)
    if min(args.nodes, args.writes, args.repeats, args.clients, args.keys) < 1:
        parser.error("--nodes, --writes, --repeats, --clients and --keys must be positive")
    if args.idle_seconds <= 0 or args.rate <= 0:
        parser.error("--idle-seconds and --rate must be positive")
    return args


def main(argv: list[str] | None = None) -> None:
    run(parse_args(argv))


if __name__ == "__main__":
    main()
