"""The trio driver of one Raft server: sockets, a ticker, the disk and waiting callers around
one sans-IO ``RaftCore``.

Beside this module: ``prism.raft.transport`` (the datagram transport: UDP, or an in-memory
network for tests), ``prism.raft.driver_requests`` (waiting proposals and reads, and their
bounds) and ``prism.raft.serve`` (one node as a process, with a client port).

Tasks
-----
``RaftDriver.run`` supervises three tasks in one nursery:

* the **ticker** calls ``core.tick()`` every ``tick_ms`` of trio's clock (``MockClock``
  drives it in tests). A tick that is late because the process stalled is not replayed in a
  burst: the core would see an election timeout pass without having read the heartbeats
  waiting in the socket. The ticker also watches the disk (see *Disk stalls*).
* the **receiver** reads datagrams from the transport, decodes them and steps the core.
  Once one has arrived it takes every other datagram already queued (up to
  ``RECEIVE_BATCH``, without waiting) and steps them all before it wakes the ready loop, so
  one ``Ready`` (one save, one fsync, one append per follower) answers the whole batch:
  that is the group commit. A datagram that does not decode, comes from another cluster,
  or names a sender missing from the address book is counted in ``drops`` by reason and
  dropped; nothing a peer sends can raise into the task. When storage is written inline
  (see *Persistence and cancellation*) and no ``Ready`` is being handled, the receiver
  runs the handling loop itself instead of waking the ready loop: no save can then make
  it wait for a disk, and a busy node spares a task switch per batch of datagrams.
* the **ready loop** runs the handling loop of ``prism.raft.ready``, in its order, one
  ``Ready`` at a time (whichever task runs the loop, only one does at a time): send
  ``messages``; persist (snapshot, entries, hard state: one ``Storage.save``); send
  ``messages_after_persist``; restore the state machine from ``ready.snapshot``; apply
  ``committed_entries``; serve reads; ``core.advance``; then take a snapshot of the state
  machine if the core wants one (``_maybe_take_snapshot``).

Ordering guarantees
-------------------
* Nothing in ``messages_after_persist`` leaves before the ``save`` of its own ``Ready`` has
  returned, and ``save`` returns only once the write is durable (Raft Figure 2).
* One exception to "persist, then go on": a ``Ready`` whose only durable part is a hard
  state that differs from the durable one in its commit index alone (same term, same vote,
  no entries, no snapshot) is not written on its own: its hard state goes to disk with the
  next save. The commit index is not part of Raft's persistent state (Figure 2: current
  term, vote, log); a node that restarts with an older one learns the newer one again from
  its leader (or, leading, commits anew), exactly as after a crash during a slow write. It
  spares a leader an fsync between a commit and the answers to its clients, once per batch.
* Entries are applied once each, in index order, after the snapshot they follow is restored.
  A large batch is applied ``APPLY_SLICE`` entries at a time, with a checkpoint between
  slices (other tasks step the core meanwhile, as they do during a disk write), so the
  answers to the first entries leave while the rest are applied.
* A proposal resolves when the entry at its index is applied: with the state machine's result
  if that entry has the proposal's term, with ``ProposalLost`` if another entry took the index.
* A read resolves once the state machine has applied the read index the core confirmed
  (ReadIndex, thesis §6.4); its answer is computed with no checkpoint in between.
* Ticks and received messages keep stepping the core while a write is in progress; their
  output waits for the next ``Ready``.
* A leader's commit-only appends are held until the next tick (``prism.raft.notices``,
  shared with the simulator). Nothing else is held.

Persistence and cancellation
----------------------------
A ``MemoryStorage`` is written inline, and so is any storage when
``DriverConfig.persist_in_thread`` is False (``prism.raft.serve`` says so for a
``DiskStorage`` that does not fsync: its writes only reach the page cache, and a trip to a
worker thread would cost more than the write). Any other storage is written in a worker
thread, ``trio.to_thread.run_sync`` with ``abandon_on_cancel=False`` (the default):
when the nursery is cancelled during a write, the task waits for the write to finish before
it exits, so the files are never left with a write we abandoned half way. What was written
and not yet acknowledged is simply durable: on restart the core is rebuilt from storage
(``core_from_storage``) and a fresh state machine re-applies the log. A driver runs once; the
core it drove must not be reused.

Disk stalls
-----------
If one write takes longer than ``DriverConfig.disk_stall_timeout_s`` and this node leads, the
driver calls ``core.step_down("disk_stall")``: it stops taking proposals (callers get
``NotLeader`` and go elsewhere) and a healthy server takes over, so a sick disk cannot hold
the cluster hostage. With one ``Ready`` at a time, a stuck write also silences this node, so
check-quorum, when on, usually demotes it first (after ``election_timeout_min_ticks``); the
stall bound is the backstop that holds whatever the core's configuration, and names the cause.

Requests and their errors
-------------------------
``propose`` and ``read_index`` / ``read`` wait for their outcome; ``propose_nowait`` proposes
without waiting and returns the ``Waiter``, for a caller that handles many requests in one
task (a callback runs when the outcome is known; the caller bounds the wait and calls
``forget_proposal`` when it gives up). Such a caller may pass ``on_settled``: the driver
calls it, in its own task, after each batch of callbacks it ran (after each slice of applied
entries, after each ``Ready``'s reads, and when it stops), so the caller can send the
answers of a whole batch at once instead of waking a task per answer. They raise ``NotLeader``
(with ``leader_address`` when the address book knows it), ``ProposalDropped`` (the core
refused), ``Overloaded`` (too many requests or proposal bytes already pending here: refused
at once, so memory stays bounded), ``ProposalTimeout``, ``ProposalLost``, and
``ShuttingDown`` (``aclose`` was called, or the driver was cancelled).
"""

