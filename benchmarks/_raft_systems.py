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
    """Prism's node process, ``python -m prism.raft.serve``, one per node.

    Each node gets a UDP port for Raft and a TCP port for the client protocol (JSON lines,
    the same shape as ``benchmarks/_pysyncobj_node.py``, so ``open_json_lines_target``
    talks to it), a data directory of its own under the run's temporary directory
    (``DiskStorage``, ``--fsync on`` or ``off``), ``RaftConfig.lan()`` timing, and
    ``--exit-on-stdin-eof``. ``start`` returns once every node follows one leader in one
    term, as the PySyncObj launcher waits until its nodes are connected.
    """

    def __init__(self, *, fsync: bool) -> None:
        self.name = "prism"
        self.fsync = fsync
        self.settle_timeout_s = 15.0

    def unavailable(self) -> str | None:
        try:
            found = importlib.util.find_spec("prism.raft.serve") is not None
        except ImportError:
            found = False
        if not found:
            return "prism.raft.serve not available yet"
        return None

    def describe(self) -> dict[str, Any]:
        from prism.raft.config import RaftConfig
        from prism.raft.driver import DriverConfig

        raft = RaftConfig.lan()
        driver = DriverConfig()
        return {
            "fsync": self.fsync,
            "storage": "DiskStorage (WAL segments), one directory per node",
            "transport": "UDP on 127.0.0.1",
            "tick_ms": raft.tick_ms,
            "heartbeat_ticks": raft.heartbeat_ticks,
            "election_timeout_ticks": [
                raft.election_timeout_min_ticks,
                raft.election_timeout_max_ticks,
            ],
            "pre_vote": raft.pre_vote,
            "check_quorum": raft.check_quorum,
            "max_append_bytes": raft.max_append_bytes,
            "max_append_entries": raft.max_append_entries,
            "max_inflight_appends": raft.max_inflight_appends,
            "max_pending_proposals": driver.max_pending_proposals,
            "client": "JSON lines on a local port, answered once applied at the leader",
        }

    def start(self, nodes: int, workdir: Path) -> AbstractAsyncContextManager[Cluster]:
        return self._start(nodes, workdir)

    @asynccontextmanager
    async def _start(self, nodes: int, workdir: Path) -> AsyncIterator[Cluster]:
        names = [f"n{i + 1}" for i in range(nodes)]
        raft_ports = dict(zip(names, free_ports(nodes, udp=True), strict=True))
        client_ports = dict(zip(names, free_ports(nodes), strict=True))
        started: list[NodeProcess] = []
        try:
            for name in names:
                argv = [
                    sys.executable,
                    "-m",
                    "prism.raft.serve",
                    "--id",
                    name,
                    "--listen",
                    f"{LOOPBACK}:{raft_ports[name]}",
                    "--client",
                    f"{LOOPBACK}:{client_ports[name]}",
                    "--data-dir",
                    str(workdir / name),
                    "--fsync",
                    "on" if self.fsync else "off",
                    "--exit-on-stdin-eof",
                ]
                for other in names:
                    if other != name:
                        argv += ["--peer", f"{other}={LOOPBACK}:{raft_ports[other]}"]
                        argv += ["--peer-client", f"{other}={LOOPBACK}:{client_ports[other]}"]
                started.append(await spawn_node(name, argv, workdir / f"{name}.log"))
            cluster = ProcessCluster(started, _connect_json_lines)
            with trio.fail_after(self.settle_timeout_s):
                await _wait_one_leader_followed(cluster)
            yield cluster
        finally:
            await kill_all(started)


async def _wait_one_leader_followed(cluster: ProcessCluster) -> None:
    """Until one node leads and every node names it as leader, all in the same term."""
    async with AsyncExitStack() as stack:
        targets = [
            await stack.enter_async_context(open_json_lines_target(int(node.hello["client_port"])))
            for node in (cluster.node(name) for name in cluster.names)
        ]
        while True:
            replies = [await target.request("status") for target in targets]
            leaders = {r.get("leader_id") for r in replies}
            terms = {r.get("term") for r in replies}
            if (
                len(leaders) == 1
                and None not in leaders
                and len(terms) == 1
                and sum(1 for r in replies if r.get("state") == "leader") == 1
            ):
                return
            await trio.sleep(0.01)


def systems(*, prism_fsync: list[bool], peer: str, pysyncobj_journal: bool = False) -> list[System]:
    """Prism with each fsync setting asked for, then PySyncObj in both modes (``--peer``)."""
    chosen: list[System] = [PrismSystem(fsync=f) for f in prism_fsync]
    if peer == "pysyncobj":
        chosen += [
            PySyncObjSystem(nobatch=False, journal=pysyncobj_journal),
            PySyncObjSystem(nobatch=True, journal=pysyncobj_journal),
        ]
    return chosen
