"""One test per rule of Raft (Ongaro & Ousterhout 2014, "the paper") and of Ongaro's thesis
(2014, "the thesis") that ``prism.raft.core`` implements, driven through ``Cluster``."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prism.errors import NotLeader, ProposalDropped
from prism.raft.config import RaftConfig
from prism.raft.core import RaftCore, Role
from prism.raft.kv import ApplyResult, Command, KVStateMachine
from prism.raft.messages import (
    AppendEntries,
    AppendEntriesReply,
    Entry,
    EntryKind,
    HeartbeatReply,
    RaftMessage,
    RequestVote,
    RequestVoteReply,
)
from prism.raft.progress import ProgressState
from prism.raft.ready import HardState, ReadState, Ready
from prism.raft.storage import MemoryStorage
from tests.raft.cluster import Cluster, drain, entries_with_terms, put

LAN = RaftConfig.lan()
ELECTION = LAN.election_timeout_max_ticks


def _replies(c: Cluster, src: str, start: int = 0) -> list[tuple[str, RaftMessage]]:
    """What ``src`` sent from ``c.sent[start]`` on, as (destination, message)."""
    return [(dst, msg) for s, dst, msg in c.sent[start:] if s == src]


def _vote_replies(c: Cluster, src: str, start: int = 0) -> list[tuple[str, RequestVoteReply]]:
    return [
        (dst, msg)
        for dst, msg in _replies(c, src, start)
        if isinstance(msg, RequestVoteReply) and not msg.pre_vote
    ]


def _leaders(c: Cluster) -> list[str]:
    return [n for n in c.ids if n not in c.down and c[n].role is Role.LEADER]


def _lone_leader(
    terms: Sequence[int], term: int, *, size: int = 5, config: RaftConfig = LAN
) -> RaftCore:
    """Core n1 of ``size`` voters, holding a log of ``terms``, made leader of ``term`` by
    feeding it (pre-)vote grants from a bare quorum. Nothing it sends is delivered."""
    voters = [f"n{i}" for i in range(1, size + 1)]
    core = RaftCore(
        "n1",
        voters,
        config=config,
        rng=random.Random("lone"),
        hard_state=HardState(term=term - 1),
        entries=entries_with_terms(terms),
    )
    core.campaign()
    drain(core)
    quorum = voters[1 : size // 2 + 1]
    for peer in quorum:
        core.step(peer, RequestVoteReply(term=term, granted=True, pre_vote=True))
    drain(core)
    for peer in quorum:
        core.step(peer, RequestVoteReply(term=term, granted=True))
    drain(core)
    assert core.role is Role.LEADER
    assert core.term == term
    return core


# ---------------------------------------------------------------------- elections


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("size", [3, 5])
def test_election_elects_single_leader(size: int, seed: int) -> None:
    """Raft §5.2: an election ends with exactly one leader, which every server follows;
    Election Safety (Figure 3): at most one leader per term."""
    c = Cluster(size, seed=seed)
    c.tick_all(4 * ELECTION)
    leader = c.leader()
    assert leader is not None
    assert _leaders(c) == [leader]
    for node in c.ids:
        assert c[node].term == c[leader].term
        assert c[node].leader == leader
    led = [note.fields["term"] for _, note in c.notes if note.event == "raft.became_leader"]
    assert len(led) == len(set(led))
    votes: dict[tuple[str, int], set[str]] = {}
    for src, dst, msg in c.sent:
        if isinstance(msg, RequestVote) and not msg.pre_vote:
            votes.setdefault((src, msg.term), set()).add(src)
        if isinstance(msg, RequestVoteReply) and msg.granted and not msg.pre_vote:
            votes.setdefault((src, msg.term), set()).add(dst)
    assert all(len(chosen) == 1 for chosen in votes.values())


def test_single_node_cluster_elects_itself_and_commits() -> None:
    """Raft §5.2 with one voter: the node is its own majority, elects itself when its
    election timeout passes, and commits as soon as its own disk holds an entry (§5.3)."""
    c = Cluster(1)
    c.tick_all(ELECTION)
    assert c.leader() == "n1"
    assert c["n1"].term == 1
    assert c["n1"].commit == 1  # the leader's no-op
    index = c.propose("n1", put("k", "v"))
    assert c["n1"].commit == index
    assert c.applied["n1"][-1] == ApplyResult(index, True, "v")
    assert c.kv["n1"].get("k") == "v"


def test_vote_granted_at_most_once_per_term() -> None:
    """Raft §5.2 and Figure 2 (RequestVote receiver rule 2): a server votes for at most one
    candidate in a term, first come first served; the same candidate may ask again."""
    c = Cluster(3)
    request = RequestVote(term=1, last_log_index=0, last_log_term=0)
    c.step("n1", "n2", request)
    c.step("n1", "n3", request)
    c.step("n1", "n2", request)
    assert [(dst, m.granted) for dst, m in _vote_replies(c, "n1")] == [
        ("n2", True),
        ("n3", False),
        ("n2", True),
    ]
    assert c["n1"].vote == "n2"


def test_vote_survives_crash_and_restart() -> None:
    """Raft Figure 2 (persistent state: votedFor): the vote is in the persisted HardState, so a
    restarted server still refuses a second candidate of the same term."""
    c = Cluster(3)
    request = RequestVote(term=1, last_log_index=0, last_log_term=0)
    c.step("n1", "n2", request)
    c.crash("n1")
    c.restart("n1")
    assert c["n1"].hard_state() == HardState(term=1, vote="n2", commit=0)
    start = len(c.sent)
    c.step("n1", "n3", request)
    assert [(dst, m.granted) for dst, m in _vote_replies(c, "n1", start)] == [("n3", False)]
    assert c["n1"].vote == "n2"


def test_vote_refused_to_candidate_with_stale_log() -> None:
    """Raft §5.4.1 (election restriction): a vote goes only to a candidate whose log is at
    least as up to date: a higher last term wins, then a longer log."""
    c = Cluster(3)
    c.preload("n1", [1, 1, 2], HardState(term=2))
    # Longer, but its last term is older.
    c.step("n1", "n2", RequestVote(term=3, last_log_index=9, last_log_term=1))
    # Same last term, but shorter.
    c.step("n1", "n2", RequestVote(term=3, last_log_index=2, last_log_term=2))
    # As up to date as n1.
    c.step("n1", "n3", RequestVote(term=3, last_log_index=3, last_log_term=2))
    assert [(dst, m.granted) for dst, m in _vote_replies(c, "n1")] == [
        ("n2", False),
        ("n2", False),
        ("n3", True),
    ]
    assert c["n1"].hard_state() == HardState(term=3, vote="n3", commit=0)


def test_pre_vote_rejoining_node_keeps_term_and_leader() -> None:
    """Thesis §9.6 (pre-vote): a partitioned node cannot win a pre-vote, so it never raises its
    term; when it rejoins it neither raises anyone's term nor deposes the leader."""
    c = Cluster(3, seed=1)
    c.tick_all(2 * ELECTION)
    leader = c.leader()
    assert leader is not None
    term = c[leader].term
    follower = next(n for n in c.ids if n != leader)
    c.isolate(follower)
    c.tick_all(10 * ELECTION)
    assert c.noted(follower, "raft.pre_campaign"), "the isolated node never tried"
    assert c[follower].term == term
    c.heal()
    c.tick_all(3 * ELECTION)
    assert c.leader() == leader
    assert [c[n].term for n in c.ids] == [term] * 3
    assert c.noted(leader, "raft.stepped_down") == []


