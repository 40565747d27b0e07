"""The Raft consensus core: a pure state machine (no I/O, no clock, no global random).

Theory of operation. Inputs are ``tick()`` (one unit of logical time), ``step(src, msg)``
(a message from peer ``src``), ``propose()`` and ``read_index()``. Outputs accumulate until
the caller takes them with ``ready()`` and confirms them with ``advance()``; see
``prism.raft.ready`` for the handling loop and the persist-before-send rule.

Roles: FOLLOWER -> (election timeout) -> PRE_CANDIDATE -> (a quorum would vote) ->
CANDIDATE -> (a quorum voted) -> LEADER. Any message of a higher term makes a node a
follower of that term, except the vote requests that leader stickiness ignores and pre-vote
traffic, which never changes anyone's term.

The rules that keep one leader able to commit, and where they live:

* pre-vote (thesis §9.6): ``_campaign`` / ``_handle_request_vote``: a node that cannot win
  never raises its term, so it cannot depose a healthy leader when it returns;
* leader stickiness (thesis §4.2.3) and check-quorum (thesis §6.2): ``_in_lease`` and
  ``_tick_leader``: a follower that heard from its leader within the minimum election timeout
  ignores vote requests; a leader that has not heard from a quorum within it steps down;
* a lower-term AppendEntries or Heartbeat is answered with our term, so a node stranded at a
  higher term is freed (etcd-io/raft ``TestFreeStuckCandidateWithCheckQuorum``);
* commit only entries of the current term by counting (Raft §5.4.2, Figure 8):
  ``_maybe_commit``; a no-op at the start of each leadership makes that prompt;
* the leader counts itself only for what is durable on its own disk (``log.stable_index``);
* ReadIndex (thesis §6.4): ``read_index`` waits for the first commit of the term, records
  the commit index, and serves only after a quorum answered a heartbeat sent after the
  request; contexts are leader-generated and increasing (etcd-io/etcd#20418).

Membership (thesis §4): the latest ``CONFIG`` entry in the log is in force from the moment
it is appended, committed or not (``_refresh_membership``). Changes go one server at a time
(``add_server`` / ``remove_server``), and a leader starts one only after an entry of its own
term has committed and no other change is uncommitted (``_check_can_change``: the
single-server change bug of raft-dev, 2015). A server added as a voter joins as a learner
and is promoted once its log has caught up with the commit index (``_maybe_promote``). A
leader that removes itself keeps leading until the change commits, then steps down. Only
voters campaign, vote counts and quorums count voters only, and a leader ignores answers
from servers that are not members.

Snapshots (Raft §7): the driver snapshots the state machine when ``wants_snapshot`` says so
and reports it with ``snapshot_saved``, which compacts the log behind it, keeping trailing
entries. A follower whose next entry is compacted away gets the snapshot in chunks
(``InstallSnapshot``); a complete one replaces its log prefix (Figure 13, rules 6 and 7),
comes out in ``Ready.snapshot`` to be persisted and restored, and is acknowledged only after
that.

Leadership transfer (thesis §3.10): ``transfer_leadership`` stops proposals, brings the
target up to date, and sends it ``TimeoutNow``; the target campaigns at once, and its vote
requests carry ``transfer`` so that leader stickiness does not ignore them. A transfer that
has not completed within the minimum election timeout is abandoned.
"""

from __future__ import annotations

import enum
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, final

from prism.errors import (
    MembershipChangeRefused,
    NotLeader,
    ProposalDropped,
    RaftError,
    TransferInProgress,
)
from prism.raft.config import RaftConfig
from prism.raft.log import RaftLog
from prism.raft.membership import Membership
from prism.raft.messages import (
    AppendEntries,
    AppendEntriesReply,
    Entry,
    EntryKind,
    Heartbeat,
    HeartbeatReply,
    InstallSnapshot,
    InstallSnapshotReply,
    RaftMessage,
    RequestVote,
    RequestVoteReply,
    TimeoutNow,
    build_entry,
)
from prism.raft.progress import Progress, ProgressState
from prism.raft.quorum import VoteResult, committed_index, majority, vote_result
from prism.raft.ready import HardState, Note, Outbound, ReadState, Ready
from prism.raft.snapshot import Snapshot, SnapshotMeta

# Enum members read through their class cost a lookup each (70 ns); these are read per write.
_NORMAL: Final = EntryKind.NORMAL
_CONFIG: Final = EntryKind.CONFIG


