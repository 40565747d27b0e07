"""Bad input from peers is a counted drop or a protocol reaction, never an exception."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from prism.swim.core import SwimCore
from prism.swim.members import MemberState
from prism.swim.messages import (
    Ack,
    Gossip,
    JoinRefused,
    Nack,
    Ping,
    PingReq,
    PushPull,
    PushPullReply,
    SwimMessage,
    Update,
    UpdateKind,
)

from .cluster import LAN, SwimCluster, address_of

NAMES = ["n1", "n2", "n3", "n4", "stranger"]
names = st.sampled_from(NAMES)
addresses = st.sampled_from([address_of(n) for n in NAMES] + ["10.9.9.9:1"])
small_ints = st.integers(0, 5) | st.integers(0, 2**63 - 1)


@st.composite
def updates(draw: st.DrawFn) -> Update:
    kind = draw(st.sampled_from(list(UpdateKind)))
    return Update(
        kind=kind,
        node=draw(names),
        incarnation=draw(small_ints),
        address=draw(addresses) if kind is UpdateKind.ALIVE else draw(st.just("") | addresses),
        meta=draw(st.binary(max_size=600).filter(lambda b: len(b) <= 512)),
        origin=draw(names)
        if kind in (UpdateKind.SUSPECT, UpdateKind.DEAD)
        else draw(st.just("") | names),
    )


update_tuples = st.lists(updates(), max_size=4).map(tuple)
MESSAGE_STRATEGIES: dict[type[SwimMessage], st.SearchStrategy[SwimMessage]] = {
    Ping: st.builds(Ping, seq=small_ints, target=names, reply_to=addresses, updates=update_tuples),
    Ack: st.builds(Ack, seq=small_ints, target=names, updates=update_tuples),
    PingReq: st.builds(
        PingReq,
        seq=small_ints,
        target=names,
        target_address=addresses,
        reply_to=addresses,
        updates=update_tuples,
    ),
    Nack: st.builds(Nack, seq=small_ints, target=names, updates=update_tuples),
    Gossip: st.builds(Gossip, updates=update_tuples),
    PushPull: st.builds(PushPull, join=st.booleans(), members=update_tuples),
    PushPullReply: st.builds(PushPullReply, members=update_tuples),
    JoinRefused: st.builds(JoinRefused, name=names, address=addresses, reason=st.text(max_size=20)),
}
"""One strategy per SWIM message (the wire codec's tests use them too)."""
messages: st.SearchStrategy[SwimMessage] = st.one_of(*MESSAGE_STRATEGIES.values())
inputs = st.lists(
    st.tuples(st.sampled_from([*NAMES, ""]), messages, st.integers(0, 3)), max_size=40
)


@settings(max_examples=150, deadline=None)
@given(script=inputs, seed=st.integers(0, 3))
def test_random_messages_from_random_senders_never_raise(
    script: list[tuple[str, SwimMessage, int]], seed: int
) -> None:
    cluster = SwimCluster(4, seed=seed)
    cluster.join_all()
    cluster.tick(3)
    core = cluster["n1"]
    incarnation = core.incarnation
    for src, msg, ticks in script:
        core.step(src, msg)
        for _ in range(ticks):
            core.tick()
        core.ready()
        # We never believe bad news about ourselves, and never go back in incarnation.
        me = core.member("n1")
        assert me is not None
        assert me.state is MemberState.ALIVE
        assert core.incarnation >= incarnation
        incarnation = core.incarnation
    core.statistics()


def test_news_of_our_own_death_is_refuted() -> None:
    """SWIM §4.2: a member told it is dead raises its incarnation past the claim."""
    core = SwimCore("n1", bind_address="n1:1", config=LAN, rng=random.Random(0))
    dead = Update(kind=UpdateKind.DEAD, node="n1", incarnation=3, origin="n2")
    core.step("n2", Gossip(updates=(dead,)))
    assert core.incarnation == 4
    assert core.health_score == 1  # Lifeguard: refuting is a sign we may be slow
    queued = core.pending_updates()
    assert (queued[0].kind, queued[0].node, queued[0].incarnation) == (UpdateKind.ALIVE, "n1", 4)
    # The same claim again is old news now.
    core.step("n2", Gossip(updates=(dead,)))
    assert core.incarnation == 4


def test_drops_are_counted_by_reason() -> None:
    core = SwimCore("n1", bind_address="n1:1", config=LAN, rng=random.Random(0))
    core.step(
        "n2",
        Gossip(updates=(Update(kind=UpdateKind.SUSPECT, node="x", incarnation=0, origin="n2"),)),
    )
    core.step("n1", Gossip(updates=()))
    core.step("n2", Ping(seq=1, target="someone-else", reply_to="n2:1"))
    core.step("n2", Ack(seq=99, target="n3"))
    core.step("n2", Nack(seq=99, target="n3"))
    core.step("n2", PushPull(join=False, members=()))
    core.step("n2", JoinRefused(name="n1", address="n9:1", reason="no"))
    drops = dict(core.statistics().drops)
    assert drops == {
        "unknown_member": 1,
        "from_self": 1,
        "ping_for_other_node": 1,
        "unexpected_ack": 1,
        "unexpected_nack": 1,
        "push_pull_without_sender": 1,
        "unexpected_join_refused": 1,
    }
    assert not core.ready().packets  # none of it was answered
