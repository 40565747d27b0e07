"""SWIM in the simulator: the issue's targets for 1,000-member clusters, as JSON lines.

Four measurements (``--mode``, default ``all``), one JSON line each plus per-trial lines
(see ``benchmarks/README.md``):

* ``detect``: ``--nodes`` (1,000) members with LAN defaults join through one seed and
  settle; one member publishes new metadata (gossip rounds until every member has it,
  against 3 * log2(n)); the join's news settles again; then a random member crashes: time
  until the first and until every live member marks it dead, median and p99 over
  ``--trials`` seeds, against 3 probe periods plus the minimum suspicion timeout.
* ``loss``: the ``swim-loss`` scenario (10 % uniform loss on every link) for
  ``--loss-minutes`` (10) simulated minutes over ``--seeds`` (20) seeds at
  ``--loss-nodes`` (10, 100) members, Lifeguard on and off side by side: false deaths.
* ``load``: datagrams per member per probe period at ``--sizes`` (10, 100, 1,000) members,
  in a fault-free steady minute and in a minute of 5 % loss; flat within 20 %?
* ``speed``: 1,000 members for 60 simulated seconds, wall and CPU seconds: from a cold
  start (the whole join through one seed included) and in steady state (with a crash).

CPU time (``time.process_time``) is reported beside wall time: the machine is shared, and
CPU time is what the simulation itself costs.

    python -m benchmarks.swim_sim                       # everything (about an hour)
    python -m benchmarks.swim_sim --mode detect --trials 5
    python -m benchmarks.swim_sim --mode loss --loss-nodes 10 --seeds 20
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

from benchmarks._report import emit, percentile
from prism.sim.loop import NS_PER_S
from prism.sim.network import LinkSpec
from prism.sim.swim_cluster import SwimSim
from prism.sim.swim_scenarios import (
    SETTLE_LIMIT_S,
    SWIM_SCENARIOS,
    SwimParams,
    SwimResult,
    SwimRun,
    SwimScenario,
    schedule_join,
)
from prism.swim.config import SwimConfig
from prism.swim.ready import EventKind

LOAD_SPREAD_TARGET = 0.20  # message load flat within 20 % from 10 to 1,000 members
SPEED_TARGET_WALL_S = 60.0  # 1,000 members, 60 simulated seconds, one core


def _timed(work: Callable[[], SwimResult]) -> tuple[SwimResult, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = work()
    return result, time.perf_counter() - wall, time.process_time() - cpu


# ---------------------------------------------------------------- detect (and spread)


def _spread_then_crashes(crashes: int, trials: list[dict[str, Any]]) -> Callable[[SwimRun], None]:
    """One metadata update, timed until every member has it; settle; then ``crashes``
    rounds of swim-crash, each victim restarted and the cluster settled again before the
    next, so that every crash strikes a converged cluster of the full size. Each crash's
    figures are appended to ``trials``."""

    def script(run: SwimRun) -> None:
        _time_spread(run)
        crash = SWIM_SCENARIOS["swim-crash"].script
        for index in range(crashes):
            if index:
                victim = str(run.figures["crashed"])
                run.sim.restart(victim, [run.sim.names[0]])
                run.sim.run_for(SETTLE_LIMIT_S, run.sim.converged)
                run.settle()
            crash(run)
            trials.append(dict(run.figures))

    return script


def _time_spread(run: SwimRun) -> None:
    sim = run.sim
    publisher = run.rng.choice(sim.names[1:])
    heard: dict[str, int] = {}

    def on_event(observer: str, kind: EventKind, subject: str, incarnation: int) -> None:
        if kind is EventKind.UPDATED and subject == publisher:
            heard.setdefault(observer, sim.now_ns)

    sim.on_event.append(on_event)
    others = len(sim.running()) - 1
    started = sim.now_ns
    sim.update_metadata(publisher, b"bench=spread")
    sim.run_for(60.0, lambda: len(heard) >= others)
    sim.on_event.remove(on_event)
    gossip_s = run.config.gossip_interval_ticks * run.config.tick_ms / 1000
    if len(heard) >= others:
        spread_s = (max(heard.values()) - started) / NS_PER_S
        run.figures["spread_s"] = round(spread_s, 3)
        run.figures["spread_rounds"] = round(spread_s / gossip_s, 2)
    else:
        run.figures["spread_s"] = run.figures["spread_rounds"] = None
    after_join = run.figures["settled_s"]
    run.settle()
    run.figures["settled_after_spread_s"] = run.figures["settled_s"]
    run.figures["settled_s"] = after_join


def bench_detect(args: argparse.Namespace) -> None:
    """``--trials`` clusters (one seed each), ``--crashes`` crashes in each: every crash
    is one sample of the detection times."""
    crash = SWIM_SCENARIOS["swim-crash"]
    n = args.nodes
    rounds_target = 3 * math.log2(n)
    first, every, suspected, rounds = [], [], [], []
    target_s = bound_s = None
    within = not_ok = false_deaths = 0
    for seed in range(args.first_seed, args.first_seed + args.trials):
        trials: list[dict[str, Any]] = []
        script = _spread_then_crashes(args.crashes, trials)
        scenario = SwimScenario("swim-crash", crash.summary, crash.duration_s, script)
        params = SwimParams(nodes=n, seed=seed, **_switches(args))
        result, wall_s, cpu_s = _timed(lambda p=params, s=scenario: SwimRun(s, p).run())  # type: ignore[misc]
        not_ok += not result.ok
        false_deaths += int(result.figures["false_deaths"] or 0)
        if isinstance(result.figures["spread_rounds"], float):
            rounds.append(result.figures["spread_rounds"])
        for index, f in enumerate(trials):
            target_s, bound_s = f["detect_target_s"], f["detect_bound_s"]
            for values, figure in (
                (first, "detect_first_s"),
                (every, "detect_all_s"),
                (suspected, "suspect_first_s"),
            ):
                if isinstance(f[figure], float):
                    values.append(f[figure])
            within += bool(f["within_target"])
            emit(
                "swim_sim.detect.trial",
                {"nodes": n, "seed": seed, "crash": index + 1, "config": _config_name(args)},
                {
                    "crashed": f["crashed"],
                    "suspect_first_s": f["suspect_first_s"],
                    "detect_first_s": f["detect_first_s"],
                    "detect_all_s": f["detect_all_s"],
                    "within_target": f["within_target"],
                    "msgs_per_member_per_period": f["msgs_per_member_per_period"],
                },
            )
        emit(
            "swim_sim.detect.cluster",
            {"nodes": n, "seed": seed, "crashes": args.crashes, "config": _config_name(args)},
            {
                "converged_s": result.figures["converged_s"],
                "settled_s": result.figures["settled_s"],
                "spread_s": result.figures["spread_s"],
                "spread_rounds": result.figures["spread_rounds"],
                "false_deaths": result.figures["false_deaths"],
                "ok": result.ok,
                "invariants": result.invariants,
                "digest": result.digest,
                "sim_seconds": round(result.sim_seconds, 3),
                "wall_seconds": round(wall_s, 3),
                "cpu_seconds": round(cpu_s, 3),
            },
        )
    emit(
        "swim_sim.detect",
        {
            "nodes": n,
            "clusters": args.trials,
            "crashes": args.crashes,
            "first_seed": args.first_seed,
        },
        {
            "samples": len(every),
            "detect_all_median_s": _rounded(statistics.median(every)) if every else None,
            "detect_all_p99_s": _rounded(percentile(every, 0.99)) if every else None,
            "detect_all_max_s": max(every) if every else None,
            "detect_first_median_s": _rounded(statistics.median(first)) if first else None,
            "detect_first_p99_s": _rounded(percentile(first, 0.99)) if first else None,
            "suspect_first_median_s": _rounded(statistics.median(suspected)) if suspected else None,
            "suspect_first_p99_s": _rounded(percentile(suspected, 0.99)) if suspected else None,
            "detect_target_s": target_s,
            "samples_within_target": within,
            "detect_target_met": bool(every) and percentile(every, 0.99) <= float(target_s or 0),
            "detect_bound_s": bound_s,
            "spread_rounds_median": _rounded(statistics.median(rounds)) if rounds else None,
            "spread_rounds_max": max(rounds) if rounds else None,
            "spread_rounds_target": round(rounds_target, 2),
            "spread_target_met": bool(rounds) and max(rounds) <= rounds_target,
            "false_deaths": false_deaths,
            "clusters_not_ok": not_ok,
        },
    )


def _rounded(value: float) -> float:
    return round(value, 3)


def _switches(args: argparse.Namespace) -> dict[str, bool]:
    """The configuration switches the command line turned (each on unless turned off)."""
    return {"stream_probe": args.stream_probe, "coordinated_probes": args.coordinated_probes}


def _params(args: argparse.Namespace, nodes: int) -> SwimParams:
    return SwimParams(nodes=nodes, seed=args.first_seed, **_switches(args))


def _config_name(args: argparse.Namespace) -> str:
    off = [f", {name}=False" for name, on in _switches(args).items() if not on]
    return "SwimConfig.lan()" + "".join(off)


# ---------------------------------------------------------------- loss


def bench_loss(args: argparse.Namespace) -> None:
    duration_s = args.loss_minutes * 60
    for n in args.loss_nodes:
        side_by_side: dict[str, Any] = {}
        for lifeguard in (True, False):
            deaths = suspicions = not_ok = 0
            seeds_with_deaths = []
            wall_total = cpu_total = 0.0
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                params = SwimParams(
                    nodes=n,
                    seed=seed,
                    duration_s=duration_s,
                    loss=args.loss,
                    lifeguard=lifeguard,
                    **_switches(args),
                )
                result, wall_s, cpu_s = _timed(lambda p=params: _run("swim-loss", p))  # type: ignore[misc]
                wall_total += wall_s
                cpu_total += cpu_s
                f = result.figures
                deaths += int(f["false_deaths"] or 0)
                suspicions += int(f["false_suspicions"] or 0)
                not_ok += not result.ok
                if f["false_deaths"]:
                    seeds_with_deaths.append(seed)
                if args.per_seed:
                    emit(
                        "swim_sim.loss.seed",
                        {"nodes": n, "seed": seed, "lifeguard": lifeguard, "loss": args.loss},
                        {
                            "false_deaths": f["false_deaths"],
                            "false_suspicions": f["false_suspicions"],
                            "refutations": f["refutations"],
                            "msgs_per_member_per_period": f["msgs_per_member_per_period"],
                            "ok": result.ok,
                            "digest": result.digest,
                            "cpu_seconds": round(cpu_s, 3),
                        },
                    )
            key = "lifeguard_on" if lifeguard else "lifeguard_off"
            side_by_side[key] = {
                "false_deaths": deaths,
                "seeds_with_false_deaths": seeds_with_deaths,
                "false_suspicions": suspicions,
                "seeds_not_ok": not_ok,
                "wall_seconds": round(wall_total, 1),
                "cpu_seconds": round(cpu_total, 1),
            }
        emit(
            "swim_sim.loss",
            {
                "nodes": n,
                "seeds": args.seeds,
                "first_seed": args.first_seed,
                "loss": args.loss,
                **_switches(args),
                "simulated_minutes_per_seed": args.loss_minutes,
            },
            {
                **side_by_side,
                "target_met": side_by_side["lifeguard_on"]["false_deaths"] == 0,
            },
        )


def _run(name: str, params: SwimParams) -> SwimResult:
    return SwimRun(SWIM_SCENARIOS[name], params).run()


# ---------------------------------------------------------------- load


def _steady_then_lossy(window_s: float, loss: float) -> Callable[[SwimRun], None]:
    def script(run: SwimRun) -> None:
        run.begin_phase()
        run.sim.run_for(window_s)
        run.end_phase()
        run.figures["steady"] = run.figures["msgs_per_member_per_period"]
        run.sim.set_link(LinkSpec(loss=loss))
        run.begin_phase()
        run.sim.run_for(window_s)
        run.end_phase()
        run.figures["lossy"] = run.figures["msgs_per_member_per_period"]
        run.figures["lossy_streams"] = run.figures["streams_per_member_per_period"]

    return script


def bench_load(args: argparse.Namespace) -> None:
    scenario = SwimScenario(
        "bench-load", "steady, then lossy", 60.0, _steady_then_lossy(args.window, 0.05)
    )
    steady, lossy = {}, {}
    for n in args.sizes:
        result, wall_s, cpu_s = _timed(
            lambda n=n: SwimRun(scenario, _params(args, n)).run()  # type: ignore[misc]
        )
        steady[n] = float(result.figures["steady"] or 0)
        lossy[n] = float(result.figures["lossy"] or 0)
        emit(
            "swim_sim.load.size",
            {
                "nodes": n,
                "seed": args.first_seed,
                "window_s": args.window,
                "loss": 0.05,
                **_switches(args),
            },
            {
                "steady_msgs_per_member_per_period": steady[n],
                # connections (push-pulls, fallback pings), beside the datagrams
                "lossy_streams_per_member_per_period": result.figures["lossy_streams"],
                "lossy_msgs_per_member_per_period": lossy[n],
                "false_deaths": result.figures["false_deaths"],
                "ok": result.ok,
                "wall_seconds": round(wall_s, 3),
                "cpu_seconds": round(cpu_s, 3),
            },
        )
    emit(
        "swim_sim.load",
        {"sizes": args.sizes, "window_s": args.window},
        {
            "steady": steady,
            "steady_spread": _spread(steady),
            "lossy": lossy,
            "lossy_spread": _spread(lossy),
            "target_spread": LOAD_SPREAD_TARGET,
            "steady_target_met": _spread(steady) <= LOAD_SPREAD_TARGET,
            "lossy_target_met": _spread(lossy) <= LOAD_SPREAD_TARGET,
        },
    )


def _spread(values: dict[int, float]) -> float:
    """How far apart the figures are: (max - min) / min."""
    low, high = min(values.values()), max(values.values())
    return round((high - low) / low, 3) if low > 0 else math.inf


# ---------------------------------------------------------------- speed


def bench_speed(args: argparse.Namespace) -> None:
    n = args.nodes
    config = dataclasses.replace(SwimConfig.lan(), **_switches(args))
    sim = SwimSim(nodes=n, seed=args.first_seed, config=config, link=LinkSpec())
    wall, cpu = time.perf_counter(), time.process_time()
    schedule_join(sim, args.first_seed)
    sim.run_for(60.0)
    cold_wall, cold_cpu = time.perf_counter() - wall, time.process_time() - cpu
    emit(
        "swim_sim.speed.cold",
        {"nodes": n, "seed": args.first_seed, "sim_seconds": 60.0},
        {
            "what": "every member starts within 2 s and joins through one seed; 60 s in all",
            "converged": sim.converged(),
            "wall_seconds": round(cold_wall, 3),
            "cpu_seconds": round(cold_cpu, 3),
            "events": sim.loop.events_run,
            "datagrams": sum(sim.datagrams_sent.values()),
            "target_wall_seconds": SPEED_TARGET_WALL_S,
            "target_met_cpu": cold_cpu <= SPEED_TARGET_WALL_S,
            "digest": sim.log.digest(),
        },
    )
    run = SwimRun(SWIM_SCENARIOS["swim-crash"], _params(args, n))
    run.join()
    run.settle()
    events, datagrams = run.sim.loop.events_run, sum(run.sim.datagrams_sent.values())
    wall, cpu = time.perf_counter(), time.process_time()
    run.sim.loop.call_later(10 * NS_PER_S, lambda: run.sim.crash(run.sim.names[-1]))
    run.sim.run_for(60.0)
    steady_wall, steady_cpu = time.perf_counter() - wall, time.process_time() - cpu
    emit(
        "swim_sim.speed.steady",
        {"nodes": n, "seed": args.first_seed, "sim_seconds": 60.0},
        {
            "what": "a converged, settled cluster; one member crashes 10 s in",
            "wall_seconds": round(steady_wall, 3),
            "cpu_seconds": round(steady_cpu, 3),
            "events": run.sim.loop.events_run - events,
            "datagrams": sum(run.sim.datagrams_sent.values()) - datagrams,
            "target_wall_seconds": SPEED_TARGET_WALL_S,
            "target_met_cpu": steady_cpu <= SPEED_TARGET_WALL_S,
        },
    )


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.swim_sim",
        description="SWIM in the simulator: detection, false deaths under loss, message "
        "load and simulator speed at up to 1,000 members. Prints JSON lines.",
    )
    parser.add_argument(
        "--mode",
        choices=("all", "detect", "loss", "load", "speed"),
        default="all",
        help="which measurement (default: all)",
    )
    parser.add_argument(
        "--nodes", type=int, default=1000, help="members for detect and speed (default: 1000)"
    )
    parser.add_argument(
        "--trials", type=int, default=10, help="detect: clusters, one seed each (default: 10)"
    )
    parser.add_argument(
        "--crashes",
        type=int,
        default=1,
        help="detect: crashes per cluster, each one sample (default: 1)",
    )
    parser.add_argument("--first-seed", type=int, default=1, help="first seed (default: 1)")
    parser.add_argument("--seeds", type=int, default=20, help="loss seeds (default: 20)")
    parser.add_argument(
        "--loss-nodes",
        type=int,
        nargs="+",
        default=[10, 100],
        help="cluster sizes of the loss runs (default: 10 100)",
    )
    parser.add_argument(
        "--loss-minutes",
        type=float,
        default=10.0,
        help="simulated minutes of loss per seed (default: 10)",
    )
    parser.add_argument("--loss", type=float, default=0.1, help="loss rate (default: 0.1)")
    parser.add_argument("--per-seed", action="store_true", help="also print one line per loss seed")
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[10, 100, 1000],
        help="cluster sizes of the load runs (default: 10 100 1000)",
    )
    parser.add_argument(
        "--window", type=float, default=60.0, help="load window, simulated seconds (default: 60)"
    )
    parser.add_argument(
        "--no-stream-probe",
        dest="stream_probe",
        action="store_false",
        help="judge probes by datagrams alone (no fallback ping over TCP), to compare",
    )
    parser.add_argument(
        "--no-coordinated-probes",
        dest="coordinated_probes",
        action="store_false",
        help="each member probes in its own random order (SWIM's), to compare",
    )
    args = parser.parse_args(argv)
    if min(args.trials, args.seeds, args.crashes) < 1:
        parser.error("--trials, --seeds and --crashes must be at least 1")
    if min(args.nodes, *args.sizes, *args.loss_nodes) < 2:
        parser.error("cluster sizes must be at least 2")
    if not 0 <= args.loss < 1 or args.loss_minutes <= 0 or args.window <= 0:
        parser.error("--loss must be in [0, 1); --loss-minutes and --window positive")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    modes = ("detect", "loss", "load", "speed") if args.mode == "all" else (args.mode,)
    benches = {"detect": bench_detect, "loss": bench_loss, "load": bench_load, "speed": bench_speed}
    for mode in modes:
        benches[mode](args)


if __name__ == "__main__":
    main()
