"""Pieces of the SWIM benchmark on loopback (``benchmarks/swim_detection.py``).

Every system is run the same way: one process per member, each speaking the
*member-process contract* that ``python -m prism.swim.member_process`` defines and
``benchmarks/_swim_protocol_node.py`` copies for swim-protocol:

* stdout, one JSON object per line: first ``{"ready": true, "name": ..., "address": ...}``,
  then one line per membership event, ``{"t": <time.time()>, "kind": ..., "name": ...,
  "address": ..., "incarnation": N, "meta": "<text>"}`` with ``kind`` one of
  :data:`EVENT_KINDS`;
* stdin, one JSON object per line: ``{"op": "meta", "value": "TEXT"}``, ``{"op": "leave"}``,
  ``{"op": "members"}``.

What lives here:

* the pure parts, tested on their own: :func:`parse_line` / :func:`parse_event` (a line
  that breaks the contract is a :class:`LineError`, counted by the caller, never a crash),
  and :class:`ClusterView`, which replays every member's events in the order that member
  printed them and answers the benchmark's questions (does everyone see everyone alive?
  when did each member first report X? which deaths were false?);
* :class:`SwimSystem` and its two launchers, :class:`PrismSwim` and :class:`SwimProtocol`:
  the command line of member ``i`` and the configuration that defines the system;
* :func:`open_member_cluster`: starts the processes on 127.0.0.1, pumps their stdout into a
  :class:`ClusterView`, and SIGKILLs every one of them on exit, however it exits.

Times are the members' own ``time.time()`` stamps (one clock for every process on one
host), so how soon the driver reads a line does not enter any figure.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import inspect
import json
import math
import os
import socket
import subprocess
import sys
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from benchmarks._raft_harness import LOOPBACK, REPO_ROOT

EVENT_KINDS = (
    "joined",
    "updated",
    "suspect",
    "alive_again",
    "dead",
    "left",
    "reaped",
    "name_conflict",
    "join_failed",
)

# The state an event leaves its subject in, in the eyes of the member that printed it.
# ``updated`` keeps the state (new metadata says nothing about liveness); ``reaped`` forgets
# the member; ``name_conflict`` and ``join_failed`` are about the printing member's own join.
_STATE_AFTER: dict[str, str | None] = {
    "joined": "alive",
    "alive_again": "alive",
    "suspect": "suspect",
    "dead": "dead",
    "left": "left",
    "reaped": None,
}

# ---------------------------------------------------------------------------------------------
# Lines and events


class LineError(ValueError):
    """A stdout line that breaks the member-process contract."""


@dataclass(frozen=True, slots=True)
class MemberEvent:
    """One membership event, as a member process printed it."""

    t: float  # the printing process's time.time()
    kind: str
    name: str  # the member the event is about
    address: str
    incarnation: int
    meta: str


def parse_line(raw: bytes | str) -> dict[str, Any]:
    """One stdout line as a JSON object; :class:`LineError` if it is not one."""
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise LineError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise LineError(f"not a JSON object: {type(value).__name__}")
    return value


def is_event(line: dict[str, Any]) -> bool:
    """Whether a parsed line is an event (the others are the hello and command replies)."""
    return "kind" in line


def parse_event(line: dict[str, Any]) -> MemberEvent:
    """A parsed event line as a :class:`MemberEvent`; :class:`LineError` on any bad field."""
    t = line.get("t")
    kind = line.get("kind")
    name = line.get("name")
    incarnation = line.get("incarnation", 0)
    meta = line.get("meta", "")
    address = line.get("address", "")
    if not isinstance(t, int | float) or isinstance(t, bool) or not math.isfinite(t):
        raise LineError(f"event without a finite time: t={t!r}")
    if kind not in EVENT_KINDS:
        raise LineError(f"unknown event kind {kind!r}")
    if not isinstance(name, str) or not name:
        raise LineError(f"event without a member name: name={name!r}")
    if not isinstance(incarnation, int) or isinstance(incarnation, bool):
        raise LineError(f"incarnation is not an integer: {incarnation!r}")
    if not isinstance(meta, str) or not isinstance(address, str):
        raise LineError("meta and address must be strings")
    return MemberEvent(
        t=float(t), kind=kind, name=name, address=address, incarnation=incarnation, meta=meta
    )


# ---------------------------------------------------------------------------------------------
# What every member reported


@dataclass(frozen=True, slots=True)
class FalseDeath:
    """A member other than the one killed, reported dead; or the killed one, before the kill."""

    observer: str
    subject: str
    t: float


class ClusterView:
    """Every member's events, in the order each member printed them, and questions on them.

    ``observer`` is the name a member process gave in its hello line; ``subject`` the name
    an event is about. Nothing here reads a clock: callers pass the times they compare with.
    """

    def __init__(self) -> None:
        self._events: dict[str, list[MemberEvent]] = {}
        self._state: dict[str, dict[str, str]] = {}
        self.bad_lines = 0

    def add_observer(self, observer: str) -> None:
        self._events.setdefault(observer, [])
        self._state.setdefault(observer, {})

    def record(self, observer: str, event: MemberEvent) -> None:
        self.add_observer(observer)
        self._events[observer].append(event)
        states = self._state[observer]
        if event.kind in _STATE_AFTER:
            after = _STATE_AFTER[event.kind]
            if after is None:
                states.pop(event.name, None)
            else:
                states[event.name] = after
        elif event.kind == "updated":
            states.setdefault(event.name, "alive")

    def events(self, observer: str) -> list[MemberEvent]:
        return list(self._events.get(observer, ()))

    def state(self, observer: str, subject: str) -> str | None:
        """``alive``, ``suspect``, ``dead`` or ``left`` as ``observer`` last reported
        ``subject``, or None if it never did (or reaped it)."""
        return self._state.get(observer, {}).get(subject)

    def all_alive(self, names: Sequence[str]) -> bool:
        """Whether every member in ``names`` reports every other one alive."""
        return all(
            self.state(observer, subject) == "alive"
            for observer in names
            for subject in names
            if subject != observer
        )

    def first_time(
        self,
        observer: str,
        subject: str,
        *,
        since: float,
        kind: str | None = None,
        meta: str | None = None,
    ) -> float | None:
        """The time of ``observer``'s first event about ``subject`` at or after ``since``
        with that ``kind`` and/or ``meta`` (any event carries the metadata it knows)."""
        for event in self._events.get(observer, ()):
            if (
                event.name == subject
                and event.t >= since
                and (kind is None or event.kind == kind)
                and (meta is None or event.meta == meta)
            ):
                return event.t
        return None

    def first_times(
        self,
        observers: Sequence[str],
        subject: str,
        *,
        since: float,
        kind: str | None = None,
        meta: str | None = None,
    ) -> dict[str, float | None]:
        """:meth:`first_time` for each of ``observers``."""
        return {
            observer: self.first_time(observer, subject, since=since, kind=kind, meta=meta)
            for observer in observers
        }

    def false_deaths(self, *, killed: str | None, killed_at: float | None) -> list[FalseDeath]:
        """Every ``dead`` report about a member that was not killed, and any about the killed
        member from before the kill, in observer order then time order."""
        found = []
        for observer, events in self._events.items():
            for event in events:
                if event.kind != "dead":
                    continue
                if event.name == killed and killed_at is not None and event.t >= killed_at:
                    continue
                found.append(FalseDeath(observer, event.name, event.t))
        return found

    def suspicions_of_live(self, *, killed: str | None, killed_at: float | None) -> int:
        """``suspect`` reports about members that were alive at the time (the killed one
        before the kill, every other one always): suspicions that refutation must undo."""
        return sum(
            1
            for events in self._events.values()
            for event in events
            if event.kind == "suspect"
            and (event.name != killed or killed_at is None or event.t < killed_at)
        )


def spread_time(times: dict[str, float | None], start: float) -> tuple[float | None, float | None]:
    """``(first, all)``: seconds from ``start`` until the first and the last of ``times``;
    ``all`` is None if any observer has no time."""
    known = [t for t in times.values() if t is not None]
    first = min(known) - start if known else None
    every = max(known) - start if known and len(known) == len(times) else None
    return first, every


# ---------------------------------------------------------------------------------------------
# The systems


class SwimSystem(ABC):
    """A SWIM implementation, as it appears in the JSON lines."""

    name: str
    profile: str

    def unavailable(self) -> str | None:
        """Why this system cannot run here (printed as ``skipped``), or None."""
        return None

    @abstractmethod
    def describe(self, members: int) -> dict[str, Any]:
        """The settings that define this system, for the JSON line."""

    @abstractmethod
    def argv(
        self, index: int, addresses: Sequence[str], *, meta: str, cluster: str, seed: int
    ) -> list[str]:
        """The command line of member ``index`` (0 is the seed) among ``addresses``."""


class PrismSwim(SwimSystem):
    """``python -m prism.swim.member_process`` with a ``SwimConfig`` profile.

    Member ``i`` is named ``m<i+1>``; every member but the first joins through the first.
    """

    def __init__(self, profile: str) -> None:
        self.name = "prism"
        self.profile = profile

    def unavailable(self) -> str | None:
        try:
            found = importlib.util.find_spec("prism.swim.member_process") is not None
        except ImportError:
            found = False
        return None if found else "prism.swim.member_process not available yet"

    def describe(self, members: int) -> dict[str, Any]:
        from prism.swim.config import SwimConfig
        from prism.swim.suspicion import suspicion_bounds

        config = getattr(SwimConfig, self.profile)()
        tick_s = config.tick_ms / 1000.0
        min_ticks, max_ticks, k = suspicion_bounds(
            members=members,
            suspicion_mult=config.suspicion_mult,
            max_timeout_mult=config.suspicion_max_timeout_mult,
            probe_interval_ticks=config.probe_interval_ticks,
        )
        return {
            "profile": self.profile,
            "transport": "UDP (probes, gossip) and TCP (push-pull) on one port, 127.0.0.1",
            "tick_ms": config.tick_ms,
            "probe_interval_s": config.probe_interval_ticks * tick_s,
            "probe_timeout_s": config.probe_timeout_ticks * tick_s,
            "indirect_checks": config.indirect_checks,
            "suspicion_min_s": round(min_ticks * tick_s, 3),
            "suspicion_max_s": round(max_ticks * tick_s, 3),
            "suspicion_confirmations_expected": k,
            "gossip_interval_s": config.gossip_interval_ticks * tick_s,
            "gossip_nodes": config.gossip_nodes,
            "retransmit_mult": config.retransmit_mult,
            "awareness_max_multiplier": config.awareness_max_multiplier,
        }

    def argv(
        self, index: int, addresses: Sequence[str], *, meta: str, cluster: str, seed: int
    ) -> list[str]:
        argv = [
            sys.executable,
            "-m",
            "prism.swim.member_process",
            "--exit-on-stdin-eof",  # no member outlives a harness killed before its cleanup
            "--name",
            f"m{index + 1}",
            "--bind",
            addresses[index],
            "--profile",
            self.profile,
            "--meta",
            meta,
            "--cluster",
            cluster,
            "--seed",
            str(seed),
        ]
        if index > 0:
            argv += ["--join", addresses[0]]
        return argv


class SwimProtocol(SwimSystem):
    """swim-protocol 0.6.3 at its default timing (``benchmarks/_swim_protocol_node.py``).

    Every member but the first is given the first as its one peer. The first is given the
    second: swim-protocol's failure detector asserts that it has a member to probe, so a
    member started with no peer at all stops detecting failures.
    """

    PIN = "0.6.3"

    def __init__(self) -> None:
        self.name = "swim-protocol"
        self.profile = "defaults"

    def unavailable(self) -> str | None:
        if importlib.util.find_spec("swimprotocol") is None:
            return "swim-protocol is not installed (pip install -e '.[bench]')"
        return None

    def describe(self, members: int) -> dict[str, Any]:
        from swimprotocol.config import BaseConfig

        defaults = {
            name: parameter.default
            for name, parameter in inspect.signature(BaseConfig.__init__).parameters.items()
            if name
            in (
                "ping_interval",
                "ping_timeout",
                "ping_req_count",
                "ping_req_timeout",
                "suspect_timeout",
                "sync_interval",
            )
        }
        return {
            "profile": self.profile,
            "version": importlib.metadata.version("swim-protocol"),
            "transport": "UDP on 127.0.0.1 (its UdpTransport), packets signed with a secret",
            **{
                f"{name}_s" if name != "ping_req_count" else name: v for name, v in defaults.items()
            },
        }

    def argv(
        self, index: int, addresses: Sequence[str], *, meta: str, cluster: str, seed: int
    ) -> list[str]:
        peer = addresses[1] if index == 0 else addresses[0]
        return [
            sys.executable,
            "-m",
            "benchmarks._swim_protocol_node",
            "--bind",
            addresses[index],
            "--peer",
            peer,
            "--meta",
            meta,
            "--secret",
            cluster,
        ]


# ---------------------------------------------------------------------------------------------
# Processes


def free_dual_ports(count: int, *, attempts: int = 1000) -> list[int]:
    """``count`` distinct port numbers free on 127.0.0.1 for both UDP and TCP a moment ago
    (both protocols use the same number, as Prism and swim-protocol do)."""
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        for _ in range(attempts):
            if len(ports) == count:
                return ports
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            held.append(udp)
            udp.bind((LOOPBACK, 0))
            port = udp.getsockname()[1]
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(tcp)
            try:
                tcp.bind((LOOPBACK, port))
            except OSError:
                continue
            ports.append(port)
        if len(ports) == count:
            return ports
        raise RuntimeError(f"found only {len(ports)} of {count} ports free for UDP and TCP")
    finally:
        for sock in held:
            sock.close()


def process_cpu_seconds(pid: int) -> float | None:
    """User plus system CPU seconds of process ``pid`` (Linux ``/proc``), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None
    fields = stat.rpartition(")")[2].split()
    try:
        return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime: fields 14 and 15
    except (IndexError, ValueError):
        return None


