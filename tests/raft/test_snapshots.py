"""Snapshots in the Raft core: local compaction, InstallSnapshot in chunks, and restarting from
a snapshot (Raft §7 and Figure 13, thesis §5). Cluster-level tests run ``Cluster``, whose
``run_ready`` persists, restores, applies and snapshots as the driver does; the follower-side
rules are pinned on a single core fed hand-built chunks."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TypeVar

import pytest

from prism.raft.core import RaftCore, Role
from prism.raft.membership import Membership
from prism.raft.messages import (
    AppendEntries,
    AppendEntriesReply,
    Entry,
    EntryKind,
    InstallSnapshot,
    InstallSnapshotReply,
    RaftMessage,
    RequestVoteReply,
)
from prism.raft.progress import ProgressState
from prism.raft.ready import HardState, Ready
from prism.raft.snapshot import Snapshot, SnapshotMeta
from prism.raft.storage import MemoryStorage
from tests.raft.cluster import ELECTION, LAN, SMALL_SNAPSHOTS, Cluster, entries_with_terms, put

THREE = Membership.of(["n1", "n2", "n3"])
_M = TypeVar("_M", InstallSnapshot, InstallSnapshotReply)


def _rounds(c: Cluster, n: int, drop: Callable[[str, str, RaftMessage], bool]) -> None:
    """``tick_all`` with a lossy network."""
    for _ in range(n):
        for node in c.ids:
            c.tick(node)
        c.deliver_all(drop)


def _of_type(c: Cluster, kind: type[_M], src: str, dst: str, start: int = 0) -> list[_M]:
    return [m for s, d, m in c.sent[start:] if s == src and d == dst and isinstance(m, kind)]


def _snapshot_index(core: RaftCore) -> int:
    assert core.snapshot is not None
    return core.snapshot.meta.index


# ---------------------------------------------------------------------- a follower, by hand


def _follower(terms: Sequence[int], *, term: int, commit: int) -> tuple[RaftCore, MemoryStorage]:
    """Server n2 of n1..n3, restarted from a storage holding a log of ``terms``."""
    storage = MemoryStorage()
    storage.save(HardState(term=term, commit=commit), entries_with_terms(terms))
    core = RaftCore(
        "n2",
        ["n1", "n2", "n3"],
        config=SMALL_SNAPSHOTS,
        rng=random.Random("follower"),
        hard_state=storage.hard_state,
        entries=storage.entries,
    )
    _drain(core, storage)
    return core, storage


def _drain(core: RaftCore, storage: MemoryStorage) -> list[Ready]:
    """The Ready loop without a network: persist (snapshot included), advance."""
    readies = []
    while core.has_ready():
        ready = core.ready()
        storage.save(ready.hard_state, ready.entries, ready.snapshot)
        readies.append(ready)
        core.advance(ready)
    return readies


def _chunks(
    data: bytes, *, term: int, index: int, snapshot_term: int, size: int = 64
) -> list[InstallSnapshot]:
    membership = THREE.encode()
    return [
        InstallSnapshot(
            term=term,
            index=index,
            snapshot_term=snapshot_term,
            membership=membership,
            total=len(data),
            offset=offset,
            data=data[offset : offset + size],
        )
        for offset in range(0, len(data), size)
    ]


def _snapshot_replies(
    readies: Sequence[Ready], *, after_persist: bool
) -> list[InstallSnapshotReply]:
    return [
        out.message
        for ready in readies
        for out in (ready.messages_after_persist if after_persist else ready.messages)
        if isinstance(out.message, InstallSnapshotReply)
    ]


# ---------------------------------------------------------------------- local snapshots


def test_compaction_keeps_trailing_entries() -> None:
    """Raft §7 with HashiCorp's trailing logs: once ``snapshot_threshold_entries`` entries are
    applied past the last snapshot, the node snapshots at its applied index and compacts the
    log to ``snapshot_trailing_entries`` entries behind it, in memory and in storage alike."""
    c = Cluster(3, config=SMALL_SNAPSHOTS)
    c.elect("n1")
    c.write("n1", 25)
    for node in c.ids:
        core, storage = c[node], c.storage[node]
        index = _snapshot_index(core)
        assert index >= 20
        assert core.log.snapshot_index == index - SMALL_SNAPSHOTS.snapshot_trailing_entries
        assert core.log.first_index == index - SMALL_SNAPSHOTS.snapshot_trailing_entries + 1
        with pytest.raises(IndexError):
            core.log.entry(core.log.snapshot_index)
        assert core.log.entry(index).index == index  # trailing entries are still served
        assert storage.snapshot == core.snapshot
        assert storage.entries[0].index == core.log.first_index
        assert storage.entries[-1].index == core.log.last_index == 26


def test_snapshot_meta_refuses_unapplied_or_compacted_indexes() -> None:
    """Raft §7: a snapshot covers applied state only. ``snapshot_meta`` refuses an index that
    was not handed out for applying yet, and one behind the compacted prefix."""
    core = RaftCore("n1", ["n1"], config=SMALL_SNAPSHOTS, rng=random.Random(1))
    storage = MemoryStorage()
    core.campaign()
    _drain(core, storage)
    for i in range(14):
        core.propose(put(f"k{i}", "v"))
    assert core.commit < 15  # not durable yet, so not committed, so not applied
    with pytest.raises(ValueError, match="cannot snapshot"):
        core.snapshot_meta(15)
    ready = core.ready()
    storage.save(ready.hard_state, ready.entries)
    core.advance(ready)  # durable and committed, but handed out only in the next Ready
    assert core.commit == 15
    with pytest.raises(ValueError, match="cannot snapshot"):
        core.snapshot_meta(15)
    _drain(core, storage)
    meta = core.snapshot_meta(15)
    assert (meta.index, meta.term, meta.membership) == (15, 1, Membership.of(["n1"]))
    assert core.wants_snapshot(15)
    assert core.snapshot_saved(Snapshot(meta=meta, data=b"state")) == 12
    with pytest.raises(ValueError, match="cannot snapshot"):
        core.snapshot_meta(11)
    assert not core.wants_snapshot(15)


def test_restart_from_snapshot_and_trailing_entries() -> None:
    """Thesis §5.1: a server restarts from its snapshot plus the log after it: the state
    machine is restored from the snapshot and the later committed entries replayed, and the
    log starts right after the snapshot (the trailing entries kept in storage are skipped)."""
    c = Cluster(3, config=SMALL_SNAPSHOTS)
    c.elect("n1")
    c.write("n1", 24)
    before = dict(c.kv["n2"].data)
    applied = c.kv["n2"].applied_index
    index = _snapshot_index(c["n2"])
    assert index < applied  # there are entries after the snapshot to replay
    assert c.storage["n2"].entries[0].index < index  # and trailing entries before it
    c.crash("n2")
    c.restart("n2")
    core = c["n2"]
    assert core.snapshot == c.storage["n2"].snapshot
    assert core.log.snapshot_index == index
    assert core.log.first_index == index + 1
    assert core.commit == applied
    assert c.kv["n2"].applied_index == index  # restored, not yet replayed
    c.run_ready("n2")
    assert c.kv["n2"].applied_index == applied
    assert c.kv["n2"].data == before
    # It keeps working: new writes reach it, and it can lead.
    c.write("n1", 3, prefix="after")
    c.tick_all(2 * ELECTION)
    assert c["n2"].leader == "n1"
    assert c.kv["n2"].data == c.kv["n1"].data


# ---------------------------------------------------------------------- catching up by snapshot


@pytest.mark.parametrize("lossy", [False, True])
def test_lagging_follower_catches_up_by_chunked_snapshot(lossy: bool) -> None:
    """Raft §7: a follower whose next entry the leader has compacted away is sent the snapshot,
    in ``snapshot_chunk_bytes`` chunks, one at a time; a lost chunk or a lost answer is
    resent on the next heartbeat answer, so the transfer completes on a lossy network. Once
    installed the follower is caught up by AppendEntries and every state machine agrees."""
    c = Cluster(3, config=SMALL_SNAPSHOTS)
    c.elect("n1")
    c.write("n1", 3, prefix="early")
    c.crash("n3")
    c.write("n1", 30)
    assert c["n1"].log.snapshot_index > c.kv["n3"].applied_index
    c.restart("n3")
    start = len(c.sent)
    dropped: list[RaftMessage] = []
    seen = {"chunk": 0, "reply": 0}

    def drop(src: str, dst: str, msg: RaftMessage) -> bool:
        if not lossy:
            return False
        kind = "chunk" if isinstance(msg, InstallSnapshot) else "reply"
        if not isinstance(msg, InstallSnapshot | InstallSnapshotReply):
            return False
        seen[kind] += 1
        if seen[kind] in (2, 3, 5):  # the second, third and fifth of each kind are lost
            dropped.append(msg)
            return True
        return False

    _rounds(c, 6 * ELECTION, drop)
    chunks = _of_type(c, InstallSnapshot, "n1", "n3", start)
    assert len({chunk.offset for chunk in chunks}) >= 3, "the snapshot fit in too few chunks"
    assert all(len(chunk.data) <= SMALL_SNAPSHOTS.snapshot_chunk_bytes for chunk in chunks)
    if lossy:
        assert len(dropped) == 6
        assert len(chunks) > len({chunk.offset for chunk in chunks})  # some were resent
    assert [n.fields["index"] for n in c.noted("n3", "raft.snapshot_installed")] == [
        chunks[0].index
    ]
    assert c.storage["n3"].snapshot is not None
    assert c.storage["n3"].snapshot.meta.index == chunks[0].index
    assert c["n1"].progress("n3") is not None
    assert c["n1"].progress("n3").match == c["n1"].log.last_index  # type: ignore[union-attr]
    assert c.kv["n3"].applied_index == c.kv["n1"].applied_index == c["n1"].commit
    assert c.kv["n3"].data == c.kv["n2"].data == c.kv["n1"].data
    assert len(c.kv["n3"].data) == 33
    assert c["n3"].membership == c["n1"].membership


def test_snapshot_sent_is_the_one_started_even_if_superseded() -> None:
    """Progress SNAPSHOT state: the leader finishes the snapshot it started sending even if it
    takes a newer one meanwhile (chunks of different snapshots never mix), then catches the
    follower up from there."""
    c = Cluster(3, config=SMALL_SNAPSHOTS)
    c.elect("n1")
    c.crash("n3")
    c.write("n1", 20)
    c.restart("n3")
    start = len(c.sent)

    def hold(src: str, dst: str, msg: RaftMessage) -> bool:
        return src == "n3" and isinstance(msg, InstallSnapshotReply)

    _rounds(c, 2 * SMALL_SNAPSHOTS.heartbeat_ticks, hold)
    progress = c["n1"].progress("n3")
    assert progress is not None
    assert progress.state is ProgressState.SNAPSHOT
    sending = progress.snapshot
    assert sending is not None
    for i in range(12):
        c.propose("n1", put(f"newer{i}", "v"))
        c.deliver_all(hold)
    assert _snapshot_index(c["n1"]) > sending.meta.index
    c.tick_all(4 * ELECTION)
    # The started snapshot is finished first. The leader compacted past it meanwhile, so the
    # newer one follows it, whole: the indexes of the chunks never go back.
    indexes = [chunk.index for chunk in _of_type(c, InstallSnapshot, "n1", "n3", start)]
    assert indexes[0] == sending.meta.index
    assert indexes == sorted(indexes)
    installed = [n.fields["index"] for n in c.noted("n3", "raft.snapshot_installed")]
    assert installed == sorted(set(indexes))
    assert c.storage["n3"].snapshot is not None
    assert c.kv["n3"].applied_index == c.kv["n1"].applied_index
    assert c.kv["n3"].data == c.kv["n1"].data


# ---------------------------------------------------------------------- follower rules


def test_install_rule_6_keeps_entries_after_a_matching_one() -> None:
    """Raft Figure 13, InstallSnapshot receiver rule 6: if the follower's log has an entry at
    the snapshot's index with the snapshot's term, the entries after it are kept; only the
    prefix is replaced. The snapshot comes out in a Ready to be persisted and restored."""
    core, storage = _follower([1, 1, 1, 1, 1, 1], term=1, commit=2)
    data = b"s" * 100
    for chunk in _chunks(data, term=1, index=4, snapshot_term=1):
        core.step("n1", chunk)
    readies = _drain(core, storage)
    installed = [r.snapshot for r in readies if r.snapshot is not None]
    assert len(installed) == 1
    assert installed[0].meta == SnapshotMeta(index=4, term=1, membership=THREE)
    assert installed[0].data == data
    assert core.log.snapshot_index == 4
    assert core.log.last_index == 6
    assert [core.log.entry(i).index for i in (5, 6)] == [5, 6]
    assert core.commit == 4
    assert [e.index for e in storage.entries] == [5, 6]
    assert storage.snapshot == installed[0]
    assert core.snapshot == installed[0]
    # Nothing the snapshot covers is handed out for applying; what follows is, once committed.
    assert all(not r.committed_entries for r in readies)
    core.step(
        "n1", AppendEntries(term=1, prev_log_index=6, prev_log_term=1, entries=(), leader_commit=6)
    )
    applied = [e.index for r in _drain(core, storage) for e in r.committed_entries]
    assert applied == [5, 6]


def _win_election(core: RaftCore, storage: MemoryStorage, voter: str) -> list[Ready]:
    """Make ``core`` (one of three voters) leader with ``voter``'s (pre-)vote."""
    core.campaign()
    readies = _drain(core, storage)
    core.step(voter, RequestVoteReply(term=core.term + 1, granted=True, pre_vote=True))
    readies += _drain(core, storage)
    core.step(voter, RequestVoteReply(term=core.term, granted=True))
    assert core.role is Role.LEADER
    return readies


