"""The simulated network: per directed link latency, loss, duplication and reordering, and
the faults that cut links (partitions, one-way cuts, bridges, isolation).

A cut is checked when a message is sent and again when it would arrive, so a partition takes
effect at once, in-flight messages included. Each directed link draws from its own random
stream (``net/src->dst``).
"""

from __future__ import annotations

import enum
import math
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import final

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


_UNIFORM = LatencyKind.UNIFORM
_LONG_TAIL = LatencyKind.LONG_TAIL

Deliver = Callable[[str, str, object], None]
Filter = Callable[[str, str, object], bool]


@final
class Network:
    def __init__(self, loop: EventLoop, nodes: Sequence[str], *, seed: int, link: LinkSpec) -> None:
        self._loop = loop
        self.nodes = list(nodes)
        self._links: dict[tuple[str, str], LinkSpec] = {}
        self._rngs: dict[tuple[str, str], random.Random] = {}
        for src in self.nodes:
            for dst in self.nodes:
                if src != dst:
                    self._links[src, dst] = link
                    self._rngs[src, dst] = derive(seed, f"net/{src}->{dst}")
        self._cut: set[tuple[str, str]] = set()  # only tested for membership
        self.filters: list[Filter] = []  # scenario hooks: return True to drop a message
        # Counted in plain attributes (the hot path); ``stats`` gathers them.
        self._sent = self._delivered = self._duplicated = 0
        self._dropped_cut = self._dropped_filter = self._dropped_loss = 0

    # ---- faults
    def set_link(self, src: str, dst: str, spec: LinkSpec) -> None:
        self._links[src, dst] = spec

    def set_all_links(self, spec: LinkSpec) -> None:
        for key in self._links:
            self._links[key] = spec

    def cut(self, src: str, dst: str) -> None:
        """Messages from ``src`` to ``dst`` are lost (one way)."""
        self._cut.add((src, dst))

    def heal_link(self, src: str, dst: str) -> None:
        self._cut.discard((src, dst))

    def partition(self, groups: Sequence[Sequence[str]]) -> None:
        """Cut every link between different groups, both ways; nodes in no group are
        isolated. Replaces any earlier cut."""
        group_of = {node: i for i, group in enumerate(groups) for node in group}
        self._cut = {
            (a, b)
            for (a, b) in self._links
            if group_of.get(a, -1 - self.nodes.index(a))
            != group_of.get(b, -1 - self.nodes.index(b))
        }

    def isolate(self, node: str) -> None:
        for other in self.nodes:
            if other != node:
                self.cut(node, other)
                self.cut(other, node)

    def heal(self) -> None:
        self._cut = set()

    def is_cut(self, src: str, dst: str) -> bool:
        return (src, dst) in self._cut

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
        }
        return Counter({key: count for key, count in counts.items() if count})

    def send(self, src: str, dst: str, message: object, deliver: Deliver) -> None:
        self._sent += 1
        link = (src, dst)
        if link in self._cut:
            self._dropped_cut += 1
            return
        if self.filters and any(f(src, dst, message) for f in self.filters):
            self._dropped_filter += 1
            return
        spec = self._links[link]
        rng = self._rngs[link]
        if spec.loss and rng.random() < spec.loss:
            self._dropped_loss += 1
            return
        arrive = partial(self._arrive, src, dst, message, deliver)
        if spec.duplicate and rng.random() < spec.duplicate:
            self._duplicated += 1
            self._loop.call_later(spec.draw_delay_ns(rng), arrive)
        self._loop.call_later(spec.draw_delay_ns(rng), arrive)

    def _arrive(self, src: str, dst: str, message: object, deliver: Deliver) -> None:
        if (src, dst) in self._cut:
            self._dropped_cut += 1
            return
        self._delivered += 1
        deliver(src, dst, message)
