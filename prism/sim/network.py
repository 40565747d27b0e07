"""The simulated network: per directed link latency, loss, duplication and reordering, and
the faults that cut links (partitions, one-way cuts, bridges, isolation).

A cut is checked when a message is sent and again when it would arrive, so a partition takes
effect at once, in-flight messages included. Each directed link draws from its own random
stream (``net/src->dst``), derived by that name the first time the link carries a message;
with ``streams="sender"`` each *sender* has one stream (``net/src``) for all its links, which
is what a 1,000-member SWIM run can afford (a ``random.Random`` per used link would take
gigabytes). Link specs are stored only where they differ from the default, and a partition
is kept as a group per node, so nothing here grows with the square of the cluster size.

Datagrams (``send``) may be lost, duplicated and reordered as their link says. Streams
(``send_stream``, SWIM's push-pull and fallback probe over TCP) are reliable and in order
but cut like datagrams: a connection costs three one-way delays (handshake, then the data)
and its answer one more, and on a lossy link each of those segments may be lost and sent
again after TCP's retransmission timeout (1 s for the handshake, 200 ms for data, doubling
each time, as Linux does), so loss makes a stream late rather than lost.
"""

from __future__ import annotations

import enum
import math
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal, final

from prism.sim.loop import NS_PER_MS, EventLoop
from prism.sim.rng import derive


class LatencyKind(enum.StrEnum):
    FIXED = "fixed"
    UNIFORM = "uniform"
    LONG_TAIL = "long-tail"  # a base plus a Pareto tail: most fast, a few very slow


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkSpec:
    """How one directed link behaves. Probabilities are fractions (0.1 is 10%)."""

    latency_ms: float = 1.0
    jitter_ms: float = 0.5
    kind: LatencyKind = LatencyKind.UNIFORM
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0  # chance that a message is held back up to 10 latencies

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate", "reorder"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        if self.latency_ms < 0 or self.jitter_ms < 0:
            raise ValueError("latency and jitter must not be negative")

    def draw_delay_ns(self, rng: random.Random) -> int:
        # ``rng.uniform(0.0, b)`` computes ``0.0 + (b - 0.0) * rng.random()``, which is
        # exactly ``b * rng.random()``: the same draw, without a Python-level call.
        base = self.latency_ms
        kind = self.kind
        if kind is _UNIFORM:
            delay = base + self.jitter_ms * rng.random()
        elif kind is _LONG_TAIL:
            # Pareto with shape 2: median about 1.4x the base, 1% beyond 10x.
            delay = base * rng.paretovariate(2.0)
        else:
            delay = base
        if self.reorder and rng.random() < self.reorder:
            delay += 10.0 * max(base, 0.1) * rng.random()
        return max(1, math.ceil(delay * NS_PER_MS))


SYN_RTO_NS = 1_000 * NS_PER_MS
"""Linux's initial retransmission timeout, which a lost SYN or SYN-ACK waits out."""
DATA_RTO_NS = 200 * NS_PER_MS
"""Linux's minimum retransmission timeout (``TCP_RTO_MIN``), for a lost data segment."""
STREAM_RETRIES = 6
"""Retransmissions before a connection gives up (``tcp_syn_retries``'s default)."""

_UNIFORM = LatencyKind.UNIFORM
_LONG_TAIL = LatencyKind.LONG_TAIL

Deliver = Callable[[str, str, object], None]
Filter = Callable[[str, str, object], bool]


StreamMode = Literal["link", "sender"]


