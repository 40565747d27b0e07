"""The coordinated probe schedule (``prism.swim.schedule``): the ring alone, then cores on it."""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from prism.swim.members import MemberState
from prism.swim.messages import Ping, SwimMessage
from prism.swim.schedule import ProbeRing, phase_of, ring_key

from .cluster import LAN, SwimCluster

PERIOD = LAN.probe_interval_ticks
NAMES = [f"node-{i}" for i in range(12)]


def ring_of(names: list[str]) -> ProbeRing:
    ring = ProbeRing()
    for name in names:
        ring.add(name)
    return ring


# ---------------------------------------------------------------------- the ring


@given(st.permutations(NAMES))
def test_every_member_builds_the_same_ring_whatever_order_it_learns_names_in(
    order: list[str],
) -> None:
    ring = ring_of(order)
    assert ring.names() == ring_of(NAMES).names()
    assert ring.names() == sorted(NAMES, key=lambda name: (ring_key(name), name))
    ring.add(order[0])  # already there: no change
    assert len(ring) == len(NAMES)


def test_the_ring_order_is_random_not_the_names_order() -> None:
    names = [f"n{i:03}" for i in range(100)]
    assert ring_of(names).names() != names


@given(st.integers(min_value=2, max_value=40), st.integers(min_value=0, max_value=10**12))
def test_each_period_every_member_is_probed_by_exactly_one_other(n: int, period: int) -> None:
    names = [f"m{i}" for i in range(n)]
    ring = ring_of(names)
    slots = [ring.slot(name, period, PERIOD) for name in names]
    targets = [slot[1] for slot in slots if slot is not None]
    assert sorted(targets) == sorted(names)  # a permutation...
    assert all(target != name for name, target in zip(names, targets, strict=True))  # ...of others


@given(st.integers(min_value=2, max_value=30), st.integers(min_value=0, max_value=10**9))
def test_over_n_minus_1_periods_each_member_probes_every_other_once(n: int, start: int) -> None:
    names = [f"m{i}" for i in range(n)]
    ring = ring_of(names)
    for name in names:
        seen = []
        for period in range(start, start + n - 1):
            slot = ring.slot(name, period, PERIOD)
            assert slot is not None
            seen.append(slot[1])
        assert sorted(seen) == sorted(other for other in names if other != name)


def test_phases_rise_along_the_ring_and_spread_over_the_period() -> None:
    """Phases follow ring order (so consecutive probes of one target are at most a period
    apart), stay put as members join and leave, and share the period out about evenly."""
    names = [f"m{i}" for i in range(1000)]
    ring = ring_of(names)
    phases = [phase_of(name, PERIOD) for name in ring.names()]
    assert phases == sorted(phases)
    per_tick = Counter(phases)
    assert set(per_tick) == set(range(PERIOD))
    assert all(60 <= count <= 140 for count in per_tick.values())  # 100 expected per tick
    before = ring.slot("m7", 3, PERIOD)
    for name in names[500:]:
        ring.remove(name)
    after = ring.slot("m7", 3, PERIOD)
    assert before is not None
    assert after is not None
    assert after[0] == before[0]


def test_a_member_alone_or_outside_the_ring_has_no_slot() -> None:
    ring = ring_of(["a"])
    assert ring.slot("a", 3, PERIOD) is None
    ring.add("b")
    assert ring.slot("c", 3, PERIOD) is None
    assert ring.slot("a", 3, PERIOD) == (phase_of("a", PERIOD), "b")
    ring.remove("b")
    ring.remove("b")  # not there: no change
    assert "b" not in ring
    assert ring.slot("a", 3, PERIOD) is None


# ---------------------------------------------------------------------- cores on the schedule