def test_install_rule_7_discards_conflicting_log_and_persists_what_follows() -> None:
    """Raft Figure 13, rule 7: if the follower's entry at the snapshot's index has another
    term, its whole log is discarded, in memory and on disk, including the uncommitted CONFIG
    entry it held (the snapshot's membership is in force). What the node appends afterwards
    must still be persisted before it counts: as a new leader it may count itself for its
    no-op only once that no-op is durable (Figure 2: persist before responding)."""
    entries = entries_with_terms([1, 1, 2, 2, 2, 2])
    removal = Membership.of(["n1", "n2"])
    entries[3] = Entry(term=2, index=4, kind=EntryKind.CONFIG, data=removal.encode())
    storage = MemoryStorage()
    storage.save(HardState(term=2, commit=2), entries)
    core = RaftCore(
        "n2",
        ["n1", "n2", "n3"],
        config=SMALL_SNAPSHOTS,
        rng=random.Random("rule7"),
        hard_state=storage.hard_state,
        entries=storage.entries,
    )
    _drain(core, storage)
    assert core.membership == removal
    for chunk in _chunks(b"x" * 150, term=3, index=5, snapshot_term=3):
        core.step("n1", chunk)
    _drain(core, storage)
    assert core.log.snapshot_index == core.log.last_index == 5
    assert core.log.snapshot_term == 3
    assert core.commit == 5
    assert storage.entries == []
    assert core.membership == THREE
    assert core.log.stable_index == 5
    # n1 is gone; n2 wins with n3's vote and appends its no-op at 6. n3 acknowledges it
    # before n2's own write of it is done: one durable copy of three commits nothing.
    readies = _win_election(core, storage, "n3")
    core.step("n3", AppendEntriesReply(term=core.term, success=True, match_index=6))
    assert core.commit == 5
    readies += _drain(core, storage)
    persisted = [(e.index, e.kind) for r in readies for e in r.entries]
    assert persisted == [(6, EntryKind.NOOP)]
    assert [e.index for e in storage.entries] == [6]
    assert core.commit == 6
    core.propose(put("k", "v"))
    _drain(core, storage)
    assert [e.index for e in storage.entries] == [6, 7]