def test_pre_vote_disabled_rejoining_node_disrupts() -> None:
    """Thesis §9.6, the counterpart: without pre-vote the partitioned node raises its term while
    away, and its return costs the leader its leadership (what pre-vote prevents)."""
    c = Cluster(3, seed=1, config=dataclasses.replace(LAN, pre_vote=False))
    c.tick_all(2 * ELECTION)
    leader = c.leader()
    assert leader is not None
    term = c[leader].term
    follower = next(n for n in c.ids if n != leader)
    c.isolate(follower)
    c.tick_all(10 * ELECTION)
    assert c[follower].term > term
    c.heal()
    c.tick_all(3 * ELECTION)
    assert c.noted(leader, "raft.stepped_down")
    assert min(c[n].term for n in c.ids) > term


def test_check_quorum_isolated_leader_steps_down() -> None:
    """Thesis §6.2 (check-quorum): a leader that has not heard from a quorum for an election
    timeout steps down, within two election timeouts of being cut off."""
    c = Cluster(3, seed=2)
    leader = c.elect("n1")
    c.isolate(leader)
    for _ in range(2 * LAN.election_timeout_min_ticks):
        c.tick_all()
        if c[leader].role is not Role.LEADER:
            break
    assert c[leader].role is Role.FOLLOWER
    stepped = c.noted(leader, "raft.stepped_down")
    assert [note.fields["reason"] for note in stepped] == ["check_quorum"]
    c.tick_all(2 * ELECTION)
    assert c.leader() in {"n2", "n3"}


