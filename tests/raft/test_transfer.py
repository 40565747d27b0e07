"""Leadership transfer in the Raft core (thesis §3.10), driven through ``Cluster``."""

from __future__ import annotations

import dataclasses

import pytest

from prism.errors import (
    NotLeader,
    ProposalDropped,
    RaftError,
    TransferInProgress,
)
from prism.raft.core import Role
from prism.raft.messages import (
    AppendEntriesReply,
    RaftMessage,
    RequestVote,
    RequestVoteReply,
    TimeoutNow,
)
from tests.raft.cluster import ELECTION, LAN, SMALL_SNAPSHOTS, Cluster, put


def _sent(c: Cluster, start: int = 0) -> list[tuple[str, str, RaftMessage]]:
    return c.sent[start:]


def _timeout_nows(c: Cluster, start: int = 0) -> list[tuple[str, str]]:
    return [(s, d) for s, d, m in _sent(c, start) if isinstance(m, TimeoutNow)]


def _vote_replies(c: Cluster, src: str, start: int) -> list[RequestVoteReply]:
    return [
        m
        for s, _, m in _sent(c, start)
        if s == src and isinstance(m, RequestVoteReply) and not m.pre_vote
    ]


# ---------------------------------------------------------------------- transfers that work


def test_transfer_to_caught_up_follower() -> None:
    """Thesis §3.10: the leader sends ``TimeoutNow`` to a target whose log matches its own;
    the target campaigns at once, without pre-vote, and wins the next term; the old leader
    follows it. Nothing committed is lost."""
    c = Cluster(3)
    c.elect("n1")
    c.write("n1", 3)
    term = c["n1"].term
    start = len(c.sent)
    assert c["n1"].transfer_leadership("n2") == "n2"
    assert c["n1"].transfer_target == "n2"
    c.run_ready("n1")
    assert _timeout_nows(c, start) == [("n1", "n2")]
    c.deliver_all()
    assert c.leader() == "n2"
    assert c["n2"].term == term + 1
    assert c["n1"].role is Role.FOLLOWER
    assert c["n1"].leader == "n2"
    assert c["n1"].transfer_target is None
    assert c.noted("n2", "raft.timeout_now")
    assert not c.noted("n2", "raft.pre_campaign")  # TimeoutNow skips the pre-vote
    requests = [m for s, _, m in _sent(c, start) if s == "n2" and isinstance(m, RequestVote)]
    assert requests
    assert all(m.transfer and not m.pre_vote for m in requests)
    assert not c.noted("n1", "raft.transfer_aborted")
    c.write("n2", 1, prefix="after")
    for node in c.ids:
        assert c.kv[node].data == c.kv["n2"].data
        assert len(c.kv[node].data) == 4


def test_transfer_to_lagging_follower_catches_it_up_first() -> None:
    """Thesis §3.10 step 2: a target that lacks entries is first brought up to date; only
    once it matches the leader's last entry is ``TimeoutNow`` sent (so it can win)."""
    c = Cluster(3)
    c.elect("n1")
    c.cut("n1", "n3")
    c.write("n1", 4)
    c.heal()
    last = c["n1"].log.last_index
    assert c["n3"].log.last_index < last
    start = len(c.sent)
    c["n1"].transfer_leadership("n3")
    c.run_ready("n1")
    c.deliver_all()
    assert _timeout_nows(c, start) == []
    for _ in range(LAN.election_timeout_min_ticks):
        if c.leader() == "n3":
            break
        c.tick_all()
    assert c.leader() == "n3"
    # The order on the wire: n3 acknowledged the leader's last entry, then got TimeoutNow.
    sent = _sent(c, start)
    timeout_now = next(i for i, (s, _, m) in enumerate(sent) if isinstance(m, TimeoutNow))
    caught_up = next(
        i
        for i, (s, d, m) in enumerate(sent)
        if (s, d) == ("n3", "n1")
        and isinstance(m, AppendEntriesReply)
        and m.success
        and m.match_index == last
    )
    assert caught_up < timeout_now
    assert _timeout_nows(c, start) == [("n1", "n3")]
    assert c.kv["n3"].data == c.kv["n1"].data


