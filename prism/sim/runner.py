"""The runner of a simulated Raft scenario: parameters, fault schedules, phases, verdict.

A run has two phases (TigerBeetle's VOPR does the same): a *safety* phase of
``duration_s`` in which the scenario's faults strike while clients keep working, then a
*liveness* phase on a healed network (every cut healed, paused nodes resumed, crashed nodes
restarted) in which the cluster must elect a leader, commit in its term and bring every node
up to date within ``liveness_s``. The invariant checkers run throughout.

The fault schedule is data (``Fault``: time, action, arguments) that can be printed, saved as
JSON, replayed and shrunk. Arguments may name a node or a role (``leader``, ``follower``,
``random``), resolved when the fault strikes from the run's ``faults`` random stream; the
timeline records what it resolved to.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prism.raft.config import RaftConfig
from prism.sim.clients import ClientPool, Workload
from prism.sim.cluster import RaftSim
from prism.sim.history import HistoryEvent
from prism.sim.invariants import INVARIANTS
from prism.sim.linearizability import check_history
from prism.sim.loop import NS_PER_MS, NS_PER_S, Livelock
from prism.sim.network import LatencyKind, LinkSpec
from prism.sim.rng import derive
from prism.sim.timeline import TimelineEntry

JsonDict = dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class Params:
    """Everything a run depends on besides the scenario's name."""

    nodes: int = 5
    seed: int = 1
    duration_s: float | None = None  # None: the scenario's default
    loss: float | None = None  # None: the scenario's default link
    latency_ms: float | None = None
    pre_vote: bool = True
    check_quorum: bool = True
    clients: int | None = None  # None: the scenario's workload
    ops_per_s: float | None = None
    liveness_s: float = 10.0
    unsafe_commit_old_terms: bool = False
    unsafe_skip_vote_log_check: bool = False
    unsafe_local_reads: bool = False

    def problems(self) -> list[str]:
        found = []
        if not 1 <= self.nodes <= 64:
            found.append("--nodes must be between 1 and 64")
        if self.duration_s is not None and not 0 < self.duration_s <= 3600:
            found.append("--duration must be between 0 and 3600 simulated seconds")
        if self.loss is not None and not 0 <= self.loss < 1:
            found.append("--loss is a fraction: at least 0 and below 1 (0.1 is 10%)")
        if self.latency_ms is not None and not 0 <= self.latency_ms <= 10_000:
            found.append("--latency must be between 0 and 10000 milliseconds")
        if self.clients is not None and not 0 <= self.clients <= 100:
            found.append("--clients must be between 0 and 100")
        if self.ops_per_s is not None and not 0 < self.ops_per_s <= 10_000:
            found.append("--rate must be between 0 and 10000 operations per second")
        return found


@dataclass(frozen=True, slots=True)
class Fault:
    at_s: float
    action: str
    args: JsonDict = field(default_factory=dict)

    def to_json(self) -> JsonDict:
        return {"at_s": self.at_s, "action": self.action, "args": self.args}

    @classmethod
    def from_json(cls, data: object) -> Fault:
        if not isinstance(data, dict):
            raise ValueError("a fault is an object with at_s, action and args")
        at_s, action, args = data.get("at_s"), data.get("action"), data.get("args", {})
        if not isinstance(at_s, int | float) or isinstance(at_s, bool) or at_s < 0:
            raise ValueError("fault at_s must be a non-negative number")
        if action not in ACTIONS:
            raise ValueError(f"unknown fault action {action!r}; known: {', '.join(ACTIONS)}")
        if not isinstance(args, dict):
            raise ValueError("fault args must be an object")
        return cls(float(at_s), action, args)


ACTIONS = (
    "partition",
    "isolate",
    "cut",
    "deafen",
    "bridge",
    "topology",
    "heal",
    "crash",
    "restart",
    "pause",
    "resume",
    "flap",
)


