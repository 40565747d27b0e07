"""Unit tests of the SWIM core's parts: suspicion arithmetic, the broadcast queue, local
health, probe order, messages and configuration."""

from __future__ import annotations

import dataclasses
import math
import random

import msgpack
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from prism.errors import ConfigError
from prism.swim.broadcast import BroadcastQueue, retransmit_limit
from prism.swim.config import SwimConfig
from prism.swim.health import Awareness
from prism.swim.messages import (
    MAX_META_BYTES,
    MAX_UPDATE_BYTES,
    Gossip,
    Ping,
    PingReq,
    Update,
    UpdateKind,
    estimate_size,
)
from prism.swim.probe import ProbeOrder
from prism.swim.suspicion import Suspicion, remaining_suspicion_ticks, suspicion_bounds

# ---------------------------------------------------------------------- suspicion


def _naive_timeout(c: int, k: int, lo: int, hi: int) -> float:
    """Lifeguard §IV, LHA-suspicion, written as in the paper."""
    if k < 1:
        return lo
    return max(lo, hi - (hi - lo) * math.log(c + 1) / math.log(k + 1))


@given(
    c=st.integers(0, 50),
    k=st.integers(0, 10),
    lo=st.integers(1, 1000),
    extra=st.integers(0, 5000),
)
@example(c=1, k=3, lo=1, extra=202)  # exactly 203 - 202 * 1/2 = 102
def test_suspicion_timeout_matches_the_lifeguard_formula(
    c: int, k: int, lo: int, extra: int
) -> None:
    """Lifeguard §IV: max(Min, Max - (Max - Min) log(C + 1) / log(K + 1)). The two sides
    round the logs' quotient at different steps, so where the exact value is a whole number
    one may land a hair below it: the floor may then differ by that one tick, and no more."""
    hi = lo + extra
    got = remaining_suspicion_ticks(c, k=k, min_ticks=lo, max_ticks=hi)
    naive = _naive_timeout(c, k, lo, hi)
    assert max(lo, math.floor(naive - 1e-9)) <= got <= max(lo, math.floor(naive + 1e-9))
    assert lo <= got <= hi
    if (c, k, lo, hi) == (1, 3, 1, 203):
        assert got == 102


def test_suspicion_timeout_shrinks_with_confirmations_to_the_minimum() -> None:
    """Starts at max, shrinks monotonically, reaches min at k confirmations."""
    lo, hi, k = 40, 240, 2
    values = [remaining_suspicion_ticks(c, k=k, min_ticks=lo, max_ticks=hi) for c in range(5)]
    assert values[0] == hi
    assert values == sorted(values, reverse=True)
    assert values[1] < hi
    assert values[2] == lo
    assert values[4] == lo


def test_suspicion_bounds_follow_memberlist() -> None:
    """min = mult * max(1, log10 n) * interval; max = 6 min; k = mult - 2 (0 if n - 2 < k)."""
    bounds = {
        n: suspicion_bounds(
            members=n, suspicion_mult=4, max_timeout_mult=6, probe_interval_ticks=10
        )
        for n in (1, 3, 10, 100, 1000)
    }
    assert bounds[10] == (40, 240, 2)
    assert bounds[100] == (80, 480, 2)
    assert bounds[1000] == (120, 720, 2)
    assert bounds[3] == (40, 240, 0)  # nobody could confirm: min at once
    assert bounds[1][2] == 0


def test_suspicion_counts_only_distinct_independent_origins() -> None:
    s = Suspicion(start_tick=100, min_ticks=40, max_ticks=240, k=2)
    assert not s.confirm("a")  # the accusation itself
    assert s.deadline() == 340
    assert s.confirm("b")
    assert not s.confirm("b")  # the same origin again is not independent
    assert s.confirm("c")
    assert s.confirmations == 2
    assert s.deadline() == 140
    assert not s.confirm("d")  # past k: the timer is at its minimum, nothing to pass on
    assert s.confirmations == 2


# ---------------------------------------------------------------------- broadcast queue


def _alive(node: str, inc: int = 0, meta: bytes = b"") -> Update:
    return Update(kind=UpdateKind.ALIVE, node=node, incarnation=inc, address=f"{node}:1", meta=meta)


def test_retransmit_limit_is_mult_times_ceil_log10() -> None:
    assert [retransmit_limit(4, n) for n in (1, 5, 9, 10, 99, 100, 1000)] == [
        4,
        4,
        4,
        8,
        8,
        12,
        16,
    ]


