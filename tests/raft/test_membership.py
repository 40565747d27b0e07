"""Membership changes in the Raft core: one server at a time, learners first (thesis §4,
§4.2.1 and §4.4), driven through ``Cluster``."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from prism.errors import MembershipChangeRefused, NotLeader, RaftError
from prism.raft.config import RaftConfig
from prism.raft.core import Role
from prism.raft.membership import Membership
from prism.raft.messages import (
    AppendEntries,
    EntryKind,
    Heartbeat,
    HeartbeatReply,
    RequestVoteReply,
)
from tests.raft.cluster import ELECTION, LAN, SMALL_SNAPSHOTS, Cluster, put


def _until(c: Cluster, done: Callable[[], bool], what: str, rounds: int = 20 * ELECTION) -> None:
    """``tick_all`` until ``done()``; fail after ``rounds`` rounds."""
    for _ in range(rounds):
        if done():
            return
        c.tick_all()
    assert done(), what


def _settled(c: Cluster, leader: str) -> bool:
    """The leader's latest change is committed and its members know it."""
    core = c[leader]
    return core.membership_index <= core.commit and all(
        c[m].membership == core.membership and c[m].commit >= core.membership_index
        for m in core.membership.members
        if m not in c.down
    )


def _promoted(c: Cluster, server: str) -> Callable[[], bool]:
    return lambda: _settled(c, "n1") and server in c["n1"].voters


def _membership_notes(c: Cluster, node: str) -> list[tuple[str, str]]:
    return [
        (str(n.fields["voters"]), str(n.fields["learners"]))
        for n in c.noted(node, "raft.membership")
    ]


def _campaigned(c: Cluster, node: str, start: int) -> bool:
    return any(
        n == node and note.event in ("raft.pre_campaign", "raft.campaign")
        for n, note in c.notes[start:]
    )


# ---------------------------------------------------------------------- growing and shrinking


def test_grow_one_to_five_one_server_at_a_time() -> None:
    """Thesis §4.1-§4.2.1: a cluster grows by single-server changes; each new server joins as
    a learner (so it catches up without slowing commits, §4.2.1) and is promoted to voter once
    its log has reached the commit index. Writes keep committing between the steps, every
    member ends with the leader's membership, and addresses travel with it."""
    c = Cluster(5, voters=1)
    c.elect("n1")
    c.write("n1", 2, prefix="start")
    for new in ("n2", "n3", "n4", "n5"):
        before = c["n1"].membership
        index, term = c["n1"].add_server(new, f"{new}.example:7000")
        c.run_ready("n1")
        assert (index, term) == (c["n1"].log.last_index, c["n1"].term)
        assert c["n1"].membership.learners == (new,)
        assert c["n1"].membership.voters == before.voters
        _until(c, _promoted(c, new), new)
        # First a learner, then a voter: on the leader and on the server itself.
        for node in ("n1", new):
            notes = _membership_notes(c, node)
            learner_at = notes.index((",".join(before.voters), new))
            assert notes[learner_at + 1] == (",".join((*before.voters, new)), "")
        c.write("n1", 2, prefix=new)
        members = c["n1"].membership.members
        assert all(c.kv[m].data == c.kv["n1"].data for m in members)
        if new == "n3":
            assert c["n1"].voters == ("n1", "n2", "n3")
    expected = Membership.of(c.ids, [], {n: f"{n}.example:7000" for n in c.ids[1:]})
    for node in c.ids:
        assert c[node].membership == expected
        assert c[node].membership.address_of("n4") == "n4.example:7000"
    assert len(c.kv["n5"].data) == 10


def test_shrink_five_to_three() -> None:
    """Thesis §4.1: removing servers one at a time; after each removal commits, the quorum is
    a majority of the remaining voters only."""
    c = Cluster(5)
    c.elect("n1")
    c.write("n1", 2)
    for gone in ("n5", "n4"):
        c["n1"].remove_server(gone)
        c.run_ready("n1")
        assert gone not in c["n1"].membership.members  # in force from append
        _until(c, lambda: _settled(c, "n1"), gone)
        c.write("n1", 1, prefix=gone)
    for node in ("n1", "n2", "n3"):
        assert c[node].membership == Membership.of(["n1", "n2", "n3"])
    # Two of the three are now a quorum, whatever the removed servers do.
    c.crash("n4")
    c.crash("n5")
    c.crash("n3")
    index = c.propose("n1", put("two", "of three"))
    c.deliver_all()
    assert c["n1"].commit == index
    c.crash("n2")
    index = c.propose("n1", put("one", "of three"))
    c.deliver_all()
    assert c["n1"].commit == index - 1


