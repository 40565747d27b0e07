"""The simulated network at SWIM's scale: links made on first use, partitions kept as
groups, streams. The cut rules are checked against the eager pair-set model the network
used before (so Raft runs are unchanged; ``test_determinism`` checks their digests)."""

from __future__ import annotations

import random
from itertools import permutations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prism.sim.loop import NS_PER_MS, NS_PER_S, EventLoop
from prism.sim.network import LinkSpec, Network

NODES = [f"n{i}" for i in range(1, 7)]


class EagerCuts:
    """The cut model as it was: a set of every cut directed pair."""

    def __init__(self, nodes: list[str]) -> None:
        self.nodes = nodes
        self.cut: set[tuple[str, str]] = set()

    def partition(self, groups: list[list[str]]) -> None:
        group_of = {node: i for i, group in enumerate(groups) for node in group}
        self.cut = {
            (a, b)
            for a, b in permutations(self.nodes, 2)
            if group_of.get(a, -1 - self.nodes.index(a))
            != group_of.get(b, -1 - self.nodes.index(b))
        }


ops = st.lists(
    st.one_of(
        st.tuples(st.just("partition"), st.lists(st.sampled_from(NODES), max_size=6)),
        st.tuples(st.just("cut"), st.sampled_from(NODES), st.sampled_from(NODES)),
        st.tuples(st.just("heal_link"), st.sampled_from(NODES), st.sampled_from(NODES)),
        st.tuples(st.just("isolate"), st.sampled_from(NODES)),
        st.tuples(st.just("heal")),
    ),
    max_size=25,
)


@pytest.mark.slow
@settings(max_examples=150)
@given(ops)
def test_cuts_match_the_eager_pair_set(operations: list[tuple[object, ...]]) -> None:
    net = Network(EventLoop(random.Random(1)), NODES, seed=1, link=LinkSpec())
    eager = EagerCuts(NODES)
    for op in operations:
        if op[0] == "partition":
            chosen = [str(n) for n in op[1]]  # type: ignore[attr-defined]
            left = sorted(set(chosen))
            right = [n for n in NODES if n not in left][:3]
            groups = [left, right]
            net.partition(groups)
            eager.partition(groups)
        elif op[0] == "cut":
            net.cut(str(op[1]), str(op[2]))
            eager.cut.add((str(op[1]), str(op[2])))
        elif op[0] == "heal_link":
            net.heal_link(str(op[1]), str(op[2]))
            eager.cut.discard((str(op[1]), str(op[2])))
        elif op[0] == "isolate":
            net.isolate(str(op[1]))
            eager.cut |= {(str(op[1]), o) for o in NODES if o != op[1]}
            eager.cut |= {(o, str(op[1])) for o in NODES if o != op[1]}
        else:
            net.heal()
            eager.cut = set()
        for a, b in permutations(NODES, 2):
            assert net.is_cut(a, b) == ((a, b) in eager.cut), (op, a, b)


def test_links_and_streams_are_made_on_first_use() -> None:
    loop = EventLoop(random.Random(1))
    names = [f"n{i}" for i in range(1000)]
    per_link = Network(loop, names, seed=3, link=LinkSpec())
    per_sender = Network(loop, names, seed=3, link=LinkSpec(), streams="sender")
    for net in (per_link, per_sender):
        assert not net._rngs  # nothing built up front: a million pairs would not fit
        for dst in names[1:50]:
            net.send("n0", dst, "hello", lambda *_: None)
        net.send("n7", "n0", "hello", lambda *_: None)
    assert len(per_link._rngs) == 50
    assert len(per_sender._rngs) == 2
    assert per_link.link("n1", "n2") == LinkSpec()


def test_a_link_stream_is_the_same_whenever_it_is_made() -> None:
    """Streams are derived by name: making them lazily draws what making them all up
    front drew (which is why Raft runs keep their digests)."""

    def delays(order: list[str]) -> list[int]:
        loop = EventLoop(random.Random(1))
        net = Network(loop, NODES, seed=9, link=LinkSpec(loss=0.2))
        arrived: list[int] = []
        for src in order:
            for _ in range(20):
                net.send(src, "n1", src, lambda *_: arrived.append(loop.now_ns))
        loop.run_until(10**12)
        return sorted(arrived)

    assert delays(["n2", "n3"]) == delays(["n3", "n2"])


def test_streams_are_reliable_slower_than_a_datagram_and_stopped_by_cuts() -> None:
    loop = EventLoop(random.Random(1))
    net = Network(loop, NODES, seed=2, link=LinkSpec(latency_ms=10, jitter_ms=0))
    got: list[tuple[int, object]] = []
    for i in range(20):
        net.send_stream("n1", "n2", i, lambda _s, _d, m: got.append((loop.now_ns, m)))
    loop.run_until(10**10)
    assert sorted(m for _, m in got) == list(range(20))  # type: ignore[type-var]
    assert all(at == 30 * NS_PER_MS for at, _ in got)  # handshake and data: 3 one-way delays
    net.cut("n2", "n1")  # one way only: the handshake needs both
    net.send_stream("n1", "n2", "x", lambda *_: got.append((0, "x")))
    loop.run_until(2 * 10**10)
    assert len(got) == 20
    assert net.stats["streams_dropped"] == 1


def test_an_answer_goes_back_on_its_connection_in_one_one_way_delay() -> None:
    loop = EventLoop(random.Random(1))
    net = Network(loop, NODES, seed=2, link=LinkSpec(latency_ms=10, jitter_ms=0))
    got: list[int] = []
    net.send_stream("n2", "n1", "answer", lambda *_: got.append(loop.now_ns), answer=True)
    loop.run_until(10**10)
    assert got == [10 * NS_PER_MS]  # no handshake: the connection is open
    net.cut("n2", "n1")
    net.send_stream("n2", "n1", "late", lambda *_: got.append(0), answer=True)
    loop.run_until(2 * 10**10)
    assert got == [10 * NS_PER_MS]
    assert net.stats["streams_dropped"] == 1


def test_loss_delays_a_stream_by_tcp_retransmissions_instead_of_losing_it() -> None:
    loop = EventLoop(random.Random(1))
    net = Network(loop, NODES, seed=2, link=LinkSpec(latency_ms=10, jitter_ms=0, loss=0.3))
    delays: list[int] = []
    for i in range(200):
        net.send_stream("n1", "n2", i, lambda *_: delays.append(loop.now_ns))
    loop.run_until(10**12)
    assert len(delays) == 200  # 0.3 ** 7 per segment: a failed connection is rarer than 1e-3
    waits = [at - 30 * NS_PER_MS for at in delays]
    assert min(waits) == 0
    # Every wait is made of retransmission timeouts: 1 s, 2 s... for the handshake's two
    # segments, 200 ms, 400 ms... for the data; so a multiple of 200 ms, often a whole second.
    assert all(wait % (200 * NS_PER_MS) == 0 for wait in waits)
    assert sum(wait >= NS_PER_S for wait in waits) > 200 * 0.3
    assert sum(wait in (200 * NS_PER_MS, 600 * NS_PER_MS) for wait in waits) > 0


def test_a_connection_whose_every_retransmission_is_lost_fails() -> None:
    loop = EventLoop(random.Random(1))
    net = Network(loop, NODES, seed=2, link=LinkSpec(loss=1.0))
    net.send_stream("n1", "n2", "x", lambda *_: pytest.fail("delivered over a dead link"))
    loop.run_until(10**12)
    assert net.stats["streams_dropped"] == 1
