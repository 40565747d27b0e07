"""A member that hears an accusation it has already refuted answers it again.

Found by the simulator (``swim-partition``, seed 1, 10 members): after the heal, one member
held a suspicion (from a push-pull merge) of a member that had refuted it at once; the
refutation's gossip happened to miss it, its probes of the suspect were all acked (an ack
is no refutation), and the buddy-system ping that carried the stale suspicion was ignored
by the suspect ("old news"), so when the maximum timeout ran out a live member was
declared dead.
"""

from __future__ import annotations

import random

from prism.swim.core import SwimCore
from prism.swim.members import MemberState
from prism.swim.messages import Ack, Gossip, Ping, Update, UpdateKind

from .cluster import LAN


def _core(name: str, *, drain: bool = True) -> SwimCore:
    """A core that knows members a, b and c (so that its gossip has somewhere to go)."""
    core = SwimCore(name, bind_address=f"{name}:1", config=LAN, rng=random.Random(3))
    peers = tuple(
        Update(kind=UpdateKind.ALIVE, node=peer, incarnation=0, address=f"{peer}:1")
        for peer in "abc"
        if peer != name
    )
    core.step(peers[0].node, Gossip(updates=peers))
    if drain:
        _drain(core)
    return core


def _drain(core: SwimCore) -> None:
    """Tick until every queued update has been sent its fill."""
    for _ in range(200):
        core.tick()
        core.ready()


def test_a_stale_suspicion_in_a_ping_is_answered_with_the_current_alive() -> None:
    """Lifeguard's buddy system, closed: the ack to the suspecting prober carries the
    refutation first."""
    me = _core("b")
    accusation = Update(kind=UpdateKind.SUSPECT, node="b", incarnation=0, origin="c")
    me.step("c", Gossip(updates=(accusation,)))  # refuted: incarnation 1
    assert me.incarnation == 1
    _drain(me)  # the refutation's gossip runs its course
    assert not me.pending_updates()
    me.step("a", Ping(seq=7, target="b", reply_to="a:1", updates=(accusation,)))
    (ack,) = [out.message for out in me.ready().packets if isinstance(out.message, Ack)]
    assert ack.updates[0] == Update(kind=UpdateKind.ALIVE, node="b", incarnation=1, address="b:1")
    assert me.incarnation == 1  # old news: no new refutation, just the current truth


def test_the_prober_drops_its_suspicion_on_that_ack() -> None:
    prober = _core("a", drain=False)
    stale = Update(kind=UpdateKind.SUSPECT, node="b", incarnation=0, origin="c")
    prober.step("c", Gossip(updates=(stale,)))
    assert prober.member("b").state is MemberState.SUSPECT  # type: ignore[union-attr]
    refuted = Update(kind=UpdateKind.ALIVE, node="b", incarnation=1, address="b:1")
    prober.step("b", Ack(seq=1, target="b", updates=(refuted,)))
    member = prober.member("b")
    assert member is not None
    assert (member.state, member.incarnation) == (MemberState.ALIVE, 1)


def test_a_stale_alive_about_us_is_not_answered() -> None:
    """Only accusations are worth correcting; an old ``alive`` of ours is harmless."""
    me = _core("b")
    me.update_metadata(b"v2")  # incarnation 1
    _drain(me)
    assert not me.pending_updates()
    old = Update(kind=UpdateKind.ALIVE, node="b", incarnation=0, address="b:1")
    me.step("a", Gossip(updates=(old,)))
    assert not me.pending_updates()
