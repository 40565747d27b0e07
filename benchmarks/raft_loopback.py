"""Raft throughput and commit latency: three node processes on loopback, N writes in flight.

For each workload (``--inflight`` x ``--value-bytes``) and each system (Prism with each
``--fsync`` setting, then PySyncObj batched and not batched with ``--peer pysyncobj``), in
an order that alternates from one workload to the next: start a fresh cluster of
``--nodes`` processes on 127.0.0.1, find the leader, wait until a write commits, then keep
exactly N writes in flight on one client connection to the leader (each finished write is
replaced at once by the next) for ``--warmup`` plus ``--seconds`` seconds. Writes are
``put(key, value)`` over ``--keys`` keys with values of ``--value-bytes`` ASCII bytes.

Only writes that finish inside the measured window (after the warm-up) count:
``writes_per_s`` is those committed writes over ``--seconds``, and the latencies
(``p50_ms``, ``p99_ms``, ``max_ms``: nearest rank) run from the client sending the request
to the client reading the reply that says it committed.

One JSON line per system and workload; a system that cannot run is printed once with
``skipped`` and the reason; a run that fails is printed with ``error``.

    python -m benchmarks.raft_loopback                       # everything, 10 s each
    python -m benchmarks.raft_loopback --seconds 5 --inflight 16 --value-bytes 100
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped,unused-ignore]
import trio

from benchmarks._raft_harness import (
    JsonLinesTarget,
    ProcessCluster,
    PutRejected,
    System,
    Target,
    add_cluster_options,
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

NAME = "raft_loopback"


@dataclass
class LoadResult:
    latencies_s: list[float] = field(default_factory=list)  # writes finished in the window
    rejected: Counter[str] = field(default_factory=Counter)
    started: int = 0
    window_s: float = 0.0
    connection_lost: str | None = None


async def run_load(
    target: Target, *, inflight: int, value_bytes: int, keys: int, warmup_s: float, seconds: float
) -> LoadResult:
    """Keep ``inflight`` puts going on ``target``; record the ones that end in the window."""
    if isinstance(target, JsonLinesTarget):
        return await _run_load_nowait(
            target,
            inflight=inflight,
            value_bytes=value_bytes,
            keys=keys,
            warmup_s=warmup_s,
            seconds=seconds,
        )
    result = LoadResult(window_s=seconds)
    seq = itertools.count()
    begin = time.perf_counter()
    window_start = begin + warmup_s
    window_end = window_start + seconds

    async def writer(cancel: trio.CancelScope) -> None:
        while True:
            n = next(seq)
            key = f"k{n % keys}"
            value = make_value(value_bytes, n)
            result.started += 1
            sent = time.perf_counter()
            try:
                await target.put(key, value)
            except PutRejected as exc:
                result.rejected[exc.reason] += 1
                await trio.sleep(0.01)
                continue
            except ConnectionError as exc:
                result.connection_lost = str(exc)
                cancel.cancel()
                return
            done = time.perf_counter()
            if window_start <= done < window_end:
                result.latencies_s.append(done - sent)

    async with trio.open_nursery() as nursery:
        for _ in range(inflight):
            nursery.start_soon(writer, nursery.cancel_scope)
        await trio.sleep(max(0.0, window_end - time.perf_counter()))
        nursery.cancel_scope.cancel()
    return result


async def _run_load_nowait(
    target: JsonLinesTarget,
    *,
    inflight: int,
    value_bytes: int,
    keys: int,
    warmup_s: float,
    seconds: float,
) -> LoadResult:
    """``run_load`` with callbacks instead of a task per write in flight: each finished put
    starts the next from the reply's callback (a refused one after 10 ms, as a writer task
    would), so the client spends no task switch per write on the cores it shares with the
    nodes. Latency runs to the reader handing over the reply."""
    result = LoadResult(window_s=seconds)
    seq = itertools.count()
    clock = time.perf_counter
    window_start = clock() + warmup_s
    window_end = window_start + seconds
    stopped = False  # replies after the window (or on the way out) start nothing

    async with trio.open_nursery() as nursery:

        def start() -> None:
            n = next(seq)
            result.started += 1
            try:
                target.put_nowait(
                    f"k{n % keys}",
                    make_value(value_bytes, n),
                    partial(finished, clock()),
                    plain=True,
                )
            except ConnectionError as exc:
                lost(exc)

        def finished(sent: float, error: Exception | None) -> None:
            if stopped:
                return
            done = clock()
            if error is None:
                if window_start <= done < window_end:
                    result.latencies_s.append(done - sent)
                start()
            elif isinstance(error, PutRejected):
                result.rejected[error.reason] += 1
                nursery.start_soon(start_later)
            else:
                lost(error)

        async def start_later() -> None:
            await trio.sleep(0.01)
            if not stopped:
                start()

        def lost(exc: BaseException) -> None:
            result.connection_lost = str(exc)
            nursery.cancel_scope.cancel()

        for _ in range(inflight):
            start()
        await trio.sleep(max(0.0, window_end - clock()))
        stopped = True
        nursery.cancel_scope.cancel()
    return result


def _cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, pid in pids.items():
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        out[name] = times.user + times.system
    return out


async def measure(
    system: System, *, nodes: int, inflight: int, value_bytes: int, args: argparse.Namespace
) -> dict[str, Any]:
    """One run on a fresh cluster; the figures of the JSON line."""
    with tempfile.TemporaryDirectory(prefix="prism-bench-") as tmp:
        async with system.start(nodes, Path(tmp)) as cluster, AsyncExitStack() as stack:
            targets = {
                name: await stack.enter_async_context(cluster.connect(name))
                for name in cluster.names
            }
            with trio.fail_after(args.start_timeout):
                leader, _, _ = await find_leader(targets)
                await wait_writable(targets[leader])
            pids = cluster.pids() if isinstance(cluster, ProcessCluster) else {}
            cpu_before = _cpu_seconds(pids)
            driver_before = time.process_time()
            result = await run_load(
                targets[leader],
                inflight=inflight,
                value_bytes=value_bytes,
                keys=args.keys,
                warmup_s=args.warmup,
                seconds=args.seconds,
            )
            driver_cpu = time.process_time() - driver_before
            cpu_after = _cpu_seconds(pids)
    window_share = args.seconds / (args.warmup + args.seconds)
    figures: dict[str, Any] = {
        "writes_per_s": round(len(result.latencies_s) / result.window_s, 1),
        "writes": len(result.latencies_s),
        **summarize(result.latencies_s, scale=1000.0, suffix="ms", digits=3),
        "rejected": dict(result.rejected),
        "connection_lost": result.connection_lost,
        "leader": leader,
        # CPU over warm-up plus window; a share of the machine's nproc cores.
        "node_cpu_s": {n: round(cpu_after[n] - cpu_before[n], 2) for n in cpu_after},
        "driver_cpu_s": round(driver_cpu, 2),
        "measured_s": round(args.warmup + args.seconds, 2),
        "window_share": round(window_share, 3),
    }
    return figures


def _top(
    system: System, *, nodes: int, inflight: int | None, value_bytes: int | None
) -> dict[str, Any]:
    return {
        "system": system.name,
        "nodes": nodes,
        "inflight": inflight,
        "value_bytes": value_bytes,
        "fsync": "on" if system.fsync else "off",
    }


async def run(args: argparse.Namespace, chosen: list[System]) -> int:
    runnable: list[System] = []
    for system in chosen:
        reason = system.unavailable()
        if reason is None:
            runnable.append(system)
            continue
        emit_record(
            NAME,
            {**_top(system, nodes=args.nodes, inflight=None, value_bytes=None), "skipped": reason},
            {"inflight": args.inflight, "value_bytes": args.value_bytes},
            {},
        )
    failures = 0
    workloads = [(i, b) for b in args.value_bytes for i in args.inflight]
    for round_no in range(1, args.rounds + 1):
        for w, (inflight, value_bytes) in enumerate(workloads):
            order = runnable if (w + round_no) % 2 else list(reversed(runnable))
            for position, system in enumerate(order):
                params: dict[str, Any] = {
                    "seconds": args.seconds,
                    "warmup_s": args.warmup,
                    "keys": args.keys,
                    "round": round_no,
                    "position_in_round": position,
                    "client": "one connection to the leader, requests pipelined",
                    "system_config": system.describe(),
                    "load_average": load_average(),
                    "started": time.strftime("%H:%M:%S"),
                }
                top = _top(system, nodes=args.nodes, inflight=inflight, value_bytes=value_bytes)
                try:
                    figures = await measure(
                        system,
                        nodes=args.nodes,
                        inflight=inflight,
                        value_bytes=value_bytes,
                        args=args,
                    )
                except Exception as exc:
                    failures += 1
                    emit_record(NAME, {**top, "error": describe_error(exc)}, params, {})
                    continue
                top |= {
                    "writes_per_s": figures["writes_per_s"],
                    "p50_ms": figures["p50_ms"],
                    "p99_ms": figures["p99_ms"],
                    "max_ms": figures["max_ms"],
                }
                emit_record(NAME, top, params, figures)
    return 1 if failures else 0


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"need positive integers: {text!r}")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.raft_loopback",
        description=(
            "Committed writes per second and commit latency of 3-process Raft clusters on "
            "127.0.0.1, Prism and PySyncObj alternating. One JSON line per system and workload."
        ),
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window (default: 10)")
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="load before the window, not counted (default: 1)"
    )
    parser.add_argument(
        "--inflight",
        type=_int_list,
        default=[1, 16, 256],
        help="writes in flight; a comma-separated list runs each (default: 1,16,256)",
    )
    parser.add_argument(
        "--value-bytes",
        type=_int_list,
        default=[100, 1024],
        help="value size in bytes; a comma-separated list runs each (default: 100,1024)",
    )
    add_cluster_options(
        parser,
        fsync="both",
        peer="pysyncobj",
        peer_help="also run PySyncObj, batched and not",
    )
    parser.add_argument(
        "--pysyncobj-journal",
        action="store_true",
        help="give PySyncObj a journal file (never fsynced) instead of its in-memory log",
    )
    parser.add_argument("--keys", type=int, default=1024, help="distinct keys (default: 1024)")
    parser.add_argument("--rounds", type=int, default=1, help="repeat everything (default: 1)")
    parser.add_argument(
        "--start-timeout",
        type=float,
        default=30.0,
        help="seconds to wait for a leader and a first commit (default: 30)",
    )
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.warmup < 0 or args.nodes < 1 or args.keys < 1 or args.rounds < 1:
        parser.error("need --seconds > 0, --warmup >= 0, --nodes >= 1, --keys >= 1, --rounds >= 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    fsync = {"off": [False], "on": [True], "both": [False, True]}[args.fsync]
    chosen = systems(prism_fsync=fsync, peer=args.peer, pysyncobj_journal=args.pysyncobj_journal)
    sys.exit(run_interruptible(run, args, chosen))


if __name__ == "__main__":
    main()
