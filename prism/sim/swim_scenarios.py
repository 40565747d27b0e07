"""The named SWIM scenarios of ``prismctl sim``: membership under crashes, loss, a stalling
member and a partition, on the simulated network (``prism.sim.swim_cluster``).

Every run has the same shape:

1. **join**: ``n1`` starts alone; every other member starts at a random moment of the first
   ``JOIN_WINDOW_S`` seconds and joins through ``n1``. The run waits (up to
   ``join_limit_s``) until every member sees every other alive: ``converged_s``.
2. **settle**: until the join's news has finished spreading (every member's piggyback
   queue is empty; at most ``SETTLE_LIMIT_S``), then two probe periods: the scenario starts
   from a steady cluster.
3. **the scenario's own phase** (``--duration`` seconds; each scenario has a default), in
   which its fault strikes and its figures are measured, including the message load:
   datagrams sent per member per probe period (``msgs_per_member_per_period``).
4. **judgement**: invariants, each ``True`` or a sentence naming the first violation, and
   the figures, in a ``SwimResult`` whose JSON carries the same common fields as the Raft
   scenarios (``scenario``, ``seed``, ``nodes``, ``ok``, ``invariants``, ``sim_seconds``,
   ``wall_seconds``, ``digest``) with the figures beside them.

The scenarios, and what each proves:

* ``swim-join``: all members join through one seed; ``converged_s``.
* ``swim-crash``: a member crashes; ``detect_first_s`` (first member marks it dead) and
  ``detect_all_s`` (every live member does), against ``detect_target_s`` = 3 probe periods
  plus the minimum suspicion timeout (the issue's target; ``within_target``) and
  ``detect_bound_s``, which the ``dead_detected`` invariant checks: 10 probe periods (the
  chance that no member probes the crashed one in a period is about 1/e, so ten periods
  without a probe happen about once in 10,000 runs), plus the *maximum* suspicion timeout
  (when no confirmation comes), plus the time gossip takes to tell everyone.
* ``swim-loss``: uniform loss (``--loss``, 10 % by default) on every link; ``false_deaths``
  must be zero (with Lifeguard on), and the cluster converges once the loss stops.
* ``swim-slow-member``: one member stalls (as under SIGSTOP) for 1 to 3 probe periods at
  random, again and again; deaths declared about it and by it are counted. Stalls shorter
  than the minimum suspicion timeout must never make it dead.
* ``swim-partition``: two random halves are cut apart for ``--duration`` seconds, long enough
  for each to mark the other dead (``split_s``), then healed; reconnect push-pulls and
  refutation must re-merge them, every live member alive everywhere, within
  ``remerge_bound_s``: ``remerge_s``.

``--no-lifeguard`` runs any of them with Lifeguard's three mechanisms off
(``SwimConfig.without_lifeguard``), ``--no-stream-probe`` without the fallback ping over
TCP (``SwimConfig.stream_probe``), and ``--no-coordinated-probes`` with SWIM's own randomized
round robin in place of the coordinated probe schedule (``SwimConfig.coordinated_probes``),
to compare.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, final

from prism.sim.loop import NS_PER_S
from prism.sim.network import LinkSpec
from prism.sim.rng import derive
from prism.sim.runner import replay_head
from prism.sim.swim_cluster import Death, SwimSim
from prism.sim.timeline import TimelineEntry
from prism.swim.broadcast import retransmit_limit
from prism.swim.config import SwimConfig
from prism.swim.suspicion import suspicion_bounds

JsonDict = dict[str, Any]
Figure = float | int | str | None

JOIN_WINDOW_S = 2.0
"""Members start at random moments within this many seconds of each other."""
MAX_NODES = 2000
SETTLE_LIMIT_S = 120.0
"""After the join, wait at most this long for the news of it to finish spreading."""
STALL_PERIODS = (1.0, 3.0)
"""A stalling member's stalls last this many probe periods (uniform)."""
STALL_GAP_PERIODS = (4.0, 12.0)
"""and it runs normally this many probe periods between stalls."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SwimParams:
    """Everything a SWIM run depends on besides the scenario's name."""

    nodes: int = 10
    seed: int = 1
    duration_s: float | None = None  # None: the scenario's default
    loss: float | None = None  # None: the scenario's default (0, or 10 % for swim-loss)
    latency_ms: float | None = None  # None: LinkSpec's default (1 ms + up to 0.5 ms jitter)
    lifeguard: bool = True
    stream_probe: bool = True  # False: a probe is judged by datagrams alone
    coordinated_probes: bool = True  # False: each member probes in its own random order
    tick_elision: bool = True  # False ticks every core every tick (same run, slower)

    def problems(self) -> list[str]:
        found = []
        if not 2 <= self.nodes <= MAX_NODES:
            found.append(f"--nodes must be between 2 and {MAX_NODES} for SWIM scenarios")
        if self.duration_s is not None and not 0 < self.duration_s <= 3600:
            found.append("--duration must be between 0 and 3600 simulated seconds")
        if self.loss is not None and not 0 <= self.loss < 1:
            found.append("--loss is a fraction: at least 0 and below 1 (0.1 is 10%)")
        if self.latency_ms is not None and not 0 <= self.latency_ms <= 10_000:
            found.append("--latency must be between 0 and 10000 milliseconds")
        return found


