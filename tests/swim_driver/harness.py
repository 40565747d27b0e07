"""Helpers for SWIM driver tests: members on an in-memory network (datagrams and streams),
each in its own cancel scope so that a test can crash (cancel) and restart any of them.

Nothing sleeps on the wall clock: tests run under trio's ``MockClock`` (autojump) and poll
conditions with a deadline (``wait_until``).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field

import trio

from prism.raft.transport import parse_address
from prism.swim.config import SwimConfig
from prism.swim.core import SwimCore
from prism.swim.driver import SwimDriver, SwimDriverConfig
from prism.swim.members import Member as SwimMember
from prism.swim.members import MemberState
from prism.swim.ready import MemberEvent
from prism.swim.subscriptions import Subscription
from prism.swim.transport import MemorySwimNetwork
from tests.driver.harness import wait_until as wait_until

LOCAL = SwimConfig.local()


@dataclass
class Member:
    name: str
    driver: SwimDriver
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    stopped: trio.Event = field(default_factory=trio.Event)
    events: list[MemberEvent] = field(default_factory=list)


class MemCluster:
    """Members ``n1..nN`` at ``10.0.0.i:4200`` on one ``MemorySwimNetwork``."""

    def __init__(
        self,
        nursery: trio.Nursery,
        size: int = 4,
        *,
        seed: int = 0,
        config: SwimConfig = LOCAL,
        driver_config: SwimDriverConfig | None = None,
    ) -> None:
        self.nursery = nursery
        self.names = [f"n{i}" for i in range(1, size + 1)]
        self.seed = seed
        self.config = config
        self.driver_config = driver_config or SwimDriverConfig.local()
        self.network = MemorySwimNetwork()
        self.addresses = {name: f"10.0.0.{i}:4200" for i, name in enumerate(self.names, 1)}
        self.members: dict[str, Member] = {}
        self.generation: dict[str, int] = {}
        self.notes: list[tuple[str, str]] = []  # (member, note event), as they came

    def __getitem__(self, name: str) -> SwimDriver:
        return self.members[name].driver

    async def start(self, name: str, *, meta: bytes = b"", seeds: Iterable[str] = ()) -> SwimDriver:
        """Start (or restart, with a fresh core) ``name``, joining through ``seeds``
        (member names; none: this member alone)."""
        generation = self.generation.get(name, -1) + 1
        self.generation[name] = generation
        address = self.addresses[name]
        core = SwimCore(
            name,
            bind_address=address,
            meta=meta,
            config=self.config,
            rng=random.Random(f"{self.seed}/{name}/{generation}"),
        )
        datagrams, streams = self.network.open(parse_address(address))
        driver = SwimDriver(
            core,
            datagrams,
            streams,
            config=self.driver_config,
            on_note=lambda note: self.notes.append((name, note.event)),
            wall_clock=trio.current_time,  # the probe schedule on the MockClock: deterministic
        )
        member = Member(name, driver)
        self.members[name] = member
        await self.nursery.start(self._run, member)
        driver.join_nowait([self.addresses[s] for s in seeds] or [address])
        return driver

    async def start_all(self) -> None:
        first = self.names[0]
        await self.start(first)
        for name in self.names[1:]:
            await self.start(name, seeds=[first])

    async def _run(self, member: Member, *, task_status: trio.TaskStatus[None]) -> None:
        try:
            with member.scope:
                async with trio.open_nursery() as nursery:
                    subscription = member.driver.subscribe(buffer=10_000)
                    nursery.start_soon(self._record, subscription, member.events)
                    await member.driver.run(task_status=task_status)
        finally:
            member.stopped.set()

    @staticmethod
    async def _record(subscription: Subscription, into: list[MemberEvent]) -> None:
        with subscription:
            async for event in subscription:
                into.append(event)  # noqa: PERF401 (recorded as they arrive)

    async def crash(self, name: str) -> None:
        """Cancel the member's scope (to the others, a crash) and wait until it stopped."""
        member = self.members[name]
        member.scope.cancel()
        await member.stopped.wait()

    def running(self) -> list[str]:
        return [n for n, m in self.members.items() if not m.stopped.is_set()]

    def state(self, observer: str, subject: str) -> MemberState | None:
        member = self[observer].member(subject)
        return None if member is None else member.state

    def view(self, observer: str, subject: str) -> SwimMember:
        """What ``observer`` holds about ``subject`` (which it must know)."""
        member = self[observer].member(subject)
        assert member is not None, f"{observer} does not know {subject}"
        return member

    def everyone_sees(self, subject: str, state: MemberState) -> bool:
        return all(
            self.state(observer, subject) is state
            for observer in self.running()
            if observer != subject
        )

    def all_alive(self) -> bool:
        live = self.running()
        return all(self.state(a, b) is MemberState.ALIVE for a in live for b in live)

    async def wait_all_alive(self, *, timeout_s: float = 30.0) -> None:
        await wait_until(self.all_alive, timeout_s=timeout_s)
