"""The trio driver of one SWIM member: sockets, a ticker and event subscribers around one
sans-IO ``SwimCore``.

Beside this module: ``prism.swim.transport`` (UDP datagrams and TCP streams, or their
in-memory twins for tests) and ``prism.swim.subscriptions`` (bounded, ordered delivery of
membership events).

Tasks
-----
``SwimDriver.run`` supervises, in one nursery:

* the **ticker**, calling ``core.tick()`` every ``tick_ms`` of trio's clock (``MockClock`` in
  tests). Ticks missed while the process stalled are not replayed in a burst: the core would
  see probe timeouts pass without having read the acks waiting in the socket, and accuse
  healthy members of its own slowness.
* the **datagram receiver**: one UDP socket on the bind address. Once a datagram has
  arrived it also takes every other one already queued (up to ``receive_batch``) before
  it runs the handling loop once for all of them.
* the **stream listener**: TCP on the same port number, one task per connection (at most
  ``max_incoming_streams``; more are closed at once). A connection carries one frame, a
  ``PushPull`` or a fallback ``Ping``, and gets one frame back on the same connection, the
  answer.
* **exchanges** this node starts (push-pulls when joining, the periodic anti-entropy,
  reconnects to dead members; the fallback ping of a probe whose direct ping went
  unanswered): one task each, at most ``max_outgoing_streams`` at once; one that finds no
  free slot is skipped, the core retries on its own schedule.

Every connection, in or out, lives under one deadline, ``stream_timeout_s``, from connect
to close (a fallback ping's: the probe period): a stuck or silent peer cannot hold a task
or a slot longer than that.

The handling loop
-----------------
The loop of ``prism.swim.ready`` runs inline, right after each input (a tick, a batch of
datagrams, a stream message, a command), with no checkpoint between the core's step and
the loop: a SWIM ``Ready`` has nothing to persist and nothing to wait for. Datagrams go out
with ``send_nowait`` (a datagram the socket has no room for is lost and counted, as UDP
may lose it anyway); each push-pull gets a task; events go to the subscribers without
waiting (``prism.swim.subscriptions``); notes go to the log and ``on_note``. Running the
loop inline is also what sends an answer back on its own connection: the ``PushPullReply``
(or ``JoinRefused``) the core produces while stepping a ``PushPull`` is the one for that
connection, since nothing else ran in between.

Bad input
---------
Nothing a peer sends raises into a task. Datagrams: ``oversize`` (above the core's
``max_datagram_bytes``), ``malformed`` (the codec refused it), ``foreign_cluster``,
``not_swim`` (a Raft message on the SWIM port), ``wrong_channel`` (a push-pull message in a
datagram), ``receive_error`` (an ICMP error reported on the socket). Streams: the same
reasons prefixed ``stream_``, plus the framing ones of ``receive_frame`` (``stream_closed``,
``stream_truncated``, ``stream_oversize``, ``stream_malformed``), ``stream_timeout`` and
``stream_overload``. Each is counted in ``drops`` by reason; the connection, if any, is
closed. What the core itself refuses is counted in its own ``statistics().drops``.

Lifecycle
---------
``run`` once (``open_swim_driver`` runs it for the body of an ``async with``). ``join``
waits until a seed answered (``join_nowait`` does not wait); ``leave`` announces the leave,
keeps the member gossiping until the news has gone out (or ``leave_timeout_s``), then stops
the driver. Cancelling the driver's scope is a crash as far as the others can tell: it stops
answering, and they declare it dead. A driver runs once; restart a member with a new core
and a new driver.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Final, final

import trio

from prism.errors import DecodeError, PrismError
from prism.raft.transport import Address, DatagramTransport, parse_address, receive_batch
from prism.swim.core import SwimCore, SwimStatistics
from prism.swim.members import Member
from prism.swim.messages import (
    DATAGRAM_MESSAGES,
    STREAM_ANSWERS,
    STREAM_MESSAGES,
    Ack,
    Ping,
    PushPull,
    SwimMessage,
)
from prism.swim.ready import EventKind, MemberEvent, Note, Outbound
from prism.swim.subscriptions import Subscribers, Subscription
from prism.swim.transport import FrameError, StreamTransport, receive_frame, send_frame
from prism.ticker import run_ticker
from prism.validated import Validated
from prism.wire import decode, encode

logger = logging.getLogger(__name__)

ADDRESS_CACHE_LIMIT: Final = 4096
"""Parsed ``host:port`` texts kept; the cache is emptied when it grows past this (addresses
in a ping-req come from peers, so the set is not bounded by the membership alone)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SwimDriverConfig(Validated):
    """The driver's own knobs (the protocol's are in ``SwimConfig``). ``lan()`` is the
    default; ``wan()`` and ``local()`` follow memberlist's TCP timeouts for those profiles."""

    cluster_id: str = "prism"
    """Sent in every datagram's and frame's envelope; traffic of another id is dropped."""

    stream_timeout_s: float = 10.0
    """Deadline of one push-pull connection, from connect to close, both sides.
    memberlist's LAN ``TCPTimeout``: far above a LAN round trip and the time to send a
    thousand members' state, short enough that a stuck peer frees its slot soon."""

    max_stream_bytes: int = 4 * 1024 * 1024
    """The largest frame accepted or sent. A full state costs at most about 820 bytes per
    member (512 bytes of metadata, the longest name and address), so 4 MiB carries about
    5,000 members at the worst and far more in practice; the datagram codec's 65,000 bytes
    would stop at about 80."""

    max_incoming_streams: int = 16
    """Connections served at once; one more is closed unread (``stream_overload``). With
    ``max_stream_bytes`` it bounds the memory peers can make us hold: 16 x 4 MiB."""

    max_outgoing_streams: int = 8
    """Push-pull exchanges this node runs at once (a join sends one per seed)."""

    subscriber_buffer: int = 1024
    """Events a subscription buffers by default before it is cut off as too slow."""

    leave_timeout_s: float = 5.0
    """Longest ``leave`` keeps the member running so the news of its leave spreads (Serf's
    ``BroadcastTimeout``); it usually stops after a few gossip rounds."""

    receive_batch: int = 256
    """Most datagrams stepped into the core before the handling loop runs."""

    @classmethod
    def lan(cls) -> SwimDriverConfig:
        return cls()

    @classmethod
    def wan(cls) -> SwimDriverConfig:
        return dataclasses.replace(cls.lan(), stream_timeout_s=30.0)  # memberlist's WAN

    @classmethod
    def local(cls) -> SwimDriverConfig:
        # memberlist's local TCPTimeout; a loopback leave is out in a few 100 ms rounds.
        return dataclasses.replace(cls.lan(), stream_timeout_s=1.0, leave_timeout_s=2.0)

    def problems(self) -> list[str]:
        found = [
            f"{name} must be at least 1"
            for name in (
                "max_stream_bytes",
                "max_incoming_streams",
                "max_outgoing_streams",
                "subscriber_buffer",
                "receive_batch",
            )
            if getattr(self, name) < 1
        ]
        if not self.stream_timeout_s > 0:
            found.append("stream_timeout_s must be positive")
        if not self.leave_timeout_s >= 0:
            found.append("leave_timeout_s must be at least 0")
        if not self.cluster_id or len(self.cluster_id) > 64:
            found.append("cluster_id must be 1 to 64 characters")
        return found


