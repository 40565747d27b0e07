"""A synchronous harness for ``SwimCore`` tests: N cores, one message queue, drop rules.

Nothing runs on its own: a test ticks the cluster and every message sent in a tick is
delivered (with what it causes) before the next tick, unless a rule drops it. Messages are
routed by *advertise* address, as a real network would: a message sent to any other
address is lost. Streams (push-pull) obey the same cuts as datagrams.
"""

from __future__ import annotations

import random
from collections import Counter, deque
from collections.abc import Callable, Iterable

from prism.swim.config import SwimConfig
from prism.swim.core import SwimCore
from prism.swim.members import MemberState
from prism.swim.messages import SwimMessage
from prism.swim.ready import MemberEvent, Note, Outbound

Wire = tuple[str, str, SwimMessage, bool]  # (src name, dst address, message, by stream)
Drop = Callable[[str, str, SwimMessage], bool]  # (src name, dst name, message) -> drop?

LAN = SwimConfig.lan()


def address_of(name: str) -> str:
    return f"{name}.prism.test:4200"


class SwimCluster:
    def __init__(
        self,
        size: int = 5,
        *,
        seed: int = 0,
        config: SwimConfig | None = None,
        names: Iterable[str] | None = None,
    ) -> None:
        self.seed = seed
        self.config = config or LAN
        self.cores: dict[str, SwimCore] = {}
        self.by_address: dict[str, str] = {}
        self.queue: deque[Wire] = deque()
        self.events: dict[str, list[MemberEvent]] = {}
        self.notes: list[tuple[str, Note]] = []
        self.down: dict[str, None] = {}  # crashed nodes (ordered set)
        self.cuts: list[tuple[str, str]] = []  # one-way cuts (src, dst)
        # one-way cuts of datagrams alone (a firewall dropping UDP): streams still pass
        self.datagram_cuts: list[tuple[str, str]] = []
        self.drop_rule: Drop | None = None
        self.delivered = 0
        self.ticks = 0  # rounds run: the shared clock the probe schedule reads
        self.sent: Counter[str] = Counter()  # messages put on the wire, by type name
        self.generation: dict[str, int] = {}
        for name in names or [f"n{i}" for i in range(1, size + 1)]:
            self.add(name)

    def __getitem__(self, name: str) -> SwimCore:
        return self.cores[name]

    @property
    def names(self) -> list[str]:
        return list(self.cores)

    def live(self) -> list[str]:
        return [n for n in self.cores if n not in self.down]

    def add(
        self,
        name: str,
        *,
        advertise: str | None = None,
        bind: str | None = None,
        config: SwimConfig | None = None,
        meta: bytes = b"",
    ) -> SwimCore:
        """Start (or restart, with fresh state) the node ``name``."""
        generation = self.generation.get(name, -1) + 1
        self.generation[name] = generation
        advertise = advertise or address_of(name)
        core = SwimCore(
            name,
            bind_address=bind or advertise,
            advertise_address=advertise,
            meta=meta,
            config=config or self.config,
            rng=random.Random(f"{self.seed}/{name}/{generation}"),
            clock_offset=self.ticks,  # a core counts from 0; the cluster's clock has run on
        )
        self.cores[name] = core
        self.by_address[advertise] = name
        self.events.setdefault(name, [])
        self.down.pop(name, None)
        return core

    # ------------------------------------------------------------------ faults

    def crash(self, name: str) -> None:
        self.down[name] = None

    def cut(self, a: str, b: str) -> None:
        """Cut both directions between ``a`` and ``b``."""
        self.cuts += [(a, b), (b, a)]

    def cut_one_way(self, src: str, dst: str) -> None:
        self.cuts.append((src, dst))

    def partition(self, left: Iterable[str], right: Iterable[str]) -> None:
        right = list(right)
        for a in left:
            for b in right:
                self.cut(a, b)

    def heal(self) -> None:
        self.cuts.clear()

    def connected(self, src: str, dst: str) -> bool:
        return src not in self.down and dst not in self.down and (src, dst) not in self.cuts

    # ------------------------------------------------------------------ running

    def collect(self, name: str) -> None:
        core = self.cores[name]
        while core.has_ready():
            ready = core.ready()
            self.events[name].extend(ready.events)
            self.notes.extend((name, note) for note in ready.notes)
            self.send(name, ready.packets)
            self.send(name, ready.streams, stream=True)

    def send(self, src: str, outbound: Iterable[Outbound], *, stream: bool = False) -> None:
        for out in outbound:
            self.sent[("stream " if stream else "") + type(out.message).__name__] += 1
            self.queue.append((src, out.to, out.message, stream))

    def deliver_all(self) -> None:
        while self.queue:
            src, address, msg, stream = self.queue.popleft()
            dst = self.by_address.get(address)
            if dst is None or self.cores[dst].advertise_address != address:
                continue  # nobody listens there
            if not self.connected(src, dst):
                continue
            if not stream and (src, dst) in self.datagram_cuts:
                continue
            if self.drop_rule is not None and self.drop_rule(src, dst, msg):
                continue
            self.cores[dst].step(src, msg, stream=stream)
            self.collect(dst)
            self.delivered += 1
            if self.delivered > 10_000_000:
                raise AssertionError("the cluster never goes quiet")

    def tick(self, n: int = 1) -> None:
        """``n`` rounds of: tick every live node once, then deliver until quiet."""
        for _ in range(n):
            self.ticks += 1
            for name in self.live():
                self.cores[name].tick()
                self.collect(name)
            self.deliver_all()

    def join(self, name: str, seeds: Iterable[str]) -> None:
        self.cores[name].join([address_of(s) if "." not in s else s for s in seeds])
        self.collect(name)
        self.deliver_all()

    def join_all(self, seed: str | None = None) -> None:
        seed = seed or self.names[0]
        for name in self.names:
            self.join(name, [seed])

    def run_until(self, predicate: Callable[[], bool], *, limit: int) -> int:
        """Tick until ``predicate()`` holds; returns the ticks taken (fails at ``limit``)."""
        for ticks in range(limit + 1):
            if predicate():
                return ticks
            self.tick()
        raise AssertionError(f"condition not reached within {limit} ticks")

    # ------------------------------------------------------------------ views

    def state(self, observer: str, subject: str) -> MemberState | None:
        member = self.cores[observer].member(subject)
        return None if member is None else member.state

    def everyone_sees(self, subject: str, state: MemberState | None) -> bool:
        return all(
            self.state(observer, subject) is state
            for observer in self.live()
            if observer != subject
        )

    def all_alive(self) -> bool:
        live = self.live()
        return all(self.state(a, b) is MemberState.ALIVE for a in live for b in live)