Schedule = list[Fault]
ScheduleBuilder = Callable[[Params, float], Schedule]


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    summary: str
    duration_s: float
    schedule: ScheduleBuilder
    link: LinkSpec = field(default_factory=LinkSpec)
    workload: Workload = field(default_factory=Workload)
    expectations: tuple[Callable[[Runner], tuple[str, bool | str]], ...] = ()
    script: Callable[[Runner], None] | None = None
    raft: JsonDict = field(default_factory=dict)  # RaftConfig fields this scenario needs
    swarm: bool = False  # the seed draws the link quality too
    clock_skew: float = 0.0  # each node's clock rate drawn in [1 - skew, 1 + skew]
    initial_voters: int | None = None  # servers that form the cluster at first (None: all)


@dataclass(slots=True)
class SimResult:
    scenario: str
    seed: int
    nodes: int
    ok: bool
    invariants: dict[str, bool | str]
    expectations: dict[str, bool | str]
    elections: int
    leaders_by_term: dict[int, str]
    writes: dict[str, int]
    operations: dict[str, int]
    messages: dict[str, int]
    max_leaders_at_once: int
    snapshots: dict[str, int]
    members: tuple[str, ...]
    overlap_s: float
    liveness_s: float | None
    sim_seconds: float
    wall_seconds: float
    digest: str
    schedule: list[Fault]
    replay: str
    params: JsonDict
    timeline: list[TimelineEntry] = field(repr=False)
    history: tuple[HistoryEvent, ...] = field(repr=False)

    def to_json(self) -> JsonDict:
        return {
            "scenario": self.scenario,
            "seed": self.seed,
            "nodes": self.nodes,
            "ok": self.ok,
            "invariants": self.invariants,
            "expectations": self.expectations,
            "elections": self.elections,
            "leaders_by_term": {str(t): n for t, n in sorted(self.leaders_by_term.items())},
            "max_leaders_at_once": self.max_leaders_at_once,
            "snapshots": self.snapshots,
            "members": list(self.members),
            "overlap_seconds": round(self.overlap_s, 3),
            "writes": self.writes,
            "operations": self.operations,
            "messages": self.messages,
            "liveness_seconds": None if self.liveness_s is None else round(self.liveness_s, 3),
            "sim_seconds": round(self.sim_seconds, 3),
            "wall_seconds": round(self.wall_seconds, 3),
            "digest": self.digest,
            "params": self.params,
            "schedule": [f.to_json() for f in self.schedule],
            "replay": self.replay,
        }


