"""Helpers for driver tests: N ``RaftDriver`` nodes on an in-memory network, each in its
own cancel scope, so a test can stop (cancel) and restart any of them.

Nothing sleeps on the wall clock: tests run under trio's ``MockClock`` and poll conditions
with a deadline (``wait_until``).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import trio

from prism.raft.config import RaftConfig
from prism.raft.core import Role
from prism.raft.driver import DriverConfig, RaftDriver, core_from_storage
from prism.raft.kv import ApplyResult, Command, KVStateMachine
from prism.raft.messages import Entry
from prism.raft.ready import HardState, Note
from prism.raft.snapshot import Snapshot
from prism.raft.storage import MemoryStorage, Storage
from prism.raft.transport import Address, MemoryNetwork

Driver = RaftDriver[ApplyResult]


def put(key: str, value: str) -> bytes:
    return Command(op="put", key=key, value=value).encode()


async def wait_until(
    predicate: Callable[[], bool], *, timeout_s: float = 10.0, poll_s: float = 0.01
) -> None:
    """Poll ``predicate`` until it holds; fail (trio.TooSlowError) after ``timeout_s``."""
    with trio.fail_after(timeout_s):
        while not predicate():  # noqa: ASYNC110 (polling state the driver owns, by design)
            await trio.sleep(poll_s)


class GatedStorage:
    """A ``MemoryStorage`` whose writes block the driver's worker thread while the gate is
    closed, as a stalled fsync does (a plain ``threading.Event``: nothing trio can cancel).
    ``blocked`` is set while a write waits at the gate."""

    GATE_LIMIT_S = 60.0  # a failed test must not leave a thread blocked forever

    def __init__(self) -> None:
        self.inner = MemoryStorage()
        self.opened = threading.Event()
        self.opened.set()
        self.blocked = threading.Event()

    def close_gate(self) -> None:
        self.opened.clear()

    def open_gate(self) -> None:
        self.opened.set()

    def _wait_at_gate(self) -> None:
        if not self.opened.is_set():
            self.blocked.set()
            self.opened.wait(self.GATE_LIMIT_S)
            self.blocked.clear()

    @property
    def hard_state(self) -> HardState:
        return self.inner.hard_state

    @property
    def snapshot(self) -> Snapshot | None:
        return self.inner.snapshot

    @property
    def entries(self) -> Sequence[Entry]:
        return self.inner.entries

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None = None,
    ) -> None:
        self._wait_at_gate()
        self.inner.save(hard_state, entries, snapshot)

    def save_snapshot(self, snapshot: Snapshot) -> None:
        self._wait_at_gate()
        self.inner.save_snapshot(snapshot)

    def compact(self, index: int) -> None:
        self.inner.compact(index)


@dataclass
class Node:
    id: str
    storage: Storage
    driver: Driver
    machine: KVStateMachine
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    stopped: trio.Event = field(default_factory=trio.Event)
    notes: list[Note] = field(default_factory=list)


class MemCluster:
    """Nodes ``n1..nN`` on one ``MemoryNetwork``; start them with ``start``/``start_all``."""

    def __init__(
        self,
        nursery: trio.Nursery,
        size: int = 3,
        *,
        seed: int = 0,
        config: RaftConfig | None = None,
        driver_config: DriverConfig | None = None,
    ) -> None:
        self.nursery = nursery
        self.ids = [f"n{i}" for i in range(1, size + 1)]
        self.seed = seed
        self.config = config or RaftConfig.lan()
        self.driver_config = driver_config or DriverConfig()
        self.network = MemoryNetwork()
        self.addresses: dict[str, Address] = {
            node_id: (f"10.0.0.{i}", 7000) for i, node_id in enumerate(self.ids, start=1)
        }
        self.storages: dict[str, Storage] = {node_id: MemoryStorage() for node_id in self.ids}
        self.nodes: dict[str, Node] = {}
        self.incarnations: dict[str, int] = dict.fromkeys(self.ids, 0)

    def __getitem__(self, node_id: str) -> Driver:
        return self.nodes[node_id].driver

    async def start_all(self) -> None:
        for node_id in self.ids:
            await self.start(node_id)

    async def start(
        self,
        node_id: str,
        *,
        driver_config: DriverConfig | None = None,
        on_settled: Callable[[], None] | None = None,
    ) -> Driver:
        """Start ``node_id`` from what its storage holds, with a fresh state machine."""
        self.incarnations[node_id] += 1
        storage = self.storages[node_id]
        core = core_from_storage(
            node_id,
            self.ids,
            storage,
            config=self.config,
            rng=random.Random(f"{self.seed}/{node_id}/{self.incarnations[node_id]}"),
        )
        machine = KVStateMachine()
        notes: list[Note] = []
        driver: Driver = RaftDriver(
            core,
            storage,
            machine,
            self.network.open(self.addresses[node_id]),
            self.addresses,
            config=driver_config or self.driver_config,
            on_note=notes.append,
            on_settled=on_settled,
        )
        node = Node(node_id, storage, driver, machine, notes=notes)
        self.nodes[node_id] = node
        await self.nursery.start(self._run, node)
        return driver

    async def _run(self, node: Node, *, task_status: trio.TaskStatus[None]) -> None:
        try:
            with node.scope:
                await node.driver.run(task_status=task_status)
        finally:
            node.stopped.set()

    def stop(self, node_id: str) -> None:
        """Cancel the node's scope (as a crash of the task would)."""
        self.nodes[node_id].scope.cancel()

    async def stop_and_wait(self, node_id: str) -> None:
        self.stop(node_id)
        await self.nodes[node_id].stopped.wait()

    def running(self) -> list[str]:
        return [n for n, node in self.nodes.items() if not node.stopped.is_set()]

    def leader(self, among: Sequence[str] | None = None) -> str | None:
        """The running node that leads in the highest term, if any."""
        best: tuple[int, str] | None = None
        for node_id in among if among is not None else self.running():
            core = self.nodes[node_id].driver.core
            if core.role is Role.LEADER and (best is None or core.term > best[0]):
                best = (core.term, node_id)
        return best[1] if best else None

    async def wait_leader(
        self, *, among: Sequence[str] | None = None, timeout_s: float = 10.0
    ) -> str:
        found: list[str] = []

        def has_leader() -> bool:
            leader = self.leader(among)
            if leader is None:
                return False
            found.append(leader)
            return True

        await wait_until(has_leader, timeout_s=timeout_s)
        return found[-1]

    def values(self, node_id: str) -> dict[str, str]:
        return dict(self.nodes[node_id].machine.data)

    def isolate(self, node_id: str) -> None:
        """Drop every datagram to or from ``node_id``."""
        cut = self.addresses[node_id]
        self.network.route = lambda src, dst, _data: cut not in (src, dst)

    def heal(self) -> None:
        self.network.route = None