@dataclass
class MemberProcess:
    label: str  # m1, m2, ...: the order of start, before the hello names the member
    process: trio.Process
    log_path: Path
    name: str = ""  # from the hello line
    address: str = ""
    ready: trio.Event = field(default_factory=trio.Event)
    exited: trio.Event = field(default_factory=trio.Event)
    killed: bool = False
    replies: list[dict[str, Any]] = field(default_factory=list)

    def kill(self) -> None:
        self.killed = True
        if self.process.returncode is None:
            self.process.kill()  # SIGKILL on POSIX

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


class MemberCluster:
    """Running member processes and the :class:`ClusterView` their stdout feeds."""

    def __init__(self, view: ClusterView) -> None:
        self.view = view
        self.members: list[MemberProcess] = []
        self._changed = trio.Event()

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.members]

    def member(self, name: str) -> MemberProcess:
        for m in self.members:
            if m.name == name:
                return m
        raise KeyError(name)

    def kill(self, name: str) -> None:
        self.member(name).kill()

    async def send(self, name: str, command: dict[str, Any]) -> None:
        stdin = self.member(name).process.stdin
        assert stdin is not None
        await stdin.send_all(json.dumps(command, separators=(",", ":")).encode() + b"\n")

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Until ``condition()`` holds, re-checked after every line any member prints. A
        member that exits without having been killed ends the wait with an error. No time
        limit: wrap the call in ``trio.fail_after`` or ``trio.move_on_after``."""
        while True:
            if condition():
                return
            for m in self.members:
                if m.exited.is_set() and not m.killed:
                    raise RuntimeError(
                        f"member {m.label} ({m.name or 'no hello'}) exited with status "
                        f"{m.process.returncode}; its log ends with:\n{m.log_tail()}"
                    )
            changed = self._changed
            await changed.wait()

    def cpu_seconds(self) -> dict[str, float | None]:
        return {
            m.name: process_cpu_seconds(m.process.pid)
            for m in self.members
            if m.process.returncode is None
        }

    async def _pump(self, member: MemberProcess) -> None:
        stdout = member.process.stdout
        assert stdout is not None
        buffer = b""
        try:
            while chunk := await stdout.receive_some(65536):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    self._take(member, line)
                self._notify()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            member.exited.set()
            self._notify()

    def _take(self, member: MemberProcess, raw: bytes) -> None:
        if not raw.strip():
            return
        try:
            line = parse_line(raw)
            if not member.ready.is_set():
                if line.get("ready") is not True or not isinstance(line.get("name"), str):
                    raise LineError(f"first line is not a hello: {raw[:200]!r}")
                member.name = line["name"]
                member.address = str(line.get("address", ""))
                self.view.add_observer(member.name)
                member.ready.set()
            elif is_event(line):
                self.view.record(member.name, parse_event(line))
            else:
                member.replies.append(line)
        except LineError:
            self.view.bad_lines += 1


@asynccontextmanager
async def open_member_cluster(
    system: SwimSystem,
    count: int,
    workdir: Path,
    *,
    cluster_id: str,
    seed: int,
    ready_timeout: float = 30.0,
) -> AsyncIterator[MemberCluster]:
    """Start ``count`` members of ``system`` on 127.0.0.1: the seed first, then the others
    together once it is ready. Yields once every process printed its hello; on exit every
    process is SIGKILLed and reaped."""
    cluster = MemberCluster(ClusterView())
    addresses = [f"{LOOPBACK}:{port}" for port in free_dual_ports(count)]
    try:
        async with trio.open_nursery() as nursery:

            async def spawn(index: int) -> MemberProcess:
                label = f"m{index + 1}"
                argv = system.argv(
                    index, addresses, meta=f"{label}-start", cluster=cluster_id, seed=seed + index
                )
                log_path = workdir / f"{label}.log"
                with log_path.open("w") as log:
                    process = await trio.lowlevel.open_process(
                        argv,
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=log,
                        cwd=REPO_ROOT,
                    )
                member = MemberProcess(label, process, log_path)
                cluster.members.append(member)
                nursery.start_soon(cluster._pump, member)
                return member

            async def wait_ready(members: Sequence[MemberProcess]) -> None:
                with trio.fail_after(ready_timeout):
                    await cluster.wait_until(lambda: all(m.ready.is_set() for m in members))

            try:
                seed_member = await spawn(0)
                await wait_ready([seed_member])
                others = [await spawn(i) for i in range(1, count)]
                await wait_ready(others)
                yield cluster
            finally:
                for m in cluster.members:
                    m.kill()
                with trio.CancelScope(shield=True), trio.move_on_after(10):
                    for m in cluster.members:
                        await m.process.wait()
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            for m in cluster.members:
                for stream in (m.process.stdin, m.process.stdout):
                    if stream is not None:
                        await stream.aclose()
