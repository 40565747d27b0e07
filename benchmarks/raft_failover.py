"""Raft failover on loopback: SIGKILL the leader of a 3-process cluster, time the recovery.

Each trial starts a fresh cluster of ``--nodes`` processes on 127.0.0.1, finds the leader,
waits until a write commits, and starts a slow write stream: one ``put`` every
``--write-interval-ms`` (10 ms), each on its own with a ``--write-timeout`` (2 s), sent to
the node the driver believes leads. After ``--settle`` seconds plus a random part of
``--kill-jitter-ms`` (so the kill lands anywhere between two heartbeats), the driver sends
SIGKILL to the leader's process and measures, from the kill:

* ``leader``: until a survivor leads. When the node reports when it became leader (on
  ``time.monotonic()``, CLOCK_MONOTONIC, the same clock in every process on Linux), that
  time is used; otherwise the time the driver's status polling (every 5 ms) first saw it.
  ``leader_seen`` is always the polling time.
* ``write``: until the first write *sent after the kill* commits. Until the driver has
  seen the new leader, the stream sends each write to the survivors in turn (a follower
  refuses at once), then to the new leader, as a client that retries would.

The cluster is torn down (every process killed) after each trial; nothing is reused.
Systems alternate trial by trial. The line per system gives ``median_s``, ``p99_s`` and
``max_s`` (nearest rank) of the ``write`` time, the client-visible failover, and the
same figures for ``leader`` as ``leader_median_s``, ``leader_p99_s``, ``leader_max_s``.
With 20 trials, p99 is the maximum.

    python -m benchmarks.raft_failover                   # 20 trials per system
    python -m benchmarks.raft_failover --signal term     # a planned stop instead of a crash
    python -m benchmarks.raft_failover --trials 5 --per-trial
"""

from __future__ import annotations

import argparse
import itertools
import random
import tempfile
import time
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import trio

from benchmarks._raft_harness import (
    PutRejected,
    System,
    Target,
    add_cluster_options,
    add_write_stream_options,
    describe_error,
    emit_record,
    find_leader,
    load_average,
    make_value,
    run_interruptible,
    wait_writable,
)
from benchmarks._raft_systems import systems
from benchmarks._report import seconds_stats

NAME = "raft_failover"


@dataclass
class Trial:
    trial: int
    old_leader: str = ""
    new_leader: str | None = None
    leader_s: float | None = None  # kill -> a survivor leads (node's clock when reported)
    leader_reported_by_node: bool = False
    leader_seen_s: float | None = None  # kill -> the driver's polling saw it
    write_s: float | None = None  # kill -> first write sent after the kill committed
    writes_refused_after_kill: int = 0
    writes_failed_after_kill: int = 0  # connection lost or no answer within the write timeout
    error: str | None = None


@dataclass
class _Stream:
    current: str | None
    survivors: list[str] = field(default_factory=list)
    kill_at: float | None = None
    first_commit_at: float | None = None
    first_commit: trio.Event = field(default_factory=trio.Event)
    refused: int = 0
    failed: int = 0


async def _write_stream(
    targets: dict[str, Target], state: _Stream, args: argparse.Namespace, nursery: trio.Nursery
) -> None:
    turn = itertools.count()

    async def one(name: str, n: int) -> None:
        sent = time.monotonic()
        after_kill = state.kill_at is not None and sent >= state.kill_at
        with trio.move_on_after(args.write_timeout) as scope:
            try:
                await targets[name].put(f"f{n % 1024}", make_value(args.value_bytes, n))
            except PutRejected:
                state.refused += int(after_kill)
                return
            except ConnectionError:
                state.failed += int(after_kill)
                return
        if scope.cancelled_caught:
            state.failed += int(after_kill)
            return
        if after_kill and state.first_commit_at is None:
            state.first_commit_at = time.monotonic()
            state.first_commit.set()

    for n in itertools.count():
        name = state.current
        if name is None:
            name = state.survivors[next(turn) % len(state.survivors)]
        nursery.start_soon(one, name, n)
        await trio.sleep(args.write_interval_ms / 1000.0)


async def run_trial(
    system: System, index: int, rng: random.Random, args: argparse.Namespace
) -> Trial:
    trial = Trial(index)
    with tempfile.TemporaryDirectory(prefix="prism-bench-") as tmp:
        async with system.start(args.nodes, Path(tmp)) as cluster, AsyncExitStack() as stack:
            targets = {
                name: await stack.enter_async_context(cluster.connect(name))
                for name in cluster.names
            }
            with trio.fail_after(args.start_timeout):
                old, _, _ = await find_leader(targets)
                await wait_writable(targets[old])
            trial.old_leader = old
            state = _Stream(current=old)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_write_stream, targets, state, args, nursery)
                await trio.sleep(args.settle + rng.uniform(0.0, args.kill_jitter_ms / 1000.0))
                state.survivors = [n for n in cluster.names if n != old]
                state.current = None
                kill_at = time.monotonic()
                state.kill_at = kill_at
                if args.signal == "term":
                    cluster.terminate(old)
                else:
                    cluster.kill(old)
                with trio.move_on_after(args.cap):
                    new, status, seen = await find_leader({n: targets[n] for n in state.survivors})
                    state.current = new
                    trial.new_leader = new
                    trial.leader_seen_s = seen - kill_at
                    if status.leader_since is not None and status.leader_since >= kill_at:
                        trial.leader_s = status.leader_since - kill_at
                        trial.leader_reported_by_node = True
                    else:
                        trial.leader_s = trial.leader_seen_s
                    await state.first_commit.wait()
                nursery.cancel_scope.cancel()
            if state.first_commit_at is not None:
                trial.write_s = round(state.first_commit_at - kill_at, 4)
            if trial.leader_s is not None and trial.leader_seen_s is not None:
                trial.leader_s = round(trial.leader_s, 4)
                trial.leader_seen_s = round(trial.leader_seen_s, 4)
            trial.writes_refused_after_kill = state.refused
            trial.writes_failed_after_kill = state.failed
    return trial