from __future__ import annotations

import enum
import logging
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Final, Generic, Protocol, TypeVar, final

import trio

from prism.errors import (
    DecodeError,
    NotLeader,
    PrismError,
    ProposalTimeout,
    RaftError,
    ShuttingDown,
)
from prism.raft.config import RaftConfig
from prism.raft.core import RaftCore, Role
from prism.raft.driver_requests import PendingRequests, Waiter
from prism.raft.membership import Membership
from prism.raft.messages import Entry, RaftMessage
from prism.raft.notices import NoticeHold
from prism.raft.ready import HardState, Note, Outbound, Ready
from prism.raft.snapshot import Snapshot
from prism.raft.storage import MemoryStorage, Storage
from prism.raft.transport import (
    Address,
    DatagramTransport,
    format_address,
    parse_address,
    receive_batch,
)
from prism.ticker import run_ticker
from prism.validated import Validated
from prism.wire import MAX_DATAGRAM_BYTES, decode, encode

logger = logging.getLogger(__name__)

RECEIVE_BATCH = 512
"""Most datagrams the receiver steps into the core before it wakes the ready loop."""

APPLY_SLICE = 64
"""Committed entries applied between two checkpoints, so that the answers to the first ones
leave (other tasks run) while the rest of a large batch is applied."""

R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)
T = TypeVar("T")


class StateMachine(Protocol[R_co]):
    """What the driver applies committed entries to (``KVStateMachine`` is one)."""

    def apply(self, entry: Entry) -> R_co: ...

    def snapshot(self) -> bytes: ...

    def restore(self, data: bytes) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class DriverConfig(Validated):
    """The driver's own knobs (the core's are in ``RaftConfig``)."""

    cluster_id: str = "prism"
    """Sent in every datagram's envelope; datagrams of another cluster id are dropped."""

    disk_stall_timeout_s: float = 2.0
    """A leader whose current write has taken this long steps down (reason ``disk_stall``).
    Well above a healthy fsync (milliseconds) and a loaded disk's worst case (hundreds of
    milliseconds), well below what clients wait for."""

    max_pending_proposals: int = 4096
    """Proposals waiting for their outcome on this node; one more gets ``Overloaded``.
    Matches ``RaftConfig.max_uncommitted_entries``'s default: the core refuses past it too."""

    max_pending_bytes: int = 16 * 1024 * 1024
    """Total command bytes of the waiting proposals; one that would pass it gets
    ``Overloaded``. Bounds memory whatever the command sizes."""

    max_pending_reads: int = 4096
    """Reads waiting for their read index; one more gets ``Overloaded``."""

    persist_in_thread: bool | None = None
    """Write storage from a worker thread. None: yes, unless it is a ``MemoryStorage``."""

    def problems(self) -> list[str]:
        found = [
            f"{name} must be at least 1"
            for name in ("max_pending_proposals", "max_pending_bytes", "max_pending_reads")
            if getattr(self, name) < 1
        ]
        if not self.disk_stall_timeout_s > 0:
            found.append("disk_stall_timeout_s must be positive")
        if not self.cluster_id or len(self.cluster_id) > 64:
            found.append("cluster_id must be 1 to 64 characters")
        return found


