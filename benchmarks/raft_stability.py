"""Raft leader stability under CPU load: no spurious leader change in a long steady run.

For each system (Prism with ``--fsync``, and PySyncObj's two modes with ``--peer
pysyncobj``), one after the other: start ``--busy`` processes that spin in a loop (default:
one per CPU, so every core is contended), start a fresh cluster of ``--nodes`` processes on
127.0.0.1, find the leader, wait for one committed write, then for ``--minutes``:

* a steady write stream: one put every ``--write-interval-ms`` (10 ms), each on its own with
  ``--write-timeout`` (2 s), sent to the node the driver believes leads, plus, with
  ``--inflight N``, N more puts kept in flight back to back on the same connection;
* every ``--poll-ms`` (50 ms), every node is asked for its status: the driver records each
  (term, leader) pair a node claims as leader, and every term any node reports.

Nothing is killed, so every leader after the first is a spurious change. The line per system
gives ``leader_changes`` (leaders seen after the first), ``terms_seen`` and ``term_increase``
(a term increases only when some node campaigns for real: with pre-vote a node that cannot
win does not raise it), the writes that committed, failed or were refused and their latency,
and ``max_commit_gap_s``, the longest time without a committed write (a leader change that
the polling missed still shows there). For Prism, the nodes' own logs are read at the end:
``elections`` counts ``raft.campaign`` lines (real candidacies), ``pre_campaigns`` the
pre-vote rounds, ``step_downs`` the ``raft.stepped_down`` lines by reason, ``disk_stalls``.

    python -m benchmarks.raft_stability                      # Prism, 10 minutes
    python -m benchmarks.raft_stability --minutes 2 --peer pysyncobj
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from benchmarks._raft_harness import (
    ProcessCluster,
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
    summarize,
    wait_writable,
)
from benchmarks._raft_systems import systems
from benchmarks._report import percentile

NAME = "raft_stability"

# A spinning process that exits by itself once its parent (this driver) is gone.
_BUSY_LOOP = (
    "import os\n"
    "parent = os.getppid()\n"
    "while os.getppid() == parent:\n"
    "    for _ in range(1_000_000):\n"
    "        pass\n"
)


@dataclass
class _Watch:
    leader: str
    leaders: list[tuple[float, int | None, str]] = field(default_factory=list)
    terms: set[int] = field(default_factory=set)
    polls: int = 0
    poll_errors: int = 0


@dataclass
class _Writes:
    latencies_s: list[float] = field(default_factory=list)
    commit_times: list[float] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)
    failed: int = 0


async def _poll(targets: dict[str, Target], watch: _Watch, poll_s: float, started: float) -> None:
    seen: set[tuple[int | None, str]] = set()
    while True:
        for name, target in targets.items():
            try:
                status = await target.status()
            except ConnectionError:
                watch.poll_errors += 1
                continue
            if status.term is not None:
                watch.terms.add(status.term)
            if status.is_leader:
                watch.leader = name
                if (status.term, name) not in seen:
                    seen.add((status.term, name))
                    watch.leaders.append((round(time.monotonic() - started, 3), status.term, name))
        watch.polls += 1
        await trio.sleep(poll_s)


async def _write_once(
    targets: dict[str, Target], watch: _Watch, writes: _Writes, n: int, args: argparse.Namespace
) -> bool:
    """One put to the node believed to lead; True if it committed."""
    sent = time.monotonic()
    with trio.move_on_after(args.write_timeout) as scope:
        try:
            await targets[watch.leader].put(f"s{n % 1024}", make_value(args.value_bytes, n))
        except PutRejected as exc:
            writes.refused[exc.reason] += 1
            return False
        except ConnectionError:
            writes.failed += 1
            return False
    if scope.cancelled_caught:
        writes.failed += 1
        return False
    done = time.monotonic()
    writes.latencies_s.append(done - sent)
    writes.commit_times.append(done)
    return True


async def _steady_stream(
    targets: dict[str, Target],
    watch: _Watch,
    writes: _Writes,
    args: argparse.Namespace,
    nursery: trio.Nursery,
) -> None:
    for n in itertools.count():
        nursery.start_soon(_write_once, targets, watch, writes, n, args)
        await trio.sleep(args.write_interval_ms / 1000.0)


async def _back_to_back(
    targets: dict[str, Target], watch: _Watch, writes: _Writes, args: argparse.Namespace, k: int
) -> None:
    for n in itertools.count(start=k * 1_000_000_000):
        if not await _write_once(targets, watch, writes, n, args):
            await trio.sleep(0.01)  # do not spin against a node that refuses


def _max_gap(times: list[float], start: float, end: float) -> float:
    points = [start, *sorted(times), end]
    return max(b - a for a, b in itertools.pairwise(points))


_NOTE = re.compile(r"(raft\.\w+)(?: [^\n]*?reason=(\w+))?")


def _read_notes(cluster: ProcessCluster) -> dict[str, Any]:
    """Counts of the Raft events in the nodes' logs (Prism's note lines)."""
    events: Counter[str] = Counter()
    step_downs: Counter[str] = Counter()
    for name in cluster.names:
        for line in cluster.node(name).log_tail(10_000_000).splitlines():
            match = _NOTE.search(line)
            if match is None:
                continue
            events[match.group(1)] += 1
            if match.group(1) == "raft.stepped_down":
                step_downs[match.group(2) or "?"] += 1
    return {
        "elections": events["raft.campaign"],
        "pre_campaigns": events["raft.pre_campaign"],
        "became_leader": events["raft.became_leader"],
        "step_downs": dict(step_downs),
        "disk_stalls": events["raft.disk_stall"],
    }


async def _start_busy(count: int) -> list[trio.Process]:
    return [
        await trio.lowlevel.open_process(
            [sys.executable, "-c", _BUSY_LOOP],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(count)
    ]


async def _stop_busy(processes: list[trio.Process]) -> None:
    for process in processes:
        if process.returncode is None:
            process.kill()
    with trio.CancelScope(shield=True), trio.move_on_after(10):
        for process in processes:
            await process.wait()


async def measure(
    system: System, args: argparse.Namespace
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One long run on a fresh cluster under CPU load; the (top, figures) of the JSON line."""
    busy = await _start_busy(args.busy)
    try:
        with tempfile.TemporaryDirectory(prefix="prism-bench-") as tmp:
            async with system.start(args.nodes, Path(tmp)) as cluster, AsyncExitStack() as stack:
                targets = {
                    name: await stack.enter_async_context(cluster.connect(name))
                    for name in cluster.names
                }
                with trio.fail_after(args.start_timeout):
                    first, _, _ = await find_leader(targets)
                    await wait_writable(targets[first])
                watch = _Watch(leader=first)
                writes = _Writes()
                started = time.monotonic()
                cpu_start = time.process_time()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_poll, targets, watch, args.poll_ms / 1000.0, started)
                    nursery.start_soon(_steady_stream, targets, watch, writes, args, nursery)
                    for k in range(args.inflight):
                        nursery.start_soon(_back_to_back, targets, watch, writes, args, k + 1)
                    await trio.sleep(args.minutes * 60.0)
                    nursery.cancel_scope.cancel()
                ended = time.monotonic()
                notes = _read_notes(cluster) if isinstance(cluster, ProcessCluster) else {}
    finally:
        await _stop_busy(busy)
    terms = sorted(watch.terms)
    latencies = sorted(writes.latencies_s)
    figures: dict[str, Any] = {
        "leader_changes": len(watch.leaders) - 1,
        "leaders": watch.leaders,
        "terms_seen": terms,
        "term_increase": terms[-1] - terms[0] if terms else None,
        "writes_ok": len(latencies),
        "writes_failed": writes.failed,
        "writes_refused": dict(writes.refused),
        "writes_per_s": round(len(latencies) / (ended - started), 1),
        **summarize(latencies, scale=1000.0, suffix="ms", digits=3),
        "p999_ms": round(percentile(latencies, 0.999) * 1000.0, 3) if latencies else None,
        "max_commit_gap_s": round(_max_gap(writes.commit_times, started, ended), 3),
        "polls": watch.polls,
        "poll_errors": watch.poll_errors,
        "duration_s": round(ended - started, 1),
        "driver_cpu_s": round(time.process_time() - cpu_start, 1),
        **notes,
    }
    top = {
        "leader_changes": figures["leader_changes"],
        "term_increase": figures["term_increase"],
        "max_commit_gap_s": figures["max_commit_gap_s"],
        "p99_ms": figures["p99_ms"],
    }
    return top, figures


