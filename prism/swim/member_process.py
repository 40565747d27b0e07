"""One SWIM member as an OS process, driven over stdin and stdout: for tests and benchmarks.

::

    python -m prism.swim.member_process --name NAME --bind HOST:PORT
        [--advertise HOST:PORT] [--join HOST:PORT ...] [--profile local|lan|wan]
        [--meta TEXT] [--cluster ID] [--seed INT]

``--bind`` is where the UDP socket and the TCP listener are bound (one port number; port 0
picks one); ``--advertise`` is the address other members use (behind NAT or in a container
it differs; it defaults to the bound address). ``--join`` may be repeated, or given several
addresses; without it the member starts a cluster of its own and waits for others to join
through it. ``--profile`` picks ``SwimConfig.local()`` (the default), ``lan()`` or ``wan()``
and the driver's matching timeouts. ``--seed`` seeds the member's random choices (probe
order, helpers, jitter); without it they come from the operating system.

Output: JSON lines on stdout, each flushed. First, once both sockets listen::

    {"ready": true, "name": "n1", "address": "127.0.0.1:7001"}

then one line per membership event this member sees, in order (``t`` is ``time.time()``
when the event reached this process's printer; ``kind`` is an ``EventKind`` value; ``meta``
is the member's metadata decoded as UTF-8 with replacement)::

    {"t": 1767312000.25, "kind": "joined", "name": "n2", "address": "127.0.0.1:7002",
     "incarnation": 0, "meta": "role=worker"}

Input: JSON lines on stdin::

    {"op": "meta", "value": "TEXT"}   publish new metadata (nothing is printed on success)
    {"op": "members"}                 print {"members": [{"name", "address", "state",
                                      "incarnation", "meta"}, ...]}, this member included
    {"op": "leave"}                   leave gracefully, then exit with status 0

A line that is not one of these prints ``{"error": "..."}`` and the process goes on. The end
of stdin changes nothing (the member keeps running until it leaves or is signalled), unless
``--exit-on-stdin-eof`` says to leave then, so a member never outlives a harness that was
killed before it could stop it.

SIGTERM and SIGINT leave gracefully, then exit 0. Bad arguments print one line on stderr and
exit 2; a port that cannot be bound, or a join refused because a live member holds the name
(the ``name_conflict`` event is printed first), exits 1. Logs (warnings only) go to stderr.

Stdout is written from a worker thread: a harness that reads slowly delays the printing,
never the protocol. A printer that falls more than ``EVENT_BUFFER`` events behind prints
``{"error": "..."}`` (events were lost) and starts again from the next event.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import random
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, NoReturn, final

import trio

from prism.raft.transport import Address, format_address, parse_address
from prism.swim.config import SwimConfig
from prism.swim.core import SwimCore
from prism.swim.driver import SwimDriver, SwimDriverConfig
from prism.swim.members import Member
from prism.swim.messages import MAX_META_BYTES, Update, UpdateKind, is_address
from prism.swim.ready import EventKind, MemberEvent
from prism.swim.subscriptions import Subscription, SubscriptionOverflow
from prism.swim.transport import bind_udp_and_tcp

logger = logging.getLogger(__name__)

PROG: Final = "python -m prism.swim.member_process"

EVENT_BUFFER: Final = 100_000
"""Events the printer may fall behind before it is cut off (see the module docstring)."""

MAX_COMMAND_BYTES: Final = 64 * 1024
"""The longest stdin line; a longer one is answered with an error and skipped."""

PROFILES: Final = {
    "local": (SwimConfig.local, SwimDriverConfig.local),
    "lan": (SwimConfig.lan, SwimDriverConfig.lan),
    "wan": (SwimConfig.wan, SwimDriverConfig.wan),
}

_UNSPECIFIED_HOSTS: Final = ("0.0.0.0", "::", "")


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberOptions:
    """What the command line says; see the module docstring."""

    name: str
    bind: Address
    advertise: str = ""  # "" means the bound address
    join: tuple[str, ...] = ()
    profile: str = "local"
    meta: bytes = b""
    cluster_id: str = "prism"
    seed: int | None = None
    exit_on_stdin_eof: bool = False


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line on stderr and status 2 (argparse would print the usage first)."""
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(2)


