"""The systems the Raft loopback benchmarks compare: Prism and PySyncObj (two modes).

Each is a :class:`benchmarks._raft_harness.System`: a name for the JSON lines, a reason to
skip it when it cannot run here, the configuration that defines it, and ``start``, which
launches one process per node on 127.0.0.1 and kills them all on exit.

PySyncObj's two modes (every other setting is ``SyncObjConf()``'s default, in particular no
journal file, so its log is in memory, and it never fsyncs):

* ``pysyncobj``: the defaults, ``appendEntriesUseBatch=True``. The leader appends commands
  to its log as its tick thread takes them from the queue, but sends them to the followers
  only with the next periodic append (``appendEntriesPeriod``, 0.1 s), so a write waits up to
  100 ms before it leaves the leader.
* ``pysyncobj-nobatch``: ``appendEntriesUseBatch=False``. Each command wakes the tick thread
  through a pipe and is sent to the followers at once; the leader also sends an append as
  soon as it has applied newly committed entries, which tells the followers the new commit
  index without waiting for the period.

Both modes keep ``raftMinTimeout=0.4``, ``raftMaxTimeout=1.4`` (election timeout, seconds),
``appendEntriesPeriod=0.1`` (heartbeat), ``autoTickPeriod=0.05``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from benchmarks._raft_harness import (
    LOOPBACK,
    Cluster,
    NodeProcess,
    ProcessCluster,
    System,
    Target,
    free_ports,
    kill_all,
    open_json_lines_target,
    spawn_node,
)

PYSYNCOBJ_PIN = "0.3.17"


class PySyncObjSystem(System):
    """PySyncObj 0.3.17 nodes (``benchmarks/_pysyncobj_node.py``), one process each."""

    def __init__(self, *, nobatch: bool, journal: bool = False) -> None:
        self.name = "pysyncobj-nobatch" if nobatch else "pysyncobj"
        self.fsync = False  # PySyncObj never calls fsync (its journal is an mmap, not synced)
        self.nobatch = nobatch
        self.journal = journal
        self.mesh_timeout_s = 15.0

    def unavailable(self) -> str | None:
        if importlib.util.find_spec("pysyncobj") is None:
            return "pysyncobj is not installed (pip install -e '.[bench]')"
        return None

    def describe(self) -> dict[str, Any]:
        from pysyncobj import SyncObjConf  # type: ignore[import-untyped]

        conf = SyncObjConf(appendEntriesUseBatch=not self.nobatch)
        return {
            "version": importlib.metadata.version("pysyncobj"),
            "appendEntriesUseBatch": conf.appendEntriesUseBatch,
            "appendEntriesPeriod": conf.appendEntriesPeriod,
            "raftMinTimeout": conf.raftMinTimeout,
            "raftMaxTimeout": conf.raftMaxTimeout,
            "autoTickPeriod": conf.autoTickPeriod,
            "journal": "file, never fsynced" if self.journal else "memory",
            "client": "JSON lines on a local port, answered on commit+apply at the leader",
        }

    def start(self, nodes: int, workdir: Path) -> AbstractAsyncContextManager[Cluster]:
        return self._start(nodes, workdir)

    @asynccontextmanager
    async def _start(self, nodes: int, workdir: Path) -> AsyncIterator[Cluster]:
        # A PySyncObj node dials only the partners whose "host:port" string sorts below its
        # own, and retries a failed dial after connectionRetryTime (5 s). Starting the nodes
        # in ascending order, each once the previous one listens, makes every first dial
        # succeed; otherwise two nodes may stay apart for 5 s, and a node that hears no
        # leader campaigns and deposes it (PySyncObj has no pre-vote), which stalls writes.
        addresses = sorted(f"{LOOPBACK}:{port}" for port in free_ports(nodes))
        started: list[NodeProcess] = []
        try:
            for i, address in enumerate(addresses):
                name = f"n{i + 1}"
                argv = [sys.executable, "-m", "benchmarks._pysyncobj_node", "--self", address]
                for other in addresses:
                    if other != address:
                        argv += ["--partner", other]
                if self.nobatch:
                    argv.append("--nobatch")
                if self.journal:
                    argv += ["--journal", str(workdir / f"{name}.journal")]
                started.append(await spawn_node(name, argv, workdir / f"{name}.log"))
            cluster = ProcessCluster(started, _connect_json_lines)
            with trio.fail_after(self.mesh_timeout_s):
                await _wait_fully_connected(cluster, nodes - 1)
            yield cluster
        finally:
            await kill_all(started)


async def _wait_fully_connected(cluster: ProcessCluster, partners: int) -> None:
    """Until every node reports a connection with each of its partners."""
    async with AsyncExitStack() as stack:
        targets = [
            await stack.enter_async_context(open_json_lines_target(int(node.hello["client_port"])))
            for node in (cluster.node(name) for name in cluster.names)
        ]
        while True:
            replies = [await target.request("status") for target in targets]
            if all(r.get("partners_connected") == partners for r in replies):
                return
            await trio.sleep(0.01)


def _connect_json_lines(node: NodeProcess) -> AbstractAsyncContextManager[Target]:
    return open_json_lines_target(int(node.hello["client_port"]))


class PrismSystem(System):
    """Prism's node process, ``python -m prism.raft.serve`` (not written yet).

    To plug Prism in, implement ``start`` like ``PySyncObjSystem._start``: pick ports with
    ``free_ports``, start each node with ``spawn_node`` (it reads the first stdout line as
    JSON, e.g. ``{"client_port": P}``, and expects the process to exit when its stdin closes),
    pass ``self.fsync`` to the node, yield a ``ProcessCluster`` whose ``connect`` returns a
    ``Target`` for Prism's client protocol (or ``open_json_lines_target`` if ``serve`` speaks
    the same JSON lines as ``benchmarks/_pysyncobj_node.py``), and ``kill_all`` in
    ``finally``. Then make ``unavailable`` return None.
    """

    def __init__(self, *, fsync: bool) -> None:
        self.name = "prism"
        self.fsync = fsync

    def unavailable(self) -> str | None:
        try:
            found = importlib.util.find_spec("prism.raft.serve") is not None
        except ImportError:
            found = False
        if not found:
            return "prism.raft.serve not available yet"
        return (
            "prism.raft.serve exists, but PrismSystem.start in benchmarks/_raft_systems.py "
            "is not written yet"
        )

    def describe(self) -> dict[str, Any]:
        return {"fsync": self.fsync}

    def start(self, nodes: int, workdir: Path) -> AbstractAsyncContextManager[Cluster]:
        raise NotImplementedError(self.unavailable())


def systems(*, prism_fsync: list[bool], peer: str, pysyncobj_journal: bool = False) -> list[System]:
    """Prism with each fsync setting asked for, then PySyncObj in both modes (``--peer``)."""
    chosen: list[System] = [PrismSystem(fsync=f) for f in prism_fsync]
    if peer == "pysyncobj":
        chosen += [
            PySyncObjSystem(nobatch=False, journal=pysyncobj_journal),
            PySyncObjSystem(nobatch=True, journal=pysyncobj_journal),
        ]
    return chosen