def record_pings(cluster: SwimCluster) -> list[tuple[int, str, str]]:
    """Every direct ping from now on, as (period of the shared clock, prober, target)."""
    pings: list[tuple[int, str, str]] = []

    def observe(src: str, dst: str, msg: SwimMessage) -> bool:
        if isinstance(msg, Ping) and msg.target == dst:
            pings.append((cluster.ticks // PERIOD, src, dst))
        return False  # drop nothing

    cluster.drop_rule = observe
    return pings


def joined(size: int, *, seed: int = 1) -> SwimCluster:
    cluster = SwimCluster(size, seed=seed)
    cluster.join_all()
    cluster.run_until(cluster.all_alive, limit=10 * PERIOD)
    cluster.tick(3 * PERIOD)
    return cluster


def test_every_member_is_probed_exactly_once_each_period() -> None:
    cluster = joined(9)
    pings = record_pings(cluster)
    periods = 3 * 8
    start = cluster.ticks // PERIOD + 1
    cluster.tick((start + periods) * PERIOD - cluster.ticks)
    for period in range(start, start + periods):
        probed = Counter(target for p, _, target in pings if p == period)
        assert probed == Counter(cluster.names), period
    by_prober: dict[str, list[str]] = {name: [] for name in cluster.names}
    for _, prober, target in pings:
        by_prober[prober].append(target)
    for prober, targets in by_prober.items():
        round_robin = targets[:8]  # the first 8 periods: every other member, once
        assert sorted(round_robin) == sorted(n for n in cluster.names if n != prober)


def test_a_crashed_member_is_suspected_within_two_periods() -> None:
    """Probed within one period of the crash (its prober of the next slot), and judged when
    that probe's period ends. Under SWIM's random order the wait is unbounded."""
    for crash_tick in range(PERIOD):
        cluster = joined(10, seed=crash_tick)
        cluster.tick(crash_tick)
        cluster.crash("n4")
        waited = cluster.run_until(
            lambda c=cluster: any(c.state(o, "n4") is MemberState.SUSPECT for o in c.live()),
            limit=4 * PERIOD,
        )
        assert waited <= 2 * PERIOD + 1, (crash_tick, waited)


def test_a_member_with_poor_health_probes_in_fewer_periods() -> None:
    """Lifeguard: with a local health score of s a member takes one slot in s + 1 periods;
    each successful probe lowers the score, so the gaps shrink back to one period."""
    cluster = joined(6)
    pings = record_pings(cluster)
    cluster["n2"]._health.score = 3
    cluster.tick(14 * PERIOD)
    periods = [period for period, prober, _ in pings if prober == "n2"]
    gaps = [b - a for a, b in itertools.pairwise(periods)]
    # The probe in flight succeeds first (score 2), so the first slot taken skips to the
    # third period on, the next to the second, and so on.
    assert gaps[:4] == [3, 2, 1, 1]


def test_a_restarted_member_keeps_to_the_shared_clock() -> None:
    """A new core counts ticks from 0; the offset it is given puts it back on the shared
    period numbers, so the once-per-period rule holds after a restart."""
    cluster = joined(7, seed=4)
    cluster.crash("n3")
    cluster.tick(5)
    cluster.add("n3")
    cluster.join("n3", ["n1"])
    cluster.run_until(cluster.all_alive, limit=20 * PERIOD)
    cluster.tick(3 * PERIOD)
    pings = record_pings(cluster)
    start = cluster.ticks // PERIOD + 1
    cluster.tick((start + 10) * PERIOD - cluster.ticks)
    for period in range(start, start + 10):
        assert Counter(t for p, _, t in pings if p == period) == Counter(cluster.names), period


def test_a_corrected_clock_moves_the_slot_but_keeps_the_spacing() -> None:
    """A clock correction moves the member's slot at once, but two probes are never less
    than a period apart, and a clock set back does not stop the probing."""
    cluster = joined(5, seed=6)
    ticks: list[int] = []

    def observe(src: str, dst: str, msg: SwimMessage) -> bool:
        if src == "n1" and isinstance(msg, Ping) and msg.target == dst:
            ticks.append(cluster.ticks)
        return False

    cluster.drop_rule = observe
    core = cluster["n1"]
    core.set_clock_offset(PERIOD // 2)  # the shared clock was half a period ahead
    cluster.tick(6 * PERIOD)
    core.set_clock_offset(-3 * PERIOD)  # and then three periods behind
    cluster.tick(6 * PERIOD)
    assert len(ticks) >= 9  # it kept probing through both corrections
    # Never two probes less than a period apart: a slot that came round while a probe ran
    # is skipped, and the next is on time again.
    assert min(b - a for a, b in itertools.pairwise(ticks)) >= PERIOD


def test_random_order_still_available() -> None:
    """``coordinated_probes=False``: SWIM's randomized round robin, as memberlist does."""
    config = dataclasses.replace(LAN, coordinated_probes=False)
    cluster = SwimCluster(6, seed=2, config=config)
    cluster.join_all()
    cluster.run_until(cluster.all_alive, limit=10 * PERIOD)
    pings = record_pings(cluster)
    cluster.tick(20 * PERIOD)
    per_period = Counter(p for p, _, _ in pings)
    assert sum(per_period.values()) >= 6 * 19  # one probe per member per period
    probed = [Counter(t for p, _, t in pings if p == period) for period in per_period]
    assert any(len(c) < 6 for c in probed)  # some member went unprobed in some period


def test_the_shared_clock_does_not_move_a_random_order_probe() -> None:
    config = dataclasses.replace(LAN, coordinated_probes=False)
    cluster = SwimCluster(3, seed=5, config=config)
    cluster.join_all()
    cluster.tick(2 * PERIOD + 3)
    core = cluster["n1"]
    due = core.next_work_tick()
    core.set_clock_offset(1234)
    assert core.next_work_tick() == due