def summary(trials: list[Trial]) -> dict[str, Any]:
    done = [t for t in trials if t.error is None]
    writes = [t.write_s for t in done if t.write_s is not None]
    leaders = [t.leader_s for t in done if t.leader_s is not None]
    seen = [t.leader_seen_s for t in done if t.leader_seen_s is not None]
    return {
        "trials": len(done),
        "failed_trials": len(trials) - len(done),
        "no_new_leader": sum(1 for t in done if t.leader_s is None),
        "no_write_committed": sum(1 for t in done if t.write_s is None),
        **seconds_stats(writes, ""),
        **seconds_stats(leaders, "leader_"),
        **{
            k: v
            for k, v in seconds_stats(seen, "leader_seen_").items()
            if "median" in k or "max" in k
        },
        "leader_reported_by_node": sum(1 for t in done if t.leader_reported_by_node),
        "errors": sorted({t.error for t in trials if t.error is not None}),
    }


async def run(args: argparse.Namespace, chosen: list[System]) -> int:
    runnable: list[System] = []
    for system in chosen:
        reason = system.unavailable()
        if reason is None:
            runnable.append(system)
        else:
            emit_record(
                NAME,
                {
                    "system": system.name,
                    "fsync": "on" if system.fsync else "off",
                    "skipped": reason,
                },
                {"trials": args.trials},
                {},
            )
    rng = random.Random(args.seed)
    results: dict[str, list[Trial]] = {s.name + str(s.fsync): [] for s in runnable}
    load_before = load_average()
    started = time.monotonic()
    for index in range(1, args.trials + 1):
        order = runnable if index % 2 else list(reversed(runnable))
        for system in order:
            try:
                trial = await run_trial(system, index, rng, args)
            except Exception as exc:
                trial = Trial(index, error=describe_error(exc))
            results[system.name + str(system.fsync)].append(trial)
            if args.per_trial:
                emit_record(
                    f"{NAME}.trial",
                    {"system": system.name, "fsync": "on" if system.fsync else "off"},
                    {"trial": index},
                    asdict(trial),
                )
    failures = 0
    for system in runnable:
        figures = summary(results[system.name + str(system.fsync)])
        failures += figures["failed_trials"] + figures["no_write_committed"]
        top = {
            "system": system.name,
            "fsync": "on" if system.fsync else "off",
            "nodes": args.nodes,
            "trials": figures["trials"],
            "median_s": figures["median_s"],
            "p99_s": figures["p99_s"],
            "max_s": figures["max_s"],
            "leader_median_s": figures["leader_median_s"],
            "leader_p99_s": figures["leader_p99_s"],
            "leader_max_s": figures["leader_max_s"],
        }
        params = {
            "trials": args.trials,
            "settle_s": args.settle,
            "kill_jitter_ms": args.kill_jitter_ms,
            "write_interval_ms": args.write_interval_ms,
            "write_timeout_s": args.write_timeout,
            "value_bytes": args.value_bytes,
            "cap_s": args.cap,
            "seed": args.seed,
            "kill": f"{_SIGNAL_NAMES[args.signal]} to the leader's process; a fresh cluster "
            "per trial",
            "system_config": system.describe(),
            "load_average_before": load_before,
            "load_average_after": load_average(),
            "wall_s_all_systems": round(time.monotonic() - started, 1),
        }
        emit_record(NAME, top, params, figures)
    return 1 if failures else 0


_SIGNAL_NAMES = {"kill": "SIGKILL", "term": "SIGTERM"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.raft_failover",
        description=(
            "Time from SIGKILL of the leader of a 3-process Raft cluster on 127.0.0.1 until a "
            "survivor leads and until the first write commits; Prism and PySyncObj "
            "alternating. One JSON line per system."
        ),
    )
    parser.add_argument("--trials", type=int, default=20, help="trials per system (default: 20)")
    add_cluster_options(
        parser, fsync="on", peer="pysyncobj", peer_help="also run PySyncObj, batched and not"
    )
    parser.add_argument(
        "--settle", type=float, default=1.0, help="seconds of writes before the kill (default: 1)"
    )
    parser.add_argument(
        "--kill-jitter-ms",
        type=float,
        default=100.0,
        help="random extra delay before the kill, in [0, this) ms (default: 100)",
    )
    add_write_stream_options(parser)
    parser.add_argument(
        "--cap", type=float, default=30.0, help="give up on a trial after this (default: 30 s)"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the kill jitter (default: 1)")
    parser.add_argument(
        "--signal",
        choices=sorted(_SIGNAL_NAMES),
        default="kill",
        help="kill: SIGKILL, a crash (default); term: SIGTERM, a planned stop, in which a "
        "Prism leader hands leadership over before it exits",
    )
    parser.add_argument(
        "--start-timeout",
        type=float,
        default=30.0,
        help="seconds to wait for a first leader and commit (default: 30)",
    )
    parser.add_argument("--per-trial", action="store_true", help="also print one line per trial")
    args = parser.parse_args(argv)
    if args.trials < 1 or args.nodes < 3 or args.write_interval_ms <= 0 or args.cap <= 0:
        parser.error("need --trials >= 1, --nodes >= 3, --write-interval-ms > 0, --cap > 0")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    fsync = {"off": [False], "on": [True], "both": [False, True]}[args.fsync]
    raise SystemExit(run_interruptible(run, args, systems(prism_fsync=fsync, peer=args.peer)))


if __name__ == "__main__":
    main()