# ---------------------------------------------------------------------- refusals


def test_change_refused_while_another_is_uncommitted() -> None:
    """Thesis §4.1: a change starts only once the previous one has committed; two
    uncommitted single-server changes could together make disjoint majorities."""
    c = Cluster(5, voters=3)
    c.elect("n1")
    c.cut("n1", "n2")
    c.cut("n1", "n3")
    c["n1"].add_server("n4", voter=False)
    c.run_ready("n1")
    c.deliver_all()
    assert c["n1"].membership_index > c["n1"].commit
    with pytest.raises(MembershipChangeRefused, match="not committed"):
        c["n1"].add_server("n5")
    with pytest.raises(MembershipChangeRefused, match="not committed"):
        c["n1"].remove_server("n2")
    with pytest.raises(MembershipChangeRefused, match="not committed"):
        c["n1"].add_server("n4")  # a promotion is a change too
    c.heal()
    _until(c, lambda: _settled(c, "n1"), "the first change never committed")
    c["n1"].add_server("n5", voter=False)
    c.run_ready("n1")
    assert c["n1"].membership.learners == ("n4", "n5")


def test_change_refused_before_new_leaders_first_commit() -> None:
    """The single-server change bug (Ongaro, raft-dev, 2015; thesis §4.1 errata): a new
    leader must not start a change before an entry of its own term has committed.

    Four voters n1..n4 and learner n5. Leader n1 (term 1) promotes n5, and only n5 gets that
    entry, P. Leader n2 (term 2, elected by n2, n3, n4) then removes n4: if that entry, R,
    could commit with n2 and n3 before n2's no-op reached n4, n1 could later win term 3 with
    n1, n4 and n5 (a majority of P's five voters; n4's log would not be newer than n1's) and
    overwrite the committed R. Refusing until the no-op commits puts a term-2 entry in n4's
    log first, and then n4 never votes for n1."""
    c = Cluster(5, voters=4)
    c.elect("n1")
    c.write("n1", 2)
    c["n1"].add_server("n5", voter=False)
    c.run_ready("n1")
    _until(c, lambda: _settled(c, "n1"), "n5 never joined as a learner")
    for left in ("n1", "n5"):
        for right in ("n2", "n3", "n4"):
            c.cut(left, right)
    c["n1"].add_server("n5")  # the promotion: entry P, seen by n5 only
    c.run_ready("n1")
    c.deliver_all()
    p_index = c["n1"].membership_index
    assert c["n5"].membership.voters == ("n1", "n2", "n3", "n4", "n5")
    assert c["n2"].membership.voters == ("n1", "n2", "n3", "n4")
    assert c["n1"].commit < p_index
    # n2 wins term 2 with n3 and n4; its no-op is lost on the way.
    for node in ("n2", "n3", "n4"):
        c.tick(node, ELECTION)
    c.queue.clear()
    c.campaign("n2")
    c.deliver_all(lambda src, dst, msg: src == "n2" and isinstance(msg, AppendEntries))
    assert c["n2"].role is Role.LEADER
    assert c["n2"].term == 2
    assert c["n2"].log.term_at(c["n2"].commit) == 1
    with pytest.raises(MembershipChangeRefused, match="own term"):
        c["n2"].remove_server("n4")
    with pytest.raises(MembershipChangeRefused, match="own term"):
        c["n2"].add_server("n6")
    # Once the no-op commits (on n2, n3 and n4), the removal may go ahead.
    _until(c, lambda: c["n2"].log.term_at(c["n2"].commit) == 2, "the no-op never committed")
    assert c["n4"].log.term_at(p_index) == 2
    r_index, _ = c["n2"].remove_server("n4")
    c.run_ready("n2")
    _until(c, lambda: c["n2"].commit >= r_index, "the removal never committed")
    # With n2 and n3, which hold R, gone, n1, n4 and n5 never elect anyone: n4's log is newer
    # than n1's, so n4 refuses n1 every (pre-)vote, and R survives.
    assert (c["n1"].log.last_index, c["n1"].log.last_term) == (p_index, 1)
    c.heal()
    c.crash("n2")
    c.crash("n3")
    start, notes = len(c.sent), len(c.notes)
    c.tick_all(10 * ELECTION)
    assert not any(note.event == "raft.became_leader" for _, note in c.notes[notes:])
    answers = [
        m
        for s, d, m in c.sent[start:]
        if (s, d) == ("n4", "n1") and isinstance(m, RequestVoteReply)
    ]
    assert answers, "n1 never asked n4"
    assert not any(m.granted for m in answers)
    assert c.storage["n3"].entries[r_index - 1].kind is EntryKind.CONFIG
    assert Membership.decode(c.storage["n3"].entries[r_index - 1].data).voters == (
        "n1",
        "n2",
        "n3",
    )