def test_snapshot_done_reply_only_after_persist() -> None:
    """Raft Figure 2 applied to Figure 13: ``done`` promises the snapshot is on the follower's
    disk, so that answer is in ``messages_after_persist`` of the very Ready that carries the
    snapshot; answers to intermediate chunks promise nothing and leave at once."""
    core, storage = _follower([1, 1], term=1, commit=1)
    chunks = _chunks(b"y" * 130, term=1, index=6, snapshot_term=1)
    assert len(chunks) == 3
    readies: list[Ready] = []
    for chunk in chunks:
        core.step("n1", chunk)
        readies.append(core.ready())
        storage.save(readies[-1].hard_state, readies[-1].entries, readies[-1].snapshot)
        core.advance(readies[-1])
    assert [r.snapshot is not None for r in readies] == [False, False, True]
    assert [(m.next_offset, m.done) for m in _snapshot_replies(readies, after_persist=False)] == [
        (64, False),
        (128, False),
    ]
    final = readies[-1]
    assert _snapshot_replies([final], after_persist=False) == []
    assert _snapshot_replies([final], after_persist=True) == [
        InstallSnapshotReply(term=1, index=6, next_offset=130, done=True)
    ]
    assert final.must_persist


def test_chunks_out_of_order_and_duplicated() -> None:
    """Chunks travel as datagrams: a chunk that does not continue what the follower holds is
    counted and answered with the offset it wants; a repeated first chunk starts over; a
    repeated chunk already held is ignored. The snapshot assembles byte for byte, and a copy
    of the final chunk after installation is answered ``done`` again."""
    core, storage = _follower([1], term=1, commit=1)
    data = bytes(range(200))
    c0, c1, c2, c3 = _chunks(data, term=1, index=8, snapshot_term=1)

    def answers(chunk: InstallSnapshot) -> list[tuple[int, bool]]:
        core.step("n1", chunk)
        readies = _drain(core, storage)
        return [
            (m.next_offset, m.done)
            for after in (False, True)
            for m in _snapshot_replies(readies, after_persist=after)
        ]

    assert answers(c2) == [(0, False)]  # nothing held yet
    assert answers(c0) == [(64, False)]
    assert answers(c2) == [(64, False)]  # a gap
    assert answers(c1) == [(128, False)]
    assert answers(c1) == [(128, False)]  # a duplicate of a held chunk
    assert core.drops["snapshot_chunk_out_of_order"] == 3
    assert answers(c0) == [(64, False)]  # a late first chunk: start over
    assert answers(c1) == [(128, False)]
    assert answers(c2) == [(192, False)]
    assert core.log.snapshot_index == 0
    assert answers(c3) == [(200, True)]
    assert storage.snapshot is not None
    assert storage.snapshot.data == data
    assert core.log.snapshot_index == 8
    assert answers(c3) == [(200, True)]  # a duplicate of the last one: still done
    assert answers(c1) == [(200, True)]
    assert storage.snapshot.meta.index == 8