def test_leader_stickiness_ignores_higher_term_vote_request() -> None:
    """Thesis §4.2.3 (disruptive servers): a follower that heard from its leader within the
    minimum election timeout ignores a RequestVote, even of a higher term: no reply, no
    change of term."""
    c = Cluster(3)
    leader = c.elect("n1")
    term = c[leader].term
    log = c["n2"].log
    start = len(c.sent)
    c.step("n2", "n3", RequestVote(term=term + 1, last_log_index=9, last_log_term=term))
    assert _replies(c, "n2", start) == []
    assert c["n2"].term == term
    assert c["n2"].vote != "n3"
    assert c["n2"].leader == leader
    assert log.last_index == c["n2"].log.last_index


def test_leader_stickiness_off_without_check_quorum() -> None:
    """Thesis §4.2.3: stickiness comes with check-quorum; with it off, a RequestVote of a
    higher term from an up-to-date candidate is granted at once."""
    c = Cluster(3, config=dataclasses.replace(LAN, check_quorum=False))
    leader = c.elect("n1")
    term = c[leader].term
    start = len(c.sent)
    c.step("n2", "n3", RequestVote(term=term + 1, last_log_index=9, last_log_term=term))
    assert _vote_replies(c, "n2", start) == [("n3", RequestVoteReply(term=term + 1, granted=True))]
    assert c["n2"].hard_state().term == term + 1
    assert c["n2"].vote == "n3"


@pytest.mark.parametrize("pre_vote", [True, False])
def test_stranded_node_freed_by_stale_append_reply(pre_vote: bool) -> None:
    """Thesis §6.2 / etcd-io/raft TestFreeStuckCandidateWithCheckQuorum: a node stranded at a
    higher term answers the leader's lower-term messages with its term; the leader steps down
    and a leader of a term above the stranded one is elected."""
    c = Cluster(3, seed=3, config=dataclasses.replace(LAN, pre_vote=pre_vote))
    leader = c.elect("n1")
    c.tick_all(LAN.heartbeat_ticks)
    high = c[leader].term + 5
    c.crash("n3")
    c.storage["n3"].hard_state = dataclasses.replace(c.storage["n3"].hard_state, term=high)
    c.restart("n3")
    start = len(c.sent)
    c.tick_all(2 * LAN.heartbeat_ticks)
    assert ("n1", AppendEntriesReply(term=high, success=False)) in _replies(c, "n3", start)
    reasons = [note.fields["reason"] for note in c.noted(leader, "raft.stepped_down")]
    assert reasons == ["higher_term"]
    c.tick_all(4 * ELECTION)
    new = c.leader()
    assert new is not None
    assert c[new].term > high
    assert {c[n].term for n in c.ids} == {c[new].term}


# ---------------------------------------------------------------------- commitment


def test_leader_appends_noop_at_start_of_term() -> None:
    """Raft §8 (and thesis §6.4): a new leader appends a no-op entry of its own term, which
    commits (and so commits everything before it) without any client request."""
    c = Cluster(3)
    c.preload("n1", [1, 1], HardState(term=1))
    c.preload("n2", [1, 1], HardState(term=1))
    c.campaign("n1")
    c.deliver_all(drop=lambda src, dst, msg: isinstance(msg, AppendEntries))
    assert c["n1"].role is Role.LEADER
    noop = c["n1"].log.entry(c["n1"].log.last_index)
    assert (noop.index, noop.term, noop.kind) == (3, 2, EntryKind.NOOP)
    assert c["n1"].commit == 0  # the term-1 entries wait for an entry of term 2
    c.tick("n1", LAN.heartbeat_ticks)
    c.deliver_all()
    for node in c.ids:
        assert c[node].log.entry(3) == noop
        assert c[node].commit == 3
        assert c.kv[node].applied_index == 3


def test_commit_needs_quorum_of_replicas() -> None:
    """Raft §5.3: an entry is committed once the leader has replicated it on a majority."""
    core = _lone_leader([1], term=2)
    index = core.log.last_index
    core.step("n2", AppendEntriesReply(term=2, success=True, match_index=index))
    assert core.commit == 0  # n1 and n2: two of five
    core.step("n3", AppendEntriesReply(term=2, success=True, match_index=index))
    assert core.commit == index


def test_commit_only_counts_current_term_entries() -> None:
    """Raft §5.4.2 and Figure 8: a leader never commits an entry of an earlier term by
    counting replicas; it commits it only by committing an entry of its own term after it."""
    core = _lone_leader([1, 2], term=4)
    assert core.log.last_index == 3  # the no-op of term 4
    for peer in ("n2", "n3"):
        core.step(peer, AppendEntriesReply(term=4, success=True, match_index=2))
    assert core.commit == 0  # entry 2 (term 2) is on n1, n2, n3, a majority: not committed
    for peer in ("n2", "n3"):
        core.step(peer, AppendEntriesReply(term=4, success=True, match_index=3))
    assert core.commit == 3


