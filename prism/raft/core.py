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
"""

from __future__ import annotations

import enum
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import final

from prism.errors import NotLeader, ProposalDropped
from prism.raft.config import RaftConfig
from prism.raft.log import RaftLog
from prism.raft.messages import (
    AppendEntries,
    AppendEntriesReply,
    Entry,
    EntryKind,
    Heartbeat,
    HeartbeatReply,
    RaftMessage,
    RequestVote,
    RequestVoteReply,
)
from prism.raft.progress import Progress, ProgressState
from prism.raft.quorum import VoteResult, committed_index, majority, vote_result
from prism.raft.ready import HardState, Note, Outbound, ReadState, Ready


class Role(enum.StrEnum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre_candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(slots=True)
class _PendingRead:
    """A ReadIndex request waiting for a quorum to confirm leadership.

    Invariant: ``acks`` is only tested for membership and counted, never iterated.
    """

    ctx: int
    request_id: int
    index: int
    acks: set[str]


@final
class RaftCore:
    """One Raft server's protocol state. See the module docstring."""

    def __init__(
        self,
        node_id: str,
        voters: Sequence[str],
        *,
        config: RaftConfig,
        rng: random.Random,
        hard_state: HardState | None = None,
        entries: Sequence[Entry] = (),
    ) -> None:
        config.validate()
        if node_id not in voters:
            raise ValueError(f"{node_id} is not among the voters {sorted(voters)}")
        if len(set(voters)) != len(voters):
            raise ValueError("duplicate voter ids")
        self.id = node_id
        self.config = config
        self._rng = rng
        self._voters = sorted(voters)
        self._peers = [v for v in self._voters if v != node_id]
        state = hard_state or HardState()
        self.term = state.term
        self.vote = state.vote
        self.log = RaftLog(entries)
        self.commit = min(state.commit, self.log.last_index)
        self._applied_handed = 0  # committed entries handed out for applying
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
        self._last_hard_state = HardState(self.term, self.vote, self.commit)
        # Messages ignored, by reason: bad or stale input is counted, never raised.
        self.drops: Counter[str] = Counter()
        self._outstanding = False  # a Ready was handed out and not yet advanced

    # ------------------------------------------------------------------ queries

    @property
    def voters(self) -> tuple[str, ...]:
        return tuple(self._voters)

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.commit)

    def progress(self, peer: str) -> Progress | None:
        """The leader's replication state for ``peer`` (None when not leading)."""
        return self._progress.get(peer)

    # ------------------------------------------------------------------ inputs

    def tick(self) -> None:
        """Advance logical time by one tick."""
        self._ticks += 1
        if self.role is Role.LEADER:
            self._tick_leader()
        else:
            self._election_elapsed += 1
            if self._election_elapsed >= self._randomized_timeout:
                self._election_elapsed = 0
                self._campaign()

    def campaign(self) -> None:
        """Start an election now, as if the election timeout had passed (tests, transfer)."""
        if self.role is not Role.LEADER:
            self._campaign()

    def step_down(self, reason: str) -> None:
        """Stop leading now (for example, because the driver's disk stalls): a follower of the
        same term, so another server can be elected. Does nothing when not leading."""
        if self.role is Role.LEADER:
            self._become_follower(self.term, None, reason=reason)

    def propose(self, data: bytes, *, client_id: str = "", seq: int = 0) -> tuple[int, int]:
        """Append a command; returns its (index, term).

        The command is committed when an entry with this index *and term* is applied; if a
        different entry is applied at that index, the proposal was lost and may be retried
        (with the same ``client_id`` and ``seq``, the state machine applies it once).
        """
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader)
        if self.log.last_index - self.commit >= self.config.max_uncommitted_entries:
            raise ProposalDropped(
                f"{self.log.last_index - self.commit} entries await commit; the leader may "
                "have lost its quorum"
            )
        entry = Entry(
            term=self.term,
            index=self.log.last_index + 1,
            data=data,
            client_id=client_id,
            seq=seq,
        )
        self.log.append([entry])
        self._broadcast_append()
        return entry.index, entry.term

    def read_index(self, request_id: int) -> None:
        """Ask for a linearizable read. A ``ReadState`` with ``request_id`` appears in a later
        ``Ready`` once leadership is confirmed; the read is served when the state machine has
        applied its index. If this node stops leading first, the id appears in
        ``Ready.dropped_reads`` instead."""
        if self.role is not Role.LEADER:
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

    def step(self, src: str, msg: RaftMessage) -> None:
        """Process one message from peer ``src``. Unknown senders are ignored."""
        if src == self.id or src not in self._voters:
            self.drops["unknown_sender"] += 1
            return
        if msg.term > self.term:
            if isinstance(msg, RequestVote):
                if self._in_lease():
                    self.drops["vote_request_in_lease"] += 1
                    return  # leader stickiness: a live leader is known; ignore
                if msg.pre_vote:
                    self._handle_request_vote(src, msg)
                    return  # a pre-vote never changes the receiver's term
                self._become_follower(msg.term, None, reason="higher_term")
            elif isinstance(msg, RequestVoteReply) and msg.pre_vote and msg.granted:
                pass  # a granted pre-vote carries the future term; it is not a new term
            else:
                leader = src if isinstance(msg, AppendEntries | Heartbeat) else None
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
        )

    def ready(self) -> Ready:
        """Take the pending work. Call ``advance`` with it once it is done; only one
        ``Ready`` may be outstanding at a time."""
        if self._outstanding:
            raise RuntimeError("ready() called again before advance() of the previous Ready")
        self._outstanding = True
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
        )
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
            if self.role is Role.LEADER and self._maybe_commit():
                self._broadcast_append(send_if_empty=True)

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
        if was is Role.LEADER:
            self._progress = {}
            self._drop_reads()
            self._note("raft.stepped_down", term=self.term, reason=reason)

    def _campaign(self) -> None:
        if self.config.pre_vote:
            self.role = Role.PRE_CANDIDATE
            self.leader = None
            self._votes = {self.id: True}
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

    def _become_candidate(self) -> None:
        self.term += 1
        self.vote = self.id
        self.role = Role.CANDIDATE
        self.leader = None
        self._election_elapsed = 0
        self._reset_randomized_timeout()
        self._votes = {self.id: True}
        self._note("raft.campaign", term=self.term)
        if vote_result(self._votes, len(self._voters)) is VoteResult.WON:
            self._become_leader()
            return
        request = RequestVote(
            term=self.term, last_log_index=self.log.last_index, last_log_term=self.log.last_term
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
        self._progress = {
            peer: Progress(
                next_index=self.log.last_index + 1,
                max_inflight=self.config.max_inflight_appends,
                now_tick=self._ticks,
            )
            for peer in self._peers
        }
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
        if self.role is Role.LEADER:
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
        if self._heartbeat_elapsed >= self.config.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            self._broadcast_heartbeat()

    def _quorum_recently_heard(self) -> bool:
        window = self.config.election_timeout_min_ticks
        heard = 1 + sum(
            1 for peer in self._peers if self._ticks - self._progress[peer].last_heard_tick < window
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
        if isinstance(msg, AppendEntries | Heartbeat) and (
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
        if self.role is not Role.FOLLOWER:
            self._become_follower(msg.term, src, reason="leader_seen")
        self.leader = src
        self._election_elapsed = 0
        if msg.prev_log_index < self.commit:
            reply = AppendEntriesReply(term=self.term, success=True, match_index=self.commit)
        else:
            last_new = self.log.maybe_append(msg.prev_log_index, msg.prev_log_term, msg.entries)
            if last_new is not None:
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
        if self.role is not Role.FOLLOWER:
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

    def _handle_append_reply(self, src: str, msg: AppendEntriesReply) -> None:
        if self.role is not Role.LEADER:
            return
        progress = self._progress[src]
        progress.last_heard_tick = self._ticks
        if msg.success:
            if progress.maybe_update(msg.match_index):
                if progress.state is ProgressState.PROBE:
                    progress.become_replicate()
                if self._maybe_commit():
                    self._broadcast_append(send_if_empty=True)
            self._send_appends(src)
            return
        hint_next = msg.hint_index + 1
        if msg.hint_term > 0:
            hint_next = self.log.find_conflict_by_term(msg.hint_index, msg.hint_term)[0] + 1
        if progress.maybe_decrease_to(msg.rejected_index, hint_next):
            if progress.state is ProgressState.REPLICATE:
                progress.become_probe()
            self._send_append(src, send_if_empty=True)

    def _handle_heartbeat_reply(self, src: str, msg: HeartbeatReply) -> None:
        if self.role is not Role.LEADER:
            return
        progress = self._progress[src]
        progress.last_heard_tick = self._ticks
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
            # Compacted away: needs a snapshot, which arrives with InstallSnapshot (issue 3).
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
        """Advance the commit index to what a quorum holds durably; True if it moved."""
        matches = [self.log.stable_index] + [self._progress[p].match for p in self._peers]
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

    # ------------------------------------------------------------------ reads

    def _start_reads(self, request_ids: list[int]) -> None:
        if not self._peers:
            self._read_states.extend(ReadState(r, self.commit) for r in request_ids)
            return
        self._read_seq += 1
        for request_id in request_ids:
            self._pending_reads.append(
                _PendingRead(self._read_seq, request_id, self.commit, {self.id})
            )
        self._broadcast_heartbeat()

    def _confirm_reads(self, src: str, ctx: int) -> None:
        needed = majority(len(self._voters))
        confirmed = -1
        for position, pending in enumerate(self._pending_reads):
            if pending.ctx > ctx:
                break
            pending.acks.add(src)
            if len(pending.acks) >= needed:
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
