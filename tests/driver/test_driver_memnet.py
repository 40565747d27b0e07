"""``RaftDriver`` on an in-memory datagram network under trio's MockClock (autojump): the
handling loop of ``prism.raft.ready`` with real tasks, and every way a request can end."""

from __future__ import annotations

import dataclasses
import random

import pytest
import trio
import trio.testing

from prism.errors import (
    NotLeader,
    Overloaded,
    ProposalLost,
    ProposalTimeout,
    RaftError,
    ShuttingDown,
)
from prism.raft.config import RaftConfig
from prism.raft.core import Role
from prism.raft.driver import (
    APPLY_SLICE,
    DriverConfig,
    RaftDriver,
    core_from_storage,
    open_raft_driver,
)
from prism.raft.kv import KVStateMachine
from prism.raft.messages import Heartbeat
from prism.raft.storage import MemoryStorage
from prism.raft.transport import MemoryNetwork, format_address
from prism.swim.messages import Gossip
from prism.wire import encode
from tests.driver.harness import GatedStorage, MemCluster, put, wait_until

pytestmark = pytest.mark.trio


class Outcome:
    """What a proposal started in the background ended with."""

    def __init__(self) -> None:
        self.error: RaftError | None = None
        self.done = trio.Event()


async def propose_in_background(
    nursery: trio.Nursery, cluster: MemCluster, node_id: str, data: bytes, *, timeout_s: float
) -> Outcome:
    outcome = Outcome()

    async def run() -> None:
        try:
            await cluster[node_id].propose(data, timeout_s=timeout_s)
        except RaftError as exc:
            outcome.error = exc
        finally:
            outcome.done.set()

    nursery.start_soon(run)
    return outcome