def test_commit_unsafe_old_terms_commits_by_counting() -> None:
    """Raft Figure 8, the bug made on purpose: ``unsafe_commit_old_terms`` commits the term-2
    entry as soon as a majority holds it (proof that the test above is not vacuous)."""
    config = dataclasses.replace(LAN, unsafe_commit_old_terms=True)
    core = _lone_leader([1, 2], term=4, config=config)
    for peer in ("n2", "n3"):
        core.step(peer, AppendEntriesReply(term=4, success=True, match_index=2))
    assert core.commit == 2


def test_commit_leader_counts_own_entries_only_when_stable() -> None:
    """Raft §10.2.1: the leader may send entries before writing them to its own disk, but it
    counts itself towards a majority only once ``advance`` says they are durable."""
    c = Cluster(3)
    c.elect("n1")
    leader = c["n1"]
    index, _ = leader.propose(put("k", "v"))
    ready = leader.ready()  # handed out, not yet persisted
    c.send("n1", ready.messages)
    c.deliver_all(drop=lambda src, dst, msg: "n3" in (src, dst))
    progress = leader.progress("n2")
    assert progress is not None
    assert progress.match == index
    assert leader.commit < index  # n2 alone is not a majority without n1's own disk
    c.storage["n1"].save(ready.hard_state, ready.entries)
    leader.advance(ready)
    assert leader.commit == index
    c.run_ready("n1")
    assert c.kv["n1"].get("k") == "v"

    solo = Cluster(1)
    solo.elect("n1")
    core = solo["n1"]
    index, _ = core.propose(put("k", "v"))
    ready = core.ready()
    assert core.commit < index
    core.advance(ready)
    assert core.commit == index


# ---------------------------------------------------------------------- log replication


def _follower(terms: Sequence[int], hard_state: HardState) -> tuple[RaftCore, MemoryStorage]:
    storage = MemoryStorage()
    storage.entries = entries_with_terms(terms)
    storage.hard_state = hard_state
    core = RaftCore(
        "n2",
        ["n1", "n2", "n3"],
        config=LAN,
        rng=random.Random("follower"),
        hard_state=hard_state,
        entries=storage.entries,
    )
    return core, storage


def _append_replies(readies: Sequence[Ready]) -> list[AppendEntriesReply]:
    return [
        out.message
        for ready in readies
        for out in ready.messages_after_persist
        if isinstance(out.message, AppendEntriesReply)
    ]


def test_log_conflict_truncates_uncommitted_entries() -> None:
    """Raft §5.3 and Figure 2 (AppendEntries receiver rule 3): an existing entry that conflicts
    with a new one (same index, different term) is deleted with all that follow it, in memory
    and in storage."""
    core, storage = _follower([1, 1, 2, 2], HardState(term=2, commit=2))
    new = Entry(term=3, index=3, data=put("x", "3"))
    core.step(
        "n1",
        AppendEntries(term=3, prev_log_index=2, prev_log_term=1, entries=(new,), leader_commit=2),
    )
    readies = drain(core, storage)
    assert [e.term for e in storage.entries] == [1, 1, 3]
    assert core.log.last_index == 3
    assert core.log.entry(3) == new
    assert _append_replies(readies) == [AppendEntriesReply(term=3, success=True, match_index=3)]


def test_log_stale_append_does_not_truncate() -> None:
    """Raft §5.3, Figure 2 receiver rule 3 read exactly: only a *conflicting* entry causes a
    truncation, so a duplicated or reordered old AppendEntries leaves later entries alone."""
    log = entries_with_terms([1, 1, 1, 1])
    core, storage = _follower([1, 1, 1, 1], HardState(term=1))
    for prev, upto in ((1, 2), (0, 3), (2, 4)):
        core.step(
            "n1",
            AppendEntries(
                term=1,
                prev_log_index=prev,
                prev_log_term=1 if prev else 0,
                entries=tuple(log[prev:upto]),
                leader_commit=0,
            ),
        )
        readies = drain(core, storage)
        assert all(not ready.entries for ready in readies)
        assert _append_replies(readies) == [
            AppendEntriesReply(term=1, success=True, match_index=upto)
        ]
        assert core.log.slice(1, 10) == log
    assert storage.entries == log


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    common = 0
    while common < min(len(a), len(b)) and a[common] == b[common]:
        common += 1
    return common