def core_from_storage(
    node_id: str,
    members: Sequence[str] | Membership,
    storage: Storage,
    *,
    config: RaftConfig,
    rng: random.Random,
) -> RaftCore:
    """A core that resumes from what ``storage`` holds (``members`` bootstraps a new cluster;
    the log and snapshot take precedence when they hold a membership)."""
    return RaftCore(
        node_id,
        members,
        config=config,
        rng=rng,
        hard_state=storage.hard_state,
        entries=list(storage.entries),
        snapshot=storage.snapshot,
    )


class _State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    CLOSED = "closed"


# Read per proposal: an enum member read through its class costs a lookup (70 ns).
_RUNNING: Final = _State.RUNNING


@final
class RaftDriver(Generic[R]):
    """Runs one ``RaftCore`` over a datagram transport; see the module docstring.

    ``addresses`` maps node ids to ``(host, port)``; the driver keeps its own copy in
    ``self.addresses``, a dict the owner may update (``set_address``), and adds the addresses
    that membership changes carry. The driver owns ``transport``: ``run`` closes it on exit.
    """

    def __init__(
        self,
        core: RaftCore,
        storage: Storage,
        machine: StateMachine[R],
        transport: DatagramTransport,
        addresses: Mapping[str, Address],
        *,
        config: DriverConfig | None = None,
        on_note: Callable[[Note], None] | None = None,
        on_settled: Callable[[], None] | None = None,
    ) -> None:
        self.config = config or DriverConfig()
        self.config.validate()
        self.core = core
        self.storage = storage
        self.machine = machine
        self.transport = transport
        self.addresses: dict[str, Address] = dict(addresses)
        self.drops: Counter[str] = Counter()  # incoming datagrams dropped, by reason
        self.counters: Counter[str] = Counter()  # everything else that is counted
        self._on_note = on_note
        self._on_settled = on_settled
        self._in_thread = (
            self.config.persist_in_thread
            if self.config.persist_in_thread is not None
            else not isinstance(storage, MemoryStorage)
        )
        self._state = _State.NEW
        self._scope: trio.CancelScope | None = None
        # Set by aclose when it cancels _scope, the only way that scope is cancelled (it has
        # no deadline): read on every request instead of CancelScope.cancel_called, which
        # reads the clock each time.
        self._cancelled = False
        self._stopped = trio.Event()
        self._wake = trio.Event()
        self._handling = False  # a task is in the handling loop (_handle_readys)
        self._applied = 0
        self._pending: PendingRequests[R] = PendingRequests(
            max_proposals=self.config.max_pending_proposals,
            max_bytes=self.config.max_pending_bytes,
            max_reads=self.config.max_pending_reads,
        )
        self._next_read_id = 0
        self._known_membership: Membership | None = None
        self._disk_busy_since: float | None = None
        self._stall_reported = False
        self._disk_seconds_total = 0.0
        self._disk_seconds_max = 0.0
        # Commit-only appends waiting for the next tick, by follower (see the module doc).
        self._notices = NoticeHold()  # commit-only appends held until the next tick
        # The hard state last written, and one that differs from it only in its commit
        # index, waiting for the next save (see the module doc).
        self._durable_hard_state = storage.hard_state
        self._deferred_hard_state: HardState | None = None
        self._sync_addresses()

    # ------------------------------------------------------------------ queries

    @property
    def id(self) -> str:
        return self.core.id

    @property
    def is_leader(self) -> bool:
        return self.core.role is Role.LEADER

    @property
    def applied_index(self) -> int:
        """The last index applied to the state machine."""
        return self._applied

    @property
    def local_address(self) -> Address:
        return self.transport.local_address

    def leader_address(self) -> str | None:
        """``host:port`` of the leader this node knows, if it knows one and its address."""
        return self._address_text(self.core.leader)

    def set_address(self, node_id: str, address: Address) -> None:
        """Learn or change where ``node_id`` listens (for example, from gossip)."""
        self.addresses[node_id] = address

    def statistics(self) -> dict[str, int | float]:
        """Counters for metrics: drops by reason (``drops.<reason>``), the core's own drops
        (``core_drops.<reason>``), messages, saves and their time, pending requests."""
        stats: dict[str, int | float] = dict(sorted(self.counters.items()))
        stats.update({f"drops.{k}": v for k, v in sorted(self.drops.items())})
        stats.update({f"core_drops.{k}": v for k, v in sorted(self.core.drops.items())})
        stats.update(
            disk_seconds_total=self._disk_seconds_total,
            disk_seconds_max=self._disk_seconds_max,
            proposals_lost=self._pending.lost,
            pending_proposals=self._pending.proposals,
            pending_bytes=self._pending.bytes,
            pending_reads=self._pending.reads,
            applied_index=self._applied,
            commit_index=self.core.commit,
            term=self.core.term,
        )
        return stats

    # ------------------------------------------------------------------ lifecycle

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled or ``aclose``; returns (or raises Cancelled) only after a write
        in progress has finished. Pending requests then fail with ``ShuttingDown``."""
        if self._state is not _State.NEW:
            raise RuntimeError("a RaftDriver runs once; build a new one to restart")
        self._state = _State.RUNNING
        try:
            self._restore_from_core_snapshot()
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                nursery.start_soon(self._tick_loop)
                nursery.start_soon(self._receive_loop)
                nursery.start_soon(self._ready_loop)
                self._kick()
                task_status.started()
        finally:
            self._flush_deferred_hard_state()
            self._shut(f"{self.id} stopped")

    def _flush_deferred_hard_state(self) -> None:
        """On the way out, write a commit index that was waiting for the next save, so a
        clean stop leaves the newest one on disk. Blocking, but no write can be in flight
        now (``_disk`` never abandons its thread), and it is one small record."""
        deferred = self._deferred_hard_state
        if deferred is None:
            return
        try:
            self.storage.save(deferred, ())
        except (OSError, RuntimeError, PrismError) as exc:  # closed or failed storage
            logger.warning("raft.final_save_failed node=%s error=%s", self.id, exc)
            return
        self._deferred_hard_state = None
        self._durable_hard_state = deferred

    async def aclose(self) -> None:
        """Stop: pending requests fail with ``ShuttingDown``, then the tasks are cancelled
        (a write in progress completes first). Idempotent."""
        if self._state is _State.NEW:
            self._shut(f"{self.id} closed before it ran")
            return
        self._pending.fail_all(ShuttingDown(f"{self.id} is shutting down"))
        self._settled()
        if self._scope is not None:
            self._cancelled = True
            self._scope.cancel()
        await self._stopped.wait()

    async def hand_over_leadership(self, *, timeout_s: float) -> str | None:
        """Before a planned stop: if this node leads, transfer leadership to the most
        caught-up other voter (``RaftCore.transfer_leadership``) and wait until it has
        stepped down, so the cluster elects no one by timeout and clients see a redirect,
        not an outage. Returns the voter it handed over to, or None when this node did not
        lead, had no other voter, or the transfer failed or outlasted ``timeout_s`` (the
        caller stops anyway; Raft then elects a leader the usual way). Proposals meanwhile
        get ``TransferInProgress``."""
        core = self.core
        if self._state is not _State.RUNNING or not self._leads():
            return None
        try:
            target = core.transfer_leadership(None)
        except RaftError as exc:  # no other voter, or a transfer already running
            logger.info("raft.hand_over_skipped node=%s reason=%s", self.id, exc)
            return None
        self._kick()
        tick_s = core.config.tick_ms / 1000
        with trio.move_on_after(timeout_s):
            # Polls the core at tick granularity: the transfer itself is tick-driven.
            while self._leads() and core.transfer_target == target:  # noqa: ASYNC110
                await trio.sleep(tick_s)
        if self._leads():
            logger.warning("raft.hand_over_failed node=%s target=%s", self.id, target)
            return None
        logger.info("raft.handed_over node=%s to=%s term=%d", self.id, target, core.term)
        return target

    def _leads(self) -> bool:
        return self.core.role is Role.LEADER

    def _shut(self, reason: str) -> None:
        self._state = _State.CLOSED
        self._pending.fail_all(ShuttingDown(reason))
        self._settled()
        self.transport.close()
        self._stopped.set()

    def _restore_from_core_snapshot(self) -> None:
        """The core hands out committed entries after its snapshot: the machine starts there."""
        snapshot = self.core.snapshot
        if snapshot is not None and snapshot.meta.index > self._applied:
            self.machine.restore(snapshot.data)
            self._applied = snapshot.meta.index

    # ------------------------------------------------------------------ requests

    async def propose(
        self, data: bytes, *, client_id: str = "", seq: int = 0, timeout_s: float
    ) -> R:
        """Propose a command; return the state machine's result once it is applied here.

        With ``client_id`` and ``seq``, a retry after ``ProposalTimeout`` or ``ShuttingDown``
        applies at most once (the state machine's sessions). See the module docstring for
        the errors.
        """
        index, term, waiter = self.propose_nowait(data, client_id=client_id, seq=seq)
        try:
            return await waiter.wait(
                timeout_s,
                lambda: ProposalTimeout(
                    f"entry {index} (term {term}) not applied on {self.id} within "
                    f"{timeout_s} s; it may still commit"
                ),
            )
        finally:
            self._pending.forget_proposal(index, waiter)

    def propose_nowait(
        self, data: bytes, *, client_id: str = "", seq: int = 0
    ) -> tuple[int, int, Waiter[R]]:
        """Propose a command without waiting: its (index, term) and the ``Waiter`` that the
        state machine's result (or the error) will be given to. Raises at once what
        ``propose`` raises before it waits. The caller bounds the wait (``ProposalTimeout``
        is its to give) and calls ``forget_proposal(index, waiter)`` when it stops waiting.
        """
        self._check_running()
        size = len(data) + len(client_id)
        self._pending.check_room_for_proposal(size, self.id)
        try:
            index, term = self.core.propose(data, client_id=client_id, seq=seq)
        except NotLeader as exc:
            raise self._not_leader(exc.leader_hint) from None
        waiter = self._pending.add_proposal(index, term, size)
        self.counters["proposals"] += 1
        self._kick()
        return index, term, waiter

    def forget_proposal(self, index: int, waiter: Waiter[R]) -> None:
        """Stop tracking a proposal from ``propose_nowait`` whose caller gave up waiting."""
        self._pending.forget_proposal(index, waiter)

    async def read_index(self, *, timeout_s: float) -> int:
        """Wait until a linearizable read may be served here (ReadIndex, thesis §6.4) and
        return the applied index it is served at. Read the state machine right after, with
        no ``await`` in between."""
        self._check_running()
        self._pending.check_room_for_read(self.id)
        self._next_read_id += 1
        request_id = self._next_read_id
        try:
            self.core.read_index(request_id)
        except NotLeader as exc:
            raise self._not_leader(exc.leader_hint) from None
        waiter = self._pending.add_read(request_id)
        self._kick()
        try:
            return await waiter.wait(
                timeout_s,
                lambda: ProposalTimeout(f"read not confirmed on {self.id} within {timeout_s} s"),
            )
        finally:
            self._pending.forget_read(request_id)

    async def read(self, query: Callable[[], T], *, timeout_s: float) -> T:
        """A linearizable read: ``query()`` (which reads the state machine) runs once this
        node has applied a confirmed read index. For the KV machine:
        ``await driver.read(lambda: kv.get(key), timeout_s=1.0)``."""
        await self.read_index(timeout_s=timeout_s)
        return query()

    def _check_running(self) -> None:
        if self._state is _RUNNING and not self._cancelled:
            return
        if self._state is _State.CLOSED or self._cancelled:
            raise ShuttingDown(f"{self.id} is shutting down")
        if self._state is _State.NEW:
            raise RuntimeError("the driver is not running: start RaftDriver.run first")

    def _not_leader(self, hint: str | None) -> NotLeader:
        return NotLeader(hint, leader_address=self._address_text(hint))

    def _address_text(self, node_id: str | None) -> str | None:
        address = self.addresses.get(node_id) if node_id is not None else None
        return format_address(address) if address is not None else None

    # ------------------------------------------------------------------ tasks

    def _kick(self) -> None:
        """Tell the ready loop the core may have work."""
        self._wake.set()

    async def _tick_loop(self) -> None:
        await run_ticker(self.core.config.tick_ms / 1000, self._tick, self._tick_late)

    def _tick(self) -> None:
        self._send_held()
        self.core.tick()
        self.counters["ticks"] += 1
        self._watch_disk()
        self._kick()

    def _tick_late(self) -> None:
        self.counters["ticks_late"] += 1

    async def _receive_loop(self) -> None:
        while True:
            batch = await receive_batch(self.transport, RECEIVE_BATCH, self.drops)
            stepped = False
            for data in batch:  # all into the same Ready (group commit)
                stepped = self._accept(data) or stepped
            self.counters["datagrams_received"] += len(batch)
            if not stepped:
                continue
            if self._in_thread or self._handling:
                self._kick()
            else:
                await self._handle_readys()  # inline writes: no need to wake another task

    def _accept(self, data: bytes) -> bool:
        """Decode one datagram and step the core with it; False (counted) if dropped."""
        try:
            envelope = decode(data)
        except DecodeError:
            self.drops["malformed"] += 1
            return False
        if envelope.cluster_id != self.config.cluster_id:
            self.drops["foreign_cluster"] += 1
            return False
        sender = envelope.sender_id
        if sender == self.id or sender not in self.addresses:
            self.drops["unknown_sender"] += 1
            return False
        message = envelope.message
        if not isinstance(message, RaftMessage):
            self.drops["not_raft"] += 1  # a SWIM datagram sent to the Raft port
            return False
        self.counters["messages_received"] += 1
        self.core.step(sender, message)
        return True

    async def _ready_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            await self._handle_readys()

    async def _handle_readys(self) -> None:
        """Handle ``Ready``s until the core has none. One task at a time: another that comes
        meanwhile returns at once, and the task in the loop does its work, since it asks
        ``has_ready`` again after each ``Ready``."""
        if self._handling:
            return
        self._handling = True
        try:
            while self.core.has_ready():
                await self._handle(self.core.ready())
        finally:
            self._handling = False

    async def _handle(self, ready: Ready) -> None:
        """One pass of the handling loop of ``prism.raft.ready``, in its order."""
        # Sends do not yield, so a cancelled driver stops here (and after each write), not
        # some Readys later: what it leaves pending fails with ShuttingDown.
        await trio.lowlevel.checkpoint_if_cancelled()
        self._report(ready.notes)
        await self._send(ready.messages)
        if ready.must_persist:
            hard_state = ready.hard_state
            durable = self._durable_hard_state
            if (
                hard_state is not None
                and not ready.entries
                and ready.snapshot is None
                and hard_state.term == durable.term
                and hard_state.vote == durable.vote
            ):
                # Only the commit index moved: written later (see the module doc).
                self._deferred_hard_state = hard_state
                self.counters["commit_saves_deferred"] += 1
            else:
                await self._save(
                    hard_state or self._deferred_hard_state, ready.entries, ready.snapshot
                )
        await self._send(ready.messages_after_persist)
        if ready.snapshot is not None:
            self._restore(ready.snapshot)
        await self._apply(ready.committed_entries)
        self._take_reads(ready)
        self.core.advance(ready)
        self._sync_addresses()
        await self._maybe_take_snapshot()

    # ------------------------------------------------------------------ the loop's steps

    async def _send(self, outbound: Sequence[Outbound]) -> None:
        """Send each message: without waiting while the socket has room, else waiting.
        Commit-only appends are held for the next tick instead (see the module doc)."""
        transport = self.transport
        cluster_id = self.config.cluster_id
        notices = self._notices
        leading = self.core.role is Role.LEADER
        last: RaftMessage | None = None
        data = b""
        sent = 0
        for out in outbound:
            if not notices.admit(out, leading=leading):
                continue
            address = self.addresses.get(out.to)
            if address is None:
                self.counters["send_no_address"] += 1
                continue
            if out.message is not last and out.message != last:
                # Followers in step get equal appends: encoded once, sent to each.
                last = out.message
                data = encode(out.message, cluster_id=cluster_id, sender_id=self.id)
            if len(data) > MAX_DATAGRAM_BYTES:
                self.counters["send_oversize"] += 1
                logger.warning("wire.oversize node=%s to=%s bytes=%d", self.id, out.to, len(data))
                continue
            try:
                if not transport.send_nowait(data, address):
                    await transport.send(data, address)
            except OSError as exc:
                self.counters["send_errors"] += 1
                logger.debug("wire.send_failed node=%s to=%s error=%s", self.id, out.to, exc)
                continue
            sent += 1
        if sent:
            self.counters["messages_sent"] += sent

    async def _save(
        self, hard_state: HardState | None, entries: Sequence[Entry], snapshot: Snapshot | None
    ) -> None:
        """One ``Storage.save``; ``hard_state`` is the newest, so nothing stays deferred."""
        await self._disk(partial(self.storage.save, hard_state, entries, snapshot))
        self.counters["saves"] += 1
        self._deferred_hard_state = None
        if hard_state is not None:
            self._durable_hard_state = hard_state
        await trio.lowlevel.checkpoint_if_cancelled()

    def _send_held(self) -> None:
        """Send the commit-only appends held since the last tick (``prism.raft.notices``)."""
        notices = self._notices
        if not notices:
            return
        core = self.core
        for out in notices.release(leading=core.role is Role.LEADER, term=core.term):
            address = self.addresses.get(out.to)
            if address is None:
                continue
            data = encode(out.message, cluster_id=self.config.cluster_id, sender_id=self.id)
            try:
                if not self.transport.send_nowait(data, address):
                    notices.hold_again(out)  # no room now: the next tick
                    continue
            except OSError as exc:
                self.counters["send_errors"] += 1
                logger.debug("wire.send_failed node=%s to=%s error=%s", self.id, out.to, exc)
                continue
            self.counters["messages_sent"] += 1
            self.counters["commit_notices_sent"] += 1
        self.counters["commit_notices_superseded"] = notices.superseded

    async def _disk(self, write: Callable[[], None]) -> None:
        """Run one storage write: in a worker thread that cancellation waits for (see the
        module docstring), or inline for ``MemoryStorage``. Timed for the stall watchdog."""
        started = trio.current_time()
        self._disk_busy_since = started
        self._stall_reported = False
        try:
            if self._in_thread:
                await trio.to_thread.run_sync(write, abandon_on_cancel=False)
            else:
                write()
        finally:
            self._disk_busy_since = None
        elapsed = trio.current_time() - started
        self._disk_seconds_total += elapsed
        self._disk_seconds_max = max(self._disk_seconds_max, elapsed)

    def _watch_disk(self) -> None:
        """Step down once per write that has taken longer than the stall bound."""
        since = self._disk_busy_since
        if since is None or self._stall_reported:
            return
        stalled_s = trio.current_time() - since
        if stalled_s < self.config.disk_stall_timeout_s:
            return
        self._stall_reported = True
        self.counters["disk_stalls"] += 1
        leading = self.core.role is Role.LEADER
        logger.warning(
            "raft.disk_stall node=%s seconds=%.3f leader=%s", self.id, stalled_s, leading
        )
        if leading:
            self.core.step_down("disk_stall")
            self._kick()

    def _restore(self, snapshot: Snapshot) -> None:
        """The leader's snapshot replaces the state machine. Proposals at or below its index
        cannot be told apart (applied or lost): they end with ``ProposalTimeout``."""
        self.machine.restore(snapshot.data)
        self._applied = snapshot.meta.index
        self.counters["snapshots_restored"] += 1

    async def _apply(self, entries: Sequence[Entry]) -> None:
        apply, resolve = self.machine.apply, self._pending.applied
        # A follower has no proposals: no call per entry to find none. A proposal made while
        # this batch is applied (at a checkpoint below) has an index past all of it.
        waiting = self._pending.proposals > 0
        count = 0  # applied since counters["applied"] was last brought up to date
        for position, entry in enumerate(entries, start=1):
            if entry.index <= self._applied:
                continue  # covered by the snapshot restored before
            if entry.index != self._applied + 1:
                raise RuntimeError(f"entry {entry.index} handed out after {self._applied}")
            result = apply(entry)
            self._applied = entry.index
            count += 1
            if waiting:
                resolve(entry, result)
            if position % APPLY_SLICE == 0 and position < len(entries):
                # Let the answers of what is applied so far leave while the rest is applied
                # (never cancelled here: a batch is applied whole).
                self.counters["applied"] += count
                count = 0
                self._settled()
                await trio.lowlevel.cancel_shielded_checkpoint()
        if count:
            self.counters["applied"] += count
        if entries:
            self._settled()

    def _take_reads(self, ready: Ready) -> None:
        if not (ready.read_states or ready.dropped_reads or self._pending.reads):
            return  # nothing to serve or fail: spare the call
        self._pending.reads_progressed(
            ready.read_states,
            ready.dropped_reads,
            self._applied,
            lambda: self._not_leader(self.core.leader),
        )
        self._settled()

    def _settled(self) -> None:
        """Tell the owner a batch of waiters' callbacks has run (``on_settled``)."""
        if self._on_settled is not None:
            self._on_settled()

    async def _maybe_take_snapshot(self) -> None:
        """The last step of the handling loop: snapshot the state machine when the log has
        grown past the core's threshold, make it durable, then compact the log behind it."""
        applied = self._applied
        if not self.core.wants_snapshot(applied):
            return
        snapshot = Snapshot(meta=self.core.snapshot_meta(applied), data=self.machine.snapshot())
        await self._disk(partial(self.storage.save_snapshot, snapshot))
        compact_to = self.core.snapshot_saved(snapshot)
        await self._disk(partial(self.storage.compact, compact_to))
        self.counters["snapshots_taken"] += 1

    def _report(self, notes: Sequence[Note]) -> None:
        for note in notes:
            logger.info("%s node=%s", note.render(), self.id)
            if self._on_note is not None:
                self._on_note(note)

    def _sync_addresses(self) -> None:
        """Add the addresses a new membership carries (``host:port`` text) to the book."""
        membership = self.core.membership
        if membership is self._known_membership:
            return
        self._known_membership = membership
        for node_id, text in membership.addresses:
            if not text or node_id == self.id:
                continue
            try:
                self.addresses[node_id] = parse_address(text)
            except ValueError:
                logger.warning(
                    "raft.bad_address node=%s member=%s address=%r", self.id, node_id, text
                )


@asynccontextmanager
async def open_raft_driver(
    core: RaftCore,
    storage: Storage,
    machine: StateMachine[R],
    transport: DatagramTransport,
    addresses: Mapping[str, Address],
    *,
    config: DriverConfig | None = None,
    on_note: Callable[[Note], None] | None = None,
    on_settled: Callable[[], None] | None = None,
) -> AsyncIterator[RaftDriver[R]]:
    """Run a ``RaftDriver`` for the body of an ``async with``; ``aclose`` it on the way out."""
    driver = RaftDriver(
        core,
        storage,
        machine,
        transport,
        addresses,
        config=config,
        on_note=on_note,
        on_settled=on_settled,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.run)
        try:
            yield driver
        finally:
            await driver.aclose()