@dataclass(slots=True)
class SwimResult:
    scenario: str
    seed: int
    nodes: int
    ok: bool
    lifeguard: bool
    stream_probe: bool
    coordinated_probes: bool
    invariants: dict[str, bool | str]
    figures: dict[str, Figure]
    messages: dict[str, int]
    sim_seconds: float
    wall_seconds: float
    digest: str
    replay: str
    params: JsonDict
    timeline: list[TimelineEntry] = field(repr=False)
    false_deaths: list[Death] = field(repr=False)

    def to_json(self) -> JsonDict:
        return {
            "scenario": self.scenario,
            "seed": self.seed,
            "nodes": self.nodes,
            "ok": self.ok,
            "invariants": self.invariants,
            "sim_seconds": round(self.sim_seconds, 3),
            "wall_seconds": round(self.wall_seconds, 3),
            "digest": self.digest,
            "lifeguard": self.lifeguard,
            "stream_probe": self.stream_probe,
            "coordinated_probes": self.coordinated_probes,
            **self.figures,
            "messages": self.messages,
            "params": self.params,
            "replay": self.replay,
        }


Script = Callable[["SwimRun"], None]


@dataclass(frozen=True, slots=True)
class SwimScenario:
    name: str
    summary: str
    duration_s: float
    script: Script
    loss: float = 0.0  # uniform loss of the scenario's own phase (``--loss`` overrides)