def _backoff(leader_terms: Sequence[int], follower_terms: Sequence[int]) -> int:
    """n1 (log ``leader_terms``) is elected with n3's vote (a copy of its log); once n2 (log
    ``follower_terms``) has caught up, how many of n1's appends it rejected."""
    high = max([*leader_terms, *follower_terms], default=0)
    common = _common_prefix(leader_terms, follower_terms)
    c = Cluster(3)
    for node, terms in (("n1", leader_terms), ("n2", follower_terms), ("n3", leader_terms)):
        c.preload(node, terms, HardState(term=high, commit=common))
    c.elect("n1")
    assert c["n2"].log.slice(1, 10_000) == c["n1"].log.slice(1, 10_000)
    rejections = [
        msg
        for dst, msg in _replies(c, "n2")
        if dst == "n1" and isinstance(msg, AppendEntriesReply) and not msg.success
    ]
    return len(rejections)


def _divergent_terms(leader_terms: Sequence[int], follower_terms: Sequence[int]) -> int:
    """How many distinct terms the two logs hold after their longest common prefix."""
    common = _common_prefix(leader_terms, follower_terms)
    return len(set(leader_terms[common:]) | set(follower_terms[common:]))


@pytest.mark.parametrize(
    ("leader_terms", "follower_terms"),
    [
        ([1, 1, 1, 4, 4, 4, 6, 6, 6], [1, 1, 1, 2, 2, 2, 3, 3, 3, 5, 5, 5]),
        ([1, 1, 2, 2, 4, 4, 6, 6], [1, 1, 2, 3, 3, 3, 5, 5, 5, 5]),
        ([1, 1, 2, 2, 7, 7, 7], [1, 1, 3, 3, 4, 4, 5, 5, 6, 6] + [6] * 30),
        ([1, 1, 5, 5], [1, 1] + [t for t in range(2, 5) for _ in range(10)]),
        ([1, 2, 3, 4, 5, 6], [1]),
    ],
)
def test_backoff_one_rejection_per_term(leader_terms: list[int], follower_terms: list[int]) -> None:
    """Raft §5.3 (the optimization at its end) / thesis §5.3: with the conflicting term in the
    rejection, a divergent tail costs at most one rejected probe per term, not one per entry,
    and the follower ends with the leader's log."""
    rejections = _backoff(leader_terms, follower_terms)
    assert rejections <= _divergent_terms(leader_terms, follower_terms)


@st.composite
def _divergent_logs(draw: st.DrawFn) -> tuple[list[int], list[int]]:
    """Two logs with a common prefix whose tails use disjoint terms (Log Matching holds)."""
    prefix = sorted(draw(st.lists(st.integers(1, 3), max_size=4)))
    base = prefix[-1] if prefix else 1
    tail_terms = draw(st.lists(st.integers(base + 1, base + 12), unique=True, max_size=8))
    side = draw(st.lists(st.booleans(), min_size=len(tail_terms), max_size=len(tail_terms)))
    logs: tuple[list[int], list[int]] = (list(prefix), list(prefix))
    for term, to_leader in sorted(zip(tail_terms, side, strict=True)):
        logs[0 if to_leader else 1].extend([term] * draw(st.integers(1, 4)))
    return logs


@settings(max_examples=40, deadline=None)
@given(_divergent_logs())
def test_backoff_random_divergence_one_rejection_per_term(
    logs: tuple[list[int], list[int]],
) -> None:
    """Raft §5.3: the bound above, for random divergent tails."""
    leader_terms, follower_terms = logs
    rejections = _backoff(leader_terms, follower_terms)
    assert rejections <= _divergent_terms(leader_terms, follower_terms)


def test_pipeline_limits_unanswered_appends() -> None:
    """Thesis §10.2.2 (pipelining): the leader keeps sending to a replicating follower without
    waiting, but never more than ``max_inflight_appends`` unanswered appends."""
    c = Cluster(3, config=dataclasses.replace(LAN, max_inflight_appends=4))
    c.elect("n1")
    progress = c["n1"].progress("n3")
    assert progress is not None
    assert progress.state is ProgressState.REPLICATE
    start = len(c.sent)
    for i in range(10):
        c.propose("n1", put("k", str(i)))
        c.deliver_all(drop=lambda src, dst, msg: src == "n3")
    to_n3 = [m for d, m in _replies(c, "n1", start) if d == "n3" and isinstance(m, AppendEntries)]
    assert len(to_n3) == 4
    assert c["n1"].commit == c["n1"].log.last_index  # n2 keeps the quorum going
    c.tick_all(3 * LAN.heartbeat_ticks)
    assert c["n3"].log.slice(1, 100) == c["n1"].log.slice(1, 100)