def parse_args(argv: Sequence[str] | None = None) -> MemberOptions:
    parser = _Parser(prog=PROG, description="Run one SWIM member, driven by JSON lines.")
    parser.add_argument("--name", required=True, help="this member's unique name")
    parser.add_argument("--bind", required=True, type=_bind_address, help="HOST:PORT (0: any)")
    parser.add_argument("--advertise", type=_peer_address, help="HOST:PORT others reach us at")
    parser.add_argument(
        "--join", action="extend", nargs="+", type=_peer_address, default=[], help="HOST:PORT"
    )
    parser.add_argument("--profile", choices=sorted(PROFILES), default="local")
    parser.add_argument("--meta", default="", help="metadata text (UTF-8, at most 512 bytes)")
    parser.add_argument("--cluster", default="prism", help="cluster id (1 to 64 characters)")
    parser.add_argument("--seed", type=int, help="seed of the member's random choices")
    parser.add_argument(
        "--exit-on-stdin-eof", action="store_true", help="leave when stdin ends (for harnesses)"
    )
    args = parser.parse_args(argv)
    meta = args.meta.encode("utf-8", "surrogateescape")
    if len(meta) > MAX_META_BYTES:
        parser.error(f"--meta is {len(meta)} bytes; at most {MAX_META_BYTES}")
    if not 0 < len(args.cluster) <= 64:
        parser.error("--cluster must be 1 to 64 characters")
    if args.advertise is None and args.bind[0] in _UNSPECIFIED_HOSTS:
        parser.error(f"--bind {args.bind[0]!r} is no address others can reach: add --advertise")
    try:
        # The member's own news, built once: it checks the name as every peer will.
        Update(
            kind=UpdateKind.ALIVE,
            node=args.name,
            incarnation=0,
            address=args.advertise or "127.0.0.1:1",
            meta=meta,
        )
    except ValueError as exc:
        parser.error(f"--name: {exc}")
    return MemberOptions(
        name=args.name,
        bind=args.bind,
        advertise=args.advertise or "",
        join=tuple(args.join),
        profile=args.profile,
        meta=meta,
        cluster_id=args.cluster,
        seed=args.seed,
        exit_on_stdin_eof=args.exit_on_stdin_eof,
    )


def _bind_address(text: str) -> Address:
    try:
        return parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _peer_address(text: str) -> str:
    if not is_address(text):
        raise argparse.ArgumentTypeError(f"expected HOST:PORT with a port in 1..65535: {text!r}")
    return text


def event_line(event: MemberEvent, now: float) -> dict[str, Any]:
    return {
        "t": now,
        "kind": event.kind.value,
        "name": event.name,
        "address": event.address,
        "incarnation": event.incarnation,
        "meta": event.meta.decode("utf-8", "replace"),
    }


def member_row(member: Member) -> dict[str, Any]:
    return {
        "name": member.name,
        "address": member.address,
        "state": member.state.value,
        "incarnation": member.incarnation,
        "meta": member.meta.decode("utf-8", "replace"),
    }


def _write_stdout(data: bytes) -> bool:
    """Write and flush; False once stdout is gone (the harness closed it)."""
    try:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    except (BrokenPipeError, ValueError):  # ValueError: stdout already closed
        return False
    return True


@final
class _Output:
    """JSON lines for stdout, written in order from a worker thread by ``run``."""

    def __init__(self) -> None:
        self._lines: list[bytes] = []
        self._wake = trio.Event()
        self._broken = False

    def write(self, value: dict[str, Any]) -> None:
        if not self._broken:
            self._lines.append(json.dumps(value, separators=(",", ":")).encode() + b"\n")
            self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            while self._lines and not self._broken:
                count = len(self._lines)
                # Shielded: a cancellation (the process stopping) waits for the write in
                # progress, so each line is written exactly once, here or by flush_now.
                with trio.CancelScope(shield=True):
                    written = await trio.to_thread.run_sync(
                        _write_stdout, b"".join(self._lines[:count])
                    )
                del self._lines[:count]
                self._broken = not written

    def flush_now(self) -> None:
        """Write what is left, blocking (on the way out)."""
        if self._lines and not self._broken:
            _write_stdout(b"".join(self._lines))
        self._lines.clear()