@final
class SwimRun:
    """One run of a SWIM scenario: builds the cluster, joins it, runs the script, judges."""

    def __init__(self, scenario: SwimScenario, params: SwimParams) -> None:
        problems = params.problems()
        if problems:
            raise ValueError("\n".join(problems))
        self.scenario = scenario
        self.params = params
        self.duration_s = params.duration_s or scenario.duration_s
        link = LinkSpec()
        if params.latency_ms is not None:
            link = dataclasses.replace(link, latency_ms=params.latency_ms)
        self.link = link
        self.loss = scenario.loss if params.loss is None else params.loss
        config = SwimConfig.lan()
        if not params.lifeguard:
            config = config.without_lifeguard()
        self.config = dataclasses.replace(
            config,
            stream_probe=params.stream_probe,
            coordinated_probes=params.coordinated_probes,
        )
        self.sim = SwimSim(
            nodes=params.nodes,
            seed=params.seed,
            config=self.config,
            link=link,
            tick_elision=params.tick_elision,
        )
        self.rng = derive(params.seed, "faults")
        self.period_s = self.sim.period_ns / NS_PER_S
        low, high, _ = suspicion_bounds(
            members=params.nodes,
            suspicion_mult=self.config.suspicion_mult,
            max_timeout_mult=self.config.suspicion_max_timeout_mult,
            probe_interval_ticks=self.config.probe_interval_ticks,
        )
        if not self.config.lha_suspicion:
            high = low
        tick_s = self.config.tick_ms / 1000
        self.suspicion_min_s = low * tick_s
        self.suspicion_max_s = high * tick_s
        # How long gossip takes to tell everyone, at most: each member sends an update
        # ``retransmit_limit`` times, one gossip round at a time.
        limit = retransmit_limit(self.config.retransmit_mult, params.nodes)
        self.spread_s = limit * max(1, self.config.gossip_interval_ticks) * tick_s
        # Join: generous for a thousand members joining through a single seed.
        self.join_limit_s = 30.0 + 0.1 * params.nodes
        self.invariants: dict[str, bool | str] = {}
        self.figures: dict[str, Figure] = {}
        self._phase_start_ns = 0
        self._phase_sent = 0
        self._phase_streams = 0
        self._phase_members = 0

    def note(self, text: str) -> None:
        self.sim.log.add(self.sim.now_ns, "-", text)

    # ---- the run
    def run(self) -> SwimResult:
        started = time.perf_counter()
        self.join()
        if self.invariants.get("converged") is True:
            self.settle()
            self.scenario.script(self)
        else:
            self.note("stopped: the cluster never converged after the join")
        return self._judge(time.perf_counter() - started)

    def join(self) -> None:
        """The join phase: start everyone, wait until every member sees every other."""
        sim = self.sim
        last_ns = schedule_join(sim, self.params.seed)
        sim.run_until(last_ns)
        limit_ns = last_ns + int(self.join_limit_s * NS_PER_S)
        if sim.run_until(limit_ns, sim.converged):
            converged_s = sim.now_ns / NS_PER_S
            self.figures["converged_s"] = round(converged_s, 3)
            self.note(f"converged: every member sees every other alive ({converged_s:.3f}s)")
            self.invariants["converged"] = True
        else:
            self.figures["converged_s"] = None
            self.invariants["converged"] = (
                f"not every member saw every other alive within {self.join_limit_s:g}s "
                "of the last start"
            )

    def settle(self) -> None:
        """Let the join's news finish spreading (every member's piggyback queue empty, as
        in a cluster that has been up a while), then two more probe periods, so that the
        scenario's figures are those of a steady cluster."""
        sim = self.sim
        started = sim.now_ns

        def quiet() -> bool:
            return all(sim.core(name).statistics().queued_updates == 0 for name in sim.running())

        sim.poll(SETTLE_LIMIT_S, quiet, every_s=self.period_s)
        sim.run_for(2 * self.period_s)
        self.figures["settled_s"] = round((sim.now_ns - started) / NS_PER_S, 3)

    def begin_phase(self) -> None:
        """Start measuring the message load (the scenario's own phase)."""
        self._phase_start_ns = self.sim.now_ns
        self._phase_sent = sum(self.sim.datagrams_sent.values())
        self._phase_streams = sum(self.sim.streams_sent.values())
        self._phase_members = len(self.sim.running())

    def end_phase(self) -> None:
        sim = self.sim
        periods = (sim.now_ns - self._phase_start_ns) / sim.period_ns
        member_periods = periods * max(1, self._phase_members)
        sent = sum(sim.datagrams_sent.values()) - self._phase_sent
        streams = sum(sim.streams_sent.values()) - self._phase_streams
        self.figures["phase_s"] = round((sim.now_ns - self._phase_start_ns) / NS_PER_S, 3)
        self.figures["msgs_per_member_per_period"] = (
            round(sent / member_periods, 3) if member_periods else None
        )
        self.figures["streams_per_member_per_period"] = (
            round(streams / member_periods, 4) if member_periods else None
        )

    def lossy_link(self) -> LinkSpec:
        return dataclasses.replace(self.link, loss=self.loss)

    # ---- judgement
    def _judge(self, wall_s: float) -> SwimResult:
        sim = self.sim
        self.invariants.setdefault("no_false_death", _no_false_death(sim.false_deaths))
        self.figures["false_deaths"] = len(sim.false_deaths)
        self.figures["false_suspicions"] = sim.false_suspicions
        self.figures["refutations"] = sim.refutations
        self.figures.setdefault("msgs_per_member_per_period", None)
        self.figures["suspicion_min_s"] = round(self.suspicion_min_s, 3)
        self.figures["suspicion_max_s"] = round(self.suspicion_max_s, 3)
        messages = dict(sorted(sim.network.stats.items()))
        messages.update(
            {f"sent_{kind}": count for kind, count in sorted(sim.datagrams_sent.items())}
        )
        messages.update(
            {f"stream_{kind}": count for kind, count in sorted(sim.streams_sent.items())}
        )
        if sim.unroutable:
            messages["unroutable"] = sim.unroutable
        if sim.buffer_overflow:
            messages["dropped_paused_buffer_full"] = sim.buffer_overflow
        ok = all(value is True for value in self.invariants.values())
        return SwimResult(
            scenario=self.scenario.name,
            seed=self.params.seed,
            nodes=self.params.nodes,
            ok=ok,
            lifeguard=self.params.lifeguard,
            stream_probe=self.params.stream_probe,
            coordinated_probes=self.params.coordinated_probes,
            invariants=dict(self.invariants),
            figures=dict(self.figures),
            messages=messages,
            sim_seconds=sim.now_ns / NS_PER_S,
            wall_seconds=wall_s,
            digest=sim.log.digest(),
            replay=swim_replay_command(self.scenario.name, self.params),
            params=dataclasses.asdict(self.params),
            timeline=list(sim.log.entries),
            false_deaths=list(sim.false_deaths),
        )