class Role(enum.StrEnum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre_candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


# The roles tested on every proposal and message, read once (see _NORMAL above).
_LEADER: Final = Role.LEADER
_FOLLOWER: Final = Role.FOLLOWER


@dataclass(slots=True)
class _PendingRead:
    """A ReadIndex request waiting for a quorum to confirm leadership.

    Invariant: ``acks`` is only tested for membership and counted, never iterated.
    """

    ctx: int
    request_id: int
    index: int
    acks: set[str]


@dataclass(slots=True)
class _IncomingSnapshot:
    """Chunks of a leader's snapshot received so far, in order."""

    index: int
    term: int
    membership: bytes
    total: int
    data: bytearray


@final
class RaftCore:
    """One Raft server's protocol state. See the module docstring."""

    def __init__(
        self,
        node_id: str,
        voters: Sequence[str] | Membership,
        *,
        config: RaftConfig,
        rng: random.Random,
        hard_state: HardState | None = None,
        entries: Sequence[Entry] = (),
        snapshot: Snapshot | None = None,
    ) -> None:
        """``voters`` is the membership a new cluster starts with (empty for a server that
        waits to be added); the log and the snapshot, when they hold one, take precedence.
        ``entries`` and ``snapshot`` are what storage holds; entries the snapshot covers are
        skipped."""
        config.validate()
        if isinstance(voters, Membership):
            bootstrap = voters
        else:
            if len(set(voters)) != len(voters):
                raise ValueError("duplicate voter ids")
            bootstrap = Membership.of(list(voters))
        self.id = node_id
        self.config = config
        self._rng = rng
        state = hard_state or HardState()
        self.term = state.term
        self.vote = state.vote
        self._snapshot = snapshot  # the newest snapshot: what a lagging follower is sent
        if snapshot is not None:
            meta = snapshot.meta
            self.log = RaftLog(
                [e for e in entries if e.index > meta.index],
                snapshot_index=meta.index,
                snapshot_term=meta.term,
            )
            self._base_membership = meta.membership
        else:
            self.log = RaftLog(entries)
            self._base_membership = bootstrap  # the membership as of log.snapshot_index
        self.commit = max(min(state.commit, self.log.last_index), self.log.snapshot_index)
        # Committed entries handed out for applying; the driver restores the snapshot first.
        self._applied_handed = self.log.snapshot_index
        self._membership = self._base_membership
        self._membership_at_entry = (0, 0)  # (index, term) of the CONFIG entry in force
        self._voters: list[str] = []
        self._peers: list[str] = []  # every member but this server: replication targets
        self._promotions: list[str] = []  # learners to promote once caught up (leader only)
        self._transfer_target: str | None = None
        self._transfer_elapsed = 0
        self._incoming: _IncomingSnapshot | None = None
        self._pending_install: Snapshot | None = None  # for the next Ready
        self.role = Role.FOLLOWER
        self.leader: str | None = None
        self._ticks = 0  # monotonic logical clock of this core
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_timeout = 0
        self._reset_randomized_timeout()
        self._votes: dict[str, bool] = {}
        self._progress: dict[str, Progress] = {}
        self._read_seq = 0
        self._pending_reads: list[_PendingRead] = []
        self._reads_waiting_for_commit: list[int] = []
        # Output accumulated until ready().
        self._messages: list[Outbound] = []
        self._messages_after_persist: list[Outbound] = []
        self._read_states: list[ReadState] = []
        self._dropped_reads: list[int] = []
        self._notes: list[Note] = []
        # Leader: appends owed to the followers, sent by the next ready() (_flush_appends), so
        # that the proposals and commit advances between two Readys share one append each.
        self._appends_due = False
        self._commit_due = False
        self._last_hard_state = HardState(self.term, self.vote, self.commit)
        # Messages ignored, by reason: bad or stale input is counted, never raised.
        self.drops: Counter[str] = Counter()
        self._outstanding = False  # a Ready was handed out and not yet advanced
        self._refresh_membership()

    # ------------------------------------------------------------------ queries

    @property
    def voters(self) -> tuple[str, ...]:
        return tuple(self._voters)

    @property
    def membership(self) -> Membership:
        """The membership in force: the latest in the log, committed or not."""
        return self._membership

    @property
    def membership_index(self) -> int:
        """Log index of the CONFIG entry in force (at most the snapshot's index when the
        membership came from the snapshot or the bootstrap list)."""
        return self._membership_at_entry[0]

    @property
    def transfer_target(self) -> str | None:
        return self._transfer_target

    @property
    def snapshot(self) -> Snapshot | None:
        return self._snapshot

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.commit)

    def progress(self, peer: str) -> Progress | None:
        """The leader's replication state for ``peer`` (None when not leading)."""
        return self._progress.get(peer)

    # ------------------------------------------------------------------ inputs

    def tick(self) -> None:
        """Advance logical time by one tick."""
        self._ticks += 1
        if self.role is _LEADER:
            self._tick_leader()
        else:
            self._election_elapsed += 1
            if self._election_elapsed >= self._randomized_timeout:
                self._election_elapsed = 0
                if self._may_campaign():
                    self._campaign()

    def campaign(self) -> None:
        """Start an election now, as if the election timeout had passed (tests)."""
        if self.role is not _LEADER and self._may_campaign():
            self._campaign()

    def step_down(self, reason: str) -> None:
        """Stop leading now (for example, because the driver's disk stalls): a follower of the
        same term, so another server can be elected. Does nothing when not leading."""
        if self.role is _LEADER:
            self._become_follower(self.term, None, reason=reason)

    def propose(self, data: bytes, *, client_id: str = "", seq: int = 0) -> tuple[int, int]:
        """Append a command; returns its (index, term).

        The command is committed when an entry with this index *and term* is applied; if a
        different entry is applied at that index, the proposal was lost and may be retried
        (with the same ``client_id`` and ``seq``, the state machine applies it once).
        """
        if self.role is not _LEADER:
            raise NotLeader(self.leader)
        if self._transfer_target is not None:
            raise TransferInProgress(f"leadership transfer to {self._transfer_target} in progress")
        if len(data) > self.config.max_entry_bytes:
            raise ProposalDropped(
                f"command of {len(data)} bytes exceeds max_entry_bytes "
                f"({self.config.max_entry_bytes})"
            )
        last = self.log.last_index
        if last - self.commit >= self.config.max_uncommitted_entries:
            raise ProposalDropped(
                f"{last - self.commit} entries await commit; the leader may have lost its quorum"
            )
        index = last + 1
        if type(data) is bytes and type(client_id) is str and type(seq) is int and seq >= 0:
            entry = build_entry(self.term, index, _NORMAL, data, client_id, seq)
        else:  # the dataclass's own checks word the error
            entry = Entry(term=self.term, index=index, data=data, client_id=client_id, seq=seq)
        self.log.append_next(entry)
        self._appends_due = True  # sent with the next Ready, batched with the others
        return entry.index, entry.term

    def read_index(self, request_id: int) -> None:
        """Ask for a linearizable read. A ``ReadState`` with ``request_id`` appears in a later
        ``Ready`` once leadership is confirmed; the read is served when the state machine has
        applied its index. If this node stops leading first, the id appears in
        ``Ready.dropped_reads`` instead."""
        if self.role is not _LEADER:
            raise NotLeader(self.leader)
        if self.config.unsafe_local_reads:
            self._read_states.append(ReadState(request_id, self.commit))
            return
        if self.log.term_at(self.commit) != self.term:
            # Thesis §6.4 step 1: until an entry of this term commits, our commit index may
            # be behind entries earlier leaders committed.
            self._reads_waiting_for_commit.append(request_id)
            return
        self._start_reads([request_id])

    def add_server(self, server: str, address: str = "", *, voter: bool = True) -> tuple[int, int]:
        """Add ``server`` as a learner; with ``voter``, promote it once it has caught up.

        Called for a server that is already a learner, asks for its promotion. Returns the
        (index, term) of the CONFIG entry, or (0, 0) when only a promotion was asked for.
        Raises ``NotLeader``, ``TransferInProgress`` or ``MembershipChangeRefused``.
        """
        self._check_can_change()
        if server in self._membership.learners and voter:
            if server not in self._promotions:
                self._promotions.append(server)
            self._maybe_promote()
            return 0, 0
        if server in self._membership.members:
            raise MembershipChangeRefused(f"{server} is already a member")
        if not server:
            raise MembershipChangeRefused("a server id must not be empty")
        addresses = self._membership.address_map()
        addresses[server] = address
        if voter:
            self._promotions.append(server)
        return self._propose_membership(
            Membership.of(self._membership.voters, [*self._membership.learners, server], addresses)
        )

    def remove_server(self, server: str) -> tuple[int, int]:
        """Remove a voter or learner (this leader included: it steps down once the change
        commits). Returns the (index, term) of the CONFIG entry."""
        self._check_can_change()
        if server not in self._membership.members:
            raise MembershipChangeRefused(f"{server} is not a member")
        if self._membership.voters == (server,):
            raise MembershipChangeRefused(f"{server} is the last voter")
        if server in self._promotions:
            self._promotions.remove(server)
        addresses = self._membership.address_map()
        addresses.pop(server, None)
        return self._propose_membership(
            Membership.of(
                [v for v in self._membership.voters if v != server],
                [v for v in self._membership.learners if v != server],
                addresses,
            )
        )

    def transfer_leadership(self, target: str | None = None) -> str:
        """Hand leadership to ``target``, or to the most caught-up other voter; returns the
        target. Proposals are refused until the transfer ends (``TransferInProgress``)."""
        if self.role is not _LEADER:
            raise NotLeader(self.leader)
        if self._transfer_target is not None:
            raise TransferInProgress(f"leadership transfer to {self._transfer_target} in progress")
        others = [voter for voter in self._voters if voter != self.id]
        if target is None:
            if not others:
                raise RaftError("no other voter to transfer leadership to")
            # max keeps the first of equals: ties go to the smallest id, deterministically.
            target = max(others, key=lambda voter: self._progress[voter].match)
        elif target not in others:
            raise RaftError(f"{target} is not another voter; cannot transfer leadership to it")
        self._transfer_target = target
        self._transfer_elapsed = 0
        self._note("raft.transfer_started", term=self.term, target=target)
        self._maybe_send_timeout_now()
        return target

    # ------------------------------------------------------------------ snapshots

    def wants_snapshot(self, applied_index: int) -> bool:
        """Whether the log has grown enough past the last snapshot to take a new one."""
        base = self._snapshot.meta.index if self._snapshot is not None else 0
        return applied_index - base >= self.config.snapshot_threshold_entries

    def snapshot_meta(self, index: int) -> SnapshotMeta:
        """Where a snapshot of the state machine at applied ``index`` stands in the log."""
        if not self.log.snapshot_index <= index <= min(self.commit, self._applied_handed):
            raise ValueError(f"cannot snapshot at {index}: not applied, or compacted")
        term = self.log.term_at(index)
        assert term is not None
        return SnapshotMeta(index=index, term=term, membership=self._membership_at(index))

    def snapshot_saved(self, snapshot: Snapshot) -> int:
        """A snapshot of this node's state machine is durable. Compacts the log behind it,
        keeping ``snapshot_trailing_entries``, and returns the index compacted to (the
        storage is compacted to the same index)."""
        if self._snapshot is None or snapshot.meta.index > self._snapshot.meta.index:
            self._snapshot = snapshot
        target = min(
            snapshot.meta.index - self.config.snapshot_trailing_entries,
            self.log.stable_index,
        )
        if target > self.log.snapshot_index:
            self._base_membership = self._membership_at(target)
            self.log.compact(target)
        return self.log.snapshot_index

    def step(self, src: str, msg: RaftMessage) -> None:
        """Process one message from peer ``src``. Unknown senders are ignored."""
        if src == self.id:
            self.drops["from_self"] += 1
            return
        if msg.term > self.term:
            if isinstance(msg, RequestVote):
                if self._in_lease() and not msg.transfer:
                    self.drops["vote_request_in_lease"] += 1
                    return  # leader stickiness: a live leader is known; ignore
                if msg.pre_vote:
                    self._handle_request_vote(src, msg)
                    return  # a pre-vote never changes the receiver's term
                self._become_follower(msg.term, None, reason="higher_term")
            elif isinstance(msg, RequestVoteReply) and msg.pre_vote and msg.granted:
                pass  # a granted pre-vote carries the future term; it is not a new term
            else:
                leader = (
                    src if isinstance(msg, AppendEntries | Heartbeat | InstallSnapshot) else None
                )
                self._become_follower(msg.term, leader, reason="higher_term")
        elif msg.term < self.term:
            self.drops["stale_term"] += 1
            self._answer_stale(src, msg)
            return
        match msg:
            case RequestVote():
                self._handle_request_vote(src, msg)
            case RequestVoteReply():
                self._handle_vote_reply(src, msg)
            case AppendEntries():
                self._handle_append_entries(src, msg)
            case AppendEntriesReply():
                self._handle_append_reply(src, msg)
            case Heartbeat():
                self._handle_heartbeat(src, msg)
            case HeartbeatReply():
                self._handle_heartbeat_reply(src, msg)
            case InstallSnapshot():
                self._handle_install_snapshot(src, msg)
            case InstallSnapshotReply():
                self._handle_snapshot_reply(src, msg)
            case TimeoutNow():
                self._handle_timeout_now(src)

    # ------------------------------------------------------------------ output

    def has_ready(self) -> bool:
        return bool(
            self._messages
            or self._messages_after_persist
            or self._read_states
            or self._dropped_reads
            or self._notes
            or self.log.has_unpersisted()
            or self.term != self._last_hard_state.term
            or self.vote != self._last_hard_state.vote
            or self.commit != self._last_hard_state.commit
            or self.commit > self._applied_handed
            or self._pending_install is not None
            or self._appends_due
            or self._commit_due
        )

    def ready(self) -> Ready:
        """Take the pending work. Call ``advance`` with it once it is done; only one
        ``Ready`` may be outstanding at a time."""
        if self._outstanding:
            raise RuntimeError("ready() called again before advance() of the previous Ready")
        self._outstanding = True
        self._flush_appends()
        entries = self.log.take_unpersisted()
        state = self.hard_state()
        changed = state if state != self._last_hard_state else None
        self._last_hard_state = state
        committed = tuple(self.log.slice(self._applied_handed + 1, self.commit + 1))
        if committed:
            self._applied_handed = committed[-1].index
        ready = Ready(
            hard_state=changed,
            entries=entries,
            messages=tuple(self._messages),
            messages_after_persist=tuple(self._messages_after_persist),
            committed_entries=committed,
            read_states=tuple(self._read_states),
            dropped_reads=tuple(self._dropped_reads),
            notes=tuple(self._notes),
            snapshot=self._pending_install,
        )
        self._pending_install = None
        self._messages.clear()
        self._messages_after_persist.clear()
        self._read_states.clear()
        self._dropped_reads.clear()
        self._notes.clear()
        return ready

    def advance(self, ready: Ready) -> None:
        """The work of ``ready`` is done: its entries and hard state are durable."""
        if not self._outstanding:
            raise RuntimeError("advance() without an outstanding Ready")
        self._outstanding = False
        if ready.entries:
            last = ready.entries[-1]
            self.log.stable_to(last.index, last.term)
            if self.role is _LEADER and self._maybe_commit():
                self._commit_advanced()

    # ------------------------------------------------------------------ roles

    def _reset_randomized_timeout(self) -> None:
        lo = self.config.election_timeout_min_ticks
        hi = self.config.election_timeout_max_ticks
        self._randomized_timeout = self._rng.randrange(lo, hi)

    def _note(self, event: str, **fields: str | int) -> None:
        self._notes.append(Note(event, dict(fields)))

    def _become_follower(self, term: int, leader: str | None, *, reason: str) -> None:
        was = self.role
        if term > self.term:
            self.term = term
            self.vote = None
        self.role = Role.FOLLOWER
        self.leader = leader
        self._election_elapsed = 0
        self._reset_randomized_timeout()
        self._votes = {}
        if was is _LEADER:
            self._progress = {}
            self._promotions = []
            self._end_transfer(None)
            self._drop_reads()
            self._note("raft.stepped_down", term=self.term, reason=reason)

    def _may_campaign(self) -> bool:
        """Voters campaign; learners and servers outside the cluster do not, except a server
        whose own removal is the latest configuration in its log and not known to be
        committed (thesis §4.2.2): it may be the only server holding that entry, and then the
        remaining voters cannot elect anyone else. Its own vote does not count."""
        if self.id in self._voters:
            return True
        at = self._membership_at_entry[0]
        return self.commit < at and self.id in self._membership_at(at - 1).voters

    def _own_vote(self) -> dict[str, bool]:
        return {self.id: True} if self.id in self._voters else {}

    def _campaign(self) -> None:
        if self.config.pre_vote:
            self.role = Role.PRE_CANDIDATE
            self.leader = None
            self._votes = self._own_vote()
            self._reset_randomized_timeout()
            self._note("raft.pre_campaign", term=self.term + 1)
            if vote_result(self._votes, len(self._voters)) is VoteResult.WON:
                self._become_candidate()
                return
            request = RequestVote(
                term=self.term + 1,
                last_log_index=self.log.last_index,
                last_log_term=self.log.last_term,
                pre_vote=True,
            )
            for peer in self._peers:
                self._messages.append(Outbound(peer, request))
            return
        self._become_candidate()

    def _become_candidate(self, *, transfer: bool = False) -> None:
        self.term += 1
        self.vote = self.id
        self.role = Role.CANDIDATE
        self.leader = None
        self._election_elapsed = 0
        self._reset_randomized_timeout()
        self._votes = self._own_vote()
        self._note("raft.campaign", term=self.term)
        if vote_result(self._votes, len(self._voters)) is VoteResult.WON:
            self._become_leader()
            return
        request = RequestVote(
            term=self.term,
            last_log_index=self.log.last_index,
            last_log_term=self.log.last_term,
            transfer=transfer,
        )
        for peer in self._peers:
            # Our new term and our vote for ourselves must be durable first.
            self._messages_after_persist.append(Outbound(peer, request))

    def _become_leader(self) -> None:
        self.role = Role.LEADER
        self.leader = self.id
        self._heartbeat_elapsed = 0
        self._election_elapsed = 0
        self._votes = {}
        self._progress = {}
        self._sync_progress()
        self._note("raft.became_leader", term=self.term)
        # Raft §8: a no-op of our own term lets earlier entries commit (Figure 8) and lets
        # ReadIndex learn the commit index.
        self.log.append([Entry(term=self.term, index=self.log.last_index + 1, kind=EntryKind.NOOP)])
        self._broadcast_append()
        if not self._peers:
            self._maybe_commit()

    def _in_lease(self) -> bool:
        """Whether a live leader is known, so vote requests are to be ignored."""
        if not self.config.check_quorum:
            return False
        if self.role is _LEADER:
            return True  # check-quorum keeps a leader honest; it steps down when cut off
        return (
            self.leader is not None
            and self._election_elapsed < self.config.election_timeout_min_ticks
        )

    def _tick_leader(self) -> None:
        self._heartbeat_elapsed += 1
        if self.config.check_quorum and not self._quorum_recently_heard():
            self._become_follower(self.term, None, reason="check_quorum")
            return
        if self._transfer_target is not None:
            self._transfer_elapsed += 1
            if self._transfer_elapsed >= self.config.election_timeout_min_ticks:
                self._end_transfer("timed_out")
        if self._heartbeat_elapsed >= self.config.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            self._broadcast_heartbeat()

    def _quorum_recently_heard(self) -> bool:
        window = self.config.election_timeout_min_ticks
        heard = sum(
            1
            for voter in self._voters
            if voter == self.id or self._ticks - self._progress[voter].last_heard_tick < window
        )
        return heard >= majority(len(self._voters))

    # ------------------------------------------------------------------ elections

    def _handle_request_vote(self, src: str, msg: RequestVote) -> None:
        if msg.pre_vote:
            can_vote = msg.term > self.term or (
                self.vote == src or (self.vote is None and self.leader is None)
            )
        else:
            can_vote = self.vote == src or (self.vote is None and self.leader is None)
        up_to_date = self.config.unsafe_skip_vote_log_check or self.log.is_up_to_date(
            msg.last_log_index, msg.last_log_term
        )
        granted = can_vote and up_to_date
        reply = RequestVoteReply(
            term=msg.term if granted else self.term, granted=granted, pre_vote=msg.pre_vote
        )
        if msg.pre_vote:
            self._messages.append(Outbound(src, reply))
            return
        if granted:
            self.vote = src
            self._election_elapsed = 0
        self._messages_after_persist.append(Outbound(src, reply))

    def _handle_vote_reply(self, src: str, msg: RequestVoteReply) -> None:
        expected = Role.PRE_CANDIDATE if msg.pre_vote else Role.CANDIDATE
        if self.role is not expected:
            return
        if src not in self._voters:
            self.drops["vote_from_non_voter"] += 1
            return
        self._votes[src] = msg.granted  # one entry per voter: duplicates count once
        result = vote_result(self._votes, len(self._voters))
        if result is VoteResult.WON:
            if msg.pre_vote:
                self._become_candidate()
            else:
                self._become_leader()
        elif result is VoteResult.LOST:
            self._become_follower(self.term, None, reason="lost_election")

    def _answer_stale(self, src: str, msg: RaftMessage) -> None:
        """A message from an older term. Answer where that frees the sender, else drop."""
        if isinstance(msg, AppendEntries | Heartbeat | InstallSnapshot) and (
            self.config.check_quorum or self.config.pre_vote
        ):
            # A leader of an older term learns ours and steps down. Without this, a node
            # stranded at a higher term (that pre-vote keeps from winning) is never freed.
            self._messages_after_persist.append(
                Outbound(src, AppendEntriesReply(term=self.term, success=False))
            )
        elif isinstance(msg, RequestVote) and msg.pre_vote:
            self._messages.append(
                Outbound(src, RequestVoteReply(term=self.term, granted=False, pre_vote=True))
            )

    # ------------------------------------------------------------------ replication

    def _handle_append_entries(self, src: str, msg: AppendEntries) -> None:
        if self.role is not _FOLLOWER:
            self._become_follower(msg.term, src, reason="leader_seen")
        self.leader = src
        self._election_elapsed = 0
        if msg.prev_log_index < self.commit:
            reply = AppendEntriesReply(term=self.term, success=True, match_index=self.commit)
        else:
            last_new = self.log.maybe_append(msg.prev_log_index, msg.prev_log_term, msg.entries)
            if last_new is not None:
                if any(e.kind is _CONFIG for e in msg.entries) or (
                    self.log.term_at(self._membership_at_entry[0]) != self._membership_at_entry[1]
                ):
                    self._refresh_membership()
                self._commit_to(min(msg.leader_commit, last_new))
                reply = AppendEntriesReply(term=self.term, success=True, match_index=last_new)
            else:
                hint_index, hint_term = self.log.find_conflict_by_term(
                    msg.prev_log_index, msg.prev_log_term
                )
                reply = AppendEntriesReply(
                    term=self.term,
                    success=False,
                    rejected_index=msg.prev_log_index,
                    hint_index=hint_index,
                    hint_term=hint_term,
                )
        self._messages_after_persist.append(Outbound(src, reply))

    def _handle_heartbeat(self, src: str, msg: Heartbeat) -> None:
        if self.role is not _FOLLOWER:
            self._become_follower(msg.term, src, reason="leader_seen")
        self.leader = src
        self._election_elapsed = 0
        self._commit_to(min(msg.commit, self.log.last_index))
        self._messages_after_persist.append(
            Outbound(src, HeartbeatReply(term=self.term, read_ctx=msg.read_ctx))
        )

    def _commit_to(self, index: int) -> None:
        if index > self.commit:
            self.commit = index

    def _member_progress(self, src: str) -> Progress | None:
        """The leader's progress of ``src``; None (counted) when not leading or not a member."""
        if self.role is not _LEADER:
            return None
        progress = self._progress.get(src)
        if progress is None:
            self.drops["not_member"] += 1
            return None
        progress.last_heard_tick = self._ticks
        return progress

    def _handle_append_reply(self, src: str, msg: AppendEntriesReply) -> None:
        progress = self._member_progress(src)
        if progress is None:
            return
        if msg.success and msg.match_index > self.log.last_index:
            # Only a follower with a log this leader lacks could say so: impossible while
            # Raft's rules hold (leader completeness), so never act on it (it would loop).
            self.drops["match_beyond_log"] += 1
            return
        if msg.success:
            if progress.maybe_update(msg.match_index):
                if progress.state is ProgressState.PROBE:
                    progress.become_replicate()
                elif (
                    progress.state is ProgressState.SNAPSHOT
                    and self.log.term_at(progress.match) is not None
                ):
                    progress.become_probe()  # caught up through appends sent before
                self._follower_advanced(src)
            if self.role is _LEADER:  # unless our own removal just committed
                self._send_appends(src)
            return
        hint_next = msg.hint_index + 1
        if msg.hint_term > 0:
            hint_next = self.log.find_conflict_by_term(msg.hint_index, msg.hint_term)[0] + 1
        if progress.maybe_decrease_to(msg.rejected_index, hint_next):
            if progress.state is ProgressState.REPLICATE:
                progress.become_probe()
            self._send_append(src, send_if_empty=True)

    def _follower_advanced(self, src: str) -> None:
        """``src`` holds more of the log: commit what a quorum holds, and go on with a
        transfer to it or its promotion, whichever waited for it to catch up."""
        if self._maybe_commit():
            self._commit_advanced()
            if self.role is not _LEADER:
                return  # our own removal committed
        if src == self._transfer_target:
            self._maybe_send_timeout_now()
        self._maybe_promote()

    def _handle_heartbeat_reply(self, src: str, msg: HeartbeatReply) -> None:
        progress = self._member_progress(src)
        if progress is None:
            return
        if progress.state is ProgressState.SNAPSHOT:
            self._send_snapshot_chunk(src, progress)  # the last chunk or its answer was lost
        progress.probe_sent = False  # a lost probe must not pause the follower forever
        if progress.state is ProgressState.REPLICATE and progress.is_paused():
            progress.inflights.popleft()
        if progress.match < self.log.last_index:
            self._send_append(src, send_if_empty=True)
        if msg.read_ctx:
            self._confirm_reads(src, msg.read_ctx)

    def _send_append(self, peer: str, *, send_if_empty: bool = False) -> bool:
        progress = self._progress[peer]
        if progress.is_paused():
            return False
        prev_index = progress.next - 1
        prev_term = self.log.term_at(prev_index)
        if prev_term is None:
            self._start_snapshot(peer, progress)  # compacted away: only a snapshot will do
            return False
        entries = self.log.batch_from(
            progress.next,
            max_bytes=self.config.max_append_bytes,
            max_entries=self.config.max_append_entries,
        )
        if not entries and not send_if_empty:
            return False
        self._messages.append(
            Outbound(
                peer,
                AppendEntries(
                    term=self.term,
                    prev_log_index=prev_index,
                    prev_log_term=prev_term,
                    entries=tuple(entries),
                    leader_commit=self.commit,
                ),
            )
        )
        progress.sent(entries[-1].index if entries else prev_index)
        return bool(entries)

    def _send_appends(self, peer: str) -> None:
        """Fill the follower's pipeline window (one append when probing)."""
        while self._send_append(peer):
            if self._progress[peer].state is not ProgressState.REPLICATE:
                break

    def _broadcast_append(self, *, send_if_empty: bool = False) -> None:
        for peer in self._peers:
            if send_if_empty:
                self._send_append(peer, send_if_empty=True)
            self._send_appends(peer)

    def _broadcast_heartbeat(self) -> None:
        for peer in self._peers:
            progress = self._progress[peer]
            self._messages.append(
                Outbound(
                    peer,
                    Heartbeat(
                        term=self.term,
                        commit=min(progress.match, self.commit),
                        read_ctx=self._read_seq,
                    ),
                )
            )

    def _maybe_commit(self) -> bool:
        """Advance the commit index to what a quorum of voters holds durably; True if it
        moved. The leader counts itself only while it is a voter (it may be removing itself)."""
        matches = [
            self.log.stable_index if voter == self.id else self._progress[voter].match
            for voter in self._voters
        ]
        index = committed_index(matches)
        if index <= self.commit:
            return False
        if self.log.term_at(index) != self.term and not self.config.unsafe_commit_old_terms:
            # Raft §5.4.2: never commit an earlier term's entry by counting replicas.
            return False
        self.commit = index
        if self._reads_waiting_for_commit and self.log.term_at(self.commit) == self.term:
            waiting = self._reads_waiting_for_commit
            self._reads_waiting_for_commit = []
            self._start_reads(waiting)
        return True

    def _commit_advanced(self) -> None:
        """The leader's commit index moved: tell followers, and act on committed changes."""
        if self.id not in self._voters and self.commit >= self._membership_at_entry[0]:
            # Our own removal committed (thesis §4.2.2): tell the followers the commit index
            # now, while leading; a new leader comes from the remaining voters.
            self._broadcast_append(send_if_empty=True)
            self._become_follower(self.term, None, reason="removed")
            return
        self._commit_due = True  # told with the next Ready's appends (_flush_appends)
        self._maybe_promote()

    def _flush_appends(self) -> None:
        """Send what is owed since the last Ready: new entries to each follower (up to its
        window), and the commit index, in an empty append if none carrying it is queued."""
        appends, commit = self._appends_due, self._commit_due
        self._appends_due = self._commit_due = False
        if self.role is not _LEADER or not (appends or commit):
            return
        for peer in self._peers:
            self._send_appends(peer)
            if commit and not self._commit_queued_for(peer):
                self._send_append(peer, send_if_empty=True)

    def _commit_queued_for(self, peer: str) -> bool:
        return any(
            out.to == peer
            and isinstance(out.message, AppendEntries)
            and out.message.leader_commit >= self.commit
            for out in self._messages
        )

    # ------------------------------------------------------------------ membership

    def _membership_at(self, index: int) -> Membership:
        """The membership in force at ``index``: the last CONFIG entry up to it."""
        # Newest first, over a slice: a snapshot scans the whole log behind it (thousands of
        # entries), and a method call per entry cost ten times the test.
        config = EntryKind.CONFIG
        for entry in reversed(self.log.slice(self.log.first_index, index + 1)):
            if entry.kind is config:
                decoded = self._decode_membership(entry)
                if decoded is not None:
                    return decoded
        return self._base_membership

    def _decode_membership(self, entry: Entry) -> Membership | None:
        try:
            return Membership.decode(entry.data)
        except ValueError:
            self.drops["bad_membership_entry"] += 1  # a leader's bug; treated as a no-op
            return None

    def _refresh_membership(self) -> None:
        """Put the latest membership of the log (or the base one) in force."""
        for at in range(self.log.last_index, self.log.snapshot_index, -1):
            entry = self.log.entry(at)
            if entry.kind is EntryKind.CONFIG:
                decoded = self._decode_membership(entry)
                if decoded is not None:
                    self._set_membership(decoded, (entry.index, entry.term))
                    return
        # Positioned at the compaction marker, which the log still matches: a follower checks
        # that position on every append, and rescans the whole log when it does not match.
        self._set_membership(
            self._base_membership, (self.log.snapshot_index, self.log.snapshot_term)
        )

    def _set_membership(self, membership: Membership, at: tuple[int, int]) -> None:
        changed = membership != self._membership
        self._membership = membership
        self._membership_at_entry = at
        self._voters = list(membership.voters)
        self._peers = [m for m in membership.members if m != self.id]
        if changed:
            self._note(
                "raft.membership",
                index=at[0],
                voters=",".join(membership.voters),
                learners=",".join(membership.learners),
            )
        if self.role is _LEADER:
            self._sync_progress()
            if self._transfer_target is not None and self._transfer_target not in self._voters:
                self._end_transfer("target_removed")

    def _sync_progress(self) -> None:
        """Leader: one Progress per member but itself, new ones probed from our last entry."""
        for peer in list(self._progress):
            if peer not in self._peers:
                del self._progress[peer]
        for peer in self._peers:
            if peer not in self._progress:
                self._progress[peer] = Progress(
                    next_index=self.log.last_index + 1,
                    max_inflight=self.config.max_inflight_appends,
                    now_tick=self._ticks,
                )

    def _check_can_change(self) -> None:
        if self.role is not _LEADER:
            raise NotLeader(self.leader)
        if self._transfer_target is not None:
            raise TransferInProgress(f"leadership transfer to {self._transfer_target} in progress")
        if self.log.term_at(self.commit) != self.term:
            raise MembershipChangeRefused(
                "this leader has not yet committed an entry of its own term; retry shortly"
            )
        if self._membership_at_entry[0] > self.commit:
            raise MembershipChangeRefused("another membership change has not committed yet")

    def _propose_membership(self, membership: Membership) -> tuple[int, int]:
        entry = Entry(
            term=self.term,
            index=self.log.last_index + 1,
            kind=EntryKind.CONFIG,
            data=membership.encode(),
        )
        self.log.append([entry])
        self._set_membership(membership, (entry.index, entry.term))
        self._broadcast_append()
        return entry.index, entry.term

    def _maybe_promote(self) -> None:
        """Promote the first learner waiting for it whose log has reached our commit index."""
        if (
            not self._promotions
            or self.role is not _LEADER
            or self._transfer_target is not None
            or self._membership_at_entry[0] > self.commit
            or self.log.term_at(self.commit) != self.term
        ):
            return
        self._promotions = [p for p in self._promotions if p in self._membership.learners]
        for learner in self._promotions:
            if self._progress[learner].match >= self.commit:
                self._promotions.remove(learner)
                self._propose_membership(
                    Membership.of(
                        [*self._membership.voters, learner],
                        [m for m in self._membership.learners if m != learner],
                        self._membership.address_map(),
                    )
                )
                return

    # ------------------------------------------------------------------ transfer

    def _maybe_send_timeout_now(self) -> None:
        target = self._transfer_target
        if target is None:
            return
        progress = self._progress[target]
        if progress.match >= self.log.last_index:
            self._messages.append(Outbound(target, TimeoutNow(term=self.term)))
        else:
            self._send_appends(target)

    def _end_transfer(self, aborted: str | None) -> None:
        if self._transfer_target is None:
            return
        if aborted is not None:
            self._note(
                "raft.transfer_aborted",
                term=self.term,
                target=self._transfer_target,
                reason=aborted,
            )
        self._transfer_target = None
        self._transfer_elapsed = 0

    def _handle_timeout_now(self, src: str) -> None:
        if self.id not in self._voters or self.role is _LEADER:
            self.drops["timeout_now_ignored"] += 1
            return
        self.leader = None
        self._note("raft.timeout_now", term=self.term, sender=src)
        self._become_candidate(transfer=True)

    # ------------------------------------------------------------------ snapshot transfer

    def _start_snapshot(self, peer: str, progress: Progress) -> None:
        if self._snapshot is None:
            self.drops["no_snapshot_to_send"] += 1  # cannot happen: compaction follows one
            return
        progress.become_snapshot(self._snapshot)
        self._note("raft.sending_snapshot", to=peer, index=self._snapshot.meta.index)
        self._send_snapshot_chunk(peer, progress)

    def _send_snapshot_chunk(self, peer: str, progress: Progress) -> None:
        snapshot = progress.snapshot
        assert snapshot is not None
        offset = progress.snapshot_offset
        self._messages.append(
            Outbound(
                peer,
                InstallSnapshot(
                    term=self.term,
                    index=snapshot.meta.index,
                    snapshot_term=snapshot.meta.term,
                    membership=snapshot.meta.membership.encode(),
                    total=len(snapshot.data),
                    offset=offset,
                    data=snapshot.data[offset : offset + self.config.snapshot_chunk_bytes],
                ),
            )
        )

    def _handle_snapshot_reply(self, src: str, msg: InstallSnapshotReply) -> None:
        progress = self._member_progress(src)
        if progress is None:
            return
        sending = progress.snapshot
        if progress.state is not ProgressState.SNAPSHOT or sending is None:
            return  # a late answer; the follower has moved on
        if msg.index != sending.meta.index:
            return
        if msg.done:
            progress.snapshot_installed(msg.index)
            # The snapshot may be all it lacked: no append answer will follow to act on.
            self._follower_advanced(src)
            if self.role is _LEADER:
                self._send_appends(src)
            return
        if msg.next_offset > len(sending.data):
            self.drops["bad_snapshot_offset"] += 1
            return
        progress.snapshot_offset = msg.next_offset
        self._send_snapshot_chunk(src, progress)

    def _handle_install_snapshot(self, src: str, msg: InstallSnapshot) -> None:
        if self.role is not _FOLLOWER:
            self._become_follower(msg.term, src, reason="leader_seen")
        self.leader = src
        self._election_elapsed = 0
        if msg.index <= self.commit:
            # We hold everything it covers already (committed entries match the leader's).
            self._incoming = None
            self._reply_snapshot(src, msg.index, msg.total, done=True)
            return
        incoming = self._incoming
        same = (
            incoming is not None
            and incoming.index == msg.index
            and incoming.term == msg.snapshot_term
            and incoming.total == msg.total
        )
        if msg.offset == 0:
            incoming = _IncomingSnapshot(
                msg.index, msg.snapshot_term, msg.membership, msg.total, bytearray()
            )
            self._incoming = incoming
        elif incoming is None or not same or msg.offset != len(incoming.data):
            # A chunk out of order, or of another snapshot: say where we stand.
            self.drops["snapshot_chunk_out_of_order"] += 1
            self._messages.append(
                Outbound(
                    src,
                    InstallSnapshotReply(
                        term=self.term,
                        index=msg.index,
                        next_offset=len(incoming.data) if incoming is not None and same else 0,
                        done=False,
                    ),
                )
            )
            return
        incoming.data += msg.data
        if len(incoming.data) < incoming.total:
            self._messages.append(
                Outbound(
                    src,
                    InstallSnapshotReply(
                        term=self.term, index=msg.index, next_offset=len(incoming.data), done=False
                    ),
                )
            )
            return
        self._incoming = None
        try:
            membership = Membership.decode(incoming.membership)
        except ValueError:
            self.drops["bad_snapshot_membership"] += 1
            return
        self._install(
            Snapshot(
                meta=SnapshotMeta(index=incoming.index, term=incoming.term, membership=membership),
                data=bytes(incoming.data),
            )
        )
        self._reply_snapshot(src, msg.index, msg.total, done=True)

    def _install(self, snapshot: Snapshot) -> None:
        meta = snapshot.meta
        self.log.install_snapshot(meta.index, meta.term)
        self._snapshot = snapshot
        self._base_membership = meta.membership
        self._refresh_membership()
        self.commit = max(self.commit, meta.index)
        self._applied_handed = max(self._applied_handed, meta.index)
        self._pending_install = snapshot
        self._note("raft.snapshot_installed", index=meta.index, term=meta.term)

    def _reply_snapshot(self, src: str, index: int, total: int, *, done: bool) -> None:
        # After persist: "done" promises the snapshot (or what it covers) is on our disk.
        self._messages_after_persist.append(
            Outbound(
                src, InstallSnapshotReply(term=self.term, index=index, next_offset=total, done=done)
            )
        )

    # ------------------------------------------------------------------ reads

    def _start_reads(self, request_ids: list[int]) -> None:
        if self._voters == [self.id]:
            self._read_states.extend(ReadState(r, self.commit) for r in request_ids)
            return
        self._read_seq += 1
        for request_id in request_ids:
            acks = {self.id} if self.id in self._voters else set()
            self._pending_reads.append(_PendingRead(self._read_seq, request_id, self.commit, acks))
        self._broadcast_heartbeat()

    def _confirm_reads(self, src: str, ctx: int) -> None:
        if src not in self._voters:
            return
        needed = majority(len(self._voters))
        confirmed = -1
        for position, pending in enumerate(self._pending_reads):
            if pending.ctx > ctx:
                break
            pending.acks.add(src)
            if sum(1 for ack in pending.acks if ack in self._voters) >= needed:
                confirmed = position
        if confirmed < 0:
            return
        # A quorum answered a heartbeat sent after every request up to this one.
        for pending in self._pending_reads[: confirmed + 1]:
            self._read_states.append(ReadState(pending.request_id, pending.index))
        del self._pending_reads[: confirmed + 1]

    def _drop_reads(self) -> None:
        self._dropped_reads.extend(p.request_id for p in self._pending_reads)
        self._dropped_reads.extend(self._reads_waiting_for_commit)
        self._pending_reads = []
        self._reads_waiting_for_commit = []