def test_chunk_of_another_snapshot_does_not_mix() -> None:
    """A chunk that continues at the right offset but belongs to another snapshot (another
    index or size) is not appended to the one being assembled."""
    core, storage = _follower([1], term=1, commit=1)
    first = _chunks(b"a" * 150, term=1, index=8, snapshot_term=1)
    other = _chunks(b"b" * 150, term=1, index=9, snapshot_term=1)
    core.step("n1", first[0])
    core.step("n1", other[1])
    core.step("n1", first[1])
    core.step("n1", first[2])
    _drain(core, storage)
    assert storage.snapshot is not None
    assert storage.snapshot.data == b"a" * 150
    assert core.drops["snapshot_chunk_out_of_order"] == 1


def test_chunk_from_stale_term_rejected() -> None:
    """Raft Figure 13, rule 1: reply immediately if term < currentTerm. A chunk from a deposed
    leader is counted, installs nothing, and is answered with our term so its sender steps
    down."""
    core, storage = _follower([1, 1, 2], term=3, commit=2)
    readies: list[Ready] = []
    for chunk in _chunks(b"z" * 100, term=2, index=3, snapshot_term=2):
        core.step("n1", chunk)
        readies += _drain(core, storage)
    assert core.drops["stale_term"] == 2
    assert core.log.snapshot_index == 0
    assert storage.snapshot is None
    assert core.term == 3
    answers = [out.message for r in readies for out in r.messages_after_persist]
    assert answers == [AppendEntriesReply(term=3, success=False)] * 2