def test_batch_limited_by_bytes_but_never_empty() -> None:
    """Thesis §10.2.1 (batching): an AppendEntries carries entries up to ``max_append_bytes``,
    but always at least one, however large."""
    entry_cost = len(put("k0", "v")) + 16  # what RaftLog.batch_from counts per entry
    budget = 2 * entry_cost + entry_cost // 2  # room for two small entries, never four
    c = Cluster(3, config=dataclasses.replace(LAN, max_append_bytes=budget))
    c.elect("n1")
    c.cut("n1", "n3")
    big = put("big", "v" * 1000)
    for i in range(8):
        c.propose("n1", big if i == 4 else put(f"k{i}", "v"))
        c.deliver_all()
    c.heal()
    start = len(c.sent)
    c.tick_all(3 * LAN.heartbeat_ticks)
    assert c["n3"].log.slice(1, 100) == c["n1"].log.slice(1, 100)
    batches = [
        m.entries
        for d, m in _replies(c, "n1", start)
        if d == "n3" and isinstance(m, AppendEntries) and m.entries
    ]
    assert any(len(batch) > 1 for batch in batches)
    assert max(len(batch) for batch in batches) < 4
    for batch in batches:
        assert len(batch) == 1 or sum(len(e.data) for e in batch) <= budget
    assert [len(batch) for batch in batches if any(e.data == big for e in batch)] == [1]


# ---------------------------------------------------------------------- reads


def test_read_index_waits_for_first_commit_of_term() -> None:
    """Thesis §6.4 step 1: a new leader serves no read until an entry of its term (the no-op)
    is committed, since until then its commit index may be stale."""
    c = Cluster(3)
    c.campaign("n1")
    c.deliver_all(drop=lambda src, dst, msg: isinstance(msg, AppendEntries))
    leader = c["n1"]
    assert leader.role is Role.LEADER
    noop = leader.log.last_index
    assert leader.commit < noop
    c.read_index("n1", 7)
    c.deliver_all()
    assert c.read_states["n1"] == []
    c.tick("n1", LAN.heartbeat_ticks)  # the heartbeat answer makes the leader resend
    c.deliver_all()
    assert leader.commit == noop
    assert c.read_states["n1"] == [ReadState(7, noop)]


def test_read_index_confirmed_only_by_heartbeat_quorum() -> None:
    """Thesis §6.4 step 2: the read is confirmed only after a majority (counting the leader)
    answered a heartbeat sent after the request."""
    c = Cluster(5)
    c.elect("n1")
    commit = c["n1"].commit
    c.read_index("n1", 1)
    c.deliver_all(drop=lambda src, dst, msg: isinstance(msg, HeartbeatReply) and src != "n2")
    assert c.read_states["n1"] == []  # n1 and n2: two of five
    c.tick("n1", LAN.heartbeat_ticks)  # the next heartbeat carries the read's context again
    c.deliver_all(drop=lambda src, dst, msg: isinstance(msg, HeartbeatReply) and src == "n5")
    assert c.read_states["n1"] == [ReadState(1, commit)]


def test_read_index_dropped_by_deposed_leader() -> None:
    """Thesis §6.4: an isolated leader never confirms a read; when check-quorum deposes it,
    the read is reported in ``dropped_reads`` so the client can retry elsewhere."""
    c = Cluster(3)
    c.elect("n1")
    c.isolate("n1")
    c.read_index("n1", 9)
    for _ in range(2 * LAN.election_timeout_min_ticks):
        c.tick_all()
    assert c["n1"].role is not Role.LEADER
    assert c.read_states["n1"] == []
    assert c.dropped_reads["n1"] == [9]


# ---------------------------------------------------------------------- clients


def test_propose_on_follower_raises_not_leader_with_hint() -> None:
    """Raft §8: a server that is not the leader rejects a client request and names the
    leader it knows of."""
    c = Cluster(3)
    with pytest.raises(NotLeader) as unknown:
        c["n2"].propose(put("k", "v"))
    assert unknown.value.leader_hint is None
    c.elect("n1")
    with pytest.raises(NotLeader) as known:
        c["n2"].propose(put("k", "v"))
    assert known.value.leader_hint == "n1"
    with pytest.raises(NotLeader):
        c["n3"].read_index(1)


def test_propose_dropped_when_uncommitted_limit_reached() -> None:
    """Thesis §10.2.3 (flow control): a leader that cannot commit refuses proposals once
    ``max_uncommitted_entries`` await commitment, instead of growing its log without bound."""
    c = Cluster(3, config=dataclasses.replace(LAN, max_uncommitted_entries=3))
    c.elect("n1")
    c.isolate("n1")
    for i in range(3):
        c.propose("n1", put("k", str(i)))
    with pytest.raises(ProposalDropped):
        c.propose("n1", put("k", "3"))
    assert c["n1"].log.last_index - c["n1"].commit == 3


