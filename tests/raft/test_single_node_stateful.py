"""One ``RaftCore`` fed arbitrary valid messages from its peers, ticks, proposals, reads and
crashes, with Raft's per-node safety properties checked after every step.

"Valid" means what a real peer could send: every message is well formed, and a peer that
sends leader traffic (AppendEntries, Heartbeat) for a term is that term's only leader, never
the core itself (Election Safety, Raft Figure 3). Everything else (terms, indexes, entries,
hints, pre-vote flags, read contexts) is random, including stale and duplicated traffic.
"""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from prism.errors import NotLeader, ProposalDropped
from prism.raft.config import RaftConfig
from prism.raft.core import RaftCore, Role
from prism.raft.kv import KVStateMachine
from prism.raft.messages import (
    AppendEntries,
    AppendEntriesReply,
    Entry,
    Heartbeat,
    HeartbeatReply,
    RaftMessage,
    RequestVote,
    RequestVoteReply,
)
from prism.raft.ready import HardState, Outbound, Ready
from prism.raft.storage import MemoryStorage
from tests.raft.cluster import entries_with_terms, put

# Short timeouts and small windows, so a few dozen steps reach every code path.
CONFIG = RaftConfig(
    heartbeat_ticks=2,
    election_timeout_min_ticks=5,
    election_timeout_max_ticks=10,
    max_append_entries=3,
    max_append_bytes=120,
    max_inflight_appends=2,
    max_uncommitted_entries=6,
)

KINDS = ("vote", "vote_reply", "append", "append_reply", "heartbeat", "heartbeat_reply")