def test_transfer_without_target_picks_most_caught_up_voter() -> None:
    """``transfer_leadership()`` with no target picks the other voter with the highest match
    index, which needs the least catching up."""
    c = Cluster(5)
    c.elect("n1")
    for other in ("n2", "n3", "n5"):
        c.cut("n1", other)
    c.write("n1", 2)  # only n4 gets these
    c.heal()
    assert c["n1"].transfer_leadership() == "n4"
    c.run_ready("n1")
    c.deliver_all()
    assert c.leader() == "n4"


def test_transfer_to_follower_caught_up_by_snapshot() -> None:
    """Thesis §3.10 with Raft §7: a target whose log the leader compacted away is caught up by
    a snapshot; when that snapshot reaches the leader's last entry (an idle leader snapshots
    at its last entry), the target is caught up and gets ``TimeoutNow`` at once, instead of
    the transfer timing out."""
    c = Cluster(3, config=SMALL_SNAPSHOTS)
    c.elect("n1")
    c.crash("n3")
    for i in range(40):
        snapshot = c["n1"].snapshot
        if snapshot is not None and snapshot.meta.index == c["n1"].log.last_index:
            break
        c.write("n1", 1, prefix=f"fill{i}")
    assert c["n1"].snapshot is not None
    assert c["n1"].snapshot.meta.index == c["n1"].log.last_index
    c.restart("n3")
    c["n1"].transfer_leadership("n3")
    c.run_ready("n1")
    for _ in range(SMALL_SNAPSHOTS.election_timeout_min_ticks):
        if c.leader() == "n3":
            break
        c.tick_all()
    assert c.noted("n3", "raft.snapshot_installed")
    assert not c.noted("n1", "raft.transfer_aborted")
    assert c.leader() == "n3"
    assert c.kv["n3"].data == c.kv["n1"].data


# ---------------------------------------------------------------------- meanwhile


def test_proposals_and_changes_refused_during_transfer() -> None:
    """Thesis §3.10: the leader stops accepting client requests during a transfer (they would
    only be lost or delay it); ``TransferInProgress`` is a ``ProposalDropped``, so callers
    retry, at the new leader."""
    c = Cluster(4, voters=3)
    c.elect("n1")
    c.crash("n2")  # the TimeoutNow is lost; the transfer stays in progress
    c["n1"].transfer_leadership("n2")
    c.run_ready("n1")
    with pytest.raises(TransferInProgress, match="n2"):
        c["n1"].propose(put("k", "v"))
    with pytest.raises(ProposalDropped):
        c["n1"].propose(put("k", "v"))
    with pytest.raises(TransferInProgress):
        c["n1"].add_server("n4")
    with pytest.raises(TransferInProgress):
        c["n1"].remove_server("n3")
    with pytest.raises(TransferInProgress):
        c["n1"].transfer_leadership("n3")
    with pytest.raises(NotLeader):
        c["n3"].transfer_leadership("n1")


def test_transfer_aborted_after_election_timeout() -> None:
    """Thesis §3.10: a transfer that has not completed within an election timeout is
    abandoned (``raft.transfer_aborted``) and the leader accepts proposals again."""
    c = Cluster(3)
    c.elect("n1")
    c.crash("n3")
    term = c["n1"].term
    c["n1"].transfer_leadership("n3")
    c.run_ready("n1")
    c.tick_all(LAN.election_timeout_min_ticks - 1)
    assert c["n1"].transfer_target == "n3"
    with pytest.raises(TransferInProgress):
        c["n1"].propose(put("k", "v"))
    c.tick_all(1)
    assert c["n1"].transfer_target is None
    aborted = c.noted("n1", "raft.transfer_aborted")
    assert [(n.fields["target"], n.fields["reason"]) for n in aborted] == [("n3", "timed_out")]
    assert c.leader() == "n1"
    assert c["n1"].term == term
    index = c.propose("n1", put("k", "v"))
    c.deliver_all()
    assert c["n1"].commit == index
    c["n1"].remove_server("n3")  # and membership changes
    c.run_ready("n1")
    assert c["n1"].voters == ("n1", "n2")