class Runner:
    """Runs one scenario: builds the cluster, applies the faults, then judges the run."""

    def __init__(
        self, scenario: Scenario, params: Params, schedule: Schedule | None = None
    ) -> None:
        problems = params.problems()
        if problems:
            raise ValueError("\n".join(problems))
        self.scenario = scenario
        self.params = params
        self.duration_s = params.duration_s or scenario.duration_s
        link = swarm_link(params.seed) if scenario.swarm else scenario.link
        if params.loss is not None:
            link = dataclasses.replace(link, loss=params.loss)
        if params.latency_ms is not None:
            link = dataclasses.replace(link, latency_ms=params.latency_ms)
        self.link = link
        config = dataclasses.replace(
            RaftConfig.lan(),
            pre_vote=params.pre_vote,
            check_quorum=params.check_quorum,
            unsafe_commit_old_terms=params.unsafe_commit_old_terms,
            unsafe_skip_vote_log_check=params.unsafe_skip_vote_log_check,
            unsafe_local_reads=params.unsafe_local_reads,
            **(swarm_raft(params.seed) if scenario.swarm else {}),
            **scenario.raft,
        )
        self.sim = RaftSim(
            nodes=params.nodes,
            seed=params.seed,
            config=config,
            link=link,
            clock_skew=scenario.clock_skew,
            initial_voters=(
                None
                if scenario.initial_voters is None
                else min(scenario.initial_voters, params.nodes)
            ),
        )
        workload = dataclasses.replace(
            scenario.workload,
            clients=scenario.workload.clients if params.clients is None else params.clients,
            ops_per_s=scenario.workload.ops_per_s if params.ops_per_s is None else params.ops_per_s,
        )
        self.clients = ClientPool(self.sim, workload, seed=params.seed)
        self.rng = derive(params.seed, "faults")
        self.schedule = (
            schedule if schedule is not None else scenario.schedule(params, self.duration_s)
        )

    # ---- node selectors
    def resolve(self, who: object) -> str | None:
        sim = self.sim
        up = [n.id for n in sim.up_nodes()]
        if who == "leader":
            return sim.leader() or (self.rng.choice(up) if up else None)
        if who == "follower":
            leader = sim.leader()
            followers = [n for n in up if n != leader]
            return self.rng.choice(followers) if followers else None
        if who == "random":
            return self.rng.choice(up) if up else None
        if isinstance(who, str) and who in sim.nodes:
            return who
        raise ValueError(f"unknown node {who!r}")

    def note(self, text: str) -> None:
        self.sim.timeline.add(self.sim.loop.now_ns, "-", text)

    def apply(self, fault: Fault) -> None:
        sim, net, args = self.sim, self.sim.network, fault.args
        action = fault.action
        if action == "partition":
            groups = args.get("groups")
            if groups is None:
                leader = self.resolve("leader")
                others = [n for n in sim.ids if n != leader]
                self.rng.shuffle(others)
                size = int(args.get("leader_side", 2)) - 1
                groups = [sorted([leader, *others[:size]]), sorted(others[size:])]
            net.partition(groups)
            self.note("partition " + "|".join("{" + ",".join(g) + "}" for g in groups))
        elif action == "isolate":
            node = self.resolve(args.get("node", "leader"))
            if node:
                net.isolate(node)
                self.note(f"isolate {node}")
        elif action == "cut":
            src, dst = self.resolve(args["src"]), self.resolve(args["dst"])
            if src and dst and src != dst:
                net.cut(src, dst)
                self.note(f"cut {src}->{dst} (one way)")
        elif action == "deafen":
            node = self.resolve(args.get("node", "follower"))
            if node:
                for other in sim.ids:
                    if other != node:
                        net.cut(other, node)
                self.note(f"deafen {node}: it can send but not receive")
        elif action == "bridge":
            self._bridge(args)
        elif action == "topology":
            self._topology(args)
        elif action == "heal":
            net.heal()
            net.filters.clear()
            self.note("heal: every link restored")
        elif action == "crash":
            node = self.resolve(args.get("node", "leader"))
            if node:
                sim.crash(node)
        elif action == "restart":
            who = args.get("node", "all")
            for node in sim.ids if who == "all" else [self.resolve(who)]:
                if node:
                    sim.restart(node)
        elif action == "pause":
            node = self.resolve(args.get("node", "leader"))
            if node:
                sim.pause(node)
        elif action == "resume":
            who = args.get("node", "all")
            for node in sim.ids if who == "all" else [self.resolve(who)]:
                if node:
                    sim.resume(node)
        elif action == "flap":
            self._flap(args)
        elif action == "stall-disk":
            node = self.resolve(args.get("node", "leader"))
            if node:
                sim.stall_disk(node, float(args.get("for_s", 2.0)))
        elif action in ("add", "add-learner", "remove"):
            self._operate(fault, lambda: self._membership_change(action, args))
        elif action == "transfer":
            self._operate(fault, lambda: self._transfer(args))
        else:
            raise ValueError(f"unknown fault action {action!r}")

    def _operate(self, fault: Fault, attempt: Callable[[], str | None]) -> None:
        """An operator's request: tried now, and retried every 100 ms while refused (no
        leader yet, another change in progress) for ``within_s`` seconds."""
        deadline = self.sim.loop.now_ns + int(float(fault.args.get("within_s", 5.0)) * NS_PER_S)

        def again() -> None:
            why = attempt()
            if why is None:
                return
            if self.sim.loop.now_ns >= deadline:
                self.note(f"{fault.action} gave up: {why}")
                return
            self.sim.loop.call_later(100 * NS_PER_MS, again)

        again()

    def _membership_change(self, action: str, args: JsonDict) -> str | None:
        who = args.get("node", "follower")
        members = self.sim.members()
        if action == "remove":
            if who in ("leader", "follower", "random"):
                leader = self.sim.leader()
                voters = [n for n in members if n != leader] if who == "follower" else members
                if who == "leader":
                    voters = [leader] if leader else []
                if not voters:
                    return "no such member"
                who = self.rng.choice(sorted(voters))
        elif who == "non-member":
            outside = [n for n in self.sim.ids if n not in members]
            if not outside:
                return "every server is a member"
            who = outside[0]
        if not isinstance(who, str) or who not in self.sim.nodes:
            raise ValueError(f"unknown node {who!r}")
        return self.sim.change_membership(action, who)

    def _transfer(self, args: JsonDict) -> str | None:
        target = args.get("target")
        if target == "random":
            leader = self.sim.leader()
            core = self.sim.nodes[leader].core if leader else None
            voters = [v for v in core.voters if v != leader] if core is not None else []
            if not voters:
                return "no other voter"
            target = self.rng.choice(voters)
        if target is not None and not isinstance(target, str):
            raise ValueError(f"unknown transfer target {target!r}")
        return self.sim.transfer_leadership(target)

    def _bridge(self, args: JsonDict) -> None:
        bridge = self.resolve(args.get("bridge", "follower"))
        leader = self.sim.leader()
        others = [n for n in self.sim.ids if n not in (bridge, leader)]
        self.rng.shuffle(others)
        half = (len(self.sim.ids) - 1) // 2
        left = sorted([n for n in [leader] if n] + others[: half - (1 if leader else 0)])
        right = sorted(n for n in others if n not in left)
        net = self.sim.network
        net.partition([left, right])
        if bridge:
            for node in self.sim.ids:
                net.heal_link(bridge, node)
                net.heal_link(node, bridge)
        self.note(f"bridge {{{','.join(left)}}}-{bridge}-{{{','.join(right)}}}")

    def _topology(self, args: JsonDict) -> None:
        """Partial connectivity (raft-anchors (b) 5): the leader's side is a full mesh of
        three; each remaining node reaches exactly one of the others."""
        sim, net = self.sim, self.sim.network
        leader = self.resolve("leader")
        assert leader is not None
        others = [n for n in sim.ids if n != leader]
        self.rng.shuffle(others)
        if args.get("leader_poorly_connected"):
            core, poor = others[:3], [leader, *others[3:]]
        else:
            core, poor = [leader, *others[:2]], others[2:]
        net.partition([[n] for n in sim.ids])
        for a in core:
            for b in core:
                if a != b:
                    net.heal_link(a, b)
        links = []
        for i, node in enumerate(poor):
            peer = core[1 + i % (len(core) - 1)] if len(core) > 1 else core[0]
            net.heal_link(node, peer)
            net.heal_link(peer, node)
            links.append(f"{node}<->{peer}")
        self.note(f"partial connectivity: mesh {{{','.join(sorted(core))}}}, " + ", ".join(links))

    def _flap(self, args: JsonDict) -> None:
        a, b = self.resolve(args.get("a", "leader")), self.resolve(args.get("b", "follower"))
        if not a or not b or a == b:
            return
        period_ns = int(float(args.get("period_s", 0.2)) * NS_PER_S)
        until_ns = int(float(args.get("until_s", self.duration_s)) * NS_PER_S)
        net = self.sim.network
        self.note(f"flapping link {a}<->{b} every {period_ns / 1e6:.0f} ms")

        def toggle(down: bool) -> None:
            if self.sim.loop.now_ns >= until_ns:
                net.heal_link(a, b)
                net.heal_link(b, a)
                return
            if down:
                net.cut(a, b)
                net.cut(b, a)
            else:
                net.heal_link(a, b)
                net.heal_link(b, a)
            self.sim.loop.call_later(period_ns, lambda: toggle(not down))

        toggle(True)

    # ---- the run
    def run(self) -> SimResult:
        started = time.perf_counter()
        try:
            return self._run(started)
        except Livelock as exc:
            self.sim.checkers.fail("liveness", exc.now_ns, str(exc))
            self.sim.timeline.add(exc.now_ns, "-", f"stopped: {exc}")
            self.clients.stop()
            return self._judge(None, time.perf_counter() - started, stopped=True)

    def _run(self, started: float) -> SimResult:
        sim = self.sim
        for fault in sorted(self.schedule, key=lambda f: f.at_s):
            sim.loop.call_at(int(fault.at_s * NS_PER_S), lambda f=fault: self.apply(f))  # type: ignore[misc]
        self.clients.start()
        if self.scenario.script is not None:
            self.scenario.script(self)
        end_ns = int(self.duration_s * NS_PER_S)

        def violated() -> bool:
            return bool(sim.checkers.violations)

        if sim.loop.now_ns < end_ns and not violated():
            sim.loop.run_until(end_ns, violated)
        if violated():
            # Like VOPR, stop soon after the first violation: what follows a broken safety
            # rule is noise (and a broken build can spin), and liveness is moot.
            sim.run_for(1.0)
            sim.timeline.add(sim.loop.now_ns, "-", "stopped: a safety invariant broke")
            self.clients.stop()
            return self._judge(None, time.perf_counter() - started, stopped=True)
        liveness = self._liveness_phase()
        self.clients.stop()
        # Let the last operations finish on a settled cluster before judging it.
        sim.run_for(5.0, lambda: not self.clients.busy() and self.recovered())
        return self._judge(liveness, time.perf_counter() - started)

    def heal_everything(self) -> None:
        sim = self.sim
        sim.network.heal()
        sim.network.filters.clear()
        sim.network.set_all_links(self.link)
        for node in sim.ids:
            sim.resume(node)
            sim.restart(node)
        sim.timeline.add(sim.loop.now_ns, "-", "liveness phase: network healed, all nodes up")

    def recovered(self) -> bool:
        """One leader that every node follows, in the highest term, committed in its own
        term, and every node has applied what it committed."""
        sim = self.sim
        leader = sim.leader()
        if leader is None:
            return False
        core = sim.nodes[leader].core
        assert core is not None
        if core.log.term_at(core.commit) != core.term:
            return False
        for member in core.membership.members:  # a removed server is not waited for
            node = sim.nodes[member]
            other = node.core
            if other is None or node.paused or other.term != core.term:
                return False
            if other.leader != leader or node.kv.applied_index < core.commit:
                return False
        return True

    def _liveness_phase(self) -> float | None:
        sim = self.sim
        self.heal_everything()
        healed_ns = sim.loop.now_ns
        if sim.run_for(self.params.liveness_s, self.recovered):
            took = (sim.loop.now_ns - healed_ns) / NS_PER_S
            sim.timeline.add(sim.loop.now_ns, "-", f"recovered {took:.3f}s after the heal")
            return took
        return None

    def _judge(self, liveness: float | None, wall_s: float, *, stopped: bool = False) -> SimResult:
        sim, checkers = self.sim, self.sim.checkers
        cores = [n.core for n in sim.nodes.values() if n.core is not None]
        leader = sim.leader()
        final = sim.nodes[leader].core if leader else None
        if final is None and cores:  # no leader at the end: judge the most advanced log
            final = max(cores, key=lambda c: c.commit)
        final_log = final.log if final is not None else None
        lost = checkers.lost_writes(final_log, final.commit if final is not None else 0)
        if lost:
            checkers.fail(
                "no-lost-acked-write",
                sim.loop.now_ns,
                f"{len(lost)} acknowledged writes missing from the final committed log, "
                f"first {lost[0][0]}#{lost[0][1]}",
            )
        lin = check_history(self.clients.history.events)
        if lin.verdict == "violation":
            checkers.fail("linearizable", sim.loop.now_ns, lin.detail)
        invariants: dict[str, bool | str] = {}
        for name in INVARIANTS:
            violation = checkers.violations.get(name)
            invariants[name] = (
                True
                if violation is None
                else (f"{violation.time_ns / NS_PER_S:.3f}s: {violation.detail}")
            )
        if lin.verdict == "unknown":
            invariants["linearizable"] = f"unknown: {lin.detail}"
        if stopped and invariants["liveness"] is True:
            invariants["liveness"] = "not checked: the run stopped at a safety violation"
        elif liveness is None:
            invariants["liveness"] = (
                f"no leader with all nodes caught up within {self.params.liveness_s}s of the heal"
            )
        expectations = dict(check(self) for check in self.scenario.expectations)
        committed = len(checkers.committed_writes)
        stats = self.clients.stats
        acknowledged = stats["write.ok"] + stats["cas.ok"]
        ok = (
            not stopped
            and all(v is True for k, v in invariants.items() if k != "linearizable")
            and (invariants["linearizable"] is True or lin.verdict == "unknown")
        )
        ok = ok and all(
            v is True or str(v).startswith("not checked") for v in expectations.values()
        )
        return SimResult(
            scenario=self.scenario.name,
            seed=self.params.seed,
            nodes=self.params.nodes,
            ok=ok,
            invariants=invariants,
            expectations=expectations,
            elections=sim.elections,
            leaders_by_term=dict(sorted(checkers.leaders_by_term.items())),
            writes={"acknowledged": acknowledged, "committed": committed, "lost": len(lost)},
            operations=dict(sorted(stats.items())),
            messages=dict(sorted(sim.network.stats.items())),
            max_leaders_at_once=sim.max_leaders_at_once,
            snapshots={"taken": sim.snapshots_taken, "installed": sim.snapshots_installed},
            members=sim.members(),
            overlap_s=sim.overlap_ns / NS_PER_S,
            liveness_s=liveness,
            sim_seconds=sim.loop.now_ns / NS_PER_S,
            wall_seconds=wall_s,
            digest=sim.timeline.digest(),
            schedule=list(self.schedule),
            replay=replay_command(self.scenario.name, self.params),
            params=dataclasses.asdict(self.params),
            timeline=list(sim.timeline.entries),
            history=self.clients.history.events,
        )

    # ---- helpers for expectations and scripts
    def elections_between(self, start_s: float, end_s: float) -> int:
        lo, hi = int(start_s * NS_PER_S), int(end_s * NS_PER_S)
        return sum(
            1
            for e in self.sim.timeline.entries
            if lo <= e.time_ns < hi and e.text.startswith("became leader")
        )