def schedule_join(sim: SwimSim, seed: int) -> int:
    """Start the first member now and every other at a random moment of the next
    ``JOIN_WINDOW_S`` seconds, each joining through the first; returns the last start."""
    names = sim.names
    sim.log.add(
        sim.now_ns,
        "-",
        f"{len(names)} members start within {JOIN_WINDOW_S:g}s and join through {names[0]}",
    )
    sim.start(names[0], [names[0]])
    starts = derive(seed, "joins")
    times = sorted(starts.uniform(0.0, JOIN_WINDOW_S) for _ in names[1:])
    for name, at_s in zip(names[1:], times, strict=True):
        sim.loop.call_at(
            sim.now_ns + int(at_s * NS_PER_S),
            lambda name=name: sim.start(name, [names[0]]),  # type: ignore[misc]
        )
    return sim.now_ns + (int(times[-1] * NS_PER_S) if times else 0)


def _no_false_death(deaths: list[Death]) -> bool | str:
    if not deaths:
        return True
    first = deaths[0]
    verdict = "its own suspicion timed out" if first.by == first.observer else f"from {first.by}"
    return (
        f"{len(deaths)} false death(s); first at {first.time_ns / NS_PER_S:.3f}s: "
        f"{first.observer} marked running {first.subject} dead ({verdict})"
    )


# ---------------------------------------------------------------- scripts


def _join(run: SwimRun) -> None:
    """Stay converged, with nothing broken, for the scenario's duration."""
    sim = run.sim
    run.begin_phase()
    sim.run_for(run.duration_s)
    run.end_phase()
    if not sim.converged():
        run.invariants["converged"] = "the cluster did not stay converged after the join"