def test_broadcast_drops_an_update_after_its_retransmit_limit() -> None:
    q = BroadcastQueue()
    q.queue(_alive("a"))
    sent = [q.get(10_000, limit=3) for _ in range(5)]
    assert [len(batch) for batch in sent] == [1, 1, 1, 0, 0]
    assert len(q) == 0


def test_broadcast_sends_least_sent_then_newest_first() -> None:
    q = BroadcastQueue()
    q.queue(_alive("a"))
    q.queue(_alive("b"))
    assert [u.node for u in q.get(10_000, limit=9)] == ["b", "a"]
    q.queue(_alive("c"))  # never sent: goes before both
    assert [u.node for u in q.pending()] == ["c", "b", "a"]


def test_broadcast_new_update_invalidates_the_old_one_about_the_same_member() -> None:
    q = BroadcastQueue()
    q.queue(Update(kind=UpdateKind.SUSPECT, node="a", incarnation=1, origin="x"))
    q.get(10_000, limit=9)
    q.queue(_alive("a", inc=2))
    pending = q.pending()
    assert len(pending) == 1
    assert pending[0].kind is UpdateKind.ALIVE
    assert q.get(10_000, limit=1) == [pending[0]]


def test_broadcast_never_sends_a_member_what_it_is_known_to_hold() -> None:
    """Not back to where it came from, not twice to one member; and dropped, before its
    transmit limit, once as many members as there are others hold it."""
    q = BroadcastQueue()
    q.queue(_alive("a"), source="x")
    q.queue(_alive("b"))
    assert [u.node for u in q.get(10_000, limit=9, to="x", others=3)] == ["b"]
    assert [u.node for u in q.get(10_000, limit=9, to="y", others=3)] == ["a", "b"]
    assert q.get(10_000, limit=9, to="y", others=3) == []
    assert [u.node for u in q.get(10_000, limit=9, to="z", others=3)] == ["a", "b"]
    # a: held by x, y and z, all 3 others; b: sent to x, y and z
    assert q.pending() == []


def test_broadcast_with_no_one_left_to_tell_drops_the_update() -> None:
    """A member whose every peer is gone still gossips to the recently dead (so they can
    refute); what they already hold is dropped rather than kept for nobody."""
    q = BroadcastQueue()
    q.queue(_alive("a"), source="x")
    assert q.get(10_000, limit=9, to="x", others=0) == []
    assert q.pending() == []


def test_broadcast_packing_skips_what_does_not_fit_and_takes_smaller_ones() -> None:
    q = BroadcastQueue()
    q.queue(_alive("small1"))
    q.queue(_alive("big", meta=b"x" * 500))
    q.queue(_alive("small2"))
    taken = q.get(200, limit=9)
    assert [u.node for u in taken] == ["small2", "small1"]
    assert q.pending()[0].node == "big"  # still least sent