def test_snapshot_already_covered_by_commit_is_done_at_once() -> None:
    """A follower whose commit index is at or past the snapshot's index already holds all it
    covers (committed entries match the leader's): it answers the first chunk with ``done``,
    after persisting, without assembling or installing anything."""
    core, storage = _follower([1, 1, 1, 1, 1, 1], term=1, commit=5)
    chunk = _chunks(b"q" * 200, term=1, index=4, snapshot_term=1)[0]
    core.step("n1", chunk)
    readies = _drain(core, storage)
    assert _snapshot_replies(readies, after_persist=False) == []
    assert _snapshot_replies(readies, after_persist=True) == [
        InstallSnapshotReply(term=1, index=4, next_offset=200, done=True)
    ]
    assert all(r.snapshot is None for r in readies)
    assert core.log.snapshot_index == 0
    assert core.log.last_index == 6


@pytest.mark.parametrize(
    "membership",
    [
        b"not json",
        b"\xff\xfe",
        b"[" * 50_000,  # deep enough to exhaust the JSON decoder's recursion limit
        b'{"voters": ["n2", "n1"]}',  # not sorted
        b'{"voters": ["n1"], "learners": ["n1"]}',
        b'{"voters": [1]}',
        b'{"voters": ["n1"], "addresses": {"n9": "x"}}',
    ],
)
def test_snapshot_with_malformed_membership_dropped(membership: bytes) -> None:
    """Bad input is counted, never raised: a snapshot whose membership does not decode is
    dropped whole, nothing is installed, and the core keeps serving."""
    core, storage = _follower([1, 1], term=1, commit=1)
    core.step(
        "n1",
        InstallSnapshot(
            term=1, index=5, snapshot_term=1, membership=membership, total=3, offset=0, data=b"abc"
        ),
    )
    readies = _drain(core, storage)
    assert core.drops["bad_snapshot_membership"] == 1
    assert all(r.snapshot is None for r in readies)
    assert core.log.snapshot_index == 0
    assert storage.snapshot is None
    assert core.membership == THREE
    # The same snapshot, well formed, installs.
    for chunk in _chunks(b"abc", term=1, index=5, snapshot_term=1):
        core.step("n1", chunk)
    _drain(core, storage)
    assert core.log.snapshot_index == 5