async def run(args: argparse.Namespace, chosen: list[System]) -> int:
    failures = 0
    for system in chosen:
        base = {
            "system": system.name,
            "fsync": "on" if system.fsync else "off",
            "nodes": args.nodes,
            "minutes": args.minutes,
        }
        reason = system.unavailable()
        if reason is not None:
            emit_record(NAME, {**base, "skipped": reason}, {}, {})
            continue
        params: dict[str, Any] = {
            "busy_processes": args.busy,
            "cpu_count": os.cpu_count(),
            "write_interval_ms": args.write_interval_ms,
            "inflight_back_to_back": args.inflight,
            "write_timeout_s": args.write_timeout,
            "value_bytes": args.value_bytes,
            "poll_ms": args.poll_ms,
            "system_config": system.describe(),
            "load_average_before": load_average(),
            "started": time.strftime("%H:%M:%S"),
        }
        try:
            top, figures = await measure(system, args)
        except Exception as exc:
            failures += 1
            emit_record(NAME, {**base, "error": describe_error(exc)}, params, {})
            continue
        params["load_average_after"] = load_average()
        emit_record(NAME, {**base, **top}, params, figures)
    return 1 if failures else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.raft_stability",
        description=(
            "Leader changes of a 3-process Raft cluster on 127.0.0.1 under a steady write "
            "stream while busy processes keep every core loaded. One JSON line per system."
        ),
    )
    parser.add_argument(
        "--minutes", type=float, default=10.0, help="length of each run (default: 10)"
    )
    parser.add_argument(
        "--busy",
        type=int,
        default=os.cpu_count() or 1,
        help="spinning processes started beside the cluster (default: one per CPU)",
    )
    add_cluster_options(
        parser,
        fsync="on",
        peer="none",
        peer_help="also run PySyncObj, batched and not, after Prism",
    )
    add_write_stream_options(parser)
    parser.add_argument(
        "--inflight",
        type=int,
        default=0,
        help="writes kept in flight back to back besides the stream (default: 0)",
    )
    parser.add_argument(
        "--poll-ms", type=float, default=50.0, help="status poll interval (default: 50 ms)"
    )
    parser.add_argument(
        "--start-timeout",
        type=float,
        default=30.0,
        help="seconds to wait for a first leader and commit (default: 30)",
    )
    args = parser.parse_args(argv)
    if (
        args.minutes <= 0
        or args.busy < 0
        or args.nodes < 1
        or args.write_interval_ms <= 0
        or args.inflight < 0
        or args.poll_ms <= 0
    ):
        parser.error(
            "need --minutes > 0, --busy >= 0, --nodes >= 1, --write-interval-ms > 0, "
            "--inflight >= 0, --poll-ms > 0"
        )
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    fsync = {"off": [False], "on": [True], "both": [False, True]}[args.fsync]
    chosen = systems(prism_fsync=fsync, peer=args.peer)
    raise SystemExit(run_interruptible(run, args, chosen))


if __name__ == "__main__":
    main()