updates_strategy = st.lists(
    st.builds(
        _alive,
        st.text(alphabet="abcdefgh", min_size=1, max_size=12),
        st.integers(0, 2**40),
        st.binary(max_size=MAX_META_BYTES),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(updates=updates_strategy, rounds=st.integers(1, 6), limit=st.integers(1, 5))
def test_broadcast_packs_under_the_datagram_budget(
    updates: list[Update], rounds: int, limit: int
) -> None:
    """Every datagram stays under 1,400 bytes, counting real msgpack bytes; nothing is
    sent more than ``limit`` times; one update per member is kept."""
    budget = SwimConfig.lan().max_datagram_bytes - SwimConfig.lan().envelope_overhead_bytes
    q = BroadcastQueue()
    for u in updates:
        q.queue(u)
    assert len(q) == len({u.node for u in updates})
    sends: dict[str, int] = {}
    for _ in range(rounds):
        base = estimate_size(Gossip(updates=()))
        taken = q.get(budget - base, limit=limit)
        message = Gossip(updates=tuple(taken))
        assert estimate_size(message) <= budget
        envelope = [1, "c" * 64, "s" * 64, 36, _fields(message)]
        assert len(msgpack.packb(envelope, use_bin_type=True)) <= 1400
        for u in taken:
            sends[u.node] = sends.get(u.node, 0) + 1
        if q.pending() and not taken:
            raise AssertionError("an update that fits on its own was not sent")
    assert all(count <= limit for count in sends.values())


def _fields(value: object) -> object:
    """The wire codec's form of a message: dataclasses as arrays of their fields."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [_fields(getattr(value, f.name)) for f in dataclasses.fields(value)]
    if isinstance(value, tuple):
        return [_fields(v) for v in value]
    if isinstance(value, UpdateKind):
        return int(value)
    return value


@given(
    node=st.text(min_size=1, max_size=16),
    inc=st.integers(0, 2**63 - 1),
    meta=st.binary(max_size=MAX_META_BYTES),
)
def test_size_estimate_is_an_upper_bound_of_msgpack(node: str, inc: int, meta: bytes) -> None:
    if len(node.encode()) > 64:
        return
    u = Update(
        kind=UpdateKind.ALIVE, node=node, incarnation=inc, address="10.0.0.1:4200", meta=meta
    )
    dead = Update(kind=UpdateKind.DEAD, node=node, incarnation=inc, origin=node, suspected_ms=inc)
    ping = Ping(seq=inc, target=node, reply_to="10.0.0.2:4200", updates=(u, dead))
    for value in (u, dead, ping):
        assert len(msgpack.packb(_fields(value), use_bin_type=True)) <= estimate_size(value)
    assert estimate_size(u) <= MAX_UPDATE_BYTES


# ---------------------------------------------------------------------- local health


def test_awareness_saturates_and_scales_timeouts() -> None:
    """Lifeguard §IV: score in 0..S-1; timeouts x (score + 1)."""
    a = Awareness(8)
    a.apply(-1)
    assert a.score == 0
    for _ in range(20):
        a.apply(1)
    assert a.score == 7
    assert a.scale(10) == 80
    a.apply(-3)
    assert a.scale(5) == 25


# ---------------------------------------------------------------------- probe order


def test_probe_order_visits_each_member_once_per_pass_and_reshuffles() -> None:
    """SWIM §4.3: round-robin over a shuffled list; every member once per pass."""
    order = ProbeOrder(random.Random(7))
    names = [f"m{i}" for i in range(10)]
    for name in names:
        order.add(name)
    passes = [[order.next(lambda _: True) for _ in names] for _ in range(4)]
    for p in passes:
        assert sorted(p) == names  # type: ignore[type-var]
    assert len({tuple(p) for p in passes}) > 1  # reshuffled between passes
    assert order.next(lambda name: name == "m3") == "m3"
    assert order.next(lambda _: False) is None


# ---------------------------------------------------------------------- messages


@pytest.mark.parametrize(
    "build",
    [
        lambda: Update(kind=UpdateKind.ALIVE, node="a", incarnation=0, address=""),
        lambda: Update(kind=UpdateKind.ALIVE, node="a", incarnation=0, address="nohost"),
        lambda: Update(kind=UpdateKind.ALIVE, node="a", incarnation=0, address="h:0"),
        lambda: Update(kind=UpdateKind.ALIVE, node="a", incarnation=0, address="h:70000"),
        lambda: Update(kind=UpdateKind.ALIVE, node="", incarnation=0, address="h:1"),
        lambda: Update(kind=UpdateKind.ALIVE, node="a", incarnation=-1, address="h:1"),
        lambda: Update(
            kind=UpdateKind.ALIVE, node="a", incarnation=0, address="h:1", meta=b"x" * 513
        ),
        lambda: Update(kind=UpdateKind.SUSPECT, node="a", incarnation=0),  # no origin
        lambda: Update(kind=UpdateKind.ALIVE, node="n" * 65, incarnation=0, address="h:1"),
        lambda: Update(kind=3, node="a", incarnation=0),  # type: ignore[arg-type]
        lambda: Ping(seq=0, target="a", reply_to="h:1", updates=("x",)),  # type: ignore[arg-type]
        lambda: Ping(seq=True, target="a", reply_to="h:1"),
        lambda: PingReq(seq=0, target="a", target_address="bad", reply_to="h:1"),
    ],
)
def test_messages_cannot_be_built_invalid(build: object) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        build()  # type: ignore[operator]


def test_metadata_of_512_bytes_is_the_limit() -> None:
    update = Update(kind=UpdateKind.ALIVE, node="a", incarnation=0, address="h:1", meta=b"x" * 512)
    assert len(update.meta) == 512  # accepted whole (513 is refused above)


# ---------------------------------------------------------------------- configuration


@pytest.mark.parametrize("profile", [SwimConfig.lan, SwimConfig.wan, SwimConfig.local])
def test_profiles_are_valid(profile: object) -> None:
    config = profile()  # type: ignore[operator]
    assert config.problems() == []
    config.validate()


def test_config_lists_every_problem() -> None:
    bad = dataclasses.replace(
        SwimConfig.lan(),
        probe_timeout_ticks=10,
        nack_timeout_ticks=0,
        max_metadata_bytes=600,
        max_datagram_bytes=900,
    )
    problems = bad.problems()
    assert len(problems) >= 4
    with pytest.raises(ConfigError):
        bad.validate()
