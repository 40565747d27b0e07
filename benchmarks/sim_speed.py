"""Simulator speed: simulated seconds per wall-clock second ("x real time").

Two measurements, one JSON line each (see ``benchmarks/README.md``):

* ``steady``: one fault-free 5-node cluster under a steady client load (by default 5 clients
  writing 100 times per simulated second in all), for ``--sim-seconds`` of virtual time;
* ``explore``: the ``explore`` scenario (random faults and network quality) over ``--seeds``
  seeds, one after the other in this process: total simulated over total wall seconds.

Wall time is what ``Runner.run`` measures: the simulation plus the final judgement
(linearizability check included). The target from the issue is at least 500x real time.

    python -m benchmarks.sim_speed                 # both, full defaults
    python -m benchmarks.sim_speed --mode steady --sim-seconds 10
    python -m benchmarks.sim_speed --profile 25    # cProfile top 25 on stderr
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from collections.abc import Callable

from benchmarks._report import emit
from prism.sim.clients import Workload
from prism.sim.explore import explore
from prism.sim.linearizability import check_history
from prism.sim.network import LinkSpec
from prism.sim.runner import Fault, Params, Runner, Scenario, SimResult
from prism.sim.scenarios import SCENARIOS

TARGET_SPEEDUP = 500.0


def _no_faults(params: Params, duration_s: float) -> list[Fault]:
    return []


def steady_scenario(sim_seconds: float, workload: Workload) -> Scenario:
    """A scenario with no faults, a clean LAN link and the given workload."""
    return Scenario(
        "bench-steady",
        "no faults, steady client load (benchmark)",
        sim_seconds,
        _no_faults,
        link=LinkSpec(),
        workload=workload,
    )


def _run(runner: Runner) -> tuple[SimResult, int, float]:
    """Run; return the result, the loop's event count and the CPU seconds of the process."""
    cpu_started = time.process_time()
    result = runner.run()
    return result, runner.sim.loop.events_run, time.process_time() - cpu_started