@pytest.mark.parametrize(
    ("data", "client_id", "seq"),
    [
        (b"P", "", 0),
        (b"", "c", 7),
        (bytearray(b"P"), "", 0),
        ("P", "", 0),
        (b"P", 1, 0),
        (b"P", "c", -1),
        (b"P", "c", 1.0),
        (b"P", "c", True),
    ],
)
def test_a_proposal_builds_the_entry_the_dataclass_would(
    data: object, client_id: object, seq: object
) -> None:
    """``propose`` builds its entry without the dataclass's ``__init__`` when the values are
    of the exact types it checks: the entry must be the one ``Entry(...)`` makes, and values
    ``Entry`` refuses must be refused with its error, appending nothing."""
    c = Cluster(1)
    c.tick_all(ELECTION)
    core = c["n1"]
    index, term = core.log.last_index + 1, core.term
    try:
        expected = Entry(term=term, index=index, data=data, client_id=client_id, seq=seq)  # type: ignore[arg-type]
    except ValueError as refusal:
        with pytest.raises(ValueError, match=str(refusal)):
            core.propose(data, client_id=client_id, seq=seq)  # type: ignore[arg-type]
        assert core.log.last_index == index - 1
        return
    assert core.propose(data, client_id=client_id, seq=seq) == (index, term)  # type: ignore[arg-type]
    entry = core.log.slice(index, index + 1)[0]
    assert entry == expected
    assert hash(entry) == hash(expected)


def test_exactly_once_duplicate_proposal_applies_once() -> None:
    """Thesis §6.3: a command retried with the same client id and sequence number is applied
    once; the retry gets the first application's result."""
    c = Cluster(3)
    c.elect("n1")
    first = c.propose("n1", Command(op="cas", key="k", value="1").encode(), client_id="a", seq=1)
    second = c.propose("n1", Command(op="cas", key="k", value="1").encode(), client_id="a", seq=1)
    third = c.propose("n1", put("k", "2"), client_id="a", seq=2)
    c.deliver_all()
    for node in c.ids:
        results = {r.index: r for r in c.applied[node]}
        assert results[first] == ApplyResult(first, True, "1")
        assert results[second] == ApplyResult(second, True, "1", duplicate=True)
        assert results[third] == ApplyResult(third, True, "2")
        assert c.kv[node].get("k") == "2"


# ---------------------------------------------------------------------- persistence


def _must_follow_persist(msg: RaftMessage) -> bool:
    if isinstance(msg, RequestVote | RequestVoteReply):
        return not msg.pre_vote
    return isinstance(msg, AppendEntriesReply)


def test_persistence_votes_and_acks_only_after_persist() -> None:
    """Raft Figure 2 ("updated on stable storage before responding to RPCs") and §5.2:
    a candidate's RequestVote, vote replies and AppendEntriesReply promise something about
    the sender's disk, so they appear only in ``messages_after_persist``, and what they promise
    is in that Ready or an earlier one."""
    c = Cluster(3, seed=5)
    c.tick_all(2 * ELECTION)
    leader = c.leader()
    assert leader is not None
    for i in range(3):
        c.propose(leader, put("k", str(i)))
    c.deliver_all()
    c.isolate(leader)
    c.tick_all(3 * ELECTION)
    c.heal()
    c.crash("n2")
    c.tick_all(ELECTION)
    c.restart("n2")
    c.tick_all(3 * ELECTION)

    disk = {node: MemoryStorage() for node in c.ids}
    seen: set[type] = set()
    for node, ready in c.readies:
        assert not [out for out in ready.messages if _must_follow_persist(out.message)]
        disk[node].save(ready.hard_state, ready.entries)
        state = disk[node].hard_state
        for out in ready.messages_after_persist:
            msg = out.message
            seen.add(type(msg))
            if isinstance(msg, RequestVote):
                assert (state.term, state.vote) == (msg.term, node)
            elif isinstance(msg, RequestVoteReply) and msg.granted:
                assert (state.term, state.vote) == (msg.term, out.to)
            elif isinstance(msg, AppendEntriesReply) and msg.success:
                assert len(disk[node].entries) >= msg.match_index
    assert {RequestVote, RequestVoteReply, AppendEntriesReply} <= seen


# ---------------------------------------------------------------------- the state machine


def _apply(kv: KVStateMachine, command: Command) -> ApplyResult:
    return kv.apply(Entry(term=1, index=kv.applied_index + 1, data=command.encode()))