def test_add_existing_member_refused_and_learner_promotion_requested() -> None:
    """``add_server`` of a voter, or of a learner as a learner, is refused; of a learner as a
    voter, it asks for its promotion (no new entry until it has caught up)."""
    c = Cluster(4, voters=3)
    c.elect("n1")
    with pytest.raises(MembershipChangeRefused, match="already a member"):
        c["n1"].add_server("n2")
    with pytest.raises(MembershipChangeRefused, match="already a member"):
        c["n1"].add_server("n1", voter=False)
    with pytest.raises(MembershipChangeRefused, match="empty"):
        c["n1"].add_server("")
    c["n1"].add_server("n4", voter=False)
    c.run_ready("n1")
    _until(c, lambda: _settled(c, "n1"), "n4 never joined")
    c.tick_all(2 * ELECTION)
    assert c["n1"].membership.learners == ("n4",)  # not promoted unasked
    with pytest.raises(MembershipChangeRefused, match="already a member"):
        c["n1"].add_server("n4", voter=False)
    assert c["n1"].add_server("n4") == (0, 0)
    c.run_ready("n1")
    _until(c, lambda: _settled(c, "n1") and c["n1"].voters == tuple(c.ids), "no promotion")
    with pytest.raises(NotLeader):
        c["n2"].add_server("n9")


def test_removing_last_voter_or_non_member_refused() -> None:
    """A cluster keeps at least one voter: the last one cannot be removed, even with learners
    left; removing a server that is not a member is refused too."""
    c = Cluster(2, voters=1)
    c.elect("n1")
    c["n1"].add_server("n2", voter=False)
    c.run_ready("n1")
    _until(c, lambda: _settled(c, "n1"), "n2 never joined")
    with pytest.raises(MembershipChangeRefused, match="last voter"):
        c["n1"].remove_server("n1")
    with pytest.raises(MembershipChangeRefused, match="not a member"):
        c["n1"].remove_server("n3")
    c["n1"].remove_server("n2")  # a learner may go
    c.run_ready("n1")
    assert c["n1"].membership == Membership.of(["n1"])


# ---------------------------------------------------------------------- removing the leader


def test_removed_leader_steps_down_after_commit_and_never_campaigns() -> None:
    """Thesis §4.2.2: a leader removing itself keeps leading (replicating, even accepting
    proposals) without counting itself, until the change commits; then it steps down, the
    remaining voters elect a leader among themselves, and the removed server, not being a
    voter in its own latest configuration, never campaigns."""
    c = Cluster(3)
    c.elect("n1")
    c.write("n1", 2)
    index, _ = c["n1"].remove_server("n1")
    c.run_ready("n1")
    assert c["n1"].role is Role.LEADER
    assert c["n1"].voters == ("n2", "n3")
    later = c.propose("n1", put("during", "removal"))
    # n2's acknowledgements alone do not commit: n1 no longer counts itself.
    c.deliver_all(lambda src, dst, msg: src == "n3" or dst == "n3")
    assert c["n1"].commit < index
    assert c["n1"].role is Role.LEADER
    c.deliver_all()  # n3's are lost; a heartbeat round brings n3 up to date
    c.tick_all(LAN.heartbeat_ticks)
    assert c["n1"].role is Role.FOLLOWER
    assert c["n1"].leader is None
    assert [n.fields["reason"] for n in c.noted("n1", "raft.stepped_down")] == ["removed"]
    assert c["n2"].commit >= later  # the last commit was sent
    assert c["n3"].commit >= later
    start = len(c.notes)
    _until(c, lambda: c.leader() in ("n2", "n3"), "no leader among the remaining voters")
    new = c.leader()
    assert new is not None
    c.write(new, 2, prefix="new")
    c.tick_all(10 * ELECTION)
    assert c.leader() == new
    assert not _campaigned(c, "n1", start)
    assert c["n1"].role is Role.FOLLOWER
    assert c["n1"].membership == c[new].membership == Membership.of(["n2", "n3"])
    assert c.kv["n2"].data == c.kv["n3"].data
    assert c.kv["n2"].get("during") == "removal"


