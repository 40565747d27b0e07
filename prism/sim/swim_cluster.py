"""A simulated SWIM cluster: N real ``SwimCore`` instances on virtual time, over the same
simulated network as Raft (``prism.sim.network``), run through the handling loop of
``prism.swim.ready``.

Theory of operation.

* **Datagrams and streams.** A core's ``packets`` travel as datagrams (lost, duplicated and
  delayed as their link says); its ``streams`` (push-pull, join answers, the fallback
  probe) as a reliable exchange that a cut stops and loss delays (``Network.send_stream``);
  a core is told which channel a message came by. Cores address each other by advertise
  address; the simulator maps an address to the member listening there, and a datagram to an
  address nobody holds is counted and lost, as on a real network.
* **Ticks without tick events.** Core tick ``t`` of member ``m`` falls at virtual time
  ``origin(m) + t * tick_ms``; each member's origin has its own random phase. Instead of one
  event per member per tick (10,000 events per simulated second at 1,000 members), each
  member has one *wake* event at the next tick where its core has work
  (``SwimCore.next_work_tick``), and before a message is stepped the core is brought up to
  the tick due at that instant (``SwimCore.tick_until``). That is exactly what ticking every
  tick would do; ``tick_elision=False`` ticks every tick instead, and the two give the same
  event log (a test compares their digests).
* **Faults.** A crash loses the core (all SWIM state is volatile); a restart builds a new
  core under the same name and address, which joins again through ``seeds``. A paused member
  (SIGSTOP, a long GC pause) runs no ticks and reads no messages: datagrams wait in its
  socket buffer (1,024 of them, as a kernel's; more are dropped), and when it resumes it reads
  them first, then ticks on from where its clock stopped: like the drivers, it does not replay
  the ticks it missed. Partitions, cuts and loss are the network's.
* **What is observed.** Every ``MemberEvent`` updates the observer's *view* of the subject,
  and counters over all views (how many live members see X alive, or dead) answer
  "converged?" and "detected everywhere?" in constant time. A death declared about a member
  that is running (paused counts as running) and reachable from the observer (no cut between
  them now or within the last ``cut_memory_s``) is a *false death*; a suspicion likewise a
  false suspicion.
* **Determinism.** Everything draws from streams derived from the run's seed by name (the
  loop, the network per sender, each core per member and generation, tick phases), nothing
  iterates a set, and every member event and delivered message is folded into the digest
  of ``SwimLog``: the same seed gives the same digest, byte for byte.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import final

from prism.sim.loop import NS_PER_MS, NS_PER_S, EventLoop
from prism.sim.network import LinkSpec, Network
from prism.sim.rng import derive
from prism.sim.timeline import TimelineEntry
from prism.swim.config import SwimConfig
from prism.swim.core import SwimCore
from prism.swim.members import MemberState
from prism.swim.messages import STREAM_ANSWERS, SwimMessage
from prism.swim.ready import EventKind, Note, Ready

PORT = 4200
SOCKET_BUFFER_DATAGRAMS = 1024  # what a paused member's socket holds before dropping


def address_of(name: str) -> str:
    return f"{name}:{PORT}"


_STATE_AFTER: dict[EventKind, MemberState | None] = {
    EventKind.JOINED: MemberState.ALIVE,
    EventKind.ALIVE_AGAIN: MemberState.ALIVE,
    EventKind.SUSPECT: MemberState.SUSPECT,
    EventKind.DEAD: MemberState.DEAD,
    EventKind.LEFT: MemberState.LEFT,
    EventKind.REAPED: None,
}
"""The state a member event leaves its subject in (``UPDATED`` changes no state; name
conflicts and failed joins are about the observer itself)."""


@dataclass(frozen=True, slots=True)
class Death:
    """``observer`` marked ``subject`` dead at ``time_ns`` (``by``: whose verdict)."""

    time_ns: int
    observer: str
    subject: str
    by: str


_FLUSH_LINES = 4096


@final
class SwimLog:
    """The run's event log: readable entries and a digest over every line.

    Verbose entries (news a member merely heard, joins, confirmations) are folded into the
    digest always but kept for display only when ``keep_verbose`` (a 1,000-member join alone
    makes a million of them)."""

    def __init__(self, *, keep_verbose: bool) -> None:
        self.entries: list[TimelineEntry] = []
        self.keep_verbose = keep_verbose
        self._digest = hashlib.blake2b(digest_size=16)
        self._pending: list[str] = []

    def add(
        self, time_ns: int, node: str, text: str, *, verbose: bool = False, fold: bool = True
    ) -> None:
        """``fold=False`` for lines whose facts are already in the digest (a member event
        folded by itself): the digest then does not depend on ``keep_verbose``."""
        if self.keep_verbose or not verbose:
            self.entries.append(TimelineEntry(time_ns, node, text, verbose))
        if fold:
            self.fold(f"{time_ns} {node} {text}")

    def fold(self, line: str) -> None:
        """Digest ``line`` without showing it."""
        pending = self._pending
        pending.append(line)
        if len(pending) >= _FLUSH_LINES:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._digest.update(("\n".join(self._pending) + "\n").encode())
            self._pending = []

    def digest(self) -> str:
        self._flush()
        return self._digest.hexdigest()


@dataclass(slots=True)
class SwimNode:
    """One simulated member: a core (None while crashed or stopped) and its clock."""

    name: str
    address: str
    core: SwimCore | None = None
    generation: int = 0  # cores built under this name so far
    epoch: int = 0  # bumps on crash, restart, pause and resume: cancels stale wake events
    paused: bool = False
    paused_since_ns: int = 0
    origin_ns: int = 0  # virtual time of the core's tick 0
    wake_tick: int = -1  # core tick of the earliest pending wake (-1: none)
    inbox: list[tuple[str, SwimMessage, bool]] = field(default_factory=list)  # (src, msg, stream)
    left: bool = False  # stopped after a graceful leave (not a crash)


@dataclass(frozen=True, slots=True)
class _Cut:
    """A period in which some links were cut: deaths across it are expected."""

    start_ns: int
    end_ns: int | None
    group_of: dict[str, int]  # members in different groups could not talk


# How a core's notes read in the timeline, after the observer's name: (template, verbose).
_NOTE_TEXT: dict[str, tuple[str, bool]] = {
    "swim.member_joined": ("sees {node} join (incarnation {incarnation})", True),
    "swim.member_updated": ("sees new metadata of {node} (incarnation {incarnation})", True),
    "swim.member_alive_again": ("sees {node} alive again (incarnation {incarnation})", True),
    "swim.member_left": ("sees {node} leave", True),
    "swim.member_reaped": ("forgets {node}", True),
    "swim.refuted": ("refutes a {claim} claim about itself: incarnation now {incarnation}", False),
    "swim.joined": ("has joined", True),
    "swim.join_attempt": ("join attempt {attempt} to {seeds} seed(s)", True),
    "swim.left": ("leaves the cluster", False),
    "swim.metadata_updated": ("publishes new metadata (incarnation {incarnation})", False),
    "swim.suspicion_confirmed": ("hears {by} confirm the suspicion of {node}", True),
    "swim.suspicion_degraded": (
        "its suspicion of {node} ran out with {confirmations} confirmation(s)",
        True,
    ),
    "swim.probe_failed": ("probe of {node} failed ({nacks} nack(s))", True),
    "swim.suspicion_check": (
        "its suspicion of {node} ran out, but {doubt}: probes it before declaring it dead",
        False,
    ),
    "swim.suspicion_restarted": ("{node} answered the check: its suspicion starts over", False),
    "swim.reconnect": ("offers a push-pull to dead {node} (reconnect)", True),
    "swim.join_refused": ("refuses the join of a second {node} at {address}", False),
    "swim.name_conflict": ("its join was refused: the name is held at {holder}", False),
    "swim.join_failed": ("gives up joining after {attempts} attempts", False),
    "swim.address_conflict": ("ignores {node} claimed at a second address {address}", True),
}


# Member events whose note may be shown without --verbose (a member's own verdicts).
_SHOWN_EVENTS = ("swim.member_suspect", "swim.member_dead")


@final
class SwimSim:
    """N members, a network and a log, all driven by one seed. Members are ``n1..nN``;
    none runs until ``start`` is called for it."""

    def __init__(
        self,
        *,
        nodes: int,
        seed: int,
        config: SwimConfig,
        link: LinkSpec,
        tick_elision: bool = True,
        keep_verbose: bool | None = None,
        cut_memory_s: float | None = None,
    ) -> None:
        """``cut_memory_s``: how long after a cut heals a death across it still counts as
        expected (default: the longest suspicion plus a few probe periods)."""
        if nodes < 1:
            raise ValueError("nodes must be at least 1")
        config.validate()
        self.seed = seed
        self.config = config
        self.names = [f"n{i}" for i in range(1, nodes + 1)]
        self.nodes = {name: SwimNode(name, address_of(name)) for name in self.names}
        self._by_address = {node.address: node.name for node in self.nodes.values()}
        self.loop = EventLoop(derive(seed, "loop"))
        self.network = Network(self.loop, self.names, seed=seed, link=link, streams="sender")
        self.log = SwimLog(keep_verbose=nodes <= 100 if keep_verbose is None else keep_verbose)
        self.tick_ns = config.tick_ms * NS_PER_MS
        self.period_ns = config.probe_interval_ticks * self.tick_ns
        self.tick_elision = tick_elision
        self._phase_rng = derive(seed, "tick-phase")
        period_s = self.period_ns / NS_PER_S
        if cut_memory_s is None:
            cut_memory_s = (
                config.suspicion_mult
                * config.suspicion_max_timeout_mult
                * max(1.0, math.log10(nodes))
                * period_s
                + 5 * period_s
            )
        self.cut_memory_ns = int(cut_memory_s * NS_PER_S)
        # Views: what each running member believes about each other member, from its events.
        self.views: dict[str, dict[str, MemberState]] = {}
        self._alive_by: Counter[str] = Counter()  # subject -> running observers seeing it alive
        self._dead_by: Counter[str] = Counter()  # subject -> running observers seeing it dead
        self._running: dict[str, None] = {}  # members with a core (paused ones included)
        self._fully_alive = 0  # running members that every other running member sees alive
        self._cuts: list[_Cut] = []
        # Figures.
        self.crashed_at: dict[str, int] = {}  # subject -> when it last crashed
        self.first_suspect_ns: dict[str, int] = {}  # crashed subject -> first suspicion
        self.first_dead_ns: dict[str, int] = {}  # crashed subject -> first marked dead
        self.all_dead_ns: dict[str, int] = {}  # crashed subject -> dead at every running one
        self.false_deaths: list[Death] = []
        self.false_suspicions = 0
        self.refutations = 0
        self.deaths = 0  # every DEAD event, true or false
        self.datagrams_sent: Counter[str] = Counter()  # by message type
        self.streams_sent: Counter[str] = Counter()
        self.unroutable = 0  # datagrams or streams to an address nobody holds
        self.buffer_overflow = 0  # datagrams a paused member's full socket dropped
        self.on_event: list[Callable[[str, EventKind, str, int], None]] = []  # scenario hooks

    # ------------------------------------------------------------------ lifecycle

    def start(self, name: str, seeds: Sequence[str], *, meta: bytes = b"") -> None:
        """Start ``name`` (a fresh core) and join through ``seeds`` (member names)."""
        node = self.nodes[name]
        if node.core is not None:
            raise ValueError(f"{name} is already running")
        node.generation += 1
        node.epoch += 1
        node.paused = False
        node.left = False
        node.inbox = []
        node.wake_tick = -1
        # Tick 1 falls a random phase into the first tick interval.
        phase = self._phase_rng.randrange(1, self.tick_ns + 1)
        node.origin_ns = self.loop.now_ns + phase - self.tick_ns
        node.core = SwimCore(
            name,
            bind_address=node.address,
            meta=meta,
            config=self.config,
            rng=derive(self.seed, f"core/{name}/{node.generation}"),
            # The shared clock of the probe schedule is virtual time, in ticks.
            clock_offset=node.origin_ns // self.tick_ns,
        )
        self.views[name] = {}
        self._running[name] = None
        self._recount()
        verb = "starts" if node.generation == 1 else "restarts with a fresh core"
        self.log.add(self.now_ns, name, verb, verbose=node.generation == 1)
        node.core.join([address_of(seed) for seed in seeds])
        self._pump(node)
        self._schedule_wake(node)

    def crash(self, name: str) -> None:
        """Stop ``name`` at once: its core and everything it knew are gone."""
        node = self.nodes[name]
        if node.core is None:
            return
        self.log.add(self.now_ns, name, "crashes (all SWIM state lost)")
        self.crashed_at[name] = self.now_ns
        self.first_suspect_ns.pop(name, None)
        self.first_dead_ns.pop(name, None)
        self.all_dead_ns.pop(name, None)
        self._stop(node)

    def _stop(self, node: SwimNode) -> None:
        node.core = None
        node.epoch += 1
        node.paused = False
        node.inbox = []
        view = self.views.pop(node.name, {})
        for subject, state in view.items():
            self._count(subject, state, None)
        self._running.pop(node.name, None)
        self._recount()
        for subject in self.crashed_at:  # fewer observers: a detection may now be complete
            self._check_dead_everywhere(subject)

    def restart(self, name: str, seeds: Sequence[str]) -> None:
        """Start a crashed (or stopped) member again under its name and address."""
        self.start(name, seeds)

    def leave(self, name: str, *, stop_after_s: float = 1.0) -> None:
        """A graceful leave: announce it, keep running ``stop_after_s`` so the news spreads
        (as the driver does), then stop."""
        node = self.nodes[name]
        core = node.core
        if core is None:
            return
        self._sync(node)
        core.leave()
        self._pump(node)
        self._schedule_wake(node)

        def stop() -> None:
            if node.core is core:  # not crashed (or restarted) meanwhile
                node.left = True
                self.log.add(self.now_ns, name, "stops after leaving")
                self._stop(node)

        self.loop.call_later(int(stop_after_s * NS_PER_S), stop)

    def pause(self, name: str) -> None:
        """``name`` stops processing anything (SIGSTOP): see the module docstring."""
        node = self.nodes[name]
        if node.core is None or node.paused:
            return
        self._sync(node)  # the ticks due before the pause have run
        node.paused = True
        node.paused_since_ns = self.now_ns
        node.epoch += 1
        node.wake_tick = -1
        self.log.add(self.now_ns, name, "paused (processes nothing)")

    def resume(self, name: str) -> None:
        node = self.nodes[name]
        core = node.core
        if core is None or not node.paused:
            return
        node.paused = False
        node.epoch += 1
        # The clock goes on from the tick it stopped at; the next tick falls on the node's
        # own tick grid, as the ticker's next deadline would.
        tick_ns = self.tick_ns
        grid = node.origin_ns % tick_ns
        next_ns = self.now_ns + 1 + (grid - self.now_ns - 1) % tick_ns
        node.origin_ns = next_ns - (core.now + 1) * tick_ns
        core.set_clock_offset(node.origin_ns // tick_ns)  # as a driver corrects its clock
        paused_s = (self.now_ns - node.paused_since_ns) / NS_PER_S
        self.log.add(
            self.now_ns,
            name,
            f"resumed after {paused_s:.3f}s; reads {len(node.inbox)} waiting message(s)",
        )
        inbox, node.inbox = node.inbox, []
        for src, message, stream in inbox:
            core.step(src, message, stream=stream)
            self._pump(node)
        self._schedule_wake(node)

    def update_metadata(self, name: str, meta: bytes) -> None:
        node = self.nodes[name]
        if node.core is None:
            raise ValueError(f"{name} is not running")
        self._sync(node)
        node.core.update_metadata(meta)
        self._pump(node)
        self._schedule_wake(node)

    # ------------------------------------------------------------------ network faults

    def partition(self, groups: Sequence[Sequence[str]]) -> None:
        """Cut every link between groups; members in no group are isolated."""
        self.network.partition(groups)
        self._end_cut()
        group_of = {name: i for i, group in enumerate(groups) for name in group}
        for i, name in enumerate(self.names):
            group_of.setdefault(name, -1 - i)
        self._cuts.append(_Cut(self.now_ns, None, group_of))
        shown = "|".join("{" + _name_range(group) + "}" for group in groups)
        self.log.add(self.now_ns, "-", f"partition {shown}")

    def heal(self) -> None:
        self.network.heal()
        self._end_cut()
        self.log.add(self.now_ns, "-", "heal: every link restored")

    def _end_cut(self) -> None:
        if self._cuts and self._cuts[-1].end_ns is None:
            last = self._cuts[-1]
            self._cuts[-1] = _Cut(last.start_ns, self.now_ns, last.group_of)

    def set_link(self, spec: LinkSpec) -> None:
        """Every link behaves as ``spec`` from now on."""
        self.network.set_all_links(spec)
        self.log.add(
            self.now_ns,
            "-",
            f"every link now: loss {spec.loss:.4g}, latency {spec.latency_ms:g} ms",
        )

    def was_cut(self, a: str, b: str) -> bool:
        """True when a cut separated ``a`` and ``b`` now or within ``cut_memory_s``."""
        now = self.now_ns
        for cut in reversed(self._cuts):
            if cut.end_ns is not None and now - cut.end_ns > self.cut_memory_ns:
                continue
            if cut.group_of[a] != cut.group_of[b]:
                return True
        return self.network.is_cut(a, b) or self.network.is_cut(b, a)

    # ------------------------------------------------------------------ running

    @property
    def now_ns(self) -> int:
        return self.loop.now_ns

    def run_until(self, end_ns: int, stop: Callable[[], bool] | None = None) -> bool:
        """Run up to ``end_ns``; with ``stop``, return True as soon as it holds (at once,
        if it already does)."""
        if stop is not None and stop():
            return True
        return self.loop.run_until(end_ns, stop)

    def run_for(self, seconds: float, stop: Callable[[], bool] | None = None) -> bool:
        return self.run_until(self.loop.now_ns + int(seconds * NS_PER_S), stop)

    def _due_tick(self, node: SwimNode) -> int:
        return (self.loop.now_ns - node.origin_ns) // self.tick_ns

    def _sync(self, node: SwimNode) -> None:
        """Run the ticks due by now (the handling loop's ticker, caught up)."""
        core = node.core
        if core is None or node.paused:
            return
        due = self._due_tick(node)
        if core.now < due:
            core.tick_until(due)
            self._pump(node)

    def _schedule_wake(self, node: SwimNode) -> None:
        core = node.core
        if core is None or node.paused or node.wake_tick == core.now + 1:
            return  # (a wake at the very next tick is as early as any can be)
        wake = core.next_work_tick() if self.tick_elision else core.now + 1
        if wake is None:
            return
        if node.wake_tick != -1 and node.wake_tick <= wake:
            return  # an earlier wake is pending; it will look again
        node.wake_tick = wake
        at_ns = max(self.loop.now_ns, node.origin_ns + wake * self.tick_ns)
        self.loop.call_at(at_ns, partial(self._wake, node, node.epoch, wake))

    def _wake(self, node: SwimNode, epoch: int, wake: int) -> None:
        if node.epoch != epoch or node.wake_tick != wake:
            return  # cancelled (crash, pause) or superseded by an earlier wake
        node.wake_tick = -1
        self._sync(node)
        self._schedule_wake(node)

    def _deliver(self, src: str, dst: str, message: object, stream: bool = False) -> None:
        node = self.nodes[dst]
        core = node.core
        if core is None:
            return  # nobody listens: a crashed member's datagrams vanish
        assert isinstance(message, SwimMessage)
        self.log.fold(f"{self.loop.now_ns} {src}>{dst} {type(message).__name__}")
        if node.paused:
            if len(node.inbox) < SOCKET_BUFFER_DATAGRAMS:
                node.inbox.append((src, message, stream))
            else:
                self.buffer_overflow += 1
            return
        self._sync(node)
        core.step(src, message, stream=stream)
        self._pump(node)
        self._schedule_wake(node)

    def _deliver_stream(self, src: str, dst: str, message: object) -> None:
        node = self.nodes[dst]
        if node.core is not None and node.paused:
            assert isinstance(message, SwimMessage)
            node.inbox.append((src, message, True))  # the kernel accepts; the process reads later
            return
        self._deliver(src, dst, message, stream=True)

    def _pump(self, node: SwimNode) -> None:
        """The handling loop of ``prism.swim.ready``."""
        core = node.core
        assert core is not None
        name = node.name
        while core.has_ready():
            ready = core.ready()
            for out in ready.packets:
                self.datagrams_sent[type(out.message).__name__] += 1
                dst = self._by_address.get(out.to)
                if dst is None:
                    self.unroutable += 1
                    continue
                self.network.send(name, dst, out.message, self._deliver)
            for out in ready.streams:
                self.streams_sent[type(out.message).__name__] += 1
                dst = self._by_address.get(out.to)
                if dst is None:
                    self.unroutable += 1
                    continue
                # An answer (to a push-pull or a fallback ping) goes back on the
                # connection its question came in on, as the driver sends it.
                answer = isinstance(out.message, STREAM_ANSWERS)
                self.network.send_stream(
                    name, dst, out.message, self._deliver_stream, answer=answer
                )
            self._observe(name, ready)

    # ------------------------------------------------------------------ observing

    def _observe(self, observer: str, ready: Ready) -> None:
        now = self.loop.now_ns
        view = self.views[observer]
        verdicts = {
            str(note.fields["node"]): str(note.fields.get("by", ""))
            for note in ready.notes
            if note.event == "swim.member_dead"
        }
        for note in ready.notes:  # first, so that a milestone an event completes follows
            self._note(observer, note, now)
        for event in ready.events:
            kind = event.kind
            subject = event.name
            if kind is EventKind.NAME_CONFLICT or kind is EventKind.JOIN_FAILED:
                continue
            self.log.fold(f"{now} {observer} {kind.value} {subject} {event.incarnation}")
            if kind is not EventKind.UPDATED:
                after = _STATE_AFTER[kind]
                before = view.get(subject)
                if after is None:
                    view.pop(subject, None)
                else:
                    view[subject] = after
                self._count(subject, before, after)
                if kind is EventKind.SUSPECT:
                    self._on_suspect(observer, subject, now)
                elif kind is EventKind.DEAD:
                    self._on_dead(observer, subject, now, verdicts.get(subject, ""))
            for hook in self.on_event:
                hook(observer, kind, subject, event.incarnation)

    def _note(self, observer: str, note: Note, now: int) -> None:
        event, fields = note.event, note.fields
        is_event = event.startswith("swim.member_")  # the event itself is folded already
        if is_event and not self.log.keep_verbose and event not in _SHOWN_EVENTS:
            return  # shown only with verbose, which is not kept: skip the formatting
        if event == "swim.member_suspect":
            if fields.get("by") == observer:
                text, verbose = f"suspects {fields['node']}: no ack, direct or indirect", False
            else:
                text, verbose = f"hears {fields.get('by')} suspects {fields['node']}", True
        elif event == "swim.member_dead":
            if fields.get("by") == observer:
                text, verbose = f"declares {fields['node']} dead: its suspicion timed out", False
            else:
                text, verbose = f"marks {fields['node']} dead (verdict of {fields.get('by')})", True
        elif event in _NOTE_TEXT:
            template, verbose = _NOTE_TEXT[event]
            text = template.format(me=observer, **fields)
            if event == "swim.refuted":
                self.refutations += 1
        else:
            text, verbose = note.render(), True
        self.log.add(now, observer, text, verbose=verbose, fold=not is_event)

    def _count(self, subject: str, before: MemberState | None, after: MemberState | None) -> None:
        if before is after:
            return
        running = subject in self._running
        was_full = running and self._alive_by[subject] == len(self._running) - 1
        if before is MemberState.ALIVE:
            self._alive_by[subject] -= 1
        elif before is MemberState.DEAD:
            self._dead_by[subject] -= 1
        if after is MemberState.ALIVE:
            self._alive_by[subject] += 1
        elif after is MemberState.DEAD:
            self._dead_by[subject] += 1
        if running:
            is_full = self._alive_by[subject] == len(self._running) - 1
            self._fully_alive += int(is_full) - int(was_full)

    def _recount(self) -> None:
        """The running set changed: count the fully alive members again (O(n), rare)."""
        others = len(self._running) - 1
        self._fully_alive = sum(1 for name in self._running if self._alive_by[name] == others)

    def _on_suspect(self, observer: str, subject: str, now: int) -> None:
        if subject in self._running and not self.was_cut(observer, subject):
            self.false_suspicions += 1
        elif subject in self.crashed_at:
            self.first_suspect_ns.setdefault(subject, now)

    def _on_dead(self, observer: str, subject: str, now: int, by: str) -> None:
        self.deaths += 1
        if subject in self._running:
            if not self.was_cut(observer, subject):
                self.false_deaths.append(Death(now, observer, subject, by))
                self.log.add(now, "-", f"FALSE DEATH: {observer} marks running {subject} dead")
            return
        if subject in self.crashed_at:
            self.first_dead_ns.setdefault(subject, now)
            self._check_dead_everywhere(subject)

    def _check_dead_everywhere(self, subject: str) -> None:
        if subject in self.all_dead_ns or subject in self._running:
            return
        if subject not in self.crashed_at or not self._running:
            return
        if self._dead_by[subject] >= len(self._running):
            self.all_dead_ns[subject] = self.now_ns
            took = (self.now_ns - self.crashed_at[subject]) / NS_PER_S
            self.log.add(
                self.now_ns,
                "-",
                f"every running member now sees {subject} dead, {took:.3f}s after its crash",
            )

    # ------------------------------------------------------------------ queries

    def running(self) -> list[str]:
        """Members with a core, in name order (paused ones included)."""
        return [name for name in self.names if name in self._running]

    def converged(self) -> bool:
        """Every running member sees every other running member alive."""
        return self._fully_alive == len(self._running)

    def sees_dead_everywhere(self, subject: str) -> bool:
        others = len(self._running) - (1 if subject in self._running else 0)
        return self._dead_by[subject] >= others

    def dead_count(self, subject: str) -> int:
        """How many running members see ``subject`` dead."""
        return self._dead_by[subject]

    def alive_count(self, subject: str) -> int:
        """How many running members see ``subject`` alive."""
        return self._alive_by[subject]

    def poll(self, seconds: float, predicate: Callable[[], bool], *, every_s: float) -> bool:
        """Run up to ``seconds``, checking ``predicate`` every ``every_s`` of virtual time
        (for checks too costly to run after every event); True once it held."""
        end = self.loop.now_ns + int(seconds * NS_PER_S)
        step = max(1, int(every_s * NS_PER_S))
        while True:
            if predicate():
                return True
            if self.loop.now_ns >= end:
                return False
            self.loop.run_until(min(end, self.loop.now_ns + step))

    def view(self, observer: str, subject: str) -> MemberState | None:
        return self.views.get(observer, {}).get(subject)

    def core(self, name: str) -> SwimCore:
        core = self.nodes[name].core
        if core is None:
            raise ValueError(f"{name} is not running")
        return core


def _name_range(group: Sequence[str]) -> str:
    """``n1,n2,n3`` for a few members; ``n1..n50 (50)`` style for many."""
    if len(group) <= 8:
        return ",".join(group)
    return f"{group[0]},{group[1]},...,{group[-1]} ({len(group)} members)"
