"""SWIM on loopback, real processes: failure detection and metadata spread, Prism beside
swim-protocol.

Each trial starts a fresh cluster of ``--members`` processes on 127.0.0.1 (free ports; UDP
and TCP on one port number per member), the first one the seed: every other member joins
through it. The driver waits until every member reports every other one alive
(``--join-timeout``), waits ``--settle`` seconds, and then measures, on the members' own
``time.time()`` stamps (the driver's reading speed does not count):

1. ``metadata_all_s``: one member (drawn at random, never the one killed next) publishes
   new metadata; the time until every other member has printed an event about it that
   carries the new value (``metadata_first_s``: the first one). Given up after
   ``--meta-cap`` seconds.
2. ``detect_all_s``: after ``--settle`` more seconds, SIGKILL one member (drawn at random,
   never the seed); the time until every survivor has reported it ``dead``
   (``detect_first_s``: the first survivor). Given up after ``--cap`` seconds.

``false_deaths`` counts every ``dead`` report, by any member at any time of the trial
(joining included), about a member that was not killed, and any about the killed member
from before the kill: one count per report, so one live member declared dead by three
others counts 3. ``suspicions_of_live`` counts the ``suspect`` reports about live members
(refuted, or they would have become false deaths).

Systems alternate trial by trial (the order is reversed every other trial), and both
systems of a trial use the same draw of publisher and victim. Every process is killed in a
``finally``, also on Ctrl-C and on errors; each member process also exits on its own when
its stdin closes.

One JSON line per system, cluster size and profile (the house envelope of
``benchmarks/_report.py`` plus the issue's fields at the top level): ``system``,
``members``, ``profile``, ``trials``, ``detect_all_s`` (median), ``detect_all_p99_s``,
``detect_all_max_s``, ``detect_first_s`` (median), ``metadata_all_s`` (median),
``metadata_all_p99_s``, ``metadata_all_max_s``, ``false_deaths``. Percentiles are nearest
rank, so with fewer than 100 trials p99 is the maximum.

Prism runs ``python -m prism.swim.member_process`` with the ``--profile`` given, ``local``
by default: ``SwimConfig.local()`` is the profile for members on one host, which is what
this benchmark runs (500 ms probe period, 200 ms probe timeout, 1.5-2 s minimum suspicion at
these sizes). ``--profile lan`` shows the data-centre timing (1 s period, 4 s minimum
suspicion) on the same loopback. swim-protocol runs at its defaults (it has no profiles),
which is where the issue's reference figures for it come from.
``--profile`` may be repeated (``--profile lan --profile local`` runs both, alternating).

    python -m benchmarks.swim_detection                          # N = 5, 10 trials
    python -m benchmarks.swim_detection --members 5 --members 20 --trials 10
    python -m benchmarks.swim_detection --peer none --members 3 --trials 1
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import trio

from benchmarks._raft_harness import (
    describe_error,
    emit_record,
    load_average,
    run_interruptible,
)
from benchmarks._report import seconds_stats
from benchmarks._swim_harness import (
    PrismSwim,
    SwimProtocol,
    SwimSystem,
    open_member_cluster,
    spread_time,
)

NAME = "swim_detection"
PROFILES = ("local", "lan", "wan")


@dataclass(frozen=True, slots=True)
class Plan:
    """What one trial does, the same for every system (indices into the started members)."""

    trial: int
    publisher: int
    victim: int
    node_seed: int
    value: str


@dataclass
class Trial:
    system: str
    profile: str
    members: int
    trial: int
    publisher: str = ""
    victim: str = ""
    converge_s: float | None = None  # every member ready -> everyone sees everyone alive
    metadata_first_s: float | None = None
    metadata_all_s: float | None = None
    metadata_missing: list[str] = field(default_factory=list)
    detect_first_s: float | None = None
    detect_all_s: float | None = None
    undetected_by: list[str] = field(default_factory=list)
    false_deaths: int = 0
    false_death_reports: list[str] = field(default_factory=list)  # "observer->subject"
    suspicions_of_live: int = 0
    bad_lines: int = 0
    member_cpu_percent: float | None = None  # mean per member, from the hellos to the kill
    error: str | None = None


def make_plans(members: int, trials: int, rng: random.Random) -> list[Plan]:
    """Publisher and victim for each trial: the victim is never the seed (index 0) and the
    publisher never the victim."""
    plans = []
    for index in range(1, trials + 1):
        victim = rng.randrange(1, members)
        publisher = rng.choice([i for i in range(members) if i != victim])
        plans.append(
            Plan(
                trial=index,
                publisher=publisher,
                victim=victim,
                node_seed=rng.randrange(1 << 30),
                value=f"bench-{index}-{rng.randrange(1 << 32):08x}",
            )
        )
    return plans


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


async def run_trial(
    system: SwimSystem, members: int, plan: Plan, args: argparse.Namespace
) -> Trial:
    """One trial of one system: a fresh cluster, measured, then killed. An error ends the
    trial with ``error`` set; what was measured until then, false deaths included, stays."""
    trial = Trial(system.name, system.profile, members, plan.trial)
    try:
        await _measure(system, members, plan, args, trial)
    except Exception as exc:
        trial.error = describe_error(exc)
    return trial


async def _measure(
    system: SwimSystem, members: int, plan: Plan, args: argparse.Namespace, trial: Trial
) -> None:
    killed: str | None = None
    killed_at: float | None = None
    with tempfile.TemporaryDirectory(prefix="prism-swim-bench-") as tmp:
        async with open_member_cluster(
            system,
            members,
            Path(tmp),
            cluster_id=f"bench-{plan.node_seed}",
            seed=plan.node_seed,
            ready_timeout=args.start_timeout,
        ) as cluster:
            view = cluster.view
            names = cluster.names
            started = time.time()
            cpu_start = cluster.cpu_seconds()
            try:
                with trio.fail_after(args.join_timeout):
                    await cluster.wait_until(lambda: view.all_alive(names))
                trial.converge_s = _round(time.time() - started)

                # 1. Metadata.
                await trio.sleep(args.settle)
                publisher = names[plan.publisher]
                trial.publisher = publisher
                others = [n for n in names if n != publisher]
                sent_at = time.time()
                await cluster.send(publisher, {"op": "meta", "value": plan.value})
                with trio.move_on_after(args.meta_cap):
                    await cluster.wait_until(
                        lambda: all(
                            t is not None
                            for t in view.first_times(
                                others, publisher, since=sent_at, meta=plan.value
                            ).values()
                        )
                    )
                times = view.first_times(others, publisher, since=sent_at, meta=plan.value)
                first, every = spread_time(times, sent_at)
                trial.metadata_first_s, trial.metadata_all_s = _round(first), _round(every)
                trial.metadata_missing = [n for n, t in times.items() if t is None]

                # 2. Failure detection.
                await trio.sleep(args.settle)
                killed = names[plan.victim]
                trial.victim = killed
                survivors = [n for n in names if n != killed]
                cpu_end = cluster.cpu_seconds()
                cpu_wall = time.time() - started
                killed_at = time.time()
                cluster.kill(killed)
                with trio.move_on_after(args.cap):
                    await cluster.wait_until(
                        lambda: all(
                            t is not None
                            for t in view.first_times(
                                survivors, killed, since=killed_at, kind="dead"
                            ).values()
                        )
                    )
                times = view.first_times(survivors, killed, since=killed_at, kind="dead")
                first, every = spread_time(times, killed_at)
                trial.detect_first_s, trial.detect_all_s = _round(first), _round(every)
                trial.undetected_by = [n for n, t in times.items() if t is None]
                trial.member_cpu_percent = _cpu_percent(cpu_start, cpu_end, cpu_wall)
            finally:
                deaths = view.false_deaths(killed=killed, killed_at=killed_at)
                trial.false_deaths = len(deaths)
                trial.false_death_reports = [f"{d.observer}->{d.subject}" for d in deaths]
                trial.suspicions_of_live = view.suspicions_of_live(
                    killed=killed, killed_at=killed_at
                )
                trial.bad_lines = view.bad_lines


def _cpu_percent(
    start: dict[str, float | None], end: dict[str, float | None], wall_s: float
) -> float | None:
    """Mean CPU use of one member between two readings, in percent of one core."""
    spent = [
        end_s - start_s
        for name, end_s in end.items()
        if end_s is not None and (start_s := start.get(name)) is not None
    ]
    if not spent or wall_s <= 0:
        return None
    return round(100.0 * statistics.fmean(spent) / wall_s, 2)


def summary(trials: list[Trial]) -> dict[str, Any]:
    """The figures of one system at one size over its trials (failed trials left out of
    the timings, counted in ``failed_trials``; false deaths counted in every trial)."""
    done = [t for t in trials if t.error is None]

    def values(name: str) -> list[float]:
        return [v for t in done if (v := getattr(t, name)) is not None]

    cpu = values("member_cpu_percent")
    return {
        "trials": len(done),
        "failed_trials": len(trials) - len(done),
        "undetected_trials": sum(1 for t in done if t.detect_all_s is None),
        "metadata_incomplete_trials": sum(1 for t in done if t.metadata_all_s is None),
        "false_deaths": sum(t.false_deaths for t in trials),
        "trials_with_false_deaths": sum(1 for t in trials if t.false_deaths),
        "suspicions_of_live": sum(t.suspicions_of_live for t in trials),
        "bad_lines": sum(t.bad_lines for t in trials),
        **seconds_stats(values("detect_all_s"), "detect_all_"),
        **seconds_stats(values("detect_first_s"), "detect_first_"),
        **seconds_stats(values("metadata_all_s"), "metadata_all_"),
        **seconds_stats(values("metadata_first_s"), "metadata_first_"),
        **seconds_stats(values("converge_s"), "converge_"),
        "detect_all_s_values": sorted(values("detect_all_s")),
        "metadata_all_s_values": sorted(values("metadata_all_s")),
        "member_cpu_percent_mean": round(statistics.fmean(cpu), 2) if cpu else None,
        "errors": sorted({t.error for t in trials if t.error is not None}),
    }


def top_fields(system: SwimSystem, members: int, figures: dict[str, Any]) -> dict[str, Any]:
    """The fields scripts read at the top level of the line."""
    return {
        "system": system.name,
        "members": members,
        "profile": system.profile,
        "trials": figures["trials"],
        "detect_all_s": figures["detect_all_median_s"],
        "detect_all_p99_s": figures["detect_all_p99_s"],
        "detect_all_max_s": figures["detect_all_max_s"],
        "detect_first_s": figures["detect_first_median_s"],
        "metadata_all_s": figures["metadata_all_median_s"],
        "metadata_all_p99_s": figures["metadata_all_p99_s"],
        "metadata_all_max_s": figures["metadata_all_max_s"],
        "false_deaths": figures["false_deaths"],
    }


def chosen_systems(args: argparse.Namespace) -> list[SwimSystem]:
    systems: list[SwimSystem] = [PrismSwim(profile) for profile in args.profile]
    if args.peer == "swim-protocol":
        systems.append(SwimProtocol())
    return systems


async def run(args: argparse.Namespace) -> int:
    runnable: list[SwimSystem] = []
    for system in chosen_systems(args):
        reason = system.unavailable()
        if reason is None:
            runnable.append(system)
            continue
        for members in args.members:
            emit_record(
                NAME,
                {
                    "system": system.name,
                    "members": members,
                    "profile": system.profile,
                    "skipped": reason,
                },
                {"trials": args.trials},
                {},
            )
    rng = random.Random(args.seed)
    failures = 0
    for members in args.members:
        plans = make_plans(members, args.trials, rng)
        results: dict[int, list[Trial]] = {id(s): [] for s in runnable}
        load_before = load_average()
        started = time.monotonic()
        for plan in plans:
            order = runnable if plan.trial % 2 else list(reversed(runnable))
            for system in order:
                trial = await run_trial(system, members, plan, args)
                results[id(system)].append(trial)
                if args.per_trial:
                    emit_record(
                        f"{NAME}.trial",
                        {"system": system.name, "members": members, "profile": system.profile},
                        {"trial": plan.trial},
                        asdict(trial),
                    )
        for system in runnable:
            figures = summary(results[id(system)])
            failures += figures["failed_trials"] + figures["undetected_trials"]
            params = {
                "trials": args.trials,
                "settle_s": args.settle,
                "cap_s": args.cap,
                "meta_cap_s": args.meta_cap,
                "join_timeout_s": args.join_timeout,
                "seed": args.seed,
                "kill": "SIGKILL to one random non-seed member; a fresh cluster per trial",
                "system_config": system.describe(members),
                "load_average_before": load_before,
                "load_average_after": load_average(),
                "wall_s_all_systems": round(time.monotonic() - started, 1),
            }
            emit_record(NAME, top_fields(system, members, figures), params, figures)
    return 1 if failures else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.swim_detection",
        description=(
            "SWIM members as processes on 127.0.0.1: time until every survivor marks a "
            "SIGKILLed member dead, and until a metadata change reaches every member; "
            "Prism and swim-protocol alternating. One JSON line per system and size."
        ),
    )
    parser.add_argument(
        "--members",
        type=int,
        action="append",
        help="cluster size; repeat for several sizes, run one after the other (default: 5)",
    )
    parser.add_argument("--trials", type=int, default=10, help="trials per system (default: 10)")
    parser.add_argument(
        "--peer",
        choices=["swim-protocol", "none"],
        default="swim-protocol",
        help="also run swim-protocol at its defaults (default: swim-protocol)",
    )
    parser.add_argument(
        "--profile",
        choices=PROFILES,
        action="append",
        help="Prism's SwimConfig profile; repeat to run several (default: local)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=1.0,
        help="seconds between convergence and the metadata change, and between that and "
        "the kill (default: 1)",
    )
    parser.add_argument(
        "--cap", type=float, default=60.0, help="give up detection after this (default: 60 s)"
    )
    parser.add_argument(
        "--meta-cap",
        type=float,
        default=30.0,
        help="give up on the metadata spread after this (default: 30 s)",
    )
    parser.add_argument(
        "--join-timeout",
        type=float,
        default=60.0,
        help="seconds for every member to see every other alive (default: 60)",
    )
    parser.add_argument(
        "--start-timeout",
        type=float,
        default=30.0,
        help="seconds for the processes to print their hello (default: 30)",
    )
    parser.add_argument(
        "--seed", type=int, default=1, help="seed of the victim and publisher draws (default: 1)"
    )
    parser.add_argument("--per-trial", action="store_true", help="also print one line per trial")
    args = parser.parse_args(argv)
    args.members = args.members or [5]
    args.profile = list(dict.fromkeys(args.profile or ["local"]))
    if args.trials < 1 or min(args.members) < 3:
        parser.error("need --trials >= 1 and --members >= 3")
    if args.cap <= 0 or args.meta_cap <= 0 or args.settle < 0:
        parser.error("need --cap > 0, --meta-cap > 0 and --settle >= 0")
    return args


def main(argv: list[str] | None = None) -> None:
    raise SystemExit(run_interruptible(run, parse_args(argv)))


if __name__ == "__main__":
    main()
