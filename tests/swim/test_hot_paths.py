"""The SWIM core's hot paths, each against a naive version of the same rule (etcd's
``quorum/quick_test.go`` style): the optimisations that make a 1,000-member simulation
practical must not change what the protocol does.

* ``estimate_size`` of an ``Update`` (a formula) against the generic field walk;
* ``BroadcastQueue`` (tiers kept in order) against "sort everything, then pack greedily";
* ``MemberTable`` state counts against counting the table;
* ``SwimCore.tick_until`` (tick elision) against calling ``tick()`` every tick.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prism.swim.broadcast import PASS_OVER_LIMIT, BroadcastQueue
from prism.swim.config import SwimConfig
from prism.swim.core import SwimCore
from prism.swim.members import Member, MemberState, MemberTable
from prism.swim.messages import (
    MAX_META_BYTES,
    MIN_UPDATE_BYTES,
    Ack,
    Gossip,
    Ping,
    PingReq,
    SwimMessage,
    Update,
    UpdateKind,
    estimate_size,
)
from prism.swim.ready import Ready


def naive_size(value: object) -> int:
    """The generic walk ``estimate_size`` did before it had a formula for ``Update``."""
    if isinstance(value, bool):
        return 1
    if isinstance(value, int):
        return 9
    if isinstance(value, str):
        return 5 + len(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, bytes):
        return 5 + len(value)
    if isinstance(value, tuple):
        return 5 + sum(naive_size(item) for item in value)
    assert dataclasses.is_dataclass(value)
    assert not isinstance(value, type)
    return 5 + sum(naive_size(getattr(value, f.name)) for f in dataclasses.fields(value))


names = st.text(min_size=1, max_size=20)
updates = st.builds(
    Update,
    kind=st.sampled_from(UpdateKind),
    node=names,
    incarnation=st.integers(min_value=0, max_value=2**40),
    address=st.just("h\u00e9te:4200") | st.just("n1:4200"),
    meta=st.binary(max_size=MAX_META_BYTES),
    origin=names,
)


@given(updates)
def test_update_size_formula_matches_the_generic_walk(update: Update) -> None:
    # The formula knows that a kind and a zero suspected_ms cost 1 byte each; the walk
    # counts 9 for every int.
    tighter = 8 + (0 if update.suspected_ms else 8)
    assert estimate_size(update) == naive_size(update) - tighter
    assert estimate_size(update) >= MIN_UPDATE_BYTES
    message = Gossip(updates=(update, update))
    assert estimate_size(message) == naive_size(message) - 2 * tighter


class NaiveQueue:
    """The broadcast queue as first written: sort every item for every datagram."""

    def __init__(self) -> None:
        self.items: dict[str, list[object]] = {}  # node -> [update, id, transmits]
        self.next_id = 0

    def queue(self, update: Update) -> None:
        self.next_id += 1
        self.items.pop(update.node, None)
        self.items[update.node] = [update, self.next_id, 0]

    def ordered(self) -> list[list[object]]:
        return sorted(self.items.values(), key=lambda q: (q[2], -q[1]))  # type: ignore[operator]

    def get(self, budget: int, *, limit: int, skip: str = "") -> list[Update]:
        taken: list[Update] = []
        room = budget
        too_big = 0
        for item in self.ordered():
            update = item[0]
            assert isinstance(update, Update)
            cost = estimate_size(update)
            if cost > room:
                too_big += 1
                if too_big == PASS_OVER_LIMIT:
                    break  # deemed full
                continue
            if skip and update.node == skip:
                continue
            room -= cost
            taken.append(update)
            item[2] = int(item[2]) + 1  # type: ignore[call-overload]
            if item[2] >= limit:  # type: ignore[operator]
                del self.items[update.node]
        return taken

    def pending(self) -> list[Update]:
        return [item[0] for item in self.ordered()]  # type: ignore[misc]


@dataclasses.dataclass(frozen=True)
class QueueOp:
    node: str
    kind: UpdateKind
    incarnation: int
    meta_bytes: int

    def update(self) -> Update:
        kind, node = self.kind, self.node
        return Update(
            kind=kind,
            node=node,
            incarnation=self.incarnation,
            address=f"{node}:1" if kind is UpdateKind.ALIVE else "",
            meta=b"m" * self.meta_bytes,
            origin="x" if kind in (UpdateKind.SUSPECT, UpdateKind.DEAD) else "",
        )


@dataclasses.dataclass(frozen=True)
class GetOp:
    budget: int
    limit: int
    skip: str


operations = st.lists(
    st.one_of(
        st.builds(
            QueueOp,
            node=st.sampled_from("abcdefghij"),
            kind=st.sampled_from(UpdateKind),
            incarnation=st.integers(0, 3),
            meta_bytes=st.integers(0, 120),
        ),
        st.builds(
            GetOp,
            budget=st.integers(0, 900),
            limit=st.integers(1, 6),
            skip=st.sampled_from(["", "a", "c"]),
        ),
    ),
    max_size=80,
)


@pytest.mark.slow
@settings(max_examples=200)
@given(operations)
def test_broadcast_queue_matches_sorting_everything(ops: list[QueueOp | GetOp]) -> None:
    fast, slow = BroadcastQueue(), NaiveQueue()
    for op in ops:
        if isinstance(op, QueueOp):
            fast.queue(op.update())
            slow.queue(op.update())
        else:
            got = fast.get(op.budget, limit=op.limit, skip=op.skip)
            assert got == slow.get(op.budget, limit=op.limit, skip=op.skip)
        assert fast.pending() == slow.pending()
        assert len(fast) == len(slow.items)


@settings(max_examples=100)
@given(st.lists(st.tuples(st.sampled_from("abcdef"), st.sampled_from(MemberState)), max_size=60))
def test_member_table_counts_match_counting(changes: list[tuple[str, MemberState]]) -> None:
    table = MemberTable()
    rng = random.Random(len(changes))
    for name, state in changes:
        member = table.get(name)
        roll = rng.random()
        if member is None:
            table.add(Member(name, f"{name}:1", 0, b"", state, 0))
        elif roll < 0.15:
            table.remove(name)
        else:
            table.set_state(member, state, 1)
        counted = Counter(m.state for m in table.all())
        for each in MemberState:
            assert table.count(each) == counted[each]
        live = counted[MemberState.ALIVE] + counted[MemberState.SUSPECT]
        assert table.live_count() == live


def _feed(core: SwimCore, rng: random.Random, tick: int, out: list[SwimMessage]) -> None:
    """A plausible input at ``tick``: answer some of the core's pings, gossip news."""
    for message in out:
        if isinstance(message, Ping) and rng.random() < 0.7:
            core.step(message.target, Ack(seq=message.seq, target=message.target))
    roll = rng.random()
    peer = f"p{rng.randrange(1, 8)}"
    if roll < 0.3:
        incarnation = rng.randrange(0, 4)
        kind = rng.choice([UpdateKind.ALIVE, UpdateKind.SUSPECT, UpdateKind.DEAD])
        update = Update(
            kind=kind,
            node=peer,
            incarnation=incarnation,
            address=f"{peer}:1" if kind is UpdateKind.ALIVE else "",
            origin=f"p{rng.randrange(1, 8)}" if kind is not UpdateKind.ALIVE else "",
        )
        core.step(f"p{rng.randrange(1, 8)}", Gossip(updates=(update,)))
    elif roll < 0.4:
        core.step(peer, PingReq(seq=tick, target="p3", target_address="p3:1", reply_to=f"{peer}:1"))
    elif roll < 0.45:
        core.step(peer, Ping(seq=tick, target="me", reply_to=f"{peer}:1"))