def test_removed_leader_deposed_before_commit_still_campaigns() -> None:
    """Thesis §4.2.2: a server that is not in its own latest configuration must still start
    elections while that configuration is not known to be committed, because it may be the
    only one holding it; its own vote does not count.

    n1 leads {n1, n3} (n2 already removed), n3 crashes, and n1 removes itself: C = {n3}
    cannot commit, and n1 steps down by check-quorum. n3 restarts with {n1, n3}: it needs
    n1's vote, which n1 refuses because its log, holding C, is newer. Unless n1 campaigns
    (asking only C's voters), nobody ever leads again. It wins with n3's vote, commits C,
    steps down as removed, and from then on never campaigns."""
    c = Cluster(3)
    c.elect("n1")
    c.write("n1", 2)
    c["n1"].remove_server("n2")
    c.run_ready("n1")
    _until(c, lambda: _settled(c, "n1"), "n2 never removed")
    c.crash("n3")
    index, _ = c["n1"].remove_server("n1")
    c.run_ready("n1")
    c.tick_all(2 * ELECTION)
    assert c["n1"].role is not Role.LEADER
    assert c["n1"].commit < index
    c.restart("n3")
    _until(c, lambda: c.leader() == "n3" and _settled(c, "n3"), "nobody leads again")
    reasons = [n.fields["reason"] for n in c.noted("n1", "raft.stepped_down")]
    assert reasons == ["check_quorum", "removed"]
    assert c["n3"].membership == c["n1"].membership == Membership.of(["n3"])
    c.write("n3", 2, prefix="alone")
    assert c.kv["n3"].get("alone1") == "value-alone1"
    start = len(c.notes)
    c.tick_all(10 * ELECTION)
    assert not _campaigned(c, "n1", start)
    assert c.leader() == "n3"


# ---------------------------------------------------------------------- learners


def test_learners_never_campaign_and_one_voter_commits_alone() -> None:
    """Thesis §4.2.1: learners receive the log but are not counted in any quorum: a cluster
    of one voter and two learners commits with the voter alone, and learners never campaign,
    even when the voter is gone for good."""
    c = Cluster(3, voters=1)
    c.elect("n1")
    for learner in ("n2", "n3"):
        c["n1"].add_server(learner, voter=False)
        c.run_ready("n1")
        _until(c, lambda: _settled(c, "n1"), learner)
    assert c["n1"].membership == Membership.of(["n1"], ["n2", "n3"], {"n2": "", "n3": ""})
    c.crash("n2")
    c.crash("n3")
    index = c.propose("n1", put("alone", "yes"))
    assert c["n1"].commit == index
    assert c.kv["n1"].get("alone") == "yes"
    c.restart("n2")
    c.restart("n3")
    _until(c, lambda: c.kv["n3"].get("alone") == "yes", "learners never caught up")
    terms = {node: c[node].term for node in c.ids}
    start = len(c.notes)
    c.crash("n1")
    c.tick_all(10 * ELECTION)
    for learner in ("n2", "n3"):
        c.campaign(learner)  # not even when asked
        assert not _campaigned(c, learner, start)
        assert c[learner].role is Role.FOLLOWER
        assert c[learner].term == terms[learner]


