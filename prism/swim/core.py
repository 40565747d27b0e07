"""The SWIM membership core: a pure state machine (no I/O, no clock, no global random).

Theory of operation. Inputs are ``tick()`` (one unit of logical time), ``step(src, msg)``
(a message from member ``src``, as the wire envelope names it) and the commands ``join``,
``leave`` and ``update_metadata``. Outputs accumulate until the caller takes them with
``ready()``; see ``prism.swim.ready`` for the handling loop.

Failure detection (SWIM §3-4, Lifeguard §IV). Once per protocol period this node probes one
member: the one its slot of the period names in the coordinated schedule
(``prism.swim.schedule``, which gives every live member exactly one prober per period, on a
clock the driver shares through ``set_clock_offset``), or, with ``coordinated_probes`` off,
the next one of SWIM's randomized round-robin order (``prism.swim.probe``). A ``Ping``; if no
``Ack`` came within the probe timeout, a ``PingReq`` to ``indirect_checks`` random live
members, each of which pings the target and forwards the ack or, when the target stays
silent, sends a ``Nack``; with ``stream_probe``, the prober also pings the target over a
stream (TCP), whose ``Ack`` comes back on that connection. At the end of the period a probe
without any ack makes the target *suspect*. Nacks tell the prober about itself: missing
nacks raise the local health score (``prism.swim.health``), which stretches probe interval
and timeout. A probe of a member already suspect carries the suspicion itself, first in
the datagram (the "buddy system"), so the member learns it directly and can refute.

Suspicion (``prism.swim.suspicion``). A suspect gets a timer that starts long and shrinks
with each independent confirmation (a suspect update with a new origin; the first k are
re-gossiped so that confirmations flow, later ones would change no timer); when it expires
the member is declared dead. A member that hears it is suspected (or dead, or claimed by
another incarnation) refutes: it raises its incarnation past the accusation and gossips
``alive``, and sends that ``alive`` straight to the accuser (the one member whose timer
would kill it); one that hears an accusation it has already refuted sends its current
``alive`` again (whoever passed the accusation on missed the refutation, and would otherwise
declare a member dead that answers every probe). Which news wins over which is decided in
one place, ``prism.swim.members.supersedes``.

Dissemination (``prism.swim.broadcast``). Every change this node accepts is queued and
piggybacked on every datagram it sends (pings, acks, ping-reqs, nacks, and a dedicated
``Gossip`` round), least-sent and newest first, packed to the datagram budget.

Anti-entropy and join. Periodically, and when joining, a node sends its whole member list
(``PushPull``, over a stream) to one member, which merges it and answers with its own. A
remote ``dead`` is merged as ``suspect`` (memberlist's rule: let the member refute rather
than trust a possibly stale verdict), so two healed halves of a partition re-merge through
refutation; a periodic push-pull to a random *dead* member is what lets them meet again.
``join(seeds)`` retries with exponential back-off and jitter until a seed answers. A joining
node whose name a live member holds at another address is refused (``JoinRefused``) and
sees a ``name_conflict`` event; a restarted node at the same address is taken back.

Leave and reaping. ``leave()`` announces ``left`` (distinct from ``dead``), after which the
node stops probing and keeps gossiping so the news spreads until the driver stops it. Dead
and left members are forgotten after ``dead_reap_ticks`` / ``left_reap_ticks``; a reaped or
restarted member rejoins like a new one (its incarnation is raised past any tombstone).

Time without ticks. ``next_work_tick()`` says when ``tick()`` next has anything to do (a
probe, a timeout, a gossip round with news queued, a push-pull, a reaping) if no message
comes first; ``tick_until(t)`` jumps to tick ``t`` doing exactly what ticking every tick
would. The simulator sleeps each core until its next work tick (a 1,000-member cluster
then costs about one wake per member per probe period instead of ten).

Large clusters. The paths that run per datagram and per piggybacked update keep their cost
independent of the cluster size where they can: the member table counts states as they
change, the gossip targets are cached until a member dies, leaves or returns, the
broadcast queue keeps its sending order instead of sorting per datagram, and ``alive``
news we already hold is recognised in a few comparisons. ``tests/swim/test_hot_paths.py``
checks each against the naive version.

Bad input is never an exception: messages about unknown members, stale incarnations,
misdirected pings, unexpected acks, oversize metadata, messages from ourselves: each is a
counted drop (``statistics().drops``), or, for news about ourselves, a refutation.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import final

from prism.swim.broadcast import BroadcastQueue, retransmit_limit
from prism.swim.config import SwimConfig
from prism.swim.health import Awareness
from prism.swim.members import Member, MemberState, MemberTable, state_of, supersedes
from prism.swim.messages import (
    Ack,
    Gossip,
    JoinRefused,
    Nack,
    Ping,
    PingReq,
    PushPull,
    PushPullReply,
    SwimMessage,
    Update,
    UpdateKind,
    estimate_size,
    is_address,
)
from prism.swim.probe import ProbeOrder
from prism.swim.ready import EventKind, MemberEvent, Note, Outbound, Ready
from prism.swim.schedule import ProbeRing
from prism.swim.suspicion import Suspicion, suspicion_bounds

_ALIVE = MemberState.ALIVE
_KIND_ALIVE = UpdateKind.ALIVE
_NEVER = 1 << 62  # a tick no run reaches
_GOSSIP_BASE_BYTES = estimate_size(Gossip(updates=()))  # a Gossip datagram without updates
_TRACK_HOLDERS_UP_TO = 256
"""Live members up to which the broadcast queue is told whom a datagram goes to, so that it
never sends a member an update it is known to hold. In a small cluster an update's few
sends are what it needs to reach everyone, and a repeat costs a member its copy; in a
large one they rarely repeat (12 sends among 999 others), so the bookkeeping would only add
work to the packing hot path of the largest clusters."""


@dataclass(slots=True)
class _Probe:
    """The probe of the current protocol period.

    Invariant: ``relays`` and ``nackers`` are dicts used as ordered sets.
    """

    seq: int
    target: str
    start_tick: int
    timeout_tick: int  # direct ping unanswered by then: go indirect
    end_tick: int  # the period ends: judge the probe
    acked: bool = False  # by datagram: directly or through a relay
    stream_acked: bool = False  # by the fallback ping over a stream
    indirect_sent: bool = False
    check: bool = False  # probing a lone suspicion before it may kill (Suspicion.checking)
    relays: dict[str, None] = field(default_factory=dict)
    nackers: dict[str, None] = field(default_factory=dict)


@dataclass(slots=True)
class _Relay:
    """An indirect probe this node runs for ``prober``."""

    prober: str
    reply_to: str
    prober_seq: int
    target: str
    nack_tick: int


@dataclass(slots=True)
class _Join:
    seeds: list[str]
    attempts: int
    next_try_tick: int


@dataclass(frozen=True, slots=True)
class SwimStatistics:
    """Counters of one core (trio's ``statistics()`` convention)."""

    tick: int
    incarnation: int
    health_score: int
    alive: int
    suspect: int
    dead: int
    left: int
    queued_updates: int
    pending_relays: int
    drops: tuple[tuple[str, int], ...]  # (reason, count), sorted by reason


@final
class SwimCore:
    """One member's SWIM protocol state. See the module docstring."""

    def __init__(
        self,
        name: str,
        *,
        bind_address: str,
        advertise_address: str = "",
        meta: bytes = b"",
        config: SwimConfig,
        rng: random.Random,
        incarnation: int = 0,
        clock_offset: int = 0,
    ) -> None:
        """``advertise_address`` is what other members use to reach this node (behind NAT or
        in a container it differs from ``bind_address``, which only the driver uses); it
        defaults to ``bind_address``. A node restarted with a known ``incarnation`` may pass
        it; otherwise it learns it from the cluster and refutes past it. ``clock_offset``:
        see ``set_clock_offset``."""
        config.validate()
        advertise = advertise_address or bind_address
        # Build our own update once: it validates name, address and metadata for us.
        Update(kind=UpdateKind.ALIVE, node=name, incarnation=incarnation, address=advertise)
        if not is_address(bind_address):
            raise ValueError("bind_address must be 'host:port'")
        if len(meta) > config.max_metadata_bytes:
            raise ValueError(f"metadata is larger than {config.max_metadata_bytes} bytes")
        self.name = name
        self.bind_address = bind_address
        self.advertise_address = advertise
        self.config = config
        self._rng = rng
        self._now = 0
        self._members = MemberTable()
        self._me = Member(
            name=name,
            address=advertise,
            incarnation=incarnation,
            meta=meta,
            state=MemberState.ALIVE,
            state_tick=0,
        )
        self._members.add(self._me)
        self._order = ProbeOrder(rng)  # the random round robin (``coordinated_probes`` off)
        # The coordinated schedule (on): live members in ring order, and the shared clock,
        # which reads ``_now + _clock_offset`` ticks.
        self._ring = ProbeRing()
        if config.coordinated_probes:
            self._ring.add(name)
        self._clock_offset = clock_offset
        # No probe before this tick: the end of the last one (0: none yet). Past it, the
        # shared clock is in a later period than the last probe's, so one probe per period.
        self._earliest_probe_tick = 0
        self._health = Awareness(config.awareness_max_multiplier)
        self._broadcasts = BroadcastQueue()
        self._merging = False  # a push-pull's state is being merged (see _merge)
        # The member whose news is being applied, for the broadcast queue ("" for our own
        # news, and when the queue does not track holders: see _TRACK_HOLDERS_UP_TO).
        self._source = ""
        self._answered: dict[str, int] = {}  # accuser -> our incarnation it was sent
        self._suspicions: dict[str, Suspicion] = {}
        # Suspects whose lone suspicion waits for our own probe, in order (a dict as an
        # ordered set). Invariant: each one's Suspicion.checking was set when it was added.
        self._checks: dict[str, None] = {}
        # Dead and left members (never this node) by the tick they are to be forgotten.
        # Invariant: exactly the other members whose state is DEAD or LEFT.
        self._reapable: dict[str, int] = {}
        # The members a gossip round may pick (``_gossip_targets``), built at targets
        # version ``[0]`` and valid until tick ``[1]`` (when the first dead one among them
        # leaves the gossip-to-the-dead window): rebuilding it each round is O(n). The
        # version moves when a member dies, leaves, comes back or is reaped; a new member
        # is appended in place (the table appends it too).
        self._targets_version = 0
        self._gossip_candidates: tuple[int, int, list[Member]] = (-1, 0, [])
        self._state_cache: dict[str, tuple[tuple[MemberState, int, str, bytes], Update]] = {}
        self._probe: _Probe | None = None
        self._relays: dict[int, _Relay] = {}
        self._seq = 0
        self._join: _Join | None = None
        self._left = False
        # Stagger the periodic work with the seeded RNG so that nodes started together do
        # not probe and push-pull in lockstep.
        self._next_probe_tick = 1 + rng.randrange(config.probe_interval_ticks)
        if config.coordinated_probes:
            self._next_probe_tick = 1  # the schedule gives the phase: look at the first tick
        self._next_gossip_tick = 1 + rng.randrange(max(1, config.gossip_interval_ticks))
        self._next_push_pull_tick = 1 + rng.randrange(max(1, config.push_pull_interval_ticks))
        self._next_reconnect_tick = 1 + rng.randrange(max(1, config.reconnect_interval_ticks))
        self._packets: list[Outbound] = []
        self._streams: list[Outbound] = []
        self._events: list[MemberEvent] = []
        self._notes: list[Note] = []
        self._drops: Counter[str] = Counter()
        self._duplicates = 0  # the "duplicate_update" drops, counted apart (the hot path)

    # ------------------------------------------------------------------ queries

    @property
    def incarnation(self) -> int:
        return self._me.incarnation

    @property
    def meta(self) -> bytes:
        return self._me.meta

    @property
    def now(self) -> int:
        return self._now

    @property
    def health_score(self) -> int:
        return self._health.score

    @property
    def is_joining(self) -> bool:
        return self._join is not None

    @property
    def has_left(self) -> bool:
        return self._left

    def member(self, name: str) -> Member | None:
        """A copy of what this node holds about ``name`` (None if unknown)."""
        m = self._members.get(name)
        if m is None:
            return None
        return Member(m.name, m.address, m.incarnation, m.meta, m.state, m.state_tick)

    def members(self) -> list[Member]:
        """Copies of every member this node knows, itself included, in table order."""
        return [
            Member(m.name, m.address, m.incarnation, m.meta, m.state, m.state_tick)
            for m in self._members.all()
        ]

    def pending_updates(self) -> list[Update]:
        """Queued broadcasts, in sending order."""
        return self._broadcasts.pending()

    def statistics(self) -> SwimStatistics:
        table = self._members
        return SwimStatistics(
            tick=self._now,
            incarnation=self._me.incarnation,
            health_score=self._health.score,
            alive=table.count(MemberState.ALIVE),
            suspect=table.count(MemberState.SUSPECT),
            dead=table.count(MemberState.DEAD),
            left=table.count(MemberState.LEFT),
            queued_updates=len(self._broadcasts),
            pending_relays=len(self._relays),
            drops=tuple(sorted(self._all_drops().items())),
        )

    def _all_drops(self) -> Counter[str]:
        drops = Counter(self._drops)
        if self._duplicates:
            drops["duplicate_update"] += self._duplicates
        return drops

    # ------------------------------------------------------------------ output

    def has_ready(self) -> bool:
        return bool(self._packets or self._streams or self._events or self._notes)

    def ready(self) -> Ready:
        """Take everything the core wants done since the last call."""
        ready = Ready(
            packets=tuple(self._packets),
            streams=tuple(self._streams),
            events=tuple(self._events),
            notes=tuple(self._notes),
        )
        self._packets.clear()
        self._streams.clear()
        self._events.clear()
        self._notes.clear()
        return ready

    # ------------------------------------------------------------------ commands

    def join(self, seeds: Sequence[str]) -> None:
        """Join the cluster through any of ``seeds`` (advertise addresses), retrying with
        back-off until one answers. With no seed other than ourselves we are the first
        member, and the cluster is us."""
        if self._left:
            raise RuntimeError("a core that left cannot join again; start a new one")
        for seed in seeds:
            if not is_address(seed):
                raise ValueError(f"seed {seed!r} is not 'host:port'")
        others = list(dict.fromkeys(s for s in seeds if s != self.advertise_address))
        if not others:
            self._join = None
            self._note("swim.joined", seeds=0)
            return
        self._join = _Join(seeds=others, attempts=0, next_try_tick=self._now)
        self._try_join()

    def leave(self) -> None:
        """Announce a graceful leave. The node stops probing; the driver keeps it running a
        little longer (a few gossip rounds) so that the news spreads, then stops it."""
        if self._left:
            return
        join, self._join = self._join, None
        self._left = True
        self._probe = None
        me = self._me
        self._members.set_state(me, MemberState.LEFT, self._now)
        update = me.as_update(self.name)
        self._broadcasts.queue(update)
        self._note("swim.left", incarnation=me.incarnation)
        self._gossip_round()  # at once, not at the next gossip tick
        if join is not None:
            # Still joining: a seed adds us before it answers, so it may hold us while we
            # know nobody to gossip to. Tell the seeds, or they would declare us dead.
            for seed in join.seeds:
                self._packets.append(Outbound(to=seed, message=Gossip(updates=(update,))))

    def update_metadata(self, meta: bytes) -> None:
        """Publish new metadata. It spreads with a raised incarnation, so every member
        replaces the old copy. Raises ValueError above ``max_metadata_bytes``."""
        if type(meta) is not bytes:
            raise TypeError("meta must be bytes")
        if len(meta) > self.config.max_metadata_bytes:
            raise ValueError(
                f"metadata of {len(meta)} bytes exceeds {self.config.max_metadata_bytes}"
            )
        if self._left:
            raise RuntimeError("a core that left cannot publish metadata")
        self._me.meta = meta
        self._me.incarnation += 1
        self._broadcasts.queue(self._me.as_update(self.name))
        self._note("swim.metadata_updated", incarnation=self._me.incarnation)

    # ------------------------------------------------------------------ time

    def tick(self) -> None:
        """Advance logical time by one tick."""
        self._now += 1
        self._tick_join()
        self._tick_relays()
        self._tick_suspicions()
        self._tick_probe()
        self._tick_gossip()
        self._tick_push_pull()
        self._reap()

    def next_work_tick(self) -> int | None:
        """The first tick at which ``tick()`` would do more than count, if no message or
        command comes first (None: never). Between now and then every tick is idle, so a
        caller may sleep until then (tick elision); any ``step`` or command may bring it
        forward, so ask again after each."""
        never = _NEVER
        due = never if self._left else self._next_probe_tick
        join = self._join
        if join is not None and join.next_try_tick < due:
            due = join.next_try_tick
        for relay in self._relays.values():
            if relay.nack_tick < due:
                due = relay.nack_tick
        for suspicion in self._suspicions.values():
            if suspicion.checking:
                continue  # its work is the next probe, already counted
            deadline = suspicion.deadline()
            if deadline < due:
                due = deadline
        probe = self._probe
        if probe is not None:
            if probe.end_tick < due:
                due = probe.end_tick
            if not probe.acked and not probe.indirect_sent and probe.timeout_tick < due:
                due = probe.timeout_tick
        cfg = self.config
        if cfg.gossip_interval_ticks and self._next_gossip_tick < due and len(self._broadcasts):
            due = self._next_gossip_tick
        if not self._left and join is None:
            if cfg.push_pull_interval_ticks and self._next_push_pull_tick < due:
                due = self._next_push_pull_tick
            if cfg.reconnect_interval_ticks and self._next_reconnect_tick < due:
                due = self._next_reconnect_tick
        if self._reapable:
            due = min(due, min(self._reapable.values()))
        if due == never:
            return None
        return max(self._now + 1, due)

    def tick_until(self, tick: int) -> None:
        """Advance logical time to ``tick``: the same as calling ``tick()`` until ``now``
        is ``tick``, but idle ticks cost nothing (see ``next_work_tick``)."""
        while self._now < tick:
            due = self.next_work_tick()
            if due is None or due > tick:
                self._skip_to(tick)
                return
            if due - 1 > self._now:
                self._skip_to(due - 1)
            self.tick()

    def _skip_to(self, tick: int) -> None:
        """Jump over idle ticks. The only state an idle tick changes is the gossip timer,
        which re-arms itself every interval even when there is nothing to send."""
        self._now = tick
        interval = self.config.gossip_interval_ticks
        if interval and self._next_gossip_tick <= tick:
            passed = (tick - self._next_gossip_tick) // interval + 1
            self._next_gossip_tick += passed * interval

    def _tick_join(self) -> None:
        join = self._join
        if join is None or self._now < join.next_try_tick:
            return
        limit = self.config.join_max_attempts
        if limit and join.attempts >= limit:
            self._join = None
            self._events.append(
                MemberEvent(
                    kind=EventKind.JOIN_FAILED,
                    name=self.name,
                    address=self.advertise_address,
                    incarnation=self._me.incarnation,
                    reason=f"no seed answered {join.attempts} join attempts",
                )
            )
            self._note("swim.join_failed", attempts=join.attempts)
            return
        self._try_join()

    def _try_join(self) -> None:
        join = self._join
        assert join is not None
        join.attempts += 1
        message = PushPull(join=True, members=self._state())
        for seed in join.seeds:
            self._streams.append(Outbound(to=seed, message=message))
        cfg = self.config
        wait = min(cfg.join_retry_max_ticks, cfg.join_retry_min_ticks << (join.attempts - 1))
        # Jitter of up to half the wait, so nodes started together do not retry together.
        wait += self._rng.randrange(wait // 2 + 1)
        join.next_try_tick = self._now + wait
        self._note("swim.join_attempt", attempt=join.attempts, seeds=len(join.seeds))

    def _tick_relays(self) -> None:
        for seq, relay in list(self._relays.items()):
            if self._now >= relay.nack_tick:
                del self._relays[seq]
                nack = Nack(seq=relay.prober_seq, target=relay.target)
                self._send(relay.reply_to, nack, to_name=relay.prober)

    def _tick_suspicions(self) -> None:
        for name, suspicion in list(self._suspicions.items()):
            if suspicion.checking or self._now < suspicion.deadline():
                continue
            member = self._members.get(name)
            if member is None or member.state is not MemberState.SUSPECT:
                del self._suspicions[name]
                continue
            doubt = self._doubt(suspicion, member)
            if doubt and not suspicion.checked:
                # One member's word, never confirmed; or others' word against our own
                # ears (the suspect has talked to us since): probe it ourselves first
                # (the ping carries the suspicion, so a live suspect answers with its
                # alive), and declare it dead only if that probe fails too.
                suspicion.checking = True
                self._checks[name] = None
                self._note("swim.suspicion_check", node=name, doubt=doubt)
                continue
            del self._suspicions[name]
            if suspicion.confirmations < suspicion.k:
                self._note(
                    "swim.suspicion_degraded", node=name, confirmations=suspicion.confirmations
                )
            self._apply_failure(
                Update(
                    kind=UpdateKind.DEAD,
                    node=name,
                    incarnation=member.incarnation,
                    origin=self.name,
                    suspected_ms=(self._now - suspicion.began_tick) * self.config.tick_ms,
                )
            )

    def _doubt(self, suspicion: Suspicion, member: Member) -> str:
        """Why a suspicion whose timer ran out is not yet enough to kill ('' if it is)."""
        cfg = self.config
        if cfg.check_lone_suspicions and suspicion.is_lone:
            return "no one confirmed it"
        if cfg.check_hearsay_suspicions and not suspicion.witnessed:
            if member.heard_tick >= suspicion.began_tick:
                return "it has heard from the suspect since"
            if suspicion.merged:
                return "it came from a state exchange"
        return ""

    def _tick_probe(self) -> None:
        probe = self._probe
        if probe is not None:
            if not probe.acked and not probe.indirect_sent and self._now >= probe.timeout_tick:
                self._send_indirect(probe)
            if self._now < probe.end_tick:
                return
            self._probe = None
            self._finish_probe(probe)
        if self._left or self._now < self._next_probe_tick:
            return
        interval = self._health.scale(self.config.probe_interval_ticks)
        if self.config.coordinated_probes:
            scheduled = self._take_slot(interval)
            if scheduled is None:
                return  # our slot has not come yet (the next look is set), or we are alone
            check = self._next_check()
            target = check or (scheduled if self._is_probeable(scheduled) else None)
        else:
            self._next_probe_tick = self._now + interval
            check = self._next_check()
            target = check or self._order.next(self._is_probeable)
        if target is None:
            return
        member = self._members.get(target)
        assert member is not None
        self._seq += 1
        self._probe = _Probe(
            seq=self._seq,
            target=target,
            start_tick=self._now,
            timeout_tick=self._now + self._health.scale(self.config.probe_timeout_ticks),
            end_tick=self._now + interval,
            check=check is not None,
        )
        buddy: tuple[Update, ...] = ()
        if member.state is MemberState.SUSPECT and self.config.buddy_system:
            # Lifeguard's buddy system: tell the suspect first, so it can refute at once.
            buddy = (member.as_update(self.name),)
        ping = Ping(seq=self._seq, target=target, reply_to=self.advertise_address)
        self._send(member.address, ping, first=buddy, to_name=target)

    def _take_slot(self, interval: int) -> str | None:
        """On the coordinated schedule, the member our slot of this period probes if the
        slot has come and is still ours to take; else None. Either way ``_next_probe_tick``
        is set to the tick to look again (a corrected clock can move the slot between
        looks; the ring's changes change the target, never the phase)."""
        period_ticks = self.config.probe_interval_ticks
        period, into = divmod(self._now + self._clock_offset, period_ticks)
        slot = self._ring.slot(self.name, period, period_ticks)
        if slot is None:
            self._next_probe_tick = self._now + period_ticks - into  # alone: the next period
            return None
        phase, target = slot
        first = self._earliest_probe_tick == 0
        if (
            self._now < self._earliest_probe_tick
            or into < phase
            or (first and into > phase)  # no late start: wait for our slot to come round
        ):
            self._next_probe_tick = self._first_slot(
                max(self._now, self._earliest_probe_tick), phase
            )
            return None
        # The next slot is at or after this probe's end: one period on when the probe
        # started on time (a member whose health multiplier is m skips to the slot m periods
        # on: Lifeguard's overloaded member probes less), one more when it started late (a
        # corrected clock), which puts it back on time instead of late for good.
        self._earliest_probe_tick = self._now + interval
        self._next_probe_tick = self._first_slot(self._earliest_probe_tick, phase)
        return target

    def _first_slot(self, tick: int, phase: int) -> int:
        """The first tick from ``tick`` on that falls at ``phase`` of a period."""
        period_ticks = self.config.probe_interval_ticks
        into = (tick + self._clock_offset) % period_ticks
        slot = tick - into + phase
        return slot if slot >= tick else slot + period_ticks

    def set_clock_offset(self, offset: int) -> None:
        """The shared clock (which numbers probe periods for the coordinated schedule) reads
        ``now + offset`` ticks. Drivers derive it from the wall clock and correct it when
        ticks were missed; the simulator from virtual time."""
        if offset == self._clock_offset:
            return
        self._clock_offset = offset
        if self.config.coordinated_probes and self._next_probe_tick > self._now + 1:
            self._next_probe_tick = self._now + 1  # the slot moved: look again

    def _probe_order_add(self, name: str) -> None:
        """A member became live: give it its turn in the probe order in use."""
        if self.config.coordinated_probes:
            self._ring.add(name)
        else:
            self._order.add(name)

    def _next_check(self) -> str | None:
        """The next suspect whose lone suspicion waits for our own probe (in the round
        robin's stead: the probe rate stays one per period)."""
        checks = self._checks
        while checks:
            name = next(iter(checks))
            del checks[name]
            suspicion = self._suspicions.get(name)
            if suspicion is not None and suspicion.checking and self._is_probeable(name):
                return name
        return None

    def _is_probeable(self, name: str) -> bool:
        member = self._members.get(name)
        return member is not None and name != self.name and member.is_live

    def _send_indirect(self, probe: _Probe) -> None:
        probe.indirect_sent = True
        target = self._members.get(probe.target)
        if target is None:
            return
        helpers = [
            m.name
            for m in self._members.all()
            if m.state is MemberState.ALIVE and m.name not in (self.name, probe.target)
        ]
        chosen = self._rng.sample(helpers, min(self.config.indirect_checks, len(helpers)))
        for name in chosen:
            helper = self._members.get(name)
            assert helper is not None
            probe.relays[name] = None
            request = PingReq(
                seq=probe.seq,
                target=probe.target,
                target_address=target.address,
                reply_to=self.advertise_address,
            )
            self._send(helper.address, request, to_name=helper.name)
        if self.config.stream_probe:
            ping = Ping(seq=probe.seq, target=probe.target, reply_to=self.advertise_address)
            self._streams.append(Outbound(to=target.address, message=ping))

    def _finish_probe(self, probe: _Probe) -> None:
        if probe.check:
            suspicion = self._suspicions.get(probe.target)
            if suspicion is not None and suspicion.checking:
                if probe.acked or probe.stream_acked:
                    # It answered us: no death on one member's word. (Its ack normally
                    # carries its alive, which ended the suspicion before we got here.)
                    suspicion.restart(self._now)
                    self._note("swim.suspicion_restarted", node=probe.target)
                else:
                    suspicion.checking = False
                    suspicion.checked = True  # its timer has run out: dead at the next tick
        if probe.acked:
            self._health.apply(-1)
            return
        if probe.stream_acked:
            # Alive, but our datagrams (or its answers) were lost: heavy loss on the path,
            # or UDP blocked while TCP passes. Neither says which end is slow, so the
            # health score stays (memberlist's rule); the note is for the operator.
            self._note("swim.probe_stream_only", node=probe.target)
            return
        expected = len(probe.relays)
        # Lifeguard: missing nacks mean our own links (or our own slowness) may be at
        # fault; if every relay nacked, the target is the one in trouble.
        self._health.apply(expected - len(probe.nackers) if expected else 1)
        member = self._members.get(probe.target)
        if member is None or not member.is_live:
            return
        self._note("swim.probe_failed", node=probe.target, nacks=len(probe.nackers))
        self._apply_suspect(_suspect(member.name, member.incarnation, origin=self.name))
        suspicion = self._suspicions.get(member.name)
        if suspicion is not None:
            suspicion.witnessed = True  # our own probe failed: no longer hearsay to us

    def _tick_gossip(self) -> None:
        interval = self.config.gossip_interval_ticks
        if interval == 0 or self._now < self._next_gossip_tick:
            return
        self._next_gossip_tick = self._now + interval
        self._gossip_round()

    def _gossip_round(self) -> None:
        if not len(self._broadcasts):
            return
        candidates = self._gossip_targets()
        count = min(self.config.gossip_nodes, len(candidates))
        for member in self._rng.sample(candidates, count):
            updates = self._take_updates(_GOSSIP_BASE_BYTES, to=member.name)
            if not updates:
                if not len(self._broadcasts):
                    return
                continue  # this member holds what is queued; the next may not
            self._packets.append(Outbound(to=member.address, message=Gossip(updates=updates)))

    def _gossip_targets(self) -> list[Member]:
        """Live members, and those dead for less than ``gossip_to_the_dead_ticks`` (so they
        can learn they were declared dead and refute), in table order."""
        version, valid_until, cached = self._gossip_candidates
        now = self._now
        if version == self._targets_version and now < valid_until:
            return cached
        grace = self.config.gossip_to_the_dead_ticks
        candidates = []
        valid_until = now + 1 + grace
        for m in self._members.all():
            if m.name == self.name:
                continue
            if m.is_live:
                candidates.append(m)
            elif m.state is MemberState.DEAD and now - m.state_tick < grace:
                candidates.append(m)
                valid_until = min(valid_until, m.state_tick + grace)
        self._gossip_candidates = (self._targets_version, valid_until, candidates)
        return candidates

    def _tick_push_pull(self) -> None:
        if self._left or self._join is not None:
            return
        cfg = self.config
        if cfg.push_pull_interval_ticks and self._now >= self._next_push_pull_tick:
            self._next_push_pull_tick = self._now + self._push_pull_interval()
            live = [m for m in self._members.all() if m.name != self.name and m.is_live]
            if live:
                self._push_pull(self._rng.choice(live))
        if cfg.reconnect_interval_ticks and self._now >= self._next_reconnect_tick:
            self._next_reconnect_tick = self._now + cfg.reconnect_interval_ticks
            dead = [m for m in self._members.all() if m.state is MemberState.DEAD]
            if dead:
                member = self._rng.choice(dead)
                self._note("swim.reconnect", node=member.name)
                self._push_pull(member)

    def _push_pull_interval(self) -> int:
        """memberlist's ``pushPullScale``: unchanged up to 32 members, then stretched by
        ``ceil(log2 n - log2 32) + 1`` so the cluster's total stream load grows slowly."""
        n = self._members.live_count()
        base = self.config.push_pull_interval_ticks
        if n <= 32:
            return base
        return base * (math.ceil(math.log2(n) - math.log2(32)) + 1)

    def _push_pull(self, member: Member) -> None:
        message = PushPull(join=False, members=self._state())
        self._streams.append(Outbound(to=member.address, message=message))

    def _reap(self) -> None:
        reapable = self._reapable
        if not reapable:
            return
        now = self._now
        due = {name: None for name, tick in reapable.items() if now >= tick}
        if not due:
            return
        for member in self._members.all():  # table order, so equal runs reap alike
            if member.name not in due:
                continue
            del reapable[member.name]
            self._targets_version += 1
            self._members.remove(member.name)
            # The random order keeps the dead and left until now; the ring dropped them then.
            self._order.remove(member.name)
            self._suspicions.pop(member.name, None)
            self._event(EventKind.REAPED, member)

    # ------------------------------------------------------------------ messages

    def step(self, src: str, msg: SwimMessage, *, stream: bool = False) -> None:
        """Handle ``msg`` from the member named ``src``; ``stream`` says it came over a
        stream (TCP) rather than in a datagram, which matters for the fallback probe: a
        ``Ping`` is then answered on the stream, and an ``Ack`` is the answer to ours.
        Never raises for bad input."""
        if type(src) is not str or not src:
            self._drop("bad_sender")
            return
        if src == self.name:
            self._drop("from_self")
            return
        sender = self._members.lookup(src)
        if sender is not None:
            sender.heard_tick = self._now  # first-hand evidence that it runs
        if isinstance(msg, Ping | Ack | PingReq | Nack | Gossip) and msg.updates:
            if self._tracks_holders():
                self._source = src
            try:
                self._apply_many(msg.updates)
            finally:
                self._source = ""
        if isinstance(msg, Ping):
            self._on_ping(src, msg, stream)
        elif isinstance(msg, Ack):
            if stream:
                self._on_stream_ack(msg)
            else:
                self._on_ack(msg)
        elif isinstance(msg, PingReq):
            self._on_ping_req(src, msg)
        elif isinstance(msg, Nack):
            self._on_nack(src, msg)
        elif isinstance(msg, Gossip):
            pass  # its updates are all it carries
        elif isinstance(msg, PushPull):
            self._on_push_pull(src, msg)
        elif isinstance(msg, PushPullReply):
            self._on_push_pull_reply(src, msg)
        elif isinstance(msg, JoinRefused):
            self._on_join_refused(msg)
        else:  # a caller that ignores the types: still a drop, not a crash
            self._drop("unknown_message")  # type: ignore[unreachable]

    def _apply_many(self, updates: Iterable[Update]) -> None:
        """Apply updates in order. Most of them, in a large cluster, are ``alive`` news we
        already hold: those are counted and skipped here without the calls (the decision
        is the one ``_apply_alive`` makes)."""
        lookup = self._members.lookup
        me = self._me
        max_meta = self.config.max_metadata_bytes
        duplicates = 0
        for update in updates:
            if update.kind is _KIND_ALIVE:
                member = lookup(update.node)
                if (
                    member is not None
                    and update.incarnation <= member.incarnation
                    and member is not me
                    and len(update.meta) <= max_meta
                ):
                    if update.incarnation == member.incarnation and member.state is _ALIVE:
                        duplicates += 1
                    else:
                        self._drops["stale_update"] += 1
                    continue
            self._apply(update)
        self._duplicates += duplicates

    def _on_ping(self, src: str, msg: Ping, stream: bool) -> None:
        if msg.target != self.name:
            # The address was reused by another member, or the sender's table is stale.
            self._drop("ping_for_other_node")
            return
        ack = Ack(seq=msg.seq, target=self.name)
        if stream:
            # The fallback probe: answer on its connection, and only answer (a stream
            # exchange is one question and one reply; gossip rides the datagrams).
            self._streams.append(Outbound(to=msg.reply_to, message=ack))
        else:
            self._send(msg.reply_to, ack, to_name=src)

    def _on_ack(self, msg: Ack) -> None:
        probe = self._probe
        if probe is not None and msg.seq == probe.seq and msg.target == probe.target:
            probe.acked = True
            return
        relay = self._relays.get(msg.seq)
        if relay is not None and msg.target == relay.target:
            del self._relays[msg.seq]
            self._send(
                relay.reply_to,
                Ack(seq=relay.prober_seq, target=relay.target),
                to_name=relay.prober,
            )
            return
        self._drop("unexpected_ack")  # late (the period ended) or never asked for

    def _on_stream_ack(self, msg: Ack) -> None:
        probe = self._probe
        if probe is not None and msg.seq == probe.seq and msg.target == probe.target:
            probe.stream_acked = True
            return
        self._drop("unexpected_stream_ack")  # the period ended before the answer came

    def _on_ping_req(self, src: str, msg: PingReq) -> None:
        if msg.target == self.name:
            # Asked to probe ourselves: just answer the prober directly.
            self._send(msg.reply_to, Ack(seq=msg.seq, target=self.name), to_name=src)
            return
        if len(self._relays) >= self.config.max_pending_relays:
            self._drop("relay_overload")
            return
        self._seq += 1
        self._relays[self._seq] = _Relay(
            prober=src,
            reply_to=msg.reply_to,
            prober_seq=msg.seq,
            target=msg.target,
            nack_tick=self._now + self.config.nack_timeout_ticks,
        )
        ping = Ping(seq=self._seq, target=msg.target, reply_to=self.advertise_address)
        self._send(msg.target_address, ping, to_name=msg.target)

    def _on_nack(self, src: str, msg: Nack) -> None:
        probe = self._probe
        if (
            probe is None
            or msg.seq != probe.seq
            or msg.target != probe.target
            or src not in probe.relays
            or src in probe.nackers
        ):
            self._drop("unexpected_nack")
            return
        probe.nackers[src] = None

    def _on_push_pull(self, src: str, msg: PushPull) -> None:
        entry = next((u for u in msg.members if u.node == src), None)
        if entry is None or entry.kind is not UpdateKind.ALIVE:
            # Where would the answer go? A sender always lists itself, alive.
            self._drop("push_pull_without_sender")
            return
        reply_to = entry.address
        if msg.join:
            known = self._members.get(src)
            if known is not None and known.is_live and known.address != entry.address:
                reason = (
                    f"the name {src!r} is held by a live member at {known.address}; "
                    "choose another name or stop the other node"
                )
                refusal = JoinRefused(name=src, address=known.address, reason=reason)
                self._streams.append(Outbound(to=reply_to, message=refusal))
                self._note("swim.join_refused", node=src, address=entry.address)
                return
        self._merge(src, msg.members)
        # Merge first, answer second: the answer then carries any refutation of ours.
        self._streams.append(Outbound(to=reply_to, message=PushPullReply(members=self._state())))

    def _on_push_pull_reply(self, src: str, msg: PushPullReply) -> None:
        self._merge(src, msg.members)
        if self._join is not None:
            self._join = None
            self._note("swim.joined", via=src, members=len(self._members))

    def _on_join_refused(self, msg: JoinRefused) -> None:
        if self._join is None or msg.name != self.name:
            self._drop("unexpected_join_refused")
            return
        self._join = None
        self._events.append(
            MemberEvent(
                kind=EventKind.NAME_CONFLICT,
                name=self.name,
                address=msg.address,
                incarnation=self._me.incarnation,
                reason=msg.reason,
            )
        )
        self._note("swim.name_conflict", holder=msg.address)

    def _merge(self, src: str, members: tuple[Update, ...]) -> None:
        self._merging = True
        if self._tracks_holders():
            self._source = src
        try:
            self._apply_merged(src, members)
        finally:
            self._merging = False
            self._source = ""

    def _apply_merged(self, src: str, members: tuple[Update, ...]) -> None:
        self._apply_many(
            _suspect(update.node, update.incarnation, origin=src)
            # A remote verdict of death may be stale (memberlist's rule): suspect instead,
            # and let the member refute if it is alive. The suspicion is the sender's own
            # (it holds it now), so it counts as a confirmation from it.
            if update.kind is UpdateKind.DEAD or update.kind is UpdateKind.SUSPECT
            else update
            for update in members
        )

    # ------------------------------------------------------------------ news

    def _apply(self, update: Update) -> None:
        """News from another member (our own verdicts go to ``_apply_failure`` directly)."""
        if update.kind is UpdateKind.ALIVE:
            self._apply_alive(update)
        elif update.kind is UpdateKind.SUSPECT:
            self._apply_suspect(update)
        elif update.kind is UpdateKind.DEAD and self._heard_since_suspected(update):
            # A verdict against our own ears: the accused spoke to us after its accuser's
            # evidence of silence began. The verdict is stale (typically from across a
            # partition that has healed): suspect instead, and let the member refute.
            self._note("swim.dead_doubted", node=update.node, by=update.origin)
            self._apply_suspect(_suspect(update.node, update.incarnation, origin=update.origin))
        else:
            self._apply_failure(update)

    def _heard_since_suspected(self, verdict: Update) -> bool:
        """Whether the live accused of the ``dead`` verdict sent us a message after its
        accuser began to suspect it (``check_hearsay_suspicions``).

        The verdict says how long its accuser had suspected the member (``suspected_ms``);
        a member is declared dead only after at least the minimum suspicion timeout, so
        that is the least age assumed. For a member that really died the accuser's
        suspicion began after its last message to anyone, so we heard nothing since: the
        window only ever catches stale verdicts. A tick of slack covers the rounding of
        the two durations; the time a verdict spends in flight and in gossip queues makes
        its stamped age an underestimate, which errs toward believing it.
        """
        cfg = self.config
        member = self._members.get(verdict.node)
        if not cfg.check_hearsay_suspicions or member is None or not member.is_live:
            return False
        if member.heard_tick < 0:
            return False
        low, _, _ = suspicion_bounds(
            members=self._members.live_count(),
            suspicion_mult=cfg.suspicion_mult,
            max_timeout_mult=cfg.suspicion_max_timeout_mult,
            probe_interval_ticks=cfg.probe_interval_ticks,
        )
        suspected_ticks = verdict.suspected_ms // cfg.tick_ms - 1
        return self._now - member.heard_tick < max(low, suspected_ticks)

    def _about_me(self, update: Update) -> None:
        """News about this node from others: refute whatever it is not telling the truth."""
        me = self._me
        if self._left:
            return  # we are leaving: let "left" stand
        if update.incarnation < me.incarnation:
            if update.kind is not UpdateKind.ALIVE:
                # Already refuted, but whoever passed this on has not heard the refutation
                # (gossip is probabilistic, and an ack is no refutation). Send our alive
                # again: it leads our next datagram, which for a buddy-system ping is the
                # ack that goes straight back to the suspecting prober. Without this a
                # member that missed the refutation keeps suspecting a member that answers
                # every probe, and declares it dead when the timer runs out.
                self._broadcasts.queue(me.as_update(self.name))
                self._answer_accuser(update.origin)
            return
        if (
            update.kind is UpdateKind.ALIVE
            and update.incarnation == me.incarnation
            and update.address == me.address
            and update.meta == me.meta
        ):
            return  # our own alive, echoed back
        self._refute(update)
        if update.kind is not UpdateKind.ALIVE:
            self._answer_accuser(update.origin)

    def _answer_accuser(self, origin: str) -> None:
        """Send our alive straight to the member that accused us, once per accuser and
        incarnation. Gossip reaches everyone only with high probability; the accuser is
        the one member that must hear the refutation, since its own timer will otherwise
        declare us dead (the simulator: ``swim-loss --nodes 100 --seed 2 --duration 600``
        at 10% loss, where a witness missed every one of about 1,200 transmissions)."""
        accuser = self._members.get(origin)
        if accuser is None or accuser is self._me or not accuser.is_live:
            return
        incarnation = self._me.incarnation
        if self._answered.get(origin) == incarnation:
            return
        if len(self._answered) >= 2 * max(1, len(self._members)):
            self._answered.clear()  # forget answers to reaped members now and then
        self._answered[origin] = incarnation
        alive = self._me.as_update(self.name)
        self._packets.append(Outbound(to=accuser.address, message=Gossip(updates=(alive,))))

    def _refute(self, update: Update) -> None:
        me = self._me
        me.incarnation = max(me.incarnation, update.incarnation) + 1
        self._health.apply(1)  # Lifeguard: being suspected is a sign we may be slow
        self._broadcasts.queue(me.as_update(self.name))
        self._note(
            "swim.refuted",
            claim=update.kind.name.lower(),
            incarnation=me.incarnation,
        )

    def _apply_alive(self, update: Update) -> None:
        member = self._members.get(update.node)
        if (
            member is not None
            and update.incarnation <= member.incarnation
            and member is not self._me
        ):
            # The common case in a large cluster, by far: gossip we already have. (What
            # the checks below decide, without the calls.)
            if len(update.meta) > self.config.max_metadata_bytes:
                self._drops["oversize_meta"] += 1
            elif update.incarnation == member.incarnation and member.state is _ALIVE:
                self._duplicates += 1
            else:
                self._drops["stale_update"] += 1
            return
        if update.node == self.name:
            self._about_me(update)
            return
        if len(update.meta) > self.config.max_metadata_bytes:
            self._drop("oversize_meta")
            return
        if not supersedes(member, update):
            self._drop(_stale_reason(member, update))
            return
        if member is None:
            member = Member(
                name=update.node,
                address=update.address,
                incarnation=update.incarnation,
                meta=update.meta,
                state=MemberState.ALIVE,
                state_tick=self._now,
            )
            self._members.add(member)
            version, _, targets = self._gossip_candidates
            if version == self._targets_version:
                targets.append(member)  # where a rebuild would put it: last, in table order
            self._probe_order_add(member.name)
            self._remember_alive(update)
            self._broadcasts.queue(update, source=self._source)
            self._event(EventKind.JOINED, member)
            return
        if member.is_live and member.address != update.address:
            # Two live members claim one name: keep the one we know; the other was refused
            # at join, or is a stale entry that will die and then be replaced.
            self._drop("address_conflict")
            self._note("swim.address_conflict", node=member.name, address=update.address)
            return
        previous = member.state
        changed = member.meta != update.meta or member.address != update.address
        member.incarnation = update.incarnation
        member.address = update.address
        member.meta = update.meta
        if previous is not MemberState.ALIVE:
            self._members.set_state(member, MemberState.ALIVE, self._now)
            if self._reapable.pop(member.name, None) is not None:
                self._targets_version += 1  # back from dead or left
                self._probe_order_add(member.name)
        self._remember_alive(update)
        self._suspicions.pop(member.name, None)
        self._broadcasts.queue(update, source=self._source)
        if previous is MemberState.LEFT:
            self._event(EventKind.JOINED, member)
        elif previous is not MemberState.ALIVE:
            self._event(EventKind.ALIVE_AGAIN, member)
        elif changed:
            self._event(EventKind.UPDATED, member)

    def _accused(self, update: Update) -> Member | None:
        """The member a suspect, dead or left update is about, when it is another member we
        know; news about ourselves is answered (refuted) and an unknown member is a drop."""
        if update.node == self.name:
            self._about_me(update)
            return None
        member = self._members.get(update.node)
        if member is None:
            self._drop("unknown_member")
        return member

    def _apply_suspect(self, update: Update) -> None:
        member = self._accused(update)
        if member is None:
            return
        if member.state is MemberState.SUSPECT and update.incarnation == member.incarnation:
            suspicion = self._suspicions.get(member.name)
            if (
                suspicion is not None
                and suspicion.confirm(update.origin)
                and self.config.lha_suspicion
            ):
                # A new, independent confirmation: shrink the timer and pass it on, so
                # that the others' timers shrink too (Lifeguard).
                self._broadcasts.queue(update, source=self._source)
                self._note("swim.suspicion_confirmed", node=member.name, by=update.origin)
            return
        if not supersedes(member, update):
            self._drop(_stale_reason(member, update))
            return
        previous = member.state
        member.incarnation = update.incarnation
        if previous is not MemberState.SUSPECT:
            self._members.set_state(member, MemberState.SUSPECT, self._now)
        low, high, k = suspicion_bounds(
            members=self._members.live_count(),
            suspicion_mult=self.config.suspicion_mult,
            max_timeout_mult=self.config.suspicion_max_timeout_mult,
            probe_interval_ticks=self.config.probe_interval_ticks,
        )
        if not self.config.lha_suspicion:
            high, k = low, 0  # plain SWIM: a fixed timeout, confirmations change nothing
        suspicion = Suspicion(start_tick=self._now, min_ticks=low, max_ticks=high, k=k)
        suspicion.merged = self._merging
        suspicion.confirm(update.origin)
        self._suspicions[member.name] = suspicion
        self._broadcasts.queue(update, source=self._source)
        if previous is not MemberState.SUSPECT:
            self._event(EventKind.SUSPECT, member, by=update.origin)

    def _apply_failure(self, update: Update) -> None:
        """A ``dead`` or ``left`` update."""
        member = self._accused(update)
        if member is None:
            return
        if not supersedes(member, update):
            self._drop(_stale_reason(member, update))
            return
        member.incarnation = update.incarnation
        left = update.kind is UpdateKind.LEFT
        self._members.set_state(member, MemberState.LEFT if left else MemberState.DEAD, self._now)
        if self.config.coordinated_probes:
            self._ring.remove(member.name)  # the ring holds live members only
        cfg = self.config
        keep = cfg.left_reap_ticks if left else cfg.dead_reap_ticks
        self._reapable[member.name] = self._now + keep
        self._targets_version += 1
        self._suspicions.pop(member.name, None)
        self._broadcasts.queue(update, source=self._source)
        if member.state is MemberState.LEFT:
            self._event(EventKind.LEFT, member)
        else:
            self._event(EventKind.DEAD, member, by=update.origin)

    # ------------------------------------------------------------------ helpers

    def _remember_alive(self, update: Update) -> None:
        """The alive update just accepted is, field for field, what ``_state`` would build
        for its member now: keep it, so that push-pull need not build it again."""
        if not update.origin:
            key = (MemberState.ALIVE, update.incarnation, update.address, update.meta)
            self._state_cache[update.node] = (key, update)

    def _state(self) -> tuple[Update, ...]:
        """The whole member table as updates, for push-pull. Each member's update is built
        again only when what it says has changed (a validated ``Update`` is costly, and a
        large cluster's push-pulls carry a thousand of them)."""
        cache = self._state_cache
        state = []
        for m in self._members.all():
            key = (m.state, m.incarnation, m.address, m.meta)
            hit = cache.get(m.name)
            if hit is None or hit[0] != key:
                hit = cache[m.name] = (key, m.as_update(self.name))
            state.append(hit[1])
        if len(cache) > 2 * len(self._members):  # forget reaped members now and then
            for name in [name for name in cache if name not in self._members]:
                del cache[name]
        return tuple(state)

    def _send(
        self,
        to: str,
        message: Ping | Ack | PingReq | Nack,
        *,
        first: tuple[Update, ...] = (),
        to_name: str = "",
    ) -> None:
        """Send a datagram message to the address ``to`` (of the member ``to_name``) with as
        many queued updates as fit its budget."""
        base = estimate_size(message) + sum(estimate_size(u) for u in first)
        skip = first[0].node if first else ""
        updates = first + self._take_updates(base, skip=skip, to=to_name)
        if updates:
            message = dataclasses.replace(message, updates=updates)
        self._packets.append(Outbound(to=to, message=message))

    def _tracks_holders(self) -> bool:
        """Whether the broadcast queue is told who holds each update (``_TRACK_HOLDERS_UP_TO``)."""
        return self._members.live_count() <= _TRACK_HOLDERS_UP_TO

    def _take_updates(self, base_bytes: int, *, skip: str = "", to: str = "") -> tuple[Update, ...]:
        """Queued updates for a datagram to the member ``to`` whose other content is
        ``base_bytes`` big."""
        cfg = self.config
        budget = cfg.max_datagram_bytes - cfg.envelope_overhead_bytes - base_bytes
        live = self._members.live_count()
        limit = retransmit_limit(cfg.retransmit_mult, max(1, live))
        if not self._tracks_holders():
            return tuple(self._broadcasts.get(budget, limit=limit, skip=skip))
        others = live - 1 if self._me.is_live else live  # a leaving node is no longer live
        return tuple(self._broadcasts.get(budget, limit=limit, to=to, others=others, skip=skip))

    def _event(self, kind: EventKind, member: Member, *, by: str = "") -> None:
        """``by``: for a suspicion or a death, the member it came from (us, when our own
        probe failed or our own timer expired)."""
        self._events.append(
            MemberEvent(
                kind=kind,
                name=member.name,
                address=member.address,
                incarnation=member.incarnation,
                meta=member.meta,
            )
        )
        if by:
            self._note(
                f"swim.member_{kind.value}",
                node=member.name,
                incarnation=member.incarnation,
                by=by,
            )
        else:
            self._note(
                f"swim.member_{kind.value}", node=member.name, incarnation=member.incarnation
            )

    def _note(self, event: str, **fields: str | int) -> None:
        self._notes.append(Note(event, fields))  # ``fields`` is a new dict at every call

    def _drop(self, reason: str) -> None:
        self._drops[reason] += 1


def _suspect(node: str, incarnation: int, *, origin: str) -> Update:
    """``origin`` suspects ``node`` at ``incarnation``."""
    return Update(kind=UpdateKind.SUSPECT, node=node, incarnation=incarnation, origin=origin)


def _stale_reason(member: Member | None, update: Update) -> str:
    """Why an update that does not supersede ours is dropped: a plain duplicate (the normal
    fate of epidemic gossip) or genuinely old news."""
    if (
        member is not None
        and update.incarnation == member.incarnation
        and state_of(update.kind) is member.state
    ):
        return "duplicate_update"
    return "stale_update"