def test_transfer_to_self_or_non_voter_refused() -> None:
    """Only another voter can take over: not the leader itself, not a learner, not a stranger.
    Nothing changes when the request is refused."""
    c = Cluster(4, voters=3)
    c.elect("n1")
    c["n1"].add_server("n4", voter=False)
    c.run_ready("n1")
    c.tick_all(ELECTION)
    assert c["n1"].membership.learners == ("n4",)
    for target in ("n1", "n4", "n9"):
        with pytest.raises(RaftError, match="not another voter"):
            c["n1"].transfer_leadership(target)
    assert c["n1"].transfer_target is None
    c.propose("n1", put("still", "fine"))


def test_transfer_without_target_needs_another_voter() -> None:
    """A single voter has nobody to hand leadership to."""
    c = Cluster(1)
    c.elect("n1")
    with pytest.raises(RaftError, match="no other voter"):
        c["n1"].transfer_leadership()


# ---------------------------------------------------------------------- the target's side


def test_leader_stickiness_ignores_ordinary_vote_but_not_transfer_vote() -> None:
    """Thesis §4.2.3 and §3.10: a follower that heard from its leader within the minimum
    election timeout ignores a higher-term vote request, unless the request says it comes
    from a leadership transfer, which the leader itself asked for."""
    c = Cluster(3)
    c.elect("n1")
    term = c["n1"].term
    last = (c["n2"].log.last_index, c["n2"].log.last_term)
    ordinary = RequestVote(term=term + 1, last_log_index=last[0], last_log_term=last[1])
    start = len(c.sent)
    c.step("n2", "n3", ordinary)
    assert c["n2"].drops["vote_request_in_lease"] == 1
    assert c["n2"].term == term
    assert _vote_replies(c, "n2", start) == []
    c.step("n2", "n3", dataclasses.replace(ordinary, transfer=True))
    assert c["n2"].term == term + 1
    assert c["n2"].vote == "n3"
    assert _vote_replies(c, "n2", start) == [RequestVoteReply(term=term + 1, granted=True)]
    # The leader is sticky towards itself too, except for a transfer vote.
    c.step("n1", "n3", dataclasses.replace(ordinary, term=term + 2))
    assert c["n1"].role is Role.LEADER
    c.step("n1", "n3", dataclasses.replace(ordinary, term=term + 2, transfer=True))
    assert c["n1"].role is Role.FOLLOWER
    assert c["n1"].term == term + 2


def test_timeout_now_to_learner_or_leader_ignored() -> None:
    """Bad input is counted, never acted on: a learner (or a server outside the cluster) must
    not campaign whoever asks, and a leader has nothing to take over."""
    c = Cluster(4, voters=3)
    c.elect("n1")
    c["n1"].add_server("n4", voter=False)
    c.run_ready("n1")
    c.tick_all(ELECTION)
    term = c["n1"].term
    c.step("n4", "n1", TimeoutNow(term=term))
    assert c["n4"].drops["timeout_now_ignored"] == 1
    assert c["n4"].role is Role.FOLLOWER
    assert c["n4"].term == term
    c.step("n1", "n2", TimeoutNow(term=term))
    assert c["n1"].drops["timeout_now_ignored"] == 1
    assert c["n1"].role is Role.LEADER
    # And a stale one, from a deposed leader, is dropped as stale.
    c.step("n2", "n3", TimeoutNow(term=term - 1))
    assert c["n2"].drops["stale_term"] == 1
    assert c["n2"].role is Role.FOLLOWER
    c.deliver_all()
    assert c.leader() == "n1"
    assert c["n1"].term == term


def test_transfer_ends_when_leader_deposed() -> None:
    """A transfer ends, without an abort note, when the leader learns of a higher term before
    it completes; nothing of it is left over."""
    c = Cluster(3)
    c.elect("n1")
    c.crash("n3")
    c["n1"].transfer_leadership("n3")
    c.run_ready("n1")
    c.step("n1", "n2", AppendEntriesReply(term=c["n1"].term + 1, success=False))
    assert c["n1"].role is Role.FOLLOWER
    assert c["n1"].transfer_target is None
    assert not c.noted("n1", "raft.transfer_aborted")
    with pytest.raises(NotLeader):
        c["n1"].propose(put("k", "v"))
