"""``SwimDriver`` on an in-memory network (datagrams and streams) under trio's MockClock
(autojump): the handling loop of ``prism.swim.ready`` with real tasks, membership changes
end to end, event subscriptions, and bad input counted, never raised."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import AsyncIterator
from functools import partial

import pytest
import trio
import trio.testing

from prism.raft.messages import Heartbeat
from prism.raft.transport import parse_address
from prism.swim.core import SwimCore
from prism.swim.driver import NameConflict, SwimDriver, SwimDriverConfig, open_swim_driver
from prism.swim.members import MemberState
from prism.swim.messages import Ack, Gossip, Ping, PushPull, PushPullReply, Update, UpdateKind
from prism.swim.ready import EventKind, MemberEvent
from prism.swim.subscriptions import Subscription, SubscriptionOverflow
from prism.swim.transport import FRAME_HEADER, MemorySwimNetwork, receive_frame, send_frame
from prism.wire import decode, encode
from tests.swim_driver.harness import LOCAL, MemCluster, wait_until

pytestmark = pytest.mark.trio


def kinds_about(events: list[MemberEvent], subject: str) -> list[EventKind]:
    return [e.kind for e in events if e.name == subject]


async def test_members_join_through_one_seed_and_converge(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        cluster = MemCluster(nursery, 5)
        await cluster.start_all()
        await cluster.wait_all_alive(timeout_s=5)
        for name in cluster.names:
            stats = cluster[name].statistics()
            assert stats.core.alive == 5
            assert not cluster[name].core.is_joining
            assert stats.drops == ()
        # Everyone learned the others through n1 and gossip: one JOINED event per member.
        await trio.testing.wait_all_tasks_blocked()  # the recorders have read their events
        for name in cluster.names:
            joined = sorted(
                e.name for e in cluster.members[name].events if e.kind is EventKind.JOINED
            )
            assert joined == sorted(n for n in cluster.names if n != name)
        nursery.cancel_scope.cancel()


async def test_join_waits_for_a_seed_that_starts_later(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Join retries with back-off (the seed is not up yet), and ``join`` returns once a
    seed answered."""
    async with trio.open_nursery() as nursery:
        cluster = MemCluster(nursery, 2)
        network = cluster.network
        core = SwimCore(
            "n2", bind_address=cluster.addresses["n2"], config=LOCAL, rng=random.Random(2)
        )
        datagrams, streams = network.open(parse_address(cluster.addresses["n2"]))
        driver = SwimDriver(
            core, datagrams, streams, config=SwimDriverConfig.local(), wall_clock=trio.current_time
        )
        await nursery.start(driver.run)
        joined_at: list[float] = []

        async def join() -> None:
            await driver.join([cluster.addresses["n1"]])
            joined_at.append(trio.current_time())

        nursery.start_soon(join)
        await trio.sleep(3)
        assert not joined_at
        assert driver.core.is_joining
        assert driver.counters["stream_connect_failed"] >= 2  # retried, with back-off
        started = trio.current_time()
        await cluster.start("n1")
        await wait_until(lambda: bool(joined_at), timeout_s=10)
        assert joined_at[0] - started < LOCAL.join_retry_max_ticks * LOCAL.tick_ms / 1000 + 1
        await wait_until(lambda: driver.member("n1") is not None)
        nursery.cancel_scope.cancel()


