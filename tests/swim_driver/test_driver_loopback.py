"""``SwimDriver`` over real loopback sockets, several members in one process: UDP for
probes and gossip, TCP on the same port number for push-pull. Real time, so every wait is
a poll with a deadline, never a sleep for a condition."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial

import pytest
import trio

from prism.raft.transport import Address, DatagramTransport, format_address
from prism.swim.config import SwimConfig
from prism.swim.core import SwimCore
from prism.swim.driver import SwimDriver, SwimDriverConfig
from prism.swim.members import MemberState
from prism.swim.messages import MAX_META_BYTES, PushPull, PushPullReply, Update, UpdateKind
from prism.swim.ready import EventKind, MemberEvent
from prism.swim.transport import FRAME_HEADER, bind_udp_and_tcp
from prism.wire import MAX_DATAGRAM_BYTES, encode
from tests.swim_driver.harness import wait_until

pytestmark = pytest.mark.trio

LOOPBACK = "127.0.0.1"
# The local profile at twice its pace: still 100 ms of probe timeout on loopback.
FAST = dataclasses.replace(SwimConfig.local(), tick_ms=50)


@dataclass
class Firewall:
    """Drops every datagram to or from the addresses in ``blocked``; TCP passes."""

    blocked: set[Address] = field(default_factory=set)


class FirewalledUdp:
    """A real UDP endpoint behind a ``Firewall``."""

    def __init__(self, inner: DatagramTransport, firewall: Firewall) -> None:
        self.inner = inner
        self.firewall = firewall
        self.dropped = 0

    @property
    def local_address(self) -> Address:
        return self.inner.local_address

    def _blocks(self, address: Address) -> bool:
        blocked = self.firewall.blocked
        return address in blocked or self.inner.local_address in blocked

    async def send(self, data: bytes, address: Address) -> None:
        if not self._blocks(address):
            await self.inner.send(data, address)

    def send_nowait(self, data: bytes, address: Address) -> bool:
        if self._blocks(address):
            self.dropped += 1
            return True  # gone, as a firewall's drop is: the sender cannot tell
        return self.inner.send_nowait(data, address)

    async def receive(self) -> tuple[bytes, Address]:
        return await self.inner.receive()

    def receive_nowait(self) -> tuple[bytes, Address] | None:
        return self.inner.receive_nowait()

    def close(self) -> None:
        self.inner.close()


@dataclass
class Running:
    driver: SwimDriver
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    stopped: trio.Event = field(default_factory=trio.Event)
    events: list[MemberEvent] = field(default_factory=list)

    @property
    def address(self) -> str:
        return self.driver.advertise_address


async def start(
    nursery: trio.Nursery,
    name: str,
    *,
    port: int = 0,
    seeds: Iterable[str] = (),
    generation: int = 0,
    prepare: Callable[[SwimCore], None] | None = None,
    firewall: Firewall | None = None,
) -> Running:
    """A member on loopback ``port`` (0: any), joining through ``seeds`` (addresses).
    ``prepare`` may step the new core before its driver runs; ``firewall`` sits in front
    of its UDP socket."""
    bound, tcp = await bind_udp_and_tcp((LOOPBACK, port))
    udp: DatagramTransport = bound if firewall is None else FirewalledUdp(bound, firewall)
    address = format_address(udp.local_address)
    core = SwimCore(
        name,
        bind_address=address,
        config=FAST,
        rng=random.Random(f"loopback/{name}/{generation}"),
    )
    if prepare is not None:
        prepare(core)
    running = Running(SwimDriver(core, udp, tcp, config=SwimDriverConfig.local()))

    async def run(*, task_status: trio.TaskStatus[None]) -> None:
        try:
            with running.scope:
                async with trio.open_nursery() as inner:
                    subscription = running.driver.subscribe()

                    async def record() -> None:
                        with subscription:
                            async for event in subscription:
                                running.events.append(event)

                    inner.start_soon(record)
                    await running.driver.run(task_status=task_status)
        finally:
            running.stopped.set()

    await nursery.start(run)
    running.driver.join_nowait(list(seeds) or [address])
    return running


def state(observer: Running, subject: str) -> MemberState | None:
    member = observer.driver.member(subject)
    return None if member is None else member.state


@pytest.mark.slow
async def test_loopback_members_join_update_leave_crash_and_restart() -> None:
    async with trio.open_nursery() as nursery:
        n1 = await start(nursery, "n1")
        members = {"n1": n1}
        for name in ["n2", "n3", "n4"]:
            members[name] = await start(nursery, name, seeds=[n1.address])

        def all_alive(names: list[str]) -> bool:
            return all(
                state(members[a], b) is MemberState.ALIVE for a in names for b in names if a != b
            )

        await wait_until(lambda: all_alive(["n1", "n2", "n3", "n4"]), timeout_s=10)

        members["n2"].driver.update_metadata(b"role=api")
        # Gossip carries it in a few 50 ms rounds; a member the epidemic happens to miss
        # gets it from the next push-pull (7.5 s at this pace), hence the generous bound.
        await wait_until(
            lambda: all(
                (m := members[o].driver.member("n2")) is not None and m.meta == b"role=api"
                for o in ["n1", "n3", "n4"]
            ),
            timeout_s=20,
        )

        await members["n3"].driver.leave()
        await wait_until(
            lambda: all(state(members[o], "n3") is MemberState.LEFT for o in ["n1", "n2", "n4"]),
            timeout_s=5,
        )

        n4_port = members["n4"].driver.local_address[1]
        members["n4"].scope.cancel()  # a crash: no leave
        await members["n4"].stopped.wait()
        await wait_until(
            lambda: all(state(members[o], "n4") is MemberState.DEAD for o in ["n1", "n2"]),
            timeout_s=30,
        )
        members["n4"] = await start(
            nursery, "n4", port=n4_port, seeds=[n1.address, members["n2"].address], generation=1
        )
        await wait_until(lambda: all_alive(["n1", "n2", "n4"]), timeout_s=10)
        # The recorders read their subscriptions in tasks of their own: let them catch up.
        await wait_until(
            lambda: all(
                [e.kind for e in members[o].events if e.name == "n4"][-1:]
                == [EventKind.ALIVE_AGAIN]
                for o in ["n1", "n2"]
            ),
            timeout_s=5,
        )

        for observer in ["n1", "n2"]:
            events = members[observer].events
            kinds = {name: [e.kind for e in events if e.name == name] for name in members}
            assert EventKind.LEFT in kinds["n3"]
            assert EventKind.DEAD not in kinds["n3"]  # left, never dead
            assert kinds["n4"][-1] is EventKind.ALIVE_AGAIN
            survivors = {"n1", "n2"} - {observer}
            assert all(EventKind.DEAD not in kinds[s] for s in survivors)  # no false death
        assert all(dict(members[n].driver.statistics().drops) == {} for n in ["n1", "n2", "n4"])
        nursery.cancel_scope.cancel()


@pytest.mark.slow
async def test_a_member_behind_a_udp_firewall_stays_alive_through_tcp_pings() -> None:
    """Real sockets: every datagram to and from n2 is dropped, TCP passes. The others'
    fallback pings reach n2 over TCP and are answered on the connection, so n2 is never
    suspected, and n2 keeps the others alive the same way."""
    firewall = Firewall()
    async with trio.open_nursery() as nursery:
        n1 = await start(nursery, "n1", firewall=firewall)
        members = {"n1": n1}
        for name in ["n2", "n3"]:
            members[name] = await start(nursery, name, seeds=[n1.address], firewall=firewall)
        names = list(members)
        await wait_until(
            lambda: all(
                state(members[a], b) is MemberState.ALIVE for a in names for b in names if a != b
            ),
            timeout_s=10,
        )
        n2 = members["n2"]
        firewall.blocked.add(n2.driver.local_address)
        # Twenty probe periods: without the fallback, n2 would be suspect within one and
        # dead within the suspicion timeout (1.5 s at this pace, well inside the wait).
        await trio.sleep(20 * FAST.probe_interval_ticks * FAST.tick_ms / 1000)
        for a in names:
            for b in names:
                if a != b:
                    assert state(members[a], b) is MemberState.ALIVE, (a, b)
        udp = n2.driver.datagrams
        assert isinstance(udp, FirewalledUdp)
        assert udp.dropped > 0  # the firewall was in the way
        assert n2.driver.counters["stream_pings_answered"] > 0
        assert members["n1"].driver.counters["stream_pings_answered"] > 0  # n2 probed n1
        for observer in ["n1", "n3"]:
            kinds = [e.kind for e in members[observer].events if e.name == "n2"]
            assert EventKind.SUSPECT not in kinds
        nursery.cancel_scope.cancel()


def _fake_members(count: int) -> tuple[Update, ...]:
    """``count`` members with the largest metadata, at addresses nobody holds (TEST-NET)."""
    return tuple(
        Update(
            kind=UpdateKind.ALIVE,
            node=f"far-{i:03d}",
            incarnation=1,
            address=f"192.0.2.{i % 250 + 1}:{4200 + i}",
            meta=bytes([65 + i % 26]) * MAX_META_BYTES,
        )
        for i in range(count)
    )


async def test_push_pull_of_a_state_larger_than_a_datagram_goes_over_tcp() -> None:
    """150 members with 512-byte metadata: about 85 kB of state, past the 65,000 bytes of
    the datagram codec, answered in one TCP frame to a joining member."""
    fakes = _fake_members(150)
    state_bytes: list[int] = []

    def learn_the_fakes(core: SwimCore) -> None:
        core.step("far-000", PushPull(join=False, members=fakes))
        core.ready()  # its answer would go to an address nobody holds
        reply = PushPullReply(members=tuple(m.as_update(core.name) for m in core.members()))
        state_bytes.append(len(encode(reply, cluster_id="prism", sender_id=core.name)))

    async with trio.open_nursery() as nursery:
        server = await start(nursery, "big", prepare=learn_the_fakes)
        assert len(server.driver.members()) == 151
        assert state_bytes[0] > MAX_DATAGRAM_BYTES
        joiner = await start(nursery, "joiner", seeds=[server.address])
        await wait_until(lambda: not joiner.driver.core.is_joining, timeout_s=5)
        known = {m.name: m for m in joiner.driver.members()}
        assert set(known) == {"big", "joiner"} | {u.node for u in fakes}
        assert all(known[u.node].meta == u.meta for u in fakes)
        assert server.driver.counters["push_pulls_answered"] >= 1
        assert dict(joiner.driver.statistics().drops) == {}
        nursery.cancel_scope.cancel()


def _dropped_once(driver: SwimDriver, reason: str) -> bool:
    return driver.drops[reason] == 1


async def test_oversize_and_garbage_tcp_frames_are_counted_and_the_connection_closed() -> None:
    async with trio.open_nursery() as nursery:
        member = await start(nursery, "n1")
        driver = member.driver
        host, port = driver.local_address
        limit = driver.config.max_stream_bytes
        cases = [
            (FRAME_HEADER.pack(limit + 1) + b"\0" * 1000, "stream_oversize"),
            (FRAME_HEADER.pack(9) + b"not a msg", "stream_malformed"),
        ]
        for data, reason in cases:
            with trio.fail_after(5):
                stream = await trio.open_tcp_stream(host, port)
                async with stream:
                    await stream.send_all(data)
                    try:
                        closed = await stream.receive_some(100) == b""
                    except trio.BrokenResourceError:  # reset: closed with data unread
                        closed = True
                    assert closed
            await wait_until(partial(_dropped_once, driver, reason), timeout_s=5)
        assert driver.is_running
        assert driver.counters["push_pulls_answered"] == 0
        nursery.cancel_scope.cancel()