def _drain(core: SwimCore) -> tuple[Ready, list[SwimMessage]]:
    ready = core.ready()
    return ready, [out.message for out in ready.packets]


def test_tick_until_is_ticking_every_tick() -> None:
    """Tick elision: sleeping until ``next_work_tick`` and catching up with ``tick_until``
    gives the same outputs, in the same order, as ticking every tick, whatever arrives
    in between (the simulator's digest test checks the same for whole clusters)."""
    config = dataclasses.replace(SwimConfig.lan(), dead_reap_ticks=200, left_reap_ticks=150)
    for seed in range(6):
        every = SwimCore("me", bind_address="me:1", config=config, rng=random.Random(seed))
        lazy = SwimCore("me", bind_address="me:1", config=config, rng=random.Random(seed))
        inputs_every, inputs_lazy = random.Random(seed + 100), random.Random(seed + 100)
        every.join(["p1:1"])
        lazy.join(["p1:1"])
        arrivals = sorted(random.Random(seed).sample(range(1, 1500), 300))
        pending_every: list[SwimMessage] = []
        pending_lazy: list[SwimMessage] = []
        for at in arrivals:
            while every.now < at:
                every.tick()
            due = lazy.next_work_tick()
            assert due is None or due > lazy.now
            lazy.tick_until(at)
            ready_every, out_every = _drain(every)
            ready_lazy, out_lazy = _drain(lazy)
            assert ready_every == ready_lazy, f"seed {seed}, tick {at}"
            pending_every += out_every
            pending_lazy += out_lazy
            _feed(every, inputs_every, at, pending_every)
            _feed(lazy, inputs_lazy, at, pending_lazy)
            pending_every, pending_lazy = [], []
            assert _drain(every)[0] == _drain(lazy)[0]
            assert every.statistics() == lazy.statistics()
        assert every.members() == lazy.members()