async def test_metadata_update_reaches_every_member(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        cluster = MemCluster(nursery, 5)
        await cluster.start_all()
        await cluster.wait_all_alive(timeout_s=5)
        cluster["n3"].update_metadata(b"role=worker")
        started = trio.current_time()

        def everyone_has_it() -> bool:
            return all(
                (m := cluster[o].member("n3")) is not None and m.meta == b"role=worker"
                for o in cluster.names
            )

        await wait_until(everyone_has_it, timeout_s=5)
        assert trio.current_time() - started < 2  # a few 100 ms gossip rounds
        await trio.testing.wait_all_tasks_blocked()
        for observer in cluster.names:
            if observer != "n3":
                updated = [
                    e
                    for e in cluster.members[observer].events
                    if e.kind is EventKind.UPDATED and e.name == "n3"
                ]
                assert [(e.meta, e.incarnation) for e in updated] == [(b"role=worker", 1)]
        with pytest.raises(ValueError, match="exceeds"):
            cluster["n3"].update_metadata(b"x" * 513)
        nursery.cancel_scope.cancel()


async def test_a_crashed_member_is_declared_dead_by_every_other(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        cluster = MemCluster(nursery, 5)
        await cluster.start_all()
        await cluster.wait_all_alive(timeout_s=5)
        await cluster.crash("n5")
        await wait_until(lambda: cluster.everyone_sees("n5", MemberState.DEAD), timeout_s=60)
        await trio.testing.wait_all_tasks_blocked()
        for observer in ["n1", "n2", "n3", "n4"]:
            kinds = kinds_about(cluster.members[observer].events, "n5")
            assert kinds[-1] is EventKind.DEAD
            assert EventKind.LEFT not in kinds
        # Nobody else was accused meanwhile.
        assert all(
            cluster.state(a, b) is MemberState.ALIVE for a in ["n1", "n2"] for b in ["n3", "n4"]
        )
        nursery.cancel_scope.cancel()


async def test_a_member_that_leaves_is_left_everywhere_not_dead(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        cluster = MemCluster(nursery, 5)
        await cluster.start_all()
        await cluster.wait_all_alive(timeout_s=5)
        leaving = cluster["n2"]
        await leaving.leave()
        assert not leaving.is_running
        with trio.fail_after(1):
            await cluster.members["n2"].stopped.wait()
        await wait_until(lambda: cluster.everyone_sees("n2", MemberState.LEFT), timeout_s=5)
        # Long enough for a stopped member to have been declared dead, were it not left
        # (and shorter than the local profile's 60 s before a left member is reaped).
        await trio.sleep(30)
        assert cluster.everyone_sees("n2", MemberState.LEFT)
        await trio.testing.wait_all_tasks_blocked()
        for observer in ["n1", "n3", "n4", "n5"]:
            kinds = kinds_about(cluster.members[observer].events, "n2")
            assert kinds == [EventKind.JOINED, EventKind.LEFT]
        with pytest.raises(RuntimeError, match="stopped"):
            leaving.update_metadata(b"too late")
        nursery.cancel_scope.cancel()


async def test_a_restarted_member_rejoins_with_a_higher_incarnation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A new core under the same name starts at incarnation 0, learns the cluster's view
    of it through the join's push-pull, and refutes it: alive again everywhere."""
    async with trio.open_nursery() as nursery:
        cluster = MemCluster(nursery, 4)
        await cluster.start_all()
        await cluster.wait_all_alive(timeout_s=5)
        await cluster.crash("n4")
        await wait_until(lambda: cluster.everyone_sees("n4", MemberState.DEAD), timeout_s=60)
        dead_incarnation = cluster.view("n1", "n4").incarnation
        restarted = await cluster.start("n4", seeds=["n2"])
        await wait_until(cluster.all_alive, timeout_s=10)
        assert restarted.core.incarnation > dead_incarnation
        await trio.testing.wait_all_tasks_blocked()
        for observer in ["n1", "n2", "n3"]:
            kinds = kinds_about(cluster.members[observer].events, "n4")
            assert kinds[-1] is EventKind.ALIVE_AGAIN
            assert cluster.view(observer, "n4").incarnation == restarted.core.incarnation
        nursery.cancel_scope.cancel()


async def test_a_second_live_member_with_a_taken_name_is_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        cluster = MemCluster(nursery, 2)
        await cluster.start_all()
        await cluster.wait_all_alive(timeout_s=5)
        twin = SwimCore("n2", bind_address="10.0.0.99:4200", config=LOCAL, rng=random.Random(9))
        datagrams, streams = cluster.network.open(("10.0.0.99", 4200))
        async with open_swim_driver(twin, datagrams, streams) as driver:
            with pytest.raises(NameConflict, match="held by a live member") as caught:
                await driver.join([cluster.addresses["n1"]])
            assert caught.value.holder_address == cluster.addresses["n2"]
        assert cluster.view("n1", "n2").address == cluster.addresses["n2"]
        nursery.cancel_scope.cancel()


async def test_subscription_delivers_events_in_order_and_a_slow_one_is_cut_off(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A subscriber that does not keep up is cut off (after every event it buffered) and the
    protocol goes on; a subscriber that keeps up sees every event in the core's order."""
    async with trio.open_nursery() as nursery:
        cluster = MemCluster(nursery, 5)
        await cluster.start("n1")
        observer = cluster["n1"]
        slow = observer.subscribe(buffer=2)
        fast = observer.subscribe(buffer=100)
        for name in cluster.names[1:]:
            await cluster.start(name, seeds=["n1"])
        await cluster.wait_all_alive(timeout_s=5)
        cluster["n3"].update_metadata(b"v2")
        await wait_until(lambda: cluster.view("n1", "n3").meta == b"v2")
        await cluster.crash("n5")
        await wait_until(lambda: cluster.state("n1", "n5") is MemberState.DEAD, timeout_s=60)

        await trio.testing.wait_all_tasks_blocked()
        seen = []
        while (event := fast.receive_nowait()) is not None:
            seen.append(event)
        # Exactly what the harness's own recorder (another subscriber) saw, in order.
        assert seen == cluster.members["n1"].events
        assert [e.name for e in seen if e.kind is EventKind.JOINED] == ["n2", "n3", "n4", "n5"]
        about_n3 = kinds_about(seen, "n3")
        assert about_n3 == [EventKind.JOINED, EventKind.UPDATED]
        assert kinds_about(seen, "n5") == [EventKind.JOINED, EventKind.SUSPECT, EventKind.DEAD]

        buffered = [event async for event in _until_overflow(slow)]
        assert buffered == seen[:2]
        assert slow.overflowed
        stats = observer.statistics()
        assert stats.subscriptions_overflowed == 1
        assert stats.subscribers == 2  # the fast one and the recorder
        slow.close()
        fast.close()
        assert observer.statistics().subscribers == 1
        nursery.cancel_scope.cancel()


async def _until_overflow(subscription: Subscription) -> AsyncIterator[MemberEvent]:
    """The events a cut-off subscription still delivers; fails if it ends without the cut."""
    try:
        async for event in subscription:
            yield event
    except SubscriptionOverflow:
        return
    raise AssertionError("the subscription ended without an overflow")


async def test_subscriptions_end_when_the_driver_stops(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        cluster = MemCluster(nursery, 2)
        await cluster.start_all()
        await cluster.wait_all_alive(timeout_s=5)
        subscription = cluster["n1"].subscribe()
        await cluster.crash("n1")
        assert [event async for event in subscription] == []
        late = cluster["n1"].subscribe()
        assert [event async for event in late] == []
        nursery.cancel_scope.cancel()


async def test_bad_datagrams_are_counted_and_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        cluster = MemCluster(nursery, 3)
        await cluster.start_all()
        await cluster.wait_all_alive(timeout_s=5)
        target = parse_address(cluster.addresses["n1"])
        raw = cluster.network.datagrams.open(("10.9.9.9", 9))
        ping = Ping(seq=1, target="n1", reply_to="10.9.9.9:9")
        bad = [
            b"\x00garbage",  # not msgpack
            b"\x93\x01\x02\x03",  # msgpack, not an envelope
            b"x" * 1401,  # above the datagram budget
            encode(ping, cluster_id="another-cluster", sender_id="x"),
            encode(Heartbeat(term=1, commit=0), cluster_id="prism", sender_id="r1"),
            encode(PushPull(join=False, members=()), cluster_id="prism", sender_id="x"),
        ]
        for data in bad:
            await raw.send(data, target)
        driver = cluster["n1"]
        await wait_until(lambda: sum(driver.drops.values()) == len(bad))
        assert dict(driver.statistics().drops) == {
            "malformed": 2,
            "oversize": 1,
            "foreign_cluster": 1,
            "not_swim": 1,
            "wrong_channel": 1,
        }
        # A good ping from a stranger is still answered: the receiver survived it all.
        await raw.send(encode(ping, cluster_id="prism", sender_id="x"), target)
        with trio.fail_after(1):
            answer, _ = await raw.receive()
        assert decode(answer).sender_id == "n1"
        await trio.sleep(5)
        assert cluster.all_alive()
        nursery.cancel_scope.cancel()


async def test_bad_stream_frames_are_counted_and_the_connection_closed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        cluster = MemCluster(nursery, 2)
        await cluster.start_all()
        await cluster.wait_all_alive(timeout_s=5)
        driver = cluster["n1"]
        target = parse_address(cluster.addresses["n1"])
        peer = cluster.network.streams.open(("10.9.9.9", 9))
        ping = Ping(seq=1, target="n1", reply_to="10.9.9.9:9")
        limit = driver.config.max_stream_bytes
        cases: list[tuple[bytes, str]] = [
            (FRAME_HEADER.pack(limit + 1), "stream_oversize"),
            (FRAME_HEADER.pack(0), "stream_malformed"),
            (FRAME_HEADER.pack(7) + b"garbage", "stream_malformed"),
            (FRAME_HEADER.pack(100) + b"short", "stream_truncated"),
            (b"", "stream_closed"),
            (
                _frame(encode(Gossip(updates=()), cluster_id="prism", sender_id="x")),
                "stream_wrong_channel",
            ),
            (
                _frame(encode(Heartbeat(term=1, commit=0), cluster_id="prism", sender_id="r")),
                "stream_not_swim",
            ),
            (_frame(_push_pull("other")), "stream_foreign_cluster"),
        ]
        for data, reason in cases:
            before = driver.drops[reason]
            stream = await peer.connect(target)
            if data:
                await stream.send_all(data)
            await stream.send_eof()
            with trio.fail_after(5):
                assert await stream.receive_some(100) == b""  # closed, no answer
            await stream.aclose()
            await wait_until(partial(_counted, driver, reason, before + 1))
        # A peer that connects and says nothing is cut off at the stream deadline.
        stream = await peer.connect(target)
        with trio.fail_after(driver.config.stream_timeout_s + 1):
            assert await stream.receive_some(100) == b""
        await wait_until(lambda: driver.drops["stream_timeout"] == 1)
        await stream.aclose()
        # And a well-formed push-pull on a fresh connection is answered on that connection.
        stream = await peer.connect(target)
        await send_frame(stream, _push_pull("prism"))
        with trio.fail_after(5):
            answer = decode(await receive_frame(stream, max_bytes=limit))
        assert answer.sender_id == "n1"
        assert isinstance(answer.message, PushPullReply)
        assert {u.node for u in answer.message.members} >= {"n1", "n2", "x"}
        await stream.aclose()
        # A fallback ping over a stream is answered with an ack on that connection.
        stream = await peer.connect(target)
        await send_frame(stream, encode(ping, cluster_id="prism", sender_id="x"))
        with trio.fail_after(5):
            answer = decode(await receive_frame(stream, max_bytes=limit))
        assert answer.message == Ack(seq=1, target="n1")
        assert driver.counters["stream_pings_answered"] == 1
        await stream.aclose()
        nursery.cancel_scope.cancel()


async def test_a_member_whose_udp_is_blocked_stays_alive_through_the_stream_probe(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A firewall drops every datagram to and from n2, and lets TCP through: the others'
    fallback pings over TCP are answered, so nobody suspects n2, and the path is noted."""
    async with trio.open_nursery() as nursery:
        cluster = MemCluster(nursery, 3)
        await cluster.start_all()
        await cluster.wait_all_alive(timeout_s=5)
        blocked = parse_address(cluster.addresses["n2"])

        def route(source: tuple[str, int], destination: tuple[str, int], data: bytes) -> bool:
            return not data or blocked not in (source, destination)  # b"": a TCP connect

        cluster.network.route = route
        await trio.sleep(20 * LOCAL.probe_interval_ticks * LOCAL.tick_ms / 1000)
        assert cluster.all_alive()
        assert cluster["n2"].counters["stream_pings_answered"] > 0
        assert ("n1", "swim.probe_stream_only") in cluster.notes
        for name in cluster.running():
            events = cluster.members[name].events
            assert not [e for e in events if e.name == "n2" and e.kind is EventKind.SUSPECT]
        nursery.cancel_scope.cancel()


def _counted(driver: SwimDriver, reason: str, count: int) -> bool:
    return driver.drops[reason] == count


def _frame(payload: bytes) -> bytes:
    return FRAME_HEADER.pack(len(payload)) + payload


def _push_pull(cluster_id: str) -> bytes:
    me = Update(kind=UpdateKind.ALIVE, node="x", incarnation=0, address="10.9.9.9:9")
    return encode(PushPull(join=False, members=(me,)), cluster_id=cluster_id, sender_id="x")


async def test_too_many_connections_at_once_are_closed_unread(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = SwimDriverConfig.local()
    network = MemorySwimNetwork()
    core = SwimCore("n1", bind_address="10.0.0.1:4200", config=LOCAL, rng=random.Random(1))
    datagrams, streams = network.open(("10.0.0.1", 4200))
    peer = network.streams.open(("10.9.9.9", 9))
    async with open_swim_driver(core, datagrams, streams, config=config) as driver:
        driver.join_nowait([driver.advertise_address])
        idle = [await peer.connect(("10.0.0.1", 4200)) for _ in range(config.max_incoming_streams)]
        await wait_until(lambda: driver.statistics().streams_in == config.max_incoming_streams)
        extra = await peer.connect(("10.0.0.1", 4200))
        with trio.fail_after(0.5):
            assert await extra.receive_some(10) == b""
        assert driver.drops["stream_overload"] == 1
        for stream in [*idle, extra]:
            await stream.aclose()
        await wait_until(lambda: driver.statistics().streams_in == 0)


async def test_a_driver_runs_once_and_commands_need_it_running(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemorySwimNetwork()
    core = SwimCore("n1", bind_address="10.0.0.1:4200", config=LOCAL, rng=random.Random(1))
    driver = SwimDriver(core, *network.open(("10.0.0.1", 4200)))
    with pytest.raises(RuntimeError, match="not running"):
        driver.update_metadata(b"x")
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.run)
        with pytest.raises(RuntimeError, match="runs once"):
            await driver.run()
        await driver.aclose()
        await driver.aclose()  # idempotent
    assert not driver.is_running
    with pytest.raises(RuntimeError, match="stopped"):
        driver.join_nowait(["10.0.0.2:4200"])


async def test_a_silent_seed_cannot_hold_a_join_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A seed that accepts the connection and never answers: each exchange ends at the
    stream deadline, and exchanges past ``max_outgoing_streams`` are skipped, not queued."""
    network = MemorySwimNetwork()
    silent = network.streams.open(("10.0.0.9", 4200))
    held: list[trio.abc.Stream] = []

    async def hold(stream: trio.abc.Stream) -> None:
        held.append(stream)
        await trio.sleep_forever()

    config = dataclasses.replace(SwimDriverConfig.local(), max_outgoing_streams=1)
    core = SwimCore("n1", bind_address="10.0.0.1:4200", config=LOCAL, rng=random.Random(1))
    async with trio.open_nursery() as nursery:
        await nursery.start(silent.serve, hold)
        driver = SwimDriver(core, *network.open(("10.0.0.1", 4200)), config=config)
        await nursery.start(driver.run)
        driver.join_nowait(["10.0.0.9:4200"])
        await trio.sleep(3 * config.stream_timeout_s + 0.5)
        assert driver.core.is_joining
        assert driver.drops["stream_timeout"] >= 2
        assert driver.counters["streams_busy"] >= 1
        assert driver.statistics().streams_out <= 1
        assert len(held) == driver.drops["stream_timeout"] + driver.statistics().streams_out
        nursery.cancel_scope.cancel()


async def test_a_lone_member_leaves_at_once(autojump_clock: trio.testing.MockClock) -> None:
    network = MemorySwimNetwork()
    core = SwimCore("n1", bind_address="10.0.0.1:4200", config=LOCAL, rng=random.Random(1))
    async with open_swim_driver(core, *network.open(("10.0.0.1", 4200))) as driver:
        await driver.join([driver.advertise_address])
        started = trio.current_time()
        await driver.leave()
        assert trio.current_time() == started  # nobody to tell: no reason to linger
        assert not driver.is_running
        assert driver.core.has_left