@final
class _CommandReader:
    """Lines from a file descriptor, read in a worker thread with ``os.read``: no buffered
    reader whose lock an abandoned thread could hold at exit, and no non-blocking mode set
    on a descriptor the process may share with its parent's terminal."""

    TOO_LONG: Final = b"\0"
    """Returned in place of a line longer than ``MAX_COMMAND_BYTES`` (which is skipped)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = b""
        self._skipping = False  # inside a line that was too long
        self._eof = False

    async def next_line(self) -> bytes | None:
        """The next line without its newline; None at the end of the input."""
        while True:
            newline = self._buffer.find(b"\n")
            if newline >= 0:
                line, self._buffer = self._buffer[:newline], self._buffer[newline + 1 :]
                if self._skipping:
                    self._skipping = False
                    continue
                return line if len(line) <= MAX_COMMAND_BYTES else self.TOO_LONG
            if self._skipping:
                self._buffer = b""
            elif len(self._buffer) > MAX_COMMAND_BYTES:
                self._buffer = b""
                self._skipping = True
                return self.TOO_LONG
            if self._eof:
                rest, self._buffer = self._buffer, b""
                return rest if rest and not self._skipping else None
            chunk = await trio.to_thread.run_sync(self._read, abandon_on_cancel=True)
            if chunk:
                self._buffer += chunk
            else:
                self._eof = True

    def _read(self) -> bytes:
        try:
            return os.read(self._fd, 65_536)
        except OSError:  # no stdin at all (closed descriptor): the same as its end
            return b""


@final
class _Member:
    """The process around one driver: commands in, events out, and when to stop."""

    def __init__(self, driver: SwimDriver, out: _Output, *, exit_on_stdin_eof: bool) -> None:
        self.driver = driver
        self.out = out
        self.exit_on_stdin_eof = exit_on_stdin_eof
        self.stop_requested = trio.Event()
        self.exit_code = 0
        self.printer_done = trio.Event()

    def request_stop(self, *, exit_code: int = 0) -> None:
        if not self.stop_requested.is_set():
            self.exit_code = exit_code
            self.stop_requested.set()

    async def print_events(self, subscription: Subscription) -> None:
        try:
            while True:
                with subscription:
                    try:
                        async for event in subscription:
                            self._print_event(event)
                        return  # the driver stopped
                    except SubscriptionOverflow as exc:
                        self.out.write({"error": f"membership events were lost: {exc}"})
                if not self.driver.is_running:
                    return
                subscription = self.driver.subscribe(EVENT_BUFFER)
        finally:
            self.printer_done.set()

    def _print_event(self, event: MemberEvent) -> None:
        self.out.write(event_line(event, time.time()))
        if event.kind is EventKind.NAME_CONFLICT:
            print(f"{PROG}: {event.reason}", file=sys.stderr, flush=True)
            self.request_stop(exit_code=1)
        elif event.kind is EventKind.JOIN_FAILED:
            print(f"{PROG}: {event.reason}", file=sys.stderr, flush=True)

    async def read_commands(self) -> None:
        reader = _CommandReader(sys.stdin.fileno() if sys.stdin is not None else 0)
        while True:
            line = await reader.next_line()
            if line is None:  # the end of stdin (see the module docstring)
                if self.exit_on_stdin_eof:
                    self.request_stop()
                return
            self.handle_command(line)

    def handle_command(self, line: bytes) -> None:
        if line == _CommandReader.TOO_LONG:
            self.out.write({"error": f"a command line is longer than {MAX_COMMAND_BYTES} bytes"})
            return
        if not line.strip():
            return
        try:
            request = json.loads(line)
        except (ValueError, RecursionError):
            request = None
        if not isinstance(request, dict):
            self.out.write({"error": "a command must be one JSON object per line"})
            return
        op = request.get("op")
        if op == "meta":
            value = request.get("value")
            if not isinstance(value, str):
                self.out.write({"error": "meta needs a string value"})
                return
            try:
                self.driver.update_metadata(value.encode("utf-8", "surrogateescape"))
            except (ValueError, RuntimeError) as exc:
                self.out.write({"error": str(exc)})
        elif op == "members":
            rows = [member_row(m) for m in self.driver.members()]
            self.out.write({"members": rows})
        elif op == "leave":
            self.request_stop()
        else:
            self.out.write({"error": f"unknown op {op!r}; expected meta, members or leave"})

    async def watch_signals(self, *, task_status: trio.TaskStatus[None]) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            async for _signum in signals:
                self.request_stop()


async def run_member(options: MemberOptions) -> int:
    """Run the member until it leaves or is signalled; the process's exit status."""
    make_swim_config, make_driver_config = PROFILES[options.profile]
    swim_config, driver_config = make_swim_config(), make_driver_config()
    udp, tcp = await bind_udp_and_tcp(options.bind)
    bound = format_address(udp.local_address)
    advertise = options.advertise or bound
    rng = random.Random(options.seed)  # noqa: S311 (protocol choices, not secrets)
    try:
        core = SwimCore(
            options.name,
            bind_address=bound,
            advertise_address=advertise,
            meta=options.meta,
            config=swim_config,
            rng=rng,
        )
    except BaseException:
        udp.close()
        tcp.close()
        raise
    driver = SwimDriver(
        core, udp, tcp, config=dataclasses.replace(driver_config, cluster_id=options.cluster_id)
    )
    out = _Output()
    member = _Member(driver, out, exit_on_stdin_eof=options.exit_on_stdin_eof)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.run)
            await nursery.start(member.watch_signals)
            subscription = driver.subscribe(EVENT_BUFFER)
            nursery.start_soon(out.run)
            nursery.start_soon(member.print_events, subscription)
            out.write({"ready": True, "name": options.name, "address": advertise})
            driver.join_nowait(list(options.join) or [advertise])
            nursery.start_soon(member.read_commands)
            await member.stop_requested.wait()
            if member.exit_code == 0 and driver.is_running:
                await driver.leave()
            else:
                await driver.aclose()
            with trio.move_on_after(1.0):
                await member.printer_done.wait()  # the last events, up to the stop
            nursery.cancel_scope.cancel()
    finally:
        out.flush_now()
    return member.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s"
    )
    try:
        return trio.run(run_member, options)
    except OSError as exc:
        host, port = options.bind
        print(f"{PROG}: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
