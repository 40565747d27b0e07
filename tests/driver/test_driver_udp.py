"""Three ``RaftDriver`` nodes in one process over real loopback UDP sockets: they elect a
leader, replicate, lose the leader to cancellation and recover. Real time, so every wait
is a poll with a deadline."""

from __future__ import annotations

import random

import pytest
import trio

from prism.raft.config import RaftConfig
from prism.raft.core import Role
from prism.raft.driver import RaftDriver, core_from_storage
from prism.raft.kv import ApplyResult, KVStateMachine
from prism.raft.storage import MemoryStorage
from prism.raft.transport import Address, UdpTransport
from tests.driver.harness import put, wait_until

pytestmark = [pytest.mark.trio, pytest.mark.slow]

LOOPBACK = "127.0.0.1"


async def test_udp_three_nodes_elect_replicate_and_survive_losing_their_leader() -> None:
    ids = ["n1", "n2", "n3"]
    transports = {node_id: await UdpTransport.bind((LOOPBACK, 0)) for node_id in ids}
    addresses: dict[str, Address] = {n: t.local_address for n, t in transports.items()}
    assert all(port > 0 for _, port in addresses.values())
    machines = {node_id: KVStateMachine() for node_id in ids}
    drivers: dict[str, RaftDriver[ApplyResult]] = {}
    scopes = {node_id: trio.CancelScope() for node_id in ids}

    async def run(node_id: str, *, task_status: trio.TaskStatus[None]) -> None:
        storage = MemoryStorage()
        core = core_from_storage(
            node_id, ids, storage, config=RaftConfig.lan(), rng=random.Random(f"udp/{node_id}")
        )
        driver = RaftDriver(core, storage, machines[node_id], transports[node_id], addresses)
        drivers[node_id] = driver
        with scopes[node_id]:
            await driver.run(task_status=task_status)

    def leader(among: list[str]) -> str | None:
        leading = [n for n in among if drivers[n].core.role is Role.LEADER]
        return max(leading, key=lambda n: drivers[n].core.term) if leading else None

    async with trio.open_nursery() as nursery:
        for node_id in ids:
            await nursery.start(run, node_id)
        await wait_until(lambda: leader(ids) is not None, timeout_s=10)
        old = leader(ids)
        assert old is not None
        for i in range(5):
            assert (await drivers[old].propose(put(f"k{i}", str(i)), timeout_s=5)).ok
        expected = {f"k{i}": str(i) for i in range(5)}
        await wait_until(lambda: all(m.data == expected for m in machines.values()), timeout_s=5)
        assert drivers[old].statistics()["messages_sent"] > 0

        scopes[old].cancel()
        survivors = [n for n in ids if n != old]
        await wait_until(lambda: leader(survivors) is not None, timeout_s=10)
        new = leader(survivors)
        assert new is not None
        assert (await drivers[new].propose(put("after", "yes"), timeout_s=5)).ok
        expected["after"] = "yes"
        await wait_until(lambda: all(machines[n].data == expected for n in survivors), timeout_s=5)
        nursery.cancel_scope.cancel()