@dataclass(frozen=True, slots=True)
class SwimDriverStatistics:
    """Counters of one driver and its core (trio's ``statistics()`` convention)."""

    core: SwimStatistics
    drops: tuple[tuple[str, int], ...]  # incoming input dropped, (reason, count) by reason
    counters: tuple[tuple[str, int], ...]  # everything else counted, sorted by name
    subscribers: int
    subscriptions_overflowed: int
    streams_in: int  # connections being served now
    streams_out: int  # push-pull exchanges running now


class NameConflict(PrismError):
    """Our join was refused: a live member holds this node's name at another address.
    ``holder_address`` is that member's address."""

    def __init__(self, message: str, holder_address: str) -> None:
        self.holder_address = holder_address
        super().__init__(message)


class JoinFailed(PrismError):
    """Every join attempt went unanswered (``SwimConfig.join_max_attempts`` ran out)."""


class _State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    CLOSED = "closed"


@final
class SwimDriver:
    """Runs one ``SwimCore`` over a datagram and a stream transport; see the module
    docstring. The driver owns both transports: ``run`` closes them on exit."""

    def __init__(
        self,
        core: SwimCore,
        datagrams: DatagramTransport,
        streams: StreamTransport,
        *,
        config: SwimDriverConfig | None = None,
        on_note: Callable[[Note], None] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """``wall_clock`` (seconds) numbers the probe periods that the coordinated schedule
        shares with the other members; tests on a ``MockClock`` pass ``trio.current_time``."""
        self.config = config or SwimDriverConfig()
        self.config.validate()
        self.core = core
        self.datagrams = datagrams
        self.streams = streams
        self.drops: Counter[str] = Counter()  # incoming input dropped, by reason
        self.counters: Counter[str] = Counter()  # everything else that is counted
        self._on_note = on_note
        self._subscribers = Subscribers(default_buffer=self.config.subscriber_buffer)
        self._state = _State.NEW
        self._nursery: trio.Nursery | None = None
        self._stopped = trio.Event()
        self._progress = trio.lowlevel.ParkingLot()  # woken after every handling loop
        self._reply_slot: list[SwimMessage] | None = None
        self._streams_in = 0
        self._streams_out = 0
        self._addresses: dict[str, Address | None] = {}
        self._join_problem: MemberEvent | None = None
        self._max_datagram_bytes = core.config.max_datagram_bytes
        self._wall_clock = wall_clock
        self._wall_minus_trio = 0.0  # wall clock minus trio's clock, taken when run starts

    # ------------------------------------------------------------------ queries

    @property
    def name(self) -> str:
        return self.core.name

    @property
    def advertise_address(self) -> str:
        """The ``host:port`` other members reach this one at."""
        return self.core.advertise_address

    @property
    def local_address(self) -> Address:
        """Where the datagram socket is bound (the TCP listener has the same port)."""
        return self.datagrams.local_address

    @property
    def is_running(self) -> bool:
        return self._state is _State.RUNNING

    def members(self) -> list[Member]:
        """Copies of every member this node knows, itself included."""
        return self.core.members()

    def member(self, name: str) -> Member | None:
        return self.core.member(name)

    def subscribe(self, buffer: int | None = None) -> Subscription:
        """Membership events from now on, in order (see ``prism.swim.subscriptions``). For
        a consistent start, call ``members()`` and ``subscribe()`` with no ``await`` in
        between. ``buffer`` defaults to ``config.subscriber_buffer``."""
        return self._subscribers.subscribe(buffer)

    def statistics(self) -> SwimDriverStatistics:
        return SwimDriverStatistics(
            core=self.core.statistics(),
            drops=tuple(sorted(self.drops.items())),
            counters=tuple(sorted(self.counters.items())),
            subscribers=len(self._subscribers),
            subscriptions_overflowed=self._subscribers.overflows,
            streams_in=self._streams_in,
            streams_out=self._streams_out,
        )

    # ------------------------------------------------------------------ lifecycle

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled, ``aclose`` or ``leave``. Reports started once the stream
        listener accepts connections. Closes both transports and ends every subscription
        on the way out."""
        if self._state is not _State.NEW:
            raise RuntimeError("a SwimDriver runs once; build a new core and driver to restart")
        self._state = _State.RUNNING
        # Ticks follow trio's clock; the shared period numbers follow the wall clock, read
        # once here, so a wall clock stepped later (NTP) does not make a tick jump.
        self._wall_minus_trio = self._wall_clock() - trio.current_time()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(self.streams.serve, self._serve_connection)
                nursery.start_soon(self._tick_loop)
                nursery.start_soon(self._receive_loop)
                self._handle_ready()  # whatever the core queued before the driver ran
                task_status.started()
        finally:
            self._shut()

    async def aclose(self) -> None:
        """Stop at once, without a leave (to the others, a crash). Idempotent."""
        if self._state is _State.NEW:
            self._shut()
            return
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
        await self._stopped.wait()

    def _shut(self) -> None:
        self._state = _State.CLOSED
        self._subscribers.close()
        self.datagrams.close()
        self.streams.close()
        self._stopped.set()
        self._progress.unpark_all()

    def _check_running(self) -> None:
        if self._state is _State.NEW:
            raise RuntimeError("the driver is not running: start SwimDriver.run first")
        if self._state is _State.CLOSED or (
            self._nursery is not None and self._nursery.cancel_scope.cancel_called
        ):
            raise RuntimeError(f"the SWIM driver of {self.name} has stopped")

    async def _wait_progress(self) -> None:
        """Wait for the next run of the handling loop (at the latest, the next tick), or
        for the driver to stop."""
        if self._state is _State.RUNNING:
            await self._progress.park()

    # ------------------------------------------------------------------ commands

    def join_nowait(self, seeds: Sequence[str]) -> None:
        """Start joining through ``seeds`` (``host:port`` advertise addresses); the core
        retries with back-off until one answers. With no seed but this node's own address,
        this node is a cluster of one at once."""
        self._check_running()
        self._join_problem = None
        self.core.join(list(seeds))
        self._handle_ready()

    async def join(self, seeds: Sequence[str]) -> None:
        """Join through ``seeds`` and wait until one has answered. Raises ``NameConflict``
        if a live member holds our name, ``JoinFailed`` if the configured attempts ran out.
        With the default unlimited attempts it waits as long as it takes: bound it with
        ``trio.fail_after`` if the seeds may never come."""
        self.join_nowait(seeds)
        while self.core.is_joining:
            self._check_running()
            await self._wait_progress()
        problem = self._join_problem
        if problem is not None and problem.kind is EventKind.NAME_CONFLICT:
            raise NameConflict(problem.reason, problem.address)
        if problem is not None and problem.kind is EventKind.JOIN_FAILED:
            raise JoinFailed(problem.reason)

    async def leave(self, *, timeout_s: float | None = None) -> None:
        """Leave gracefully: announce ``left``, keep gossiping until the news has gone out
        its retransmit budget (or ``timeout_s``, by default ``config.leave_timeout_s``),
        then stop the driver. Call it from outside the driver's own tasks."""
        self._check_running()
        self.core.leave()
        self._handle_ready()
        limit_s = self.config.leave_timeout_s if timeout_s is None else timeout_s
        with trio.move_on_after(limit_s):
            while self.is_running and self._leave_news_pending():
                await self._wait_progress()
        self.counters["left"] += 1
        await self.aclose()

    def _leave_news_pending(self) -> bool:
        """Whether our ``left`` is still queued and somebody is alive to hear it."""
        core = self.core
        if not any(update.node == core.name for update in core.pending_updates()):
            return False
        return any(m.is_live for m in core.members() if m.name != core.name)

    def update_metadata(self, meta: bytes) -> None:
        """Publish new metadata (at most ``SwimConfig.max_metadata_bytes``, else
        ValueError); it spreads with a raised incarnation."""
        self._check_running()
        self.core.update_metadata(meta)
        self._handle_ready()

    # ------------------------------------------------------------------ tasks

    async def _tick_loop(self) -> None:
        await run_ticker(self.core.config.tick_ms / 1000, self._tick, self._tick_late)

    def _tick(self) -> None:
        core = self.core
        tick_s = core.config.tick_ms / 1000
        shared_tick = int((trio.current_time() + self._wall_minus_trio) / tick_s)
        core.set_clock_offset(shared_tick - (core.now + 1))  # moves only when ticks were missed
        core.tick()
        self.counters["ticks"] += 1
        self._handle_ready()

    def _tick_late(self) -> None:
        self.counters["ticks_late"] += 1

    async def _receive_loop(self) -> None:
        while True:
            batch = await receive_batch(self.datagrams, self.config.receive_batch, self.drops)
            for data in batch:
                self._accept_datagram(data)
            self.counters["datagrams_received"] += len(batch)
            if batch:
                self._handle_ready()

    def _accept_datagram(self, data: bytes) -> None:
        """Decode one datagram and step the core with it, or count why not."""
        if len(data) > self._max_datagram_bytes:
            self.drops["oversize"] += 1
            return
        try:
            envelope = decode(data, max_bytes=self._max_datagram_bytes)
        except DecodeError:
            self.drops["malformed"] += 1
            return
        if envelope.cluster_id != self.config.cluster_id:
            self.drops["foreign_cluster"] += 1
            return
        message = envelope.message
        if not isinstance(message, DATAGRAM_MESSAGES):
            self.drops["wrong_channel" if isinstance(message, STREAM_MESSAGES) else "not_swim"] += 1
            return
        self.counters["messages_received"] += 1
        self.core.step(envelope.sender_id, message)

    async def _serve_connection(self, stream: trio.abc.Stream) -> None:
        """One incoming connection: one frame in, at most one frame back, then close."""
        if self._streams_in >= self.config.max_incoming_streams:
            self.drops["stream_overload"] += 1
            await trio.aclose_forcefully(stream)
            return
        self._streams_in += 1
        try:
            with self._connection_guard():
                async with stream:
                    payload = await receive_frame(stream, max_bytes=self.config.max_stream_bytes)
                    answer = self._accept_stream_message(payload, incoming=True)
                    if answer is not None:
                        await send_frame(stream, self._encode(answer))
                        answered = "stream_pings" if isinstance(answer, Ack) else "push_pulls"
                        self.counters[f"{answered}_answered"] += 1
        finally:
            self._streams_in -= 1

    async def _exchange(
        self, address: Address, data: bytes, expects_answer: bool, timeout_s: float | None
    ) -> None:
        """One connection this node opens: send ``data``, then read the answer if any."""
        try:
            with self._connection_guard(timeout_s):
                try:
                    stream = await self.streams.connect(address)
                except OSError:
                    self.counters["stream_connect_failed"] += 1
                    return
                async with stream:
                    await send_frame(stream, data)
                    self.counters["streams_sent"] += 1
                    if expects_answer:
                        payload = await receive_frame(
                            stream, max_bytes=self.config.max_stream_bytes
                        )
                        self._accept_stream_message(payload, incoming=False)
        finally:
            self._streams_out -= 1

    @contextmanager
    def _connection_guard(self, timeout_s: float | None = None) -> Iterator[None]:
        """One connection's deadline (``stream_timeout_s`` unless given), and what ends it
        early, counted by reason: nothing a peer does (stall, garbage, reset) raises into a
        task."""
        try:
            with trio.move_on_after(timeout_s or self.config.stream_timeout_s) as deadline:
                yield
            if deadline.cancelled_caught:
                self.drops["stream_timeout"] += 1
        except FrameError as exc:
            self.drops[exc.reason] += 1
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            self.counters["stream_errors"] += 1

    def _accept_stream_message(self, payload: bytes, *, incoming: bool) -> SwimMessage | None:
        """Decode one frame and step the core with it; returns the answer to send back on
        the same connection (for an incoming ``PushPull`` or fallback ``Ping``), if the core
        gave one."""
        try:
            envelope = decode(payload, max_bytes=self.config.max_stream_bytes)
        except DecodeError:
            self.drops["stream_malformed"] += 1
            return None
        if envelope.cluster_id != self.config.cluster_id:
            self.drops["stream_foreign_cluster"] += 1
            return None
        message = envelope.message
        if not isinstance(message, STREAM_MESSAGES):
            wrong = isinstance(message, DATAGRAM_MESSAGES)
            self.drops["stream_wrong_channel" if wrong else "stream_not_swim"] += 1
            return None
        question = isinstance(message, PushPull | Ping)
        if question and not incoming:
            self.drops["stream_unexpected"] += 1  # we asked; a question is no answer
            return None
        self.counters["stream_messages_received"] += 1
        slot: list[SwimMessage] = []
        self._reply_slot = slot if question else None
        try:
            self.core.step(envelope.sender_id, message, stream=True)
            self._handle_ready()
        finally:
            self._reply_slot = None
        return slot[0] if slot else None

    # ------------------------------------------------------------------ the handling loop

    def _handle_ready(self) -> None:
        """The handling loop of ``prism.swim.ready``, inline: never waits."""
        core = self.core
        while core.has_ready():
            ready = core.ready()
            self._send_packets(ready.packets)
            self._send_streams(ready.streams)
            self._publish(ready.events)
            self._report(ready.notes)
        self._progress.unpark_all()

    def _encode(self, message: SwimMessage) -> bytes:
        return encode(message, cluster_id=self.config.cluster_id, sender_id=self.core.name)

    def _address(self, text: str) -> Address | None:
        """``host:port`` text as an address (cached); None if it does not parse."""
        if text in self._addresses:
            return self._addresses[text]
        if len(self._addresses) >= ADDRESS_CACHE_LIMIT:
            self._addresses.clear()
        try:
            address: Address | None = parse_address(text)
        except ValueError:
            address = None
        self._addresses[text] = address
        return address

    def _send_packets(self, packets: Sequence[Outbound]) -> None:
        transport = self.datagrams
        sent = 0
        for out in packets:
            address = self._address(out.to)
            if address is None:
                self.counters["send_bad_address"] += 1
                continue
            data = self._encode(out.message)
            if len(data) > self._max_datagram_bytes:
                # The core packs by an upper-bound estimate, so this is a bug, not a peer.
                self.counters["send_oversize"] += 1
                logger.warning("wire.oversize node=%s to=%s bytes=%d", self.name, out.to, len(data))
                continue
            try:
                if not transport.send_nowait(data, address):
                    self.counters["send_would_block"] += 1  # lost, as UDP may lose it
                    continue
            except OSError as exc:
                self.counters["send_errors"] += 1
                logger.debug("wire.send_failed node=%s to=%s error=%s", self.name, out.to, exc)
                continue
            sent += 1
        if sent:
            self.counters["datagrams_sent"] += sent

    def _send_streams(self, streams: Sequence[Outbound]) -> None:
        for out in streams:
            message = out.message
            slot = self._reply_slot
            if isinstance(message, STREAM_ANSWERS) and slot is not None and not slot:
                slot.append(message)  # the answer to the connection being served
                continue
            # Our own push-pull (join, anti-entropy, reconnect) or fallback ping, or an
            # answer whose connection is gone: a new connection to the address the core names.
            self._start_exchange(out)

    def _start_exchange(self, out: Outbound) -> None:
        nursery = self._nursery
        if nursery is None or self._state is not _State.RUNNING:
            self.counters["streams_not_running"] += 1
            return
        if self._streams_out >= self.config.max_outgoing_streams:
            self.counters["streams_busy"] += 1  # the core tries again on its own schedule
            return
        address = self._address(out.to)
        if address is None:
            self.counters["send_bad_address"] += 1
            return
        data = self._encode(out.message)
        if len(data) > self.config.max_stream_bytes:
            self.counters["stream_send_oversize"] += 1
            logger.warning(
                "swim.state_too_large node=%s bytes=%d limit=%d",
                self.name,
                len(data),
                self.config.max_stream_bytes,
            )
            return
        self._streams_out += 1
        message = out.message
        timeout_s = None  # stream_timeout_s
        if isinstance(message, Ping):
            # A fallback probe's answer is worth waiting for only until the probe period
            # ends: the core judges the probe then.
            swim = self.core.config
            timeout_s = swim.probe_interval_ticks * swim.tick_ms / 1000
        expects_answer = isinstance(message, PushPull | Ping)
        nursery.start_soon(self._exchange, address, data, expects_answer, timeout_s)

    def _publish(self, events: Sequence[MemberEvent]) -> None:
        if not events:
            return
        for event in events:
            if event.kind is EventKind.NAME_CONFLICT or event.kind is EventKind.JOIN_FAILED:
                self._join_problem = event
                logger.warning("swim.%s node=%s reason=%s", event.kind, self.name, event.reason)
        self.counters["events"] += len(events)
        self._subscribers.publish(events)

    def _report(self, notes: Sequence[Note]) -> None:
        for note in notes:
            # Membership changes are what an operator reads; probe-level detail is debug.
            level = logging.INFO if _is_membership_note(note) else logging.DEBUG
            logger.log(level, "%s node=%s", note.render(), self.name)
            if self._on_note is not None:
                self._on_note(note)


_MEMBERSHIP_NOTES: Final = frozenset(
    {"swim.joined", "swim.left", "swim.refuted", "swim.name_conflict", "swim.join_failed"}
)


def _is_membership_note(note: Note) -> bool:
    return note.event.startswith("swim.member_") or note.event in _MEMBERSHIP_NOTES


@asynccontextmanager
async def open_swim_driver(
    core: SwimCore,
    datagrams: DatagramTransport,
    streams: StreamTransport,
    *,
    config: SwimDriverConfig | None = None,
    on_note: Callable[[Note], None] | None = None,
) -> AsyncIterator[SwimDriver]:
    """Run a ``SwimDriver`` for the body of an ``async with``; ``aclose`` it on the way
    out (call ``leave`` in the body for a graceful exit)."""
    driver = SwimDriver(core, datagrams, streams, config=config, on_note=on_note)
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.run)
        try:
            yield driver
        finally:
            await driver.aclose()