def test_learner_acks_do_not_count_for_commit_reads_or_check_quorum() -> None:
    """Thesis §4.2.1 (learners are not in the quorum), §6.4 (ReadIndex confirmation) and
    §6.2 (check-quorum): a leader of three voters cut off from the other two cannot commit,
    serve a linearizable read, or keep leading, however many learners answer it."""
    c = Cluster(5, voters=3)
    c.elect("n1")
    for learner in ("n4", "n5"):
        c["n1"].add_server(learner, voter=False)
        c.run_ready("n1")
        _until(c, lambda: _settled(c, "n1"), learner)
    c.cut("n1", "n2")
    c.cut("n1", "n3")
    index = c.propose("n1", put("lonely", "leader"))
    c.deliver_all()
    for learner in ("n4", "n5"):
        progress = c["n1"].progress(learner)
        assert progress is not None
        assert progress.match == index
    assert c["n1"].commit == index - 1
    c.read_index("n1", 7)
    c.tick("n1", LAN.heartbeat_ticks)
    c.deliver_all()
    replies = [m for s, d, m in c.sent if d == "n1" and isinstance(m, HeartbeatReply)]
    assert any(m.read_ctx for m in replies)
    assert c.read_states["n1"] == []
    for _ in range(LAN.election_timeout_min_ticks):
        c.tick("n1")
        c.deliver_all()
    assert c["n1"].role is Role.FOLLOWER
    assert [n.fields["reason"] for n in c.noted("n1", "raft.stepped_down")] == ["check_quorum"]
    assert c.dropped_reads["n1"] == [7]


def test_learner_promoted_after_catching_up_by_snapshot() -> None:
    """Thesis §4.2.1 with Raft §7: a learner whose log the leader has compacted away catches
    up by snapshot; if that snapshot reaches the commit index (an idle cluster snapshotted at
    its last entry), the learner has caught up and is promoted, with no further write to
    trigger it."""
    c = Cluster(4, voters=3, config=SMALL_SNAPSHOTS)
    c.elect("n1")
    c.write("n1", 3)
    c.crash("n4")
    c["n1"].add_server("n4")
    c.run_ready("n1")
    c.deliver_all()
    assert c["n1"].membership_index <= c["n1"].commit
    for i in range(40):
        snapshot = c["n1"].snapshot
        if snapshot is not None and snapshot.meta.index == c["n1"].log.last_index:
            break
        c.write("n1", 1, prefix=f"fill{i}")
    assert c["n1"].snapshot is not None
    assert c["n1"].snapshot.meta.index == c["n1"].log.last_index == c["n1"].commit
    c.restart("n4")
    _until(c, lambda: bool(c.noted("n4", "raft.snapshot_installed")), "no snapshot", 4 * ELECTION)
    _until(c, lambda: "n4" in c["n1"].voters, "n4 was never promoted", 4 * ELECTION)
    _until(c, lambda: _settled(c, "n1"), "the promotion never committed")
    assert c.kv["n4"].data == c.kv["n1"].data


# ---------------------------------------------------------------------- the log decides


def test_truncated_config_entry_reverts_membership() -> None:
    """Thesis §4.1: a server uses the latest configuration in its log, committed or not, so
    when a new leader overwrites an uncommitted CONFIG entry, the server falls back to the
    configuration before it."""
    c = Cluster(5)
    c.elect("n1")
    c.write("n1", 2)
    everyone = Membership.of(c.ids)
    for other in ("n2", "n3", "n4"):
        c.cut("n1", other)
    index, _ = c["n1"].remove_server("n4")
    c.run_ready("n1")
    c.deliver_all()
    assert c["n5"].log.entry(index).kind is EntryKind.CONFIG
    assert c["n5"].membership.voters == ("n1", "n2", "n3", "n5")
    assert c["n1"].commit < index
    c.isolate("n5")
    _until(c, lambda: c.leader() in ("n2", "n3", "n4"), "the majority never elected a leader")
    new = c.leader()
    assert new is not None
    c.write(new, 1, prefix="new")
    c.heal()
    _until(c, lambda: c["n5"].log.term_at(index) == c[new].term, "n5 never caught up")
    _until(c, lambda: c["n1"].log.term_at(index) == c[new].term, "n1 never caught up")
    for node in c.ids:
        assert c[node].membership == everyone, node
        assert c[node].membership_index < index
    assert _membership_notes(c, "n5")[-2:] == [("n1,n2,n3,n5", ""), ("n1,n2,n3,n4,n5", "")]
    assert c.leader() == new