def _crash(run: SwimRun) -> None:
    sim = run.sim
    victim = run.rng.choice(sim.names[1:])
    target_s = 3 * run.period_s + run.suspicion_min_s
    bound_s = 10 * run.period_s + run.suspicion_max_s + run.spread_s
    run.figures["crashed"] = victim
    run.figures["detect_target_s"] = round(target_s, 3)
    run.figures["detect_bound_s"] = round(bound_s, 3)
    run.begin_phase()
    crashed_ns = sim.now_ns
    sim.crash(victim)
    sim.run_for(run.duration_s, lambda: victim in sim.all_dead_ns)
    run.end_phase()
    figures = run.figures
    for figure, times in (
        ("suspect_first_s", sim.first_suspect_ns),
        ("detect_first_s", sim.first_dead_ns),
        ("detect_all_s", sim.all_dead_ns),
    ):
        at = times.get(victim)
        figures[figure] = None if at is None else round((at - crashed_ns) / NS_PER_S, 3)
    detect_all = figures["detect_all_s"]
    if detect_all is None:
        seen = sim.dead_count(victim)
        run.invariants["dead_detected"] = (
            f"{victim} was marked dead by {seen} of {len(sim.running())} live members "
            f"within {run.duration_s:g}s"
        )
    elif isinstance(detect_all, float) and detect_all > bound_s:
        run.invariants["dead_detected"] = (
            f"{victim} was dead everywhere only after {detect_all:.3f}s "
            f"(bound {bound_s:.3f}s: 10 probe periods, the maximum suspicion timeout and "
            "the gossip spread)"
        )
    else:
        run.invariants["dead_detected"] = True
    figures["within_target"] = isinstance(detect_all, float) and detect_all <= target_s


def _loss(run: SwimRun) -> None:
    sim = run.sim
    run.figures["loss"] = run.loss
    run.begin_phase()
    sim.set_link(run.lossy_link())
    sim.run_for(run.duration_s)
    run.end_phase()
    sim.set_link(run.link)
    _converge_again(run, "after the loss stopped")


def _converge_again(run: SwimRun, when: str) -> None:
    """Every live member must be alive everywhere again soon (refutations settle)."""
    sim = run.sim
    limit_s = run.suspicion_max_s + 10 * run.period_s
    started = sim.now_ns
    if sim.run_for(limit_s, sim.converged):
        run.figures["reconverged_s"] = round((sim.now_ns - started) / NS_PER_S, 3)
    else:
        run.figures["reconverged_s"] = None
        run.invariants["converged"] = f"not every live member was alive everywhere {when}"


def _slow_member(run: SwimRun) -> None:
    sim = run.sim
    slow = run.rng.choice(sim.names[1:])
    run.figures["slow_member"] = slow
    period_s = run.period_s
    run.begin_phase()
    start = sim.now_ns
    end = start + int(run.duration_s * NS_PER_S)
    at = start + int(run.rng.uniform(*STALL_GAP_PERIODS) * period_s * NS_PER_S)
    stalls: list[float] = []
    while True:
        stall_s = run.rng.uniform(*STALL_PERIODS) * period_s
        resume_at = at + int(stall_s * NS_PER_S)
        if resume_at >= end:
            break
        sim.loop.call_at(at, lambda: sim.pause(slow))
        sim.loop.call_at(resume_at, lambda: sim.resume(slow))
        stalls.append(stall_s)
        at = resume_at + int(run.rng.uniform(*STALL_GAP_PERIODS) * period_s * NS_PER_S)
    run.note(
        f"{slow} will stall {len(stalls)} times for {STALL_PERIODS[0]:g}-{STALL_PERIODS[1]:g} "
        "probe periods each"
    )
    sim.run_until(end)
    run.end_phase()
    run.figures["stalls"] = len(stalls)
    run.figures["stalled_s"] = round(sum(stalls), 3)
    run.figures["longest_stall_s"] = round(max(stalls, default=0.0), 3)
    about = [d for d in sim.false_deaths if d.subject == slow]
    by = [d for d in sim.false_deaths if d.observer == slow]
    run.figures["false_deaths_about_slow"] = len(about)
    run.figures["false_deaths_by_slow"] = len(by)
    _converge_again(run, "after the last stall")