def test_kv_cas_semantics() -> None:
    """The KV state machine's compare-and-set: succeeds only when the current value equals
    ``expected`` (None meaning absent), and reports the current value when it fails."""
    kv = KVStateMachine()
    assert _apply(kv, Command(op="cas", key="k", value="a")) == ApplyResult(1, True, "a")
    assert _apply(kv, Command(op="cas", key="k", value="b")) == ApplyResult(2, False, "a")
    assert _apply(kv, Command(op="cas", key="k", value="b", expected="x")) == ApplyResult(
        3, False, "a"
    )
    assert _apply(kv, Command(op="cas", key="k", value="b", expected="a")) == ApplyResult(
        4, True, "b"
    )
    assert _apply(kv, Command(op="delete", key="k")) == ApplyResult(5, True, None)
    assert _apply(kv, Command(op="cas", key="k", value="c", expected="b")) == ApplyResult(
        6, False, None
    )
    assert kv.get("k") is None
    assert kv.apply(Entry(term=1, index=7, kind=EntryKind.NOOP)) == ApplyResult(7, True)
    bad = kv.apply(Entry(term=1, index=8, data=b"{"))
    assert not bad.ok
    assert bad.error
    assert kv.data == {}
    with pytest.raises(ValueError, match="applying"):
        kv.apply(Entry(term=1, index=10, data=put("k", "v")))


@pytest.mark.parametrize(
    "command",
    [
        Command(op="put", key="k", value="v"),
        Command(op="delete", key=""),
        Command(op="cas", key="k", value="v"),
        Command(op="cas", key="k", value="v", expected="w"),
    ],
)
def test_kv_command_round_trips(command: Command) -> None:
    """Commands travel in log entries as JSON: decode(encode(c)) == c."""
    assert Command.decode(command.encode()) == command


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xfe",
        b"not json",
        b"[]",
        b'"put"',
        b"{}",
        b'{"op":"get","key":"k"}',
        b'{"op":"put","key":1,"value":"v"}',
        b'{"op":"put","key":"k"}',
        b'{"op":"put","key":"k","value":3}',
        b'{"op":"cas","key":"k","value":"v","expected":3}',
        b'{"op":"cas","key":"k"}',
    ],
)
def test_kv_command_decode_rejects_malformed(data: bytes) -> None:
    """``Command.decode`` raises ValueError on anything that is not a valid command."""
    with pytest.raises(ValueError, match=r"."):
        Command.decode(data)


def test_core_counts_messages_it_ignores() -> None:
    """Bad input is a counted drop, never an exception: our own id as sender, stale terms.
    (A sender outside our membership is not bad input: it may be a server added by a change
    we have not received yet, so its messages are handled.)"""
    from prism.raft.config import RaftConfig
    from prism.raft.core import RaftCore
    from prism.raft.messages import Heartbeat, RequestVote
    from prism.raft.ready import HardState

    core = RaftCore(
        "n1",
        ["n1", "n2", "n3"],
        config=RaftConfig.lan(),
        rng=random.Random(1),
        hard_state=HardState(term=5),
    )
    core.step("n1", Heartbeat(term=9, commit=0))
    core.step("n2", RequestVote(term=3, last_log_index=0, last_log_term=0))
    assert core.drops["from_self"] == 1
    assert core.drops["stale_term"] == 1
    assert core.term == 5


def test_only_one_ready_may_be_outstanding() -> None:
    """The persistence contract (prism.raft.ready): a second ready() before advance() is a
    caller bug, since two writes in flight could finish out of order."""
    from prism.raft.config import RaftConfig
    from prism.raft.core import RaftCore

    core = RaftCore("n1", ["n1"], config=RaftConfig.lan(), rng=random.Random(2))
    core.campaign()
    ready = core.ready()
    with pytest.raises(RuntimeError):
        core.ready()
    core.advance(ready)
    with pytest.raises(RuntimeError):
        core.advance(ready)


def test_leader_ignores_a_match_beyond_its_log() -> None:
    """A success claiming entries the leader never had is impossible under Raft's rules
    (leader completeness); acting on it would point the follower's next index past the
    log, and a broken build would then loop sending snapshots. It is a counted drop."""
    from prism.raft.messages import AppendEntriesReply

    cluster = Cluster(3)
    leader = cluster.elect("n1")
    core = cluster[leader]
    progress = core.progress("n2")
    assert progress is not None
    before = (progress.match, progress.next)
    cluster.step(leader, "n2", AppendEntriesReply(term=core.term, success=True, match_index=99))
    assert core.drops["match_beyond_log"] == 1
    assert (progress.match, progress.next) == before