class SingleCore(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.storage = MemoryStorage()
        self.voters: list[str] = []
        self.config = CONFIG
        self.seed = 0
        self.boots = 0
        self.core: RaftCore
        self.kv = KVStateMachine()
        self.max_term = 0  # highest durable term seen
        self.commit = 0  # highest commit index seen
        self.votes: dict[int, str] = {}  # term -> the one candidate voted for (self included)
        self.applied: dict[int, Entry] = {}  # index -> entry applied there, across restarts
        self.led: set[int] = set()  # terms this core led
        self.leading: tuple[int, list[Entry]] | None = None  # (term, log when last seen)
        self.next_read = 1
        self.reads_open: set[int] = set()
        self.outbox: list[tuple[str, RaftMessage]] = []  # what the core sent, oldest first
        self.unanswered: list[tuple[str, RaftMessage]] = []  # sent since answer_all ran

    # ------------------------------------------------------------------ plumbing

    @property
    def peers(self) -> list[str]:
        return [v for v in self.voters if v != "n1"]

    def boot(self) -> None:
        """Build the core from storage, as a restarted process does."""
        self.boots += 1
        self.core = RaftCore(
            "n1",
            self.voters,
            config=self.config,
            rng=random.Random(f"{self.seed}/{self.boots}"),
            hard_state=self.storage.hard_state,
            entries=list(self.storage.entries),
        )
        self.kv = KVStateMachine()
        self.leading = None
        self.reads_open.clear()  # a crash loses pending reads; the clients time out

    def send(self, outbound: tuple[Outbound, ...]) -> None:
        """Messages leave the node: the votes they carry are promises, record them."""
        for out in outbound:
            msg = out.message
            self.outbox.append((out.to, msg))
            self.unanswered.append((out.to, msg))
            if isinstance(msg, RequestVote) and not msg.pre_vote:
                self.record_vote(msg.term, "n1")
            elif isinstance(msg, RequestVoteReply) and msg.granted and not msg.pre_vote:
                self.record_vote(msg.term, out.to)

    def record_vote(self, term: int, candidate: str) -> None:
        voted = self.votes.setdefault(term, candidate)
        assert voted == candidate, f"voted for {voted} and {candidate} in term {term}"

    def check_ready(self, ready: Ready) -> None:
        core = self.core
        if ready.read_states:
            assert core.role is Role.LEADER, "a ReadState from a node that is not leading"
        if ready.committed_entries:
            event("commits")
        if ready.read_states:
            event("serves a read")
        if ready.dropped_reads:
            event("drops a read")
        for read in ready.read_states:
            assert read.request_id in self.reads_open
            assert read.index <= core.commit
            self.reads_open.discard(read.request_id)
        for request_id in ready.dropped_reads:
            assert request_id in self.reads_open
            self.reads_open.discard(request_id)
        if ready.hard_state is not None:
            assert ready.hard_state.term >= self.storage.hard_state.term

    def drain(self) -> None:
        """The Ready loop of ``prism.raft.ready``, checking each Ready."""
        core = self.core
        for _ in range(1000):
            if not core.has_ready():
                break
            ready = core.ready()
            self.check_ready(ready)
            self.send(ready.messages)
            self.storage.save(ready.hard_state, ready.entries)
            self.send(ready.messages_after_persist)
            for entry in ready.committed_entries:
                assert self.applied.setdefault(entry.index, entry) == entry, "commit changed"
                self.kv.apply(entry)
            core.advance(ready)
        else:
            raise AssertionError("the core always has a Ready")
        self.after_step()

    def after_step(self) -> None:
        core = self.core
        state = self.storage.hard_state
        assert state == core.hard_state(), "the loop left something unpersisted"
        assert core.term >= self.max_term, "term went down"
        self.max_term = core.term
        if state.vote is not None:
            self.record_vote(state.term, state.vote)
        assert core.commit >= self.commit, "commit went down"
        if core.role is Role.LEADER and core.commit > self.commit:
            # Raft §5.4.2: a leader commits by counting only entries of its own term.
            assert core.log.term_at(core.commit) == core.term, "committed an old term's entry"
        self.commit = core.commit
        assert core.commit <= core.log.last_index
        assert self.kv.applied_index == core.commit
        if core.role is Role.LEADER:
            event("leads")
            self.led.add(core.term)
            log = core.log.slice(1, core.log.last_index + 1)
            if self.leading is not None and self.leading[0] == core.term:
                old = self.leading[1]
                assert log[: len(old)] == old, "a leader rewrote its own log"
            self.leading = (core.term, log)
        else:
            self.leading = None
            # Thesis §6.4: a node that stops leading answers every read it held (dropped).
            assert not self.reads_open, f"reads {self.reads_open} left pending"

    # ------------------------------------------------------------------ messages

    def message(self, data: st.DataObject) -> tuple[str, RaftMessage]:
        core = self.core
        last = core.log.last_index
        # Mostly the current term, some stale, a few newer (each newer one demotes the core).
        t = core.term
        term = data.draw(st.sampled_from([t] * 6 + [max(t - 1, 0)] * 2 + [t + 1, t + 2]))
        kind = data.draw(st.sampled_from(KINDS), label="kind")
        src = data.draw(st.sampled_from(self.peers), label="src")
        if kind in ("append", "heartbeat"):
            while term in self.led:
                term += 1  # Election Safety: we led that term, nobody else did
            src = self.peers[term % len(self.peers)]  # one leader per term
        if kind == "vote":
            return src, RequestVote(
                term=term,
                last_log_index=data.draw(st.integers(0, last + 2)),
                last_log_term=data.draw(st.integers(0, term)),
                pre_vote=data.draw(st.booleans()),
            )
        if kind == "vote_reply":
            return src, RequestVoteReply(
                term=term, granted=data.draw(st.booleans()), pre_vote=data.draw(st.booleans())
            )
        if kind == "heartbeat":
            return src, Heartbeat(
                term=term,
                commit=data.draw(st.integers(0, last + 1)),
                read_ctx=data.draw(st.integers(0, 4)),
            )
        if kind == "heartbeat_reply":
            return src, HeartbeatReply(term=term, read_ctx=data.draw(st.integers(0, 4)))
        if kind == "append_reply":
            if data.draw(st.booleans(), label="success"):
                return src, AppendEntriesReply(
                    term=term, success=True, match_index=data.draw(st.integers(0, last))
                )
            return src, AppendEntriesReply(
                term=term,
                success=False,
                rejected_index=data.draw(st.integers(0, last)),
                hint_index=data.draw(st.integers(0, last)),
                hint_term=data.draw(st.integers(0, term)),
            )
        prev = data.draw(st.integers(0, last + 1), label="prev")
        ours = min(core.log.term_at(prev) or 0, term)
        prev_term = data.draw(st.one_of(st.just(ours), st.integers(0, term)), label="prev_term")
        entries: list[Entry] = []
        floor = prev_term
        for index in range(prev + 1, prev + 1 + data.draw(st.integers(0, 3), label="count")):
            floor = data.draw(st.integers(floor, term), label="entry_term")
            entries.append(Entry(term=floor, index=index, data=put(f"k{index % 3}", str(floor))))
        return src, AppendEntries(
            term=term,
            prev_log_index=prev,
            prev_log_term=prev_term,
            entries=tuple(entries),
            leader_commit=data.draw(st.integers(0, prev + len(entries) + 1)),
        )

    # ------------------------------------------------------------------ rules

    @initialize(
        seed=st.integers(0, 1000),
        size=st.sampled_from([3, 5]),
        pre_vote=st.booleans(),
        check_quorum=st.booleans(),
        terms=st.lists(st.integers(1, 3), max_size=5),
    )
    def start(
        self, seed: int, size: int, pre_vote: bool, check_quorum: bool, terms: list[int]
    ) -> None:
        """Boot, possibly from a disk holding uncommitted entries of earlier terms (the
        start of Raft Figure 8)."""
        self.seed = seed
        self.voters = [f"n{i}" for i in range(1, size + 1)]
        self.config = dataclasses.replace(CONFIG, pre_vote=pre_vote, check_quorum=check_quorum)
        self.storage.entries = entries_with_terms(sorted(terms))
        self.storage.hard_state = HardState(term=max(terms, default=0))
        self.max_term = self.storage.hard_state.term
        self.boot()

    @rule(data=st.data())
    def step(self, data: st.DataObject) -> None:
        src, msg = self.message(data)
        self.core.step(src, msg)
        self.drain()

    @precondition(lambda self: self.outbox)
    @rule(data=st.data())
    def answer(self, data: st.DataObject) -> None:
        """Peers answer some of the recent requests the core sent, as healthy peers would,
        but late, twice or out of order, and not always favourably."""
        window = self.outbox[-12:]
        picks = data.draw(st.lists(st.sampled_from(window), min_size=1, max_size=6), label="asks")
        for to, msg in picks:
            self.answer_one(data, to, msg)

    @precondition(lambda self: self.core.role is Role.LEADER)
    @rule(data=st.data())
    def acknowledge(self, data: st.DataObject) -> None:
        """A follower reports it matches the leader up to some index of the leader's log
        (after a probe, or an answer that arrived late)."""
        src = data.draw(st.sampled_from(self.peers), label="follower")
        match = data.draw(st.integers(0, self.core.log.last_index), label="match")
        self.core.step(
            src, AppendEntriesReply(term=self.core.term, success=True, match_index=match)
        )
        self.drain()

    @precondition(lambda self: self.unanswered)
    @rule(data=st.data())
    def answer_all(self, data: st.DataObject) -> None:
        """The peers answer, favourably and in order, everything the core sent since the last
        time (up to a dozen). Random traffic rarely assembles a quorum of votes or
        acknowledgements; with this, elections, replication and reads make progress."""
        batch, self.unanswered = self.unanswered[-12:], []
        for to, msg in batch:
            self.answer_one(data, to, msg, favourable=True)

    def answer_one(
        self, data: st.DataObject, to: str, msg: RaftMessage, *, favourable: bool = False
    ) -> None:
        reply: RaftMessage
        if isinstance(msg, RequestVote):
            granted = favourable or data.draw(st.booleans(), label="granted")
            reply = RequestVoteReply(term=msg.term, granted=granted, pre_vote=msg.pre_vote)
        elif isinstance(msg, Heartbeat):
            reply = HeartbeatReply(term=msg.term, read_ctx=msg.read_ctx)
        elif isinstance(msg, AppendEntries):
            if not favourable and data.draw(st.booleans(), label="reject"):
                hint = data.draw(st.integers(0, msg.prev_log_index), label="hint")
                reply = AppendEntriesReply(
                    term=msg.term,
                    success=False,
                    rejected_index=msg.prev_log_index,
                    hint_index=hint,
                    hint_term=data.draw(st.integers(0, msg.prev_log_term), label="hint_term"),
                )
            else:
                match = msg.prev_log_index + len(msg.entries)
                reply = AppendEntriesReply(term=msg.term, success=True, match_index=match)
        else:
            return  # peers do not answer answers
        self.core.step(to, reply)
        self.drain()

    @rule(ticks=st.integers(1, 12))
    def tick(self, ticks: int) -> None:
        for _ in range(ticks):
            self.core.tick()
            self.drain()

    @rule()
    def campaign(self) -> None:
        self.core.campaign()
        self.drain()

    @rule(value=st.integers(0, 9), client=st.sampled_from(["", "a", "b"]), seq=st.integers(0, 3))
    def propose(self, value: int, client: str, seq: int) -> None:
        if self.core.role is not Role.LEADER:
            with pytest.raises(NotLeader):
                self.core.propose(put("k", str(value)), client_id=client, seq=seq)
            return
        try:
            index, term = self.core.propose(put("k", str(value)), client_id=client, seq=seq)
        except ProposalDropped:
            return
        assert (index, term) == (self.core.log.last_index, self.core.term)
        self.drain()

    @rule()
    def read_index(self) -> None:
        request_id = self.next_read
        self.next_read += 1
        if self.core.role is not Role.LEADER:
            with pytest.raises(NotLeader):
                self.core.read_index(request_id)
            return
        self.reads_open.add(request_id)
        self.core.read_index(request_id)
        self.drain()

    @rule()
    def restart(self) -> None:
        """A clean crash: everything handed out was persisted."""
        self.boot()
        self.drain()

    @rule(data=st.data())
    def crash_before_persist(self, data: st.DataObject) -> None:
        """Crash between ``ready()`` and the write: the early messages may have left, the
        write and the messages waiting for it are lost together."""
        if data.draw(st.booleans(), label="tick"):
            self.core.tick()
        else:
            self.core.step(*self.message(data))
        if self.core.role is Role.LEADER:
            self.led.add(self.core.term)  # its appends may have left: nobody else leads it
        if self.core.has_ready():
            ready = self.core.ready()
            self.check_ready(ready)
            self.send(ready.messages)
        self.boot()
        self.drain()

    @invariant()
    def durable_state_matches(self) -> None:
        assert self.storage.hard_state.term == self.max_term


TestSingleCore = pytest.mark.slow(SingleCore.TestCase)
TestSingleCore.settings = settings(max_examples=200, stateful_step_count=50, deadline=None)