async def test_driver_elects_a_leader_and_resolves_proposals_with_results(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        cluster = MemCluster(nursery)
        await cluster.start_all()
        leader = await cluster.wait_leader()
        results = [
            await cluster[leader].propose(put(f"k{i}", f"v{i}"), timeout_s=5) for i in range(10)
        ]
        assert [r.ok for r in results] == [True] * 10
        assert [r.value for r in results] == [f"v{i}" for i in range(10)]
        assert [r.index for r in results] == sorted({r.index for r in results})
        expected = {f"k{i}": f"v{i}" for i in range(10)}
        await wait_until(lambda: all(cluster.values(n) == expected for n in cluster.ids))
        stats = cluster[leader].statistics()
        assert stats["messages_sent"] > 0
        assert stats["saves"] > 0
        assert stats["pending_proposals"] == 0
        assert any(note.event == "raft.became_leader" for note in cluster.nodes[leader].notes)
        nursery.cancel_scope.cancel()


async def test_driver_follower_proposal_raises_not_leader_with_address(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Raft §8: a follower rejects a client request and names the leader (and, from the
    driver's address book, where it listens)."""
    async with trio.open_nursery() as nursery:
        cluster = MemCluster(nursery)
        await cluster.start_all()
        leader = await cluster.wait_leader()
        await cluster[leader].propose(put("a", "1"), timeout_s=5)  # followers learn the leader
        follower = next(n for n in cluster.ids if n != leader)
        await wait_until(lambda: cluster[follower].core.leader == leader)
        with pytest.raises(NotLeader) as caught:
            await cluster[follower].propose(put("b", "2"), timeout_s=5)
        assert caught.value.leader_hint == leader
        assert caught.value.leader_address == format_address(cluster.addresses[leader])
        assert cluster[follower].leader_address() == caught.value.leader_address
        assert caught.value.leader_address in str(caught.value)
        nursery.cancel_scope.cancel()


async def test_driver_cancelled_leader_is_replaced_and_commits_continue(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        cluster = MemCluster(nursery)
        await cluster.start_all()
        old = await cluster.wait_leader()
        await cluster[old].propose(put("before", "1"), timeout_s=5)
        old_term = cluster[old].core.term
        await cluster.stop_and_wait(old)
        survivors = [n for n in cluster.ids if n != old]
        new = await cluster.wait_leader(among=survivors)
        assert cluster[new].core.term > old_term
        for i in range(5):
            result = await cluster[new].propose(put(f"after{i}", str(i)), timeout_s=5)
            assert result.ok
        expected = {"before": "1", **{f"after{i}": str(i) for i in range(5)}}
        await wait_until(lambda: all(cluster.values(n) == expected for n in survivors))
        nursery.cancel_scope.cancel()


async def test_driver_restarted_node_catches_up_from_its_storage(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A node restarted from its storage (a new core, a fresh state machine) replays its log
    and catches up with what was committed while it was down."""
    async with trio.open_nursery() as nursery:
        cluster = MemCluster(nursery)
        await cluster.start_all()
        leader = await cluster.wait_leader()
        await cluster[leader].propose(put("x", "1"), timeout_s=5)
        follower = next(n for n in cluster.ids if n != leader)
        await wait_until(lambda: cluster.values(follower) == {"x": "1"})
        await cluster.stop_and_wait(follower)
        await cluster[leader].propose(put("y", "2"), timeout_s=5)
        await cluster.start(follower)
        await wait_until(lambda: cluster.values(follower) == {"x": "1", "y": "2"})
        nursery.cancel_scope.cancel()


async def test_driver_refuses_past_the_pending_bounds_with_overloaded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Past ``max_pending_proposals`` or ``max_pending_bytes``, a caller gets Overloaded at
    once instead of queueing without bound."""
    config = DriverConfig(max_pending_proposals=3, max_pending_bytes=1000)
    async with trio.open_nursery() as nursery:
        cluster = MemCluster(nursery, driver_config=config)
        await cluster.start_all()
        leader = await cluster.wait_leader()
        cluster.isolate(leader)  # nothing commits from now on
        first = await propose_in_background(nursery, cluster, leader, b"a" * 600, timeout_s=60)
        await wait_until(lambda: cluster[leader].statistics()["pending_proposals"] == 1)
        with pytest.raises(Overloaded, match="max_pending_bytes"):
            await cluster[leader].propose(b"b" * 500, timeout_s=60)
        await propose_in_background(nursery, cluster, leader, b"c" * 300, timeout_s=60)
        await propose_in_background(nursery, cluster, leader, b"d", timeout_s=60)
        await wait_until(lambda: cluster[leader].statistics()["pending_proposals"] == 3)
        with pytest.raises(Overloaded, match="max_pending_proposals"):
            await cluster[leader].propose(b"e", timeout_s=60)
        assert not first.done.is_set()
        nursery.cancel_scope.cancel()


async def test_driver_proposal_times_out_without_a_quorum(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        cluster = MemCluster(nursery)
        await cluster.start_all()
        leader = await cluster.wait_leader()
        cluster.isolate(leader)
        with pytest.raises(ProposalTimeout, match="may still commit"):
            await cluster[leader].propose(put("k", "v"), timeout_s=0.05)
        assert cluster[leader].statistics()["pending_proposals"] == 0
        assert cluster[leader].statistics()["pending_bytes"] == 0
        nursery.cancel_scope.cancel()


async def _isolated_leader_with_a_pending_proposal(
    nursery: trio.Nursery,
) -> tuple[MemCluster, str, Outcome]:
    """A leader cut off from its followers, holding one proposal that cannot commit."""
    cluster = MemCluster(nursery)
    await cluster.start_all()
    leader = await cluster.wait_leader()
    cluster.isolate(leader)
    pending = await propose_in_background(nursery, cluster, leader, put("k", "v"), timeout_s=60)
    await wait_until(lambda: cluster[leader].statistics()["pending_proposals"] == 1)
    return cluster, leader, pending


async def test_driver_aclose_fails_pending_requests_with_shutting_down(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        cluster, leader, pending = await _isolated_leader_with_a_pending_proposal(nursery)
        await cluster[leader].aclose()
        await pending.done.wait()
        assert isinstance(pending.error, ShuttingDown)
        assert cluster.nodes[leader].stopped.is_set()
        with pytest.raises(ShuttingDown):
            await cluster[leader].propose(put("k", "v"), timeout_s=1)
        with pytest.raises(ShuttingDown):
            await cluster[leader].read_index(timeout_s=1)
        nursery.cancel_scope.cancel()


async def test_driver_cancellation_fails_pending_requests_with_shutting_down(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        cluster, leader, pending = await _isolated_leader_with_a_pending_proposal(nursery)
        cluster.stop(leader)
        await pending.done.wait()
        assert isinstance(pending.error, ShuttingDown)
        nursery.cancel_scope.cancel()


async def test_driver_overwritten_proposal_fails_with_proposal_lost(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Raft §5.3: an isolated leader's uncommitted entry is overwritten by the next leader's;
    the proposal learns it when the entry at its index is applied with another term."""
    async with trio.open_nursery() as nursery:
        cluster = MemCluster(nursery)
        await cluster.start_all()
        old = await cluster.wait_leader()
        await cluster[old].propose(put("a", "1"), timeout_s=5)
        cluster.isolate(old)
        doomed = await propose_in_background(nursery, cluster, old, put("lost", "x"), timeout_s=60)
        others = [n for n in cluster.ids if n != old]
        new = await cluster.wait_leader(among=others)
        await cluster[new].propose(put("b", "2"), timeout_s=5)
        cluster.heal()
        with trio.fail_after(10):
            await doomed.done.wait()
        assert isinstance(doomed.error, ProposalLost)
        await wait_until(lambda: cluster.values(old) == {"a": "1", "b": "2"})
        nursery.cancel_scope.cancel()


async def test_driver_serves_linearizable_reads_on_the_leader_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Thesis §6.4: a ReadIndex read sees every write acknowledged before it began."""
    async with trio.open_nursery() as nursery:
        cluster = MemCluster(nursery)
        await cluster.start_all()
        leader = await cluster.wait_leader()
        await cluster[leader].propose(put("x", "1"), timeout_s=5)
        kv = cluster.nodes[leader].machine
        assert await cluster[leader].read(lambda: kv.get("x"), timeout_s=5) == "1"
        index = await cluster[leader].read_index(timeout_s=5)
        assert index == cluster[leader].applied_index
        follower = next(n for n in cluster.ids if n != leader)
        await wait_until(lambda: cluster[follower].core.leader == leader)
        with pytest.raises(NotLeader) as caught:
            await cluster[follower].read_index(timeout_s=5)
        assert caught.value.leader_hint == leader
        nursery.cancel_scope.cancel()


async def test_driver_read_dropped_by_a_deposed_leader_raises_not_leader(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A leader cut off from its quorum steps down (check-quorum) and drops the reads it
    could not confirm: they fail with NotLeader, not with a stale answer."""
    async with trio.open_nursery() as nursery:
        cluster = MemCluster(nursery)
        await cluster.start_all()
        leader = await cluster.wait_leader()
        await cluster[leader].propose(put("x", "1"), timeout_s=5)
        cluster.isolate(leader)
        with pytest.raises(NotLeader):
            await cluster[leader].read_index(timeout_s=10)
        assert cluster[leader].core.role is not Role.LEADER
        nursery.cancel_scope.cancel()


async def test_driver_counts_and_drops_bad_datagrams(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Malformed bytes, another cluster's traffic, unknown senders and SWIM datagrams are
    counted by reason and dropped; the node keeps working."""
    async with trio.open_nursery() as nursery:
        cluster = MemCluster(nursery)
        await cluster.start_all()
        leader = await cluster.wait_leader()
        target = cluster.addresses["n1"]
        stranger = cluster.network.open(("10.9.9.9", 7000))
        beat = Heartbeat(term=99, commit=0)
        datagrams = [
            b"",
            b"\xc1 not msgpack",
            b"\x95\x01",  # a truncated envelope
            encode(beat, cluster_id="another-cluster", sender_id="n2"),
            encode(beat, cluster_id="prism", sender_id="n9"),
            encode(beat, cluster_id="prism", sender_id="n1"),  # claims to be the receiver
            encode(Gossip(updates=()), cluster_id="prism", sender_id="n2"),  # SWIM, wrong port
        ]
        for data in datagrams:
            await stranger.send(data, target)
        drops = cluster["n1"].drops
        await wait_until(lambda: sum(drops.values()) == len(datagrams))
        assert drops == {
            "malformed": 3,
            "foreign_cluster": 1,
            "unknown_sender": 2,
            "not_raft": 1,
        }
        assert cluster["n1"].statistics()["drops.malformed"] == 3
        assert cluster["n1"].core.term < 99  # nothing of it reached the core
        assert (await cluster[leader].propose(put("k", "v"), timeout_s=5)).ok
        stranger.close()
        nursery.cancel_scope.cancel()


async def test_driver_snapshots_compact_and_a_lagging_follower_installs_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Raft §7: the leader snapshots its state machine past the threshold and compacts its
    log; a follower that missed the compacted entries receives the snapshot, persists it,
    restores its state machine from it, then applies what follows."""
    config = dataclasses.replace(
        RaftConfig.lan(), snapshot_threshold_entries=8, snapshot_trailing_entries=0
    )
    async with trio.open_nursery() as nursery:
        cluster = MemCluster(nursery, config=config)
        await cluster.start_all()
        leader = await cluster.wait_leader()
        lagging = next(n for n in cluster.ids if n != leader)
        await cluster.stop_and_wait(lagging)
        expected = {f"k{i}": str(i) for i in range(30)}
        for key, value in expected.items():
            assert (await cluster[leader].propose(put(key, value), timeout_s=5)).ok
        storage = cluster.storages[leader]
        assert isinstance(storage, MemoryStorage)
        assert storage.snapshot is not None
        assert cluster[leader].statistics()["snapshots_taken"] >= 1
        assert storage.entries[0].index > storage.snapshot.meta.index - 8
        await cluster.start(lagging)
        await wait_until(lambda: cluster.values(lagging) == expected)
        assert cluster[lagging].statistics()["snapshots_restored"] >= 1
        # Restarted again, it starts from its own durable snapshot.
        await cluster.stop_and_wait(lagging)
        await cluster.start(lagging)
        await wait_until(lambda: cluster.values(lagging) == expected)
        nursery.cancel_scope.cancel()


@pytest.fixture
def thread_safe_clock() -> trio.testing.MockClock:
    """Virtual time that jumps only after 2 ms of real idleness: a healthy write in a
    worker thread ends before the clock moves, a write held at a closed gate does not."""
    return trio.testing.MockClock(autojump_threshold=0.002)


async def test_driver_leader_with_a_stalled_disk_steps_down(
    thread_safe_clock: trio.testing.MockClock,
) -> None:
    """A leader whose write takes longer than ``disk_stall_timeout_s`` steps down (reason
    ``disk_stall``) and another node takes over while the write is still stuck, so a sick
    disk cannot hold the cluster hostage."""
    async with trio.open_nursery() as nursery:
        cluster = MemCluster(nursery, driver_config=DriverConfig(disk_stall_timeout_s=0.1))
        gates = {node_id: GatedStorage() for node_id in cluster.ids}
        cluster.storages.update(gates)
        await cluster.start_all()
        leader = await cluster.wait_leader()
        await cluster[leader].propose(put("a", "1"), timeout_s=5)
        gates[leader].close_gate()
        stuck = await propose_in_background(nursery, cluster, leader, put("b", "2"), timeout_s=60)
        await wait_until(gates[leader].blocked.is_set)
        await wait_until(lambda: cluster[leader].core.role is not Role.LEADER)
        assert cluster[leader].counters["disk_stalls"] == 1
        others = [n for n in cluster.ids if n != leader]
        new = await cluster.wait_leader(among=others)
        assert (await cluster[new].propose(put("c", "3"), timeout_s=5)).ok
        assert gates[leader].blocked.is_set()  # the old leader's write is still stuck
        gates[leader].open_gate()

        def stepped_down_for_disk() -> bool:
            return any(
                note.event == "raft.stepped_down" and note.fields.get("reason") == "disk_stall"
                for note in cluster.nodes[leader].notes
            )

        await wait_until(stepped_down_for_disk)
        with trio.fail_after(10):
            await stuck.done.wait()  # applied (the new leader kept it) or lost: not stuck
        nursery.cancel_scope.cancel()


async def test_driver_batches_proposals_and_applies_a_large_batch_in_slices(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Many proposals made at once go out in a few appends (not one per proposal), commit
    together, and are applied in order, in slices of APPLY_SLICE with checkpoints between,
    each resolving with its own result."""
    count = 3 * APPLY_SLICE + 5
    async with trio.open_nursery() as nursery:
        cluster = MemCluster(nursery)
        await cluster.start_all()
        leader = await cluster.wait_leader()
        driver = cluster[leader]
        sent_before = driver.statistics()["messages_sent"]
        waiters = [
            driver.propose_nowait(put(f"k{i}", f"v{i}"))[2] for i in range(count)
        ]  # no checkpoint in between: one Ready takes them all
        settled: list[int] = []
        for i, waiter in enumerate(waiters):
            waiter.on_done(lambda w, i=i: settled.append(i))
        await wait_until(lambda: all(w.done for w in waiters))
        results = [w.outcome() for w in waiters]
        assert [r.value for r in results] == [f"v{i}" for i in range(count)]
        assert [r.index for r in results] == list(range(results[0].index, results[0].index + count))
        assert settled == list(range(count))  # callbacks ran in log order
        # Appends for the whole batch: far fewer messages than one per proposal per follower.
        assert driver.statistics()["messages_sent"] - sent_before < count
        expected = {f"k{i}": f"v{i}" for i in range(count)}
        await wait_until(lambda: all(cluster.values(n) == expected for n in cluster.ids))
        nursery.cancel_scope.cancel()


async def test_driver_calls_on_settled_after_each_batch_of_callbacks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """``on_settled`` runs after the callbacks of each applied slice (so a caller can send
    a batch's answers together), and after the callbacks that a stop fails."""
    count = APPLY_SLICE + 5
    log: list[str] = []
    async with trio.open_nursery() as nursery:
        cluster = MemCluster(nursery, size=1)
        driver = await cluster.start("n1", on_settled=lambda: log.append("settled"))
        await cluster.wait_leader()
        await driver.propose(put("a", "1"), timeout_s=5)
        log.clear()
        waiters = [driver.propose_nowait(put(f"k{i}", f"v{i}"))[2] for i in range(count)]
        for waiter in waiters:
            waiter.on_done(lambda w: log.append("done"))
        await wait_until(lambda: all(w.done for w in waiters))
        assert log == ["done"] * APPLY_SLICE + ["settled"] + ["done"] * 5 + ["settled"]
        log.clear()
        _index, _term, last = driver.propose_nowait(put("z", "1"))
        last.on_done(lambda w: log.append("done"))
        await driver.aclose()
        with pytest.raises(ShuttingDown):
            last.outcome()
        assert log[:2] == ["done", "settled"]
        nursery.cancel_scope.cancel()


async def test_driver_cancelled_during_a_write_waits_for_it_to_finish(
    thread_safe_clock: trio.testing.MockClock,
) -> None:
    """A write in a worker thread is not abandoned on cancellation: ``run`` returns only
    after it finished, so the storage never holds half of a write we walked away from."""
    async with trio.open_nursery() as nursery:
        cluster = MemCluster(nursery, size=1)
        gate = GatedStorage()
        cluster.storages["n1"] = gate
        await cluster.start_all()
        await cluster.wait_leader()
        await cluster["n1"].propose(put("a", "1"), timeout_s=5)  # every earlier write is done
        gate.close_gate()
        pending = await propose_in_background(nursery, cluster, "n1", put("k", "v"), timeout_s=60)
        await wait_until(gate.blocked.is_set)
        cluster.stop("n1")
        await trio.testing.wait_all_tasks_blocked()
        assert not cluster.nodes["n1"].stopped.is_set()
        # From here only the worker thread has work, and no timer is pending but the one
        # below: at 2 ms the clock could jump straight to it while a loaded machine has
        # not yet run the thread. Jump only after a second of real idleness.
        thread_safe_clock.autojump_threshold = 1.0
        gate.open_gate()
        with trio.fail_after(10):
            await cluster.nodes["n1"].stopped.wait()
        assert put("k", "v") in [entry.data for entry in gate.inner.entries]
        await pending.done.wait()
        assert isinstance(pending.error, ShuttingDown)
        nursery.cancel_scope.cancel()


async def test_open_raft_driver_runs_a_single_node_for_its_block(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork()
    storage = MemoryStorage()
    kv = KVStateMachine()
    core = core_from_storage(
        "solo", ["solo"], storage, config=RaftConfig.lan(), rng=random.Random("solo")
    )
    here = ("10.0.0.1", 7000)
    driver = RaftDriver(core, storage, kv, network.open(here), {"solo": here})
    with pytest.raises(RuntimeError, match="not running"):
        await driver.propose(put("k", "v"), timeout_s=1)
    await driver.aclose()  # never ran: releases its transport
    core = core_from_storage(
        "solo", ["solo"], storage, config=RaftConfig.lan(), rng=random.Random("solo")
    )
    async with open_raft_driver(core, storage, kv, network.open(here), {"solo": here}) as solo:
        await wait_until(lambda: solo.is_leader)
        first = await solo.propose(put("k", "v"), client_id="c1", seq=1, timeout_s=5)
        assert first.ok
        assert kv.get("k") == "v"
        retry = await solo.propose(put("k", "v"), client_id="c1", seq=1, timeout_s=5)
        assert retry.duplicate
        assert await solo.read(lambda: kv.get("k"), timeout_s=5) == "v"
    with pytest.raises(ShuttingDown):
        await solo.propose(put("k", "w"), timeout_s=1)
    network.open(here).close()  # the driver closed its transport: the address is free


async def test_driver_hands_over_leadership_before_a_planned_stop(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Graceful shutdown: the leader transfers leadership (TimeoutNow) and steps down, the
    target leads in the next term without an election timeout, and writes go on there."""
    async with trio.open_nursery() as nursery:
        cluster = MemCluster(nursery)
        await cluster.start_all()
        old = await cluster.wait_leader()
        await cluster[old].propose(put("before", "1"), timeout_s=5)
        term = cluster[old].core.term
        follower = next(n for n in cluster.ids if n != old)
        assert await cluster[follower].hand_over_leadership(timeout_s=1) is None
        started = trio.current_time()
        target = await cluster[old].hand_over_leadership(timeout_s=1)
        assert target is not None
        assert target != old
        assert cluster[old].core.role is Role.FOLLOWER
        await cluster.wait_leader()
        assert cluster.leader() == target
        assert cluster[target].core.term == term + 1
        # Well under the minimum election timeout (200 ms on LAN timing): no one timed out.
        assert trio.current_time() - started < 0.2
        await cluster.stop_and_wait(old)
        assert (await cluster[target].propose(put("after", "2"), timeout_s=5)).ok
        nursery.cancel_scope.cancel()


async def test_driver_hand_over_without_another_voter_returns_none(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        cluster = MemCluster(nursery, size=1)
        await cluster.start_all()
        leader = await cluster.wait_leader()
        assert await cluster[leader].hand_over_leadership(timeout_s=1) is None
        assert cluster[leader].core.role is Role.LEADER
        nursery.cancel_scope.cancel()