@final
class Network:
    def __init__(
        self,
        loop: EventLoop,
        nodes: Sequence[str],
        *,
        seed: int,
        link: LinkSpec,
        streams: StreamMode = "link",
    ) -> None:
        self._loop = loop
        self._seed = seed
        self.nodes = list(nodes)
        self._index = {node: i for i, node in enumerate(self.nodes)}
        self._default = link
        self._links: dict[tuple[str, str], LinkSpec] = {}  # only links unlike the default
        self._per_sender = streams == "sender"
        self._rngs: dict[object, random.Random] = {}  # by link, or by sender: made on first use
        self._cut: set[tuple[str, str]] = set()  # one-way cuts; only tested for membership
        # A partition: each node's group (None: no partition). Links between groups are cut
        # unless healed one by one since (``_bridged``).
        self._group_of: dict[str, int] | None = None
        self._bridged: set[tuple[str, str]] = set()
        self.filters: list[Filter] = []  # scenario hooks: return True to drop a message
        # Counted in plain attributes (the hot path); ``stats`` gathers them.
        self._sent = self._delivered = self._duplicated = 0
        self._dropped_cut = self._dropped_filter = self._dropped_loss = 0
        self._streams_sent = self._streams_delivered = self._streams_dropped = 0

    # ---- faults
    def link(self, src: str, dst: str) -> LinkSpec:
        """How the link from ``src`` to ``dst`` behaves now."""
        return self._links.get((src, dst), self._default)

    def set_link(self, src: str, dst: str, spec: LinkSpec) -> None:
        self._links[src, dst] = spec

    def set_all_links(self, spec: LinkSpec) -> None:
        self._default = spec
        self._links.clear()

    def cut(self, src: str, dst: str) -> None:
        """Messages from ``src`` to ``dst`` are lost (one way)."""
        self._cut.add((src, dst))

    def heal_link(self, src: str, dst: str) -> None:
        self._cut.discard((src, dst))
        if self._split(src, dst):
            self._bridged.add((src, dst))

    def partition(self, groups: Sequence[Sequence[str]]) -> None:
        """Cut every link between different groups, both ways; nodes in no group are
        isolated. Replaces any earlier cut."""
        group_of = {node: i for i, group in enumerate(groups) for node in group}
        index = self._index
        self._group_of = {node: group_of.get(node, -1 - index[node]) for node in self.nodes}
        self._cut = set()
        self._bridged = set()

    def isolate(self, node: str) -> None:
        for other in self.nodes:
            if other != node:
                self.cut(node, other)
                self.cut(other, node)

    def heal(self) -> None:
        self._cut = set()
        self._group_of = None
        self._bridged = set()

    def is_cut(self, src: str, dst: str) -> bool:
        return (src, dst) in self._cut or self._split(src, dst)

    def _split(self, src: str, dst: str) -> bool:
        """True when a partition separates ``src`` from ``dst`` (and no heal bridged them)."""
        group_of = self._group_of
        if group_of is None:
            return False
        a, b = group_of.get(src), group_of.get(dst)
        return a is not None and b is not None and a != b and (src, dst) not in self._bridged

    def _rng(self, src: str, dst: str) -> random.Random:
        key: object = src if self._per_sender else (src, dst)
        rng = self._rngs.get(key)
        if rng is None:
            label = f"net/{src}" if self._per_sender else f"net/{src}->{dst}"
            rng = self._rngs[key] = derive(self._seed, label)
        return rng

    # ---- traffic
    @property
    def stats(self) -> Counter[str]:
        """Message counts by outcome; an outcome that never happened is absent."""
        counts = {
            "sent": self._sent,
            "delivered": self._delivered,
            "dropped_cut": self._dropped_cut,
            "dropped_filter": self._dropped_filter,
            "dropped_loss": self._dropped_loss,
            "duplicated": self._duplicated,
            "streams_sent": self._streams_sent,
            "streams_delivered": self._streams_delivered,
            "streams_dropped": self._streams_dropped,
        }
        return Counter({key: count for key, count in counts.items() if count})

    def send(self, src: str, dst: str, message: object, deliver: Deliver) -> None:
        self._sent += 1
        link = (src, dst)
        if link in self._cut or (self._group_of is not None and self._split(src, dst)):
            self._dropped_cut += 1
            return
        if self.filters and any(f(src, dst, message) for f in self.filters):
            self._dropped_filter += 1
            return
        spec = self._links.get(link, self._default)
        rng = self._rngs.get(src if self._per_sender else link) or self._rng(src, dst)
        if spec.loss and rng.random() < spec.loss:
            self._dropped_loss += 1
            return
        arrive = partial(self._arrive, src, dst, message, deliver)
        if spec.duplicate and rng.random() < spec.duplicate:
            self._duplicated += 1
            self._loop.call_later(spec.draw_delay_ns(rng), arrive)
        self._loop.call_later(spec.draw_delay_ns(rng), arrive)

    def _arrive(self, src: str, dst: str, message: object, deliver: Deliver) -> None:
        if (src, dst) in self._cut or (self._group_of is not None and self._split(src, dst)):
            self._dropped_cut += 1
            return
        self._delivered += 1
        deliver(src, dst, message)

    def send_stream(
        self, src: str, dst: str, message: object, deliver: Deliver, *, answer: bool = False
    ) -> None:
        """Carry ``message`` over a stream (TCP): never lost or duplicated, but it takes
        three one-way delays (handshake, then the data) and a cut stops it, at either end.
        An ``answer`` goes back on the connection its question came in on: one one-way
        delay (the data alone)."""
        self._streams_sent += 1
        if self.is_cut(src, dst) or self.is_cut(dst, src):  # the handshake goes both ways
            self._streams_dropped += 1
            return
        if self.filters and any(f(src, dst, message) for f in self.filters):
            self._streams_dropped += 1
            return
        spec = self._links.get((src, dst), self._default)
        back = self._links.get((dst, src), self._default)
        rng = self._rng(src, dst)
        # The one-way delays first, then each segment's retransmissions (in that order:
        # the random draws, and so every digest, depend on it).
        segments: tuple[tuple[float, int], ...]  # (loss, retransmission timeout) each
        if answer:  # the data alone, on the connection its question opened
            delay = spec.draw_delay_ns(rng)
            segments = ((spec.loss, DATA_RTO_NS),)
        else:  # SYN, SYN-ACK, then the data
            delay = 2 * spec.draw_delay_ns(rng) + back.draw_delay_ns(rng)
            segments = ((spec.loss, SYN_RTO_NS), (back.loss, SYN_RTO_NS), (spec.loss, DATA_RTO_NS))
        if any(loss for loss, _ in segments):
            waits = [_retransmit_wait_ns(rng, loss, rto_ns) for loss, rto_ns in segments]
            if None in waits:
                self._streams_dropped += 1  # every retransmission lost: the connection failed
                return
            delay += sum(wait for wait in waits if wait is not None)
        self._loop.call_later(delay, partial(self._arrive_stream, src, dst, message, deliver))

    def _arrive_stream(self, src: str, dst: str, message: object, deliver: Deliver) -> None:
        if self.is_cut(src, dst) or self.is_cut(dst, src):
            self._streams_dropped += 1  # the connection broke on the way
            return
        self._streams_delivered += 1
        deliver(src, dst, message)


def _retransmit_wait_ns(rng: random.Random, loss: float, rto_ns: int) -> int | None:
    """How long one TCP segment waits in retransmissions on a link that loses ``loss`` of
    its packets (0 when the first copy arrives); None when all ``STREAM_RETRIES`` are lost."""
    waited = 0
    for _ in range(STREAM_RETRIES + 1):
        if rng.random() >= loss:
            return waited
        waited += rto_ns
        rto_ns *= 2
    return None