def test_removed_server_re_added() -> None:
    """Thesis §4: a removed server can be added back. While out, it never hears of its
    removal and keeps trying to campaign, but pre-vote and leader stickiness keep it from
    disturbing the cluster (§4.2.3, §9.6); added back, it rejoins as a learner, catches up
    from where its log stopped and becomes a voter again."""
    c = Cluster(3)
    c.elect("n1")
    c.write("n1", 2)
    term = c["n1"].term
    index, _ = c["n1"].remove_server("n3")
    c.run_ready("n1")
    _until(c, lambda: _settled(c, "n1"), "n3 never removed")
    c.write("n1", 3, prefix="without")
    c.tick_all(10 * ELECTION)
    assert c.noted("n3", "raft.pre_campaign"), "n3 never noticed it was left alone"
    assert c.leader() == "n1"
    assert [c[n].term for n in c.ids] == [term] * 3
    assert c.kv["n3"].get("without0") is None
    c["n1"].add_server("n3", "back:1")
    c.run_ready("n1")
    _until(c, lambda: _settled(c, "n1") and "n3" in c["n1"].voters, "n3 never came back")
    assert c["n3"].log.entry(index).kind is EntryKind.CONFIG  # it learned of its removal
    assert _membership_notes(c, "n3")[-2:] == [("n1,n2", "n3"), ("n1,n2,n3", "")]
    c.write("n1", 1, prefix="with")
    assert c.kv["n3"].data == c.kv["n1"].data
    assert c["n3"].membership.address_of("n3") == "back:1"


def test_joiner_accepts_leader_messages_and_answers_only_members_count() -> None:
    """A server started empty (no voters) waiting to be added accepts the leader's messages
    (it may be added by a leader it never heard of) and never campaigns; a leader ignores
    answers from servers that are not members (counted)."""
    c = Cluster(4, voters=3)
    c.elect("n1")
    assert c["n4"].membership == Membership.of([])
    start = len(c.notes)
    c.tick("n4", 5 * ELECTION)
    assert not _campaigned(c, "n4", start)
    c.step("n4", "n1", Heartbeat(term=c["n1"].term, commit=0))
    assert c["n4"].term == c["n1"].term
    assert c["n4"].leader == "n1"
    c.deliver_all()
    assert c["n1"].drops["not_member"] == 1


# ---------------------------------------------------------------------- random histories

FAST = RaftConfig(
    heartbeat_ticks=2,
    election_timeout_min_ticks=8,
    election_timeout_max_ticks=16,
    snapshot_threshold_entries=6,
    snapshot_trailing_entries=2,
    snapshot_chunk_bytes=48,
    max_inflight_appends=4,
)
FAST_ELECTION = FAST.election_timeout_max_ticks
IDS = ("n1", "n2", "n3", "n4", "n5")
Op = tuple[str, str | None, bool]

_WRITE = st.tuples(st.just("write"), st.none(), st.booleans())
_TICK = st.tuples(st.just("tick"), st.none(), st.booleans())
_OPS: st.SearchStrategy[Op] = st.one_of(
    _WRITE,
    _WRITE,
    _TICK,
    st.tuples(st.just("add"), st.sampled_from(IDS), st.booleans()),
    st.tuples(st.just("remove"), st.sampled_from(IDS), st.just(False)),
    st.tuples(st.just("transfer"), st.sampled_from((None, *IDS)), st.just(False)),
    st.tuples(st.just("crash"), st.sampled_from(IDS), st.just(False)),
    st.tuples(st.just("restart"), st.sampled_from(IDS), st.just(False)),
    st.tuples(st.just("isolate"), st.sampled_from(IDS), st.just(False)),
    st.tuples(st.just("heal"), st.none(), st.just(False)),
    st.tuples(st.just("lossy"), st.none(), st.booleans()),
)