def _partition(run: SwimRun) -> None:
    sim = run.sim
    names = list(sim.names)
    run.rng.shuffle(names)
    half = len(names) // 2
    left, right = sorted(names[:half], key=_order), sorted(names[half:], key=_order)
    bound_s = run.config.reconnect_interval_ticks * run.config.tick_ms / 1000 + 10 * run.period_s
    run.figures["remerge_bound_s"] = round(bound_s, 3)
    run.begin_phase()
    split_at = sim.now_ns
    sim.partition([left, right])

    def split() -> bool:
        return all(sim.dead_count(name) >= len(names) - half for name in left) and all(
            sim.dead_count(name) >= half for name in right
        )

    if sim.poll(run.duration_s, split, every_s=run.config.tick_ms / 1000):
        run.figures["split_s"] = round((sim.now_ns - split_at) / NS_PER_S, 3)
        run.note("split: each side sees every member of the other dead")
        sim.run_until(split_at + int(run.duration_s * NS_PER_S))
    else:
        run.figures["split_s"] = None
    healed = sim.now_ns
    sim.heal()
    if sim.run_for(bound_s, sim.converged):
        remerge_s = (sim.now_ns - healed) / NS_PER_S
        run.figures["remerge_s"] = round(remerge_s, 3)
        run.note(f"re-merged: every member alive everywhere, {remerge_s:.3f}s after the heal")
        run.invariants["remerged"] = True
    else:
        run.figures["remerge_s"] = None
        run.invariants["remerged"] = (
            f"not every member was alive everywhere within {bound_s:g}s of the heal"
        )
    run.end_phase()


def _order(name: str) -> int:
    return int(name[1:])


SWIM_SCENARIOS: dict[str, SwimScenario] = {
    s.name: s
    for s in (
        SwimScenario(
            "swim-join",
            "SWIM: every member joins through one seed; time until all see all alive",
            10.0,
            _join,
        ),
        SwimScenario(
            "swim-crash",
            "SWIM: a member crashes; time until the first and until every member marks it dead",
            60.0,
            _crash,
        ),
        SwimScenario(
            "swim-loss",
            "SWIM: 10% uniform loss (--loss) on every link; no member may be falsely declared dead",
            60.0,
            _loss,
            loss=0.1,
        ),
        SwimScenario(
            "swim-slow-member",
            "SWIM: one member stalls for 1-3 probe periods at random; false deaths about and by it",
            60.0,
            _slow_member,
        ),
        SwimScenario(
            "swim-partition",
            "SWIM: two halves cut apart, then healed; both sides must re-merge by themselves",
            30.0,
            _partition,
        ),
    )
}


def run_swim_scenario(name: str, params: SwimParams) -> SwimResult:
    """Run the named SWIM scenario; raises KeyError for an unknown name."""
    return SwimRun(SWIM_SCENARIOS[name], params).run()


def swim_replay_command(name: str, params: SwimParams) -> str:
    parts = replay_head(
        name,
        seed=params.seed,
        nodes=params.nodes,
        duration_s=params.duration_s,
        loss=params.loss,
        latency_ms=params.latency_ms,
    )
    if not params.lifeguard:
        parts.append("--no-lifeguard")
    if not params.stream_probe:
        parts.append("--no-stream-probe")
    if not params.coordinated_probes:
        parts.append("--no-coordinated-probes")
    return " ".join(parts)


__all__ = [
    "SWIM_SCENARIOS",
    "SwimParams",
    "SwimResult",
    "SwimRun",
    "SwimScenario",
    "run_swim_scenario",
    "schedule_join",
    "swim_replay_command",
]