def _rate(count: float, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else 0.0


def bench_steady(args: argparse.Namespace) -> None:
    workload = Workload(
        clients=args.clients,
        ops_per_s=args.rate,
        read_fraction=args.read_fraction,
        cas_fraction=args.cas_fraction,
    )
    params = Params(
        nodes=args.nodes,
        seed=args.seed,
        duration_s=args.sim_seconds,
        clients=args.clients,
        ops_per_s=args.rate,
    )
    runner = Runner(steady_scenario(args.sim_seconds, workload), params)
    result, events, cpu_s = _run(runner)
    started = time.perf_counter()
    check_history(runner.clients.history.events)
    check_s = time.perf_counter() - started
    ops = result.operations
    writes_ok = ops.get("write.ok", 0)
    acked_ops = sum(v for k, v in ops.items() if k.endswith(".ok"))
    emit(
        "sim_speed.steady",
        {
            "nodes": args.nodes,
            "seed": args.seed,
            "sim_seconds": args.sim_seconds,
            "clients": args.clients,
            "ops_per_s": args.rate,
            "read_fraction": args.read_fraction,
            "cas_fraction": args.cas_fraction,
            "link": "LinkSpec() (1 ms + up to 0.5 ms jitter, no loss)",
        },
        {
            "sim_seconds": round(result.sim_seconds, 3),
            "wall_seconds": round(result.wall_seconds, 3),
            "speedup": round(result.sim_seconds / result.wall_seconds, 1),
            "cpu_seconds": round(cpu_s, 3),
            "speedup_cpu": round(result.sim_seconds / cpu_s, 1) if cpu_s > 0 else None,
            "target_speedup": TARGET_SPEEDUP,
            "events": events,
            "events_per_wall_second": _rate(events, result.wall_seconds),
            "messages_sent": result.messages.get("sent", 0),
            "messages_delivered": result.messages.get("delivered", 0),
            "writes_ok_per_sim_second": _rate(writes_ok, result.sim_seconds),
            "ops_ok_per_sim_second": _rate(acked_ops, result.sim_seconds),
            "operations": ops,
            "linearizability_check_seconds": round(check_s, 3),
            "elections": result.elections,
            "ok": result.ok,
            "digest": result.digest,
        },
    )


def bench_explore(args: argparse.Namespace) -> None:
    if args.jobs > 1:
        bench_explore_parallel(args)
        return
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    sim_s = wall_s = cpu_s = 0.0
    events = sent = delivered = failed = 0
    slowest: tuple[float, int] = (float("inf"), -1)
    for seed in seeds:
        runner = Runner(SCENARIOS["explore"], Params(nodes=args.nodes, seed=seed))
        result, seed_events, seed_cpu_s = _run(runner)
        cpu_s += seed_cpu_s
        sim_s += result.sim_seconds
        wall_s += result.wall_seconds
        events += seed_events
        sent += result.messages.get("sent", 0)
        delivered += result.messages.get("delivered", 0)
        failed += not result.ok
        speed = result.sim_seconds / result.wall_seconds
        slowest = min(slowest, (speed, seed))
        if args.per_seed:
            emit(
                "sim_speed.explore.seed",
                {"nodes": args.nodes, "seed": seed},
                {
                    "sim_seconds": round(result.sim_seconds, 3),
                    "wall_seconds": round(result.wall_seconds, 3),
                    "speedup": round(speed, 1),
                    "events": seed_events,
                    "messages_delivered": result.messages.get("delivered", 0),
                    "ok": result.ok,
                },
            )
    emit(
        "sim_speed.explore",
        {
            "nodes": args.nodes,
            "seeds": args.seeds,
            "first_seed": args.first_seed,
            "scenario": "explore",
            "jobs": 1,
        },
        {
            "sim_seconds": round(sim_s, 3),
            "wall_seconds": round(wall_s, 3),
            "speedup": round(sim_s / wall_s, 1) if wall_s > 0 else None,
            "cpu_seconds": round(cpu_s, 3),
            "speedup_cpu": round(sim_s / cpu_s, 1) if cpu_s > 0 else None,
            "target_speedup": TARGET_SPEEDUP,
            "slowest_seed": slowest[1],
            "slowest_seed_speedup": round(slowest[0], 1),
            "events": events,
            "events_per_wall_second": _rate(events, wall_s),
            "messages_sent": sent,
            "messages_delivered": delivered,
            "seeds_not_ok": failed,
        },
    )


def bench_explore_parallel(args: argparse.Namespace) -> None:
    """``explore`` spread over worker processes: aggregate simulated seconds per elapsed
    wall second (the loop's event counts stay in the workers)."""
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    started = time.perf_counter()
    outcomes = list(explore(Params(nodes=args.nodes), seeds, jobs=args.jobs))
    elapsed = time.perf_counter() - started
    sim_s = sum(o.sim_seconds for o in outcomes)
    wall_s = sum(o.wall_seconds for o in outcomes)
    emit(
        "sim_speed.explore",
        {
            "nodes": args.nodes,
            "seeds": args.seeds,
            "first_seed": args.first_seed,
            "scenario": "explore",
            "jobs": args.jobs,
        },
        {
            "sim_seconds": round(sim_s, 3),
            "wall_seconds": round(elapsed, 3),
            "speedup": round(sim_s / elapsed, 1) if elapsed > 0 else None,
            "per_process_wall_seconds": round(wall_s, 3),
            "per_process_speedup": round(sim_s / wall_s, 1) if wall_s > 0 else None,
            "target_speedup": TARGET_SPEEDUP,
            "seeds_not_ok": sum(1 for o in outcomes if not o.ok),
        },
    )


def _profiled(work: Callable[[], None], top: int) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        work()
    finally:
        profiler.disable()
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out).strip_dirs()
        stats.sort_stats("tottime").print_stats(top)
        stats.sort_stats("cumulative").print_stats(top)
        sys.stderr.write(out.getvalue())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.sim_speed",
        description=(
            "Simulator speed in simulated seconds per wall second (target: at least "
            f"{TARGET_SPEEDUP:g}x real time). Prints one JSON line per measurement."
        ),
    )
    parser.add_argument(
        "--mode",
        choices=("both", "steady", "explore"),
        default="both",
        help="which measurement to run (default: both)",
    )
    parser.add_argument("--nodes", type=int, default=5, help="cluster size (default: 5)")
    steady = parser.add_argument_group("steady")
    steady.add_argument(
        "--sim-seconds",
        type=float,
        default=60.0,
        help="simulated seconds of the steady run (default: 60)",
    )
    steady.add_argument("--seed", type=int, default=1, help="seed of the steady run (default: 1)")
    steady.add_argument("--clients", type=int, default=5, help="client count (default: 5)")
    steady.add_argument(
        "--rate",
        type=float,
        default=100.0,
        help="client operations per simulated second, all clients together (default: 100)",
    )
    steady.add_argument(
        "--read-fraction",
        type=float,
        default=0.0,
        help="fraction of operations that are reads (default: 0, writes only)",
    )
    steady.add_argument(
        "--cas-fraction",
        type=float,
        default=0.0,
        help="fraction of operations that are compare-and-sets (default: 0)",
    )
    group = parser.add_argument_group("explore")
    group.add_argument("--seeds", type=int, default=20, help="explore seeds to run (default: 20)")
    group.add_argument("--first-seed", type=int, default=1, help="first seed (default: 1)")
    group.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="worker processes for explore (default: 1; above 1 the figure is aggregate "
        "throughput and event counts are not reported)",
    )
    group.add_argument(
        "--per-seed", action="store_true", help="also print one JSON line per explore seed"
    )
    parser.add_argument(
        "--profile",
        type=int,
        metavar="N",
        default=0,
        help="run under cProfile and print the top N functions to stderr (slows the run)",
    )
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if args.sim_seconds <= 0 or args.seeds < 1 or args.clients < 0 or args.rate <= 0:
        parser.error("--sim-seconds, --seeds and --rate must be positive")
    if not 0 <= args.read_fraction + args.cas_fraction <= 1:
        parser.error("--read-fraction plus --cas-fraction must be between 0 and 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    work: list[Callable[[], None]] = []
    if args.mode in ("both", "steady"):
        work.append(lambda: bench_steady(args))
    if args.mode in ("both", "explore"):
        work.append(lambda: bench_explore(args))
    for item in work:
        if args.profile:
            _profiled(item, args.profile)
        else:
            item()


if __name__ == "__main__":
    main()
