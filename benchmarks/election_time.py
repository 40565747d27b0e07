"""Failover time: virtual time from a leader crash until another node leads.

The experiment of the Raft paper (§9.3 of the thesis, Figure 16 of the paper), on the
simulator: for each seeded trial, a 5-node cluster with the default timing
(``RaftConfig.lan()``: 10 ms ticks, heartbeat every 50 ms, election timeout drawn in
[200, 400) ms) and no clients elects a leader, runs a settling time plus a random fraction
of a heartbeat interval (so the crash lands at a random point between two heartbeats), then
the leader crashes and the virtual time until a surviving node leads is measured, capped.

The simulated LAN link takes about 1 ms (1 ms plus up to 0.5 ms of jitter), where the
paper's LogCabin cluster had a broadcast time of about 15 ms.

    python -m benchmarks.election_time                  # 1000 trials
    python -m benchmarks.election_time --trials 100 --per-trial
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import time
from dataclasses import dataclass

from benchmarks._report import emit, percentile
from prism.raft.config import RaftConfig
from prism.sim.cluster import RaftSim
from prism.sim.loop import NS_PER_MS
from prism.sim.network import LinkSpec

REFERENCE = (
    "Raft paper / thesis §9.3 (LogCabin, 5 servers, broadcast time about 15 ms, leader "
    "crashed at a random point of the heartbeat interval, 1,000 trials per setting): with "
    "150-155 ms election timeouts (little randomness) the median failover was 287 ms with "
    "many split votes; with a 50 ms range (150-200 ms) the worst of 1,000 trials was 513 ms; "
    "with 12-24 ms timeouts the mean was 35 ms and the max 152 ms. Recommendation: "
    "150-300 ms election timeouts. Prism's LAN default is 200-400 ms (see "
    "prism/raft/config.py) and its simulated link takes about 1 ms, not 15 ms."
)

PRE_VOTE_TEXT = "asks for pre-votes"


@dataclass(frozen=True, slots=True)
class Trial:
    seed: int
    crashed: str
    new_leader: str | None
    crash_at_ms: float
    failover_ms: float | None  # None: no new leader within the cap
    elections: int  # campaigns (real elections, term raised) after the crash
    pre_vote_rounds: int  # pre-vote rounds after the crash


def run_trial(
    seed: int, *, nodes: int, config: RaftConfig, settle_ms: float, cap_s: float
) -> Trial | None:
    """One trial; None when the cluster never elected its first leader within the cap."""
    sim = RaftSim(nodes=nodes, seed=seed, config=config, link=LinkSpec())
    if not sim.run_for(cap_s, lambda: sim.leader() is not None):
        return None
    rng = random.Random(seed)
    heartbeat_ms = config.heartbeat_ticks * config.tick_ms
    sim.run_for((settle_ms + rng.uniform(0.0, heartbeat_ms)) / 1000.0)
    crashed = sim.leader()
    if crashed is None:  # leadership changed hands while settling: wait for the next one
        if not sim.run_for(cap_s, lambda: sim.leader() is not None):
            return None
        crashed = sim.leader()
        assert crashed is not None
    elections_before = sim.elections
    timeline_before = len(sim.timeline.entries)
    crash_ns = sim.loop.now_ns
    sim.crash(crashed)

    def someone_else_leads() -> bool:
        leader = sim.leader()
        return leader is not None and leader != crashed

    elected = sim.run_for(cap_s, someone_else_leads)
    pre_votes = sum(
        1 for e in sim.timeline.entries[timeline_before:] if e.text.startswith(PRE_VOTE_TEXT)
    )
    return Trial(
        seed=seed,
        crashed=crashed,
        new_leader=sim.leader() if elected else None,
        crash_at_ms=crash_ns / NS_PER_MS,
        failover_ms=(sim.loop.now_ns - crash_ns) / NS_PER_MS if elected else None,
        elections=sim.elections - elections_before,
        pre_vote_rounds=pre_votes,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.election_time",
        description=(
            "Virtual time to elect a new leader after the leader crashes, over seeded trials "
            "with the default timing. Prints one JSON line (plus one per trial with "
            "--per-trial)."
        ),
    )
    parser.add_argument("--trials", type=int, default=1000, help="trials (default: 1000)")
    parser.add_argument("--first-seed", type=int, default=1, help="first trial seed (default: 1)")
    parser.add_argument("--nodes", type=int, default=5, help="cluster size (default: 5)")
    parser.add_argument(
        "--settle-ms",
        type=float,
        default=500.0,
        help=(
            "virtual time run after the first leader appears, before the random part of a "
            "heartbeat interval and the crash (default: 500)"
        ),
    )
    parser.add_argument(
        "--cap-s",
        type=float,
        default=10.0,
        help="give up on a trial after this many virtual seconds (default: 10)",
    )
    parser.add_argument("--no-pre-vote", action="store_true", help="turn pre-vote off")
    parser.add_argument("--no-check-quorum", action="store_true", help="turn check-quorum off")
    parser.add_argument("--per-trial", action="store_true", help="also print one line per trial")
    args = parser.parse_args(argv)
    if args.trials < 1 or args.nodes < 3 or args.settle_ms < 0 or args.cap_s <= 0:
        parser.error("need --trials >= 1, --nodes >= 3, --settle-ms >= 0 and --cap-s > 0")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    config = dataclasses.replace(
        RaftConfig.lan(), pre_vote=not args.no_pre_vote, check_quorum=not args.no_check_quorum
    )
    started = time.perf_counter()
    trials: list[Trial] = []
    no_first_leader = 0
    for seed in range(args.first_seed, args.first_seed + args.trials):
        trial = run_trial(
            seed, nodes=args.nodes, config=config, settle_ms=args.settle_ms, cap_s=args.cap_s
        )
        if trial is None:
            no_first_leader += 1
            continue
        trials.append(trial)
        if args.per_trial:
            emit("election_time.trial", {"seed": seed}, dataclasses.asdict(trial))
    wall_s = time.perf_counter() - started
    times = sorted(t.failover_ms for t in trials if t.failover_ms is not None)
    timeouts = sum(1 for t in trials if t.failover_ms is None)
    figures: dict[str, object] = {
        "trials": len(trials),
        "no_first_leader": no_first_leader,
        "timeouts": timeouts,
    }
    if times:
        figures |= {
            "min_ms": round(times[0], 2),
            "median_ms": round(statistics.median(times), 2),
            "mean_ms": round(statistics.fmean(times), 2),
            "p90_ms": round(percentile(times, 0.90), 2),
            "p99_ms": round(percentile(times, 0.99), 2),
            "max_ms": round(times[-1], 2),
            "over_500ms": sum(1 for t in times if t > 500.0),
        }
    figures |= {
        "more_than_one_election": sum(1 for t in trials if t.elections > 1),
        "more_than_one_pre_vote_round": sum(1 for t in trials if t.pre_vote_rounds > 1),
        "max_elections": max((t.elections for t in trials), default=0),
        "wall_seconds": round(wall_s, 2),
        "reference": REFERENCE,
    }
    emit(
        "election_time",
        {
            "trials": args.trials,
            "first_seed": args.first_seed,
            "nodes": args.nodes,
            "tick_ms": config.tick_ms,
            "heartbeat_ms": config.heartbeat_ticks * config.tick_ms,
            "election_timeout_ms": [
                config.election_timeout_min_ticks * config.tick_ms,
                config.election_timeout_max_ticks * config.tick_ms,
            ],
            "pre_vote": config.pre_vote,
            "check_quorum": config.check_quorum,
            "settle_ms": args.settle_ms,
            "cap_s": args.cap_s,
            "link": "LinkSpec() (1 ms + up to 0.5 ms jitter, no loss)",
            "clients": 0,
        },
        figures,
    )


if __name__ == "__main__":
    main()