def swarm_link(seed: int) -> LinkSpec:
    """The seed also draws the network's quality (swarm testing, as VOPR does)."""
    rng = derive(seed, "swarm")
    return LinkSpec(
        latency_ms=rng.choice([0.2, 1.0, 5.0]),
        jitter_ms=rng.choice([0.1, 1.0, 5.0]),
        kind=rng.choice(list(LatencyKind)),
        loss=rng.choice([0.0, 0.0, 0.01, 0.05, 0.1]),
        duplicate=rng.choice([0.0, 0.01, 0.05]),
        reorder=rng.choice([0.0, 0.01, 0.1]),
    )


def swarm_raft(seed: int) -> JsonDict:
    """The seed also draws how often snapshots are taken and how they are chunked, so that
    explore runs catch-up by snapshot under every other fault."""
    rng = derive(seed, "swarm-raft")
    return {
        "snapshot_threshold_entries": rng.choice([8192, 200, 50]),
        "snapshot_trailing_entries": rng.choice([0, 10, 100]),
        "snapshot_chunk_bytes": rng.choice([256, 4096, 32768]),
    }


def replay_head(
    name: str,
    *,
    seed: int,
    nodes: int,
    duration_s: float | None,
    loss: float | None,
    latency_ms: float | None,
) -> list[str]:
    """The start of a replay command, with the options every scenario (Raft or SWIM) takes."""
    parts = [f"prismctl sim run {name} --seed {seed} --nodes {nodes}"]
    if duration_s is not None:
        parts.append(f"--duration {duration_s:g}")
    if loss is not None:
        parts.append(f"--loss {loss:g}")
    if latency_ms is not None:
        parts.append(f"--latency {latency_ms:g}")
    return parts


def replay_command(name: str, params: Params) -> str:
    parts = replay_head(
        name,
        seed=params.seed,
        nodes=params.nodes,
        duration_s=params.duration_s,
        loss=params.loss,
        latency_ms=params.latency_ms,
    )
    if not params.pre_vote:
        parts.append("--no-prevote")
    if not params.check_quorum:
        parts.append("--no-check-quorum")
    if params.clients is not None:
        parts.append(f"--clients {params.clients}")
    if params.liveness_s != Params().liveness_s:
        parts.append(f"--liveness {params.liveness_s:g}")
    if params.ops_per_s is not None:
        parts.append(f"--rate {params.ops_per_s:g}")
    unsafe = ("unsafe_commit_old_terms", "unsafe_skip_vote_log_check", "unsafe_local_reads")
    parts.extend("--" + flag.replace("_", "-") for flag in unsafe if getattr(params, flag))
    return " ".join(parts)
