"""Raft's tunables, each documented with its unit, trade-off and safe range.

Time in the core is counted in *ticks*: the driver calls ``RaftCore.tick()`` every
``tick_ms`` milliseconds of real time, the simulator every ``tick_ms`` of virtual time.

Default timing, and why (``RaftConfig.lan()``):

* ``tick_ms = 10``: fine enough that timeouts are not rounded coarsely, coarse enough that a
  Python event loop on a busy 2-core machine keeps up (100 wake-ups a second).
* ``heartbeat_ticks = 5`` (50 ms): a follower hears the leader four times inside the minimum
  election timeout, so three heartbeats in a row must be lost or late before anyone moves.
* ``election_timeout_min_ticks = 20`` / ``election_timeout_max_ticks = 40`` (a random timeout
  in [200 ms, 400 ms)): the paper recommends 150-300 ms for a LAN (thesis §9.3: with a 150 ms
  spread the worst of 1,000 elections took 513 ms at 50 ms of spread, and more spread means
  fewer split votes). We scale it by 4/3 because a CPython process on a loaded machine sees
  scheduling stalls of tens of milliseconds that C++ LogCabin did not: a stall shorter than
  200 ms never causes an election. The expected failover after a leader crash is the minimum
  of the followers' timeouts past the last heartbeat (about 270 ms for two followers) plus one
  pre-vote and one vote round trip, so the median stays under the 500 ms target real clusters
  are held to.

Safety does not depend on any of these numbers; liveness and failover time do.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from prism.validated import Validated


@dataclass(frozen=True, slots=True, kw_only=True)
class RaftConfig(Validated):
    """Configuration of one Raft core. Build with ``lan()`` and ``dataclasses.replace``."""

    tick_ms: int = 10
    """Milliseconds of (real or virtual) time per tick. Only drivers and the simulator read it."""

    heartbeat_ticks: int = 5
    """Ticks between leader heartbeats. Must be well below ``election_timeout_min_ticks``
    (at least 3 times) so that one lost heartbeat does not start an election."""

    election_timeout_min_ticks: int = 20
    """Lower bound of the randomized election timeout. Also the window of leader
    stickiness and of check-quorum: a follower that heard from its leader within this many
    ticks ignores vote requests, and a leader that has not heard from a quorum within it
    steps down. Safe range: 10 x heartbeat round trip up to seconds."""

    election_timeout_max_ticks: int = 40
    """Upper bound (exclusive) of the randomized election timeout. The spread
    ``max - min`` is what separates candidates and avoids split votes (thesis §9.3)."""

    pre_vote: bool = True
    """Ask for a pre-vote before raising the term (thesis §9.6), so a node that cannot win
    (partitioned, behind) never disrupts a healthy leader by raising terms."""

    check_quorum: bool = True
    """A leader that has not heard from a quorum within ``election_timeout_min_ticks`` steps
    down, and followers that heard from a leader within that window ignore vote requests
    (leader stickiness, thesis §4.2.3). Together with ``pre_vote`` this makes at most one
    leader able to commit, and keeps a flaky link or partial connectivity from causing
    elections."""

    max_append_bytes: int = 32 * 1024
    """Byte budget of one AppendEntries (entry payloads). At least one entry is always sent,
    however large. Bigger batches mean fewer datagrams; smaller ones fit a UDP datagram."""

    max_append_entries: int = 512
    """Most entries in one AppendEntries, whatever their size."""

    max_inflight_appends: int = 64
    """Pipelining window: AppendEntries messages sent to one follower and not yet answered.
    When the window is full the leader waits for acknowledgements. 1 disables pipelining."""

    max_uncommitted_entries: int = 4096
    """Proposals are refused (``ProposalDropped``) while this many entries are appended but
    not committed, so a leader without a quorum cannot grow its log without bound."""

    max_entry_bytes: int = 32 * 1024
    """Largest command a proposal may carry. With ``max_append_bytes`` it keeps every
    AppendEntries inside one UDP datagram (the codec's limit is 65,000 bytes)."""

    snapshot_threshold_entries: int = 32_768
    """Take a snapshot once this many entries were applied since the last one (HashiCorp
    Raft's SnapshotThreshold). Smaller means less replay on restart and more snapshot work.
    A snapshot serializes the whole state machine in the event loop, so its cost per write
    is the state's size over this number: at 8,192 a node under 22,000 writes a second to
    1,024 keys of 1 KB spent 5-8% of its CPU on snapshots (py-spy); 32,768 takes a quarter
    of that, and a restart replays at most about 0.16 s of log (4.8 µs an entry in
    ``benchmarks.raft_restart``). etcd takes 100,000, Consul checks 16,384 every 30 s. The
    log in memory past the snapshot grows to this many entries."""

    snapshot_trailing_entries: int = 1024
    """Entries kept in the log behind a snapshot, so a follower slightly behind catches up
    by AppendEntries instead of a whole snapshot (HashiCorp's TrailingLogs, scaled down)."""

    snapshot_chunk_bytes: int = 32 * 1024
    """Bytes of snapshot per InstallSnapshot message: one datagram each."""

    unsafe_commit_old_terms: bool = False
    """TEST ONLY: commit entries of earlier terms by counting replicas (the bug of the
    paper's Figure 8). Exists so tests can prove the invariant checkers catch it."""

    unsafe_skip_vote_log_check: bool = False
    """TEST ONLY: grant votes without checking that the candidate's log is up to date
    (Raft §5.4.1). Exists so tests can prove the invariant checkers catch it."""

    unsafe_local_reads: bool = False
    """TEST ONLY: a leader serves reads from its own state without a ReadIndex quorum round,
    so a deposed leader can return stale data. Exists so tests can prove the
    linearizability checker catches it."""

    @classmethod
    def lan(cls) -> RaftConfig:
        """Defaults for one data centre; see the module docstring for the reasoning."""
        return cls()

    @classmethod
    def wan(cls) -> RaftConfig:
        """Links with 30-100 ms round trips: heartbeats and timeouts five times longer."""
        return dataclasses.replace(
            cls.lan(),
            heartbeat_ticks=25,
            election_timeout_min_ticks=100,
            election_timeout_max_ticks=200,
        )

    @property
    def is_unsafe(self) -> bool:
        """True when a test-only switch that breaks a Raft rule is on."""
        return (
            self.unsafe_commit_old_terms
            or self.unsafe_skip_vote_log_check
            or self.unsafe_local_reads
        )

    def problems(self) -> list[str]:
        """Every problem with this configuration, one line each (empty when valid)."""
        found = [
            f"{name} must be at least 1"
            for name in (
                "tick_ms",
                "heartbeat_ticks",
                "election_timeout_min_ticks",
                "max_append_bytes",
                "max_append_entries",
                "max_inflight_appends",
                "max_uncommitted_entries",
                "max_entry_bytes",
                "snapshot_threshold_entries",
                "snapshot_chunk_bytes",
            )
            if getattr(self, name) < 1
        ]
        if self.snapshot_trailing_entries < 0:
            found.append("snapshot_trailing_entries must be at least 0")
        found.extend(
            f"{name} must be at most 49152 (one datagram per message)"
            for name in ("max_append_bytes", "max_entry_bytes", "snapshot_chunk_bytes")
            if getattr(self, name) > 48 * 1024
        )
        if self.election_timeout_max_ticks <= self.election_timeout_min_ticks:
            found.append("election_timeout_max_ticks must exceed election_timeout_min_ticks")
        if self.heartbeat_ticks * 2 > self.election_timeout_min_ticks:
            found.append(
                "heartbeat_ticks must be at most half of election_timeout_min_ticks "
                "(a third or less is recommended)"
            )
        return found
