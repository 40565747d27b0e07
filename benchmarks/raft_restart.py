"""How long a Raft node takes to restart from its data directory.

Two cases, as the issue asks: a log of 100,000 entries and no snapshot, and a 50 MB
snapshot. Each case is written once with ``DiskStorage`` (fsync off while building it: the
build is not what is measured), then restarted ``--trials`` times, each restart doing
exactly what a node does on start:

1. ``DiskStorage.open``: read and check every segment (CRCs), and the snapshot file;
2. ``RaftCore(...)``: rebuild the in-memory log and membership;
3. the state machine: restore the snapshot, then apply the committed entries after it.

Prints one JSON line per case with the median and the worst of the trials for each step::

    python -m benchmarks.raft_restart [--entries N] [--snapshot-mb M] [--trials T]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._report import emit
from prism.raft.config import RaftConfig
from prism.raft.core import RaftCore
from prism.raft.disk import DiskStorage
from prism.raft.kv import Command, KVStateMachine
from prism.raft.membership import Membership
from prism.raft.messages import Entry
from prism.raft.ready import HardState
from prism.raft.snapshot import Snapshot, SnapshotMeta

VOTERS = ("n1", "n2", "n3")
BATCH = 1000


def _command(i: int, value: str) -> bytes:
    return Command(op="put", key=f"key-{i % 10_000}", value=value).encode()


def build_log(directory: Path, entries: int, value_bytes: int) -> None:
    """A data directory holding ``entries`` committed entries of ``value_bytes`` each."""
    value = "v" * value_bytes
    with DiskStorage.open(directory, fsync=False) as storage:
        for start in range(1, entries + 1, BATCH):
            batch = [
                Entry(term=1, index=i, data=_command(i, value), client_id="bench", seq=i)
                for i in range(start, min(start + BATCH, entries + 1))
            ]
            storage.save(HardState(term=1, vote="n1", commit=batch[-1].index), batch)


def build_snapshot(directory: Path, snapshot_bytes: int, tail_entries: int) -> None:
    """A data directory holding a snapshot of about ``snapshot_bytes`` and a short log."""
    machine = KVStateMachine()
    value = "x" * 1000
    index = 0
    while len(machine.data) * 1016 < snapshot_bytes:
        index += 1
        machine.apply(Entry(term=1, index=index, data=_snapshot_put(index, value)))
    data = machine.snapshot()
    meta = SnapshotMeta(index=index, term=1, membership=Membership.of(list(VOTERS)))
    with DiskStorage.open(directory, fsync=False) as storage:
        storage.save_snapshot(Snapshot(meta=meta, data=data))
        tail = [
            Entry(term=1, index=index + i, data=_command(i, "tail"), client_id="bench", seq=i)
            for i in range(1, tail_entries + 1)
        ]
        storage.save(HardState(term=1, vote="n1", commit=index + tail_entries), tail)


def _snapshot_put(i: int, value: str) -> bytes:
    return Command(op="put", key=f"key-{i:08d}", value=value).encode()


def restart(directory: Path) -> dict[str, float]:
    """One restart; returns the seconds each step took."""
    t0 = time.perf_counter()
    storage = DiskStorage.open(directory, fsync=False)
    t1 = time.perf_counter()
    core = RaftCore(
        "n1",
        list(VOTERS),
        config=RaftConfig.lan(),
        rng=random.Random(1),
        hard_state=storage.hard_state,
        entries=storage.entries,
        snapshot=storage.snapshot,
    )
    t2 = time.perf_counter()
    machine = KVStateMachine()
    if storage.snapshot is not None:
        machine.restore(storage.snapshot.data)
    for entry in core.log.slice(machine.applied_index + 1, core.commit + 1):
        machine.apply(entry)
    t3 = time.perf_counter()
    assert machine.applied_index == core.commit
    storage.close()
    return {"open_s": t1 - t0, "core_s": t2 - t1, "state_machine_s": t3 - t2, "total_s": t3 - t0}


def measure(case: str, directory: Path, trials: int, params: dict[str, Any]) -> None:
    runs = [restart(directory) for _ in range(trials)]
    figures: dict[str, Any] = {"trials": trials}
    for step in ("open_s", "core_s", "state_machine_s", "total_s"):
        values = [run[step] for run in runs]
        figures[f"{step[:-2]}_median_s"] = round(statistics.median(values), 4)
        figures[f"{step[:-2]}_max_s"] = round(max(values), 4)
    size = sum(f.stat().st_size for f in directory.iterdir())
    emit("raft_restart", {"case": case, **params, "directory_bytes": size}, figures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--snapshot-mb", type=float, default=50.0)
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    if args.entries < 1 or args.trials < 1 or args.snapshot_mb <= 0 or args.value_bytes < 0:
        parser.error("--entries, --trials and --snapshot-mb must be positive")
    with tempfile.TemporaryDirectory(prefix="prism-restart-") as tmp:
        log_dir = Path(tmp) / "log"
        build_log(log_dir, args.entries, args.value_bytes)
        measure(
            "log",
            log_dir,
            args.trials,
            {"entries": args.entries, "value_bytes": args.value_bytes},
        )
        snap_dir = Path(tmp) / "snapshot"
        build_snapshot(snap_dir, int(args.snapshot_mb * 1024 * 1024), tail_entries=1000)
        measure(
            "snapshot",
            snap_dir,
            args.trials,
            {"snapshot_mb": args.snapshot_mb, "tail_entries": 1000},
        )


if __name__ == "__main__":
    main()