def _apply_op(c: Cluster, op: Op, step: int) -> None:
    kind, node, flag = op
    leader = c.leader()
    try:
        if kind == "write" and leader is not None:
            for i in range(4 if flag else 1):
                c.propose(leader, put(f"key{(step + i) % 7}", f"v{step}.{i}"))
                c.deliver_all()
        elif kind == "add" and leader is not None and node is not None:
            c[leader].add_server(node, voter=flag)
        elif kind == "remove" and leader is not None and node is not None:
            c[leader].remove_server(node)
        elif kind == "transfer" and leader is not None:
            c[leader].transfer_leadership(node)
    except RaftError:
        pass  # refused: NotLeader, MembershipChangeRefused, TransferInProgress, ...
    if leader is not None:
        c.run_ready(leader)
    if kind == "crash" and node is not None:
        c.crash(node)
    elif kind == "restart" and node is not None and node in c.down:
        c.restart(node)
    elif kind == "isolate" and node is not None:
        c.isolate(node)
    elif kind == "heal":
        c.heal()
    elif kind == "tick":
        c.tick_all(FAST_ELECTION if flag else FAST.heartbeat_ticks)
    elif kind == "lossy":  # rounds in which a fifth (or half) of all messages are lost
        loss = random.Random(step)
        for _ in range(FAST_ELECTION):
            for member in c.ids:
                c.tick(member)
            c.deliver_all(lambda *_: loss.random() < (0.5 if flag else 0.2))
    c.deliver_all()


def _check_history(c: Cluster) -> None:
    """Election Safety and State Machine Safety (Raft Figure 3) over everything that happened:
    one leader per term; one entry per index among all entries handed out for applying,
    whichever node (or incarnation of it) applied it, and snapshots agree with them."""
    leaders: dict[int, str] = {}
    for node, note in c.notes:
        if note.event == "raft.became_leader":
            term = int(note.fields["term"])
            assert leaders.setdefault(term, node) == node, f"two leaders in term {term}"
    applied: dict[int, tuple[int, EntryKind, bytes]] = {}
    snapshots: dict[int, int] = {}
    for node, ready in c.readies:
        for entry in ready.committed_entries:
            seen = applied.setdefault(entry.index, (entry.term, entry.kind, entry.data))
            assert seen == (entry.term, entry.kind, entry.data), f"{node} at {entry.index}"
        if ready.snapshot is not None:
            meta = ready.snapshot.meta
            assert snapshots.setdefault(meta.index, meta.term) == meta.term
    for index, term in snapshots.items():
        if index in applied:
            assert applied[index][0] == term


@settings(max_examples=150, deadline=None)
@given(ops=st.lists(_OPS, min_size=10, max_size=50), seed=st.integers(0, 7))
def test_random_changes_transfers_and_faults_stay_safe(ops: list[Op], seed: int) -> None:
    """Random histories of single-server changes, transfers, writes, crashes, restarts,
    partitions and lost messages in five servers (three voters to start with, a snapshot
    every few entries). Throughout: at most one leader per term and one committed entry per
    index (Raft Figure 3). Healed at the end: a leader emerges, and every member of its
    configuration reaches its commit index, its membership, and the same state machine."""
    c = Cluster(5, seed=seed, voters=3, config=FAST)
    c.tick_all(3 * FAST_ELECTION)
    for step, op in enumerate(ops):
        _apply_op(c, op, step)
    _check_history(c)
    c.heal()
    for node in sorted(c.down):
        c.restart(node)

    def converged() -> bool:
        leader = c.leader()
        if leader is None or c[leader].log.term_at(c[leader].commit) != c[leader].term:
            return False
        core = c[leader]
        return all(
            c[m].commit == core.commit
            and c[m].membership == core.membership
            and c.kv[m].applied_index == c.kv[leader].applied_index
            for m in core.membership.members
        )

    for _ in range(60 * FAST_ELECTION):
        if converged():
            break
        c.tick_all()
    _check_history(c)
    assert converged(), "the healed cluster never converged"
    for name in ("raft.membership", "raft.snapshot_installed", "raft.timeout_now"):
        event(f"{name}: {'yes' if any(n.event == name for _, n in c.notes) else 'no'}")
    terms = {int(n.fields["term"]) for _, n in c.notes if n.event == "raft.became_leader"}
    event(f"leaders: {min(len(terms), 4)}")
    leader = c.leader()
    assert leader is not None
    for member in c[leader].membership.members:
        assert c.kv[member].data == c.kv[leader].data, member