def test_malformed_command_applies_as_failed_command() -> None:
    """Bad input is never raised, on the apply path either: a client's malformed command
    (once JSON nested deeper than the decoder allows; any bytes fit in ``max_entry_bytes``)
    applies as a failed command on every replica, and again when a restarted replica
    replays it after its snapshot, instead of crashing them all at the same index."""
    c = Cluster(3, config=SMALL_SNAPSHOTS)
    c.elect("n1")
    c.write("n1", 12)
    index = c.propose("n1", b"[" * 30_000)
    c.deliver_all()
    c.write("n1", 2, prefix="after")
    for node in c.ids:
        result = next(r for r in c.applied[node] if r.index == index)
        assert not result.ok
        assert "unknown command op byte" in result.error
    assert _snapshot_index(c["n2"]) < index
    c.crash("n2")
    c.restart("n2")
    c.run_ready("n2")
    assert [r.ok for r in c.applied["n2"] if r.index == index] == [False]
    assert c.kv["n2"].data == c.kv["n1"].data


def test_append_after_compaction_does_not_rescan_the_log() -> None:
    """Handling an AppendEntries costs in proportion to the entries it carries, not to the
    log: once the log is compacted and no CONFIG entry is left in it (the membership comes
    from the snapshot), a follower must not search the whole log for one on every append.
    The membership's position is then the snapshot's."""
    size = 2_000
    snapshot = Snapshot(meta=SnapshotMeta(index=100, term=1, membership=THREE), data=b"")
    storage = MemoryStorage()
    storage.save_snapshot(snapshot)
    storage.save(
        HardState(term=1, commit=100),
        [Entry(term=1, index=i, data=b"x") for i in range(101, 101 + size)],
    )
    core = RaftCore(
        "n2",
        ["n1", "n2", "n3"],
        config=LAN,
        rng=random.Random("scan"),
        hard_state=storage.hard_state,
        entries=storage.entries,
        snapshot=storage.snapshot,
    )
    _drain(core, storage)
    assert core.membership == THREE
    assert core.membership_index == core.log.snapshot_index == 100
    reads = 0
    entry_at = core.log.entry

    def counting_entry(index: int) -> Entry:
        nonlocal reads
        reads += 1
        return entry_at(index)

    core.log.entry = counting_entry  # type: ignore[method-assign]
    last = 100 + size
    for _ in range(5):
        new = Entry(term=1, index=last + 1, data=b"y")
        core.step(
            "n1",
            AppendEntries(
                term=1, prev_log_index=last, prev_log_term=1, entries=(new,), leader_commit=last
            ),
        )
        _drain(core, storage)
        last += 1
    assert core.log.last_index == last
    assert reads < 50
