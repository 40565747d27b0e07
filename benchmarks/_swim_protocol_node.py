"""One swim-protocol member process that speaks the member-process contract of Prism's SWIM.

swim-protocol (PyPI ``swim-protocol``, module ``swimprotocol``) is a library: it has no
process of its own. This wraps one member so that ``benchmarks/swim_detection.py`` drives
it exactly as it drives ``python -m prism.swim.member_process``:

* stdout, one JSON object per line, flushed: first
  ``{"ready": true, "name": ..., "address": ...}`` once the UDP and TCP sockets are bound,
  then one line per membership event,
  ``{"t": <time.time()>, "kind": ..., "name": ..., "address": ..., "incarnation": N,
  "meta": "<utf-8 text>"}``;
* stdin, one JSON object per line: ``{"op": "meta", "value": "TEXT"}`` publishes new
  metadata, ``{"op": "members"}`` is answered ``{"members": [...]}``, ``{"op": "leave"}``
  is answered ``{"error": ...}`` (swim-protocol has no graceful leave). End of file on stdin
  stops the process, so none outlives a driver that was killed; SIGTERM and SIGINT stop it
  with status 0.

How swim-protocol's statuses become event kinds. A member starts ``OFFLINE`` until this
process hears from or about it, and the library notifies every change of a member's status
or metadata. Per member, the process remembers the last status it reported:

* ``ONLINE`` the first time: ``joined``; ``ONLINE`` again after ``SUSPECT`` or ``OFFLINE``:
  ``alive_again``;
* ``SUSPECT``: ``suspect``; ``OFFLINE`` (the suspicion timed out): ``dead``;
* new metadata with no change of status, or together with ``alive_again``: ``updated``
  (``joined`` already carries the metadata it has).

``incarnation`` is the member's sequence clock, the library's version of a member's state.
swim-protocol metadata is a mapping of names to bytes; the contract's one text value is
kept under the key ``meta`` (UTF-8). A member whose metadata has not arrived yet has
``meta`` ``""``.

Notifications are read synchronously, in the library's ``Listener.notify``, rather than
through ``Listener.on_notify``, whose callbacks run later as tasks and read the member's
state at that later time: a suspicion raised and refuted within one turn of the event loop
would otherwise go unseen, and a false death with it.

Timing is swim-protocol 0.6.3's default (``BaseConfig``): ping every 1 s to one random
member, ack timeout 0.3 s, one ping-req helper with a 0.9 s timeout, suspect for 5 s before
offline, gossip to one random member every 0.5 s. Members are named by their address
(``host:port``), which is how the library's UDP transport finds them; ``--secret`` signs
every packet (HMAC), so packets of another cluster are dropped.

    python -m benchmarks._swim_protocol_node --bind 127.0.0.1:P1 --peer 127.0.0.1:P0 \\
        [--meta TEXT] [--secret TEXT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, TextIO

from swimprotocol.listener import Listener
from swimprotocol.members import Member, Members
from swimprotocol.status import Status
from swimprotocol.udp import UdpTransport
from swimprotocol.udp.config import UdpConfig
from swimprotocol.worker import Worker

META_KEY = "meta"

# The contract's state names for swim-protocol's statuses, in the ``members`` reply.
_STATE_NAMES = {Status.ONLINE: "alive", Status.SUSPECT: "suspect", Status.OFFLINE: "dead"}


def meta_text(metadata: Mapping[str, bytes]) -> str:
    """The contract's metadata text: the ``meta`` key decoded as UTF-8 (bad bytes replaced)."""
    return metadata.get(META_KEY, b"").decode("utf-8", errors="replace")


@dataclass(slots=True)
class _Reported:
    """What this process last reported about one member."""

    status: Status = Status.OFFLINE
    meta: str | None = None  # None until the member's metadata is known
    ever_online: bool = False


def translate(reported: _Reported, status: Status, meta: str | None) -> tuple[list[str], _Reported]:
    """The event kinds one change notification becomes, and the new record.

    ``status`` and ``meta`` are the member's state now (``meta`` None while unknown).
    """
    kinds: list[str] = []
    ever_online = reported.ever_online
    if status != reported.status:
        if status == Status.ONLINE:
            kinds.append("alive_again" if ever_online else "joined")
            ever_online = True
        elif status == Status.SUSPECT:
            kinds.append("suspect")
        elif status == Status.OFFLINE and ever_online:
            kinds.append("dead")
    if meta is not None and meta != reported.meta and "joined" not in kinds and ever_online:
        kinds.append("updated")
    known_meta = meta if meta is not None else reported.meta
    return kinds, _Reported(status=status, meta=known_meta, ever_online=ever_online)


class EventWriter:
    """Turns change notifications into event lines on ``out``."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._reported: dict[str, _Reported] = {}

    def write(self, record: dict[str, Any]) -> None:
        self._out.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._out.flush()

    def member_changed(self, member: Member) -> None:
        if member.local:
            return
        now = time.time()
        known = member.metadata is not Member.METADATA_UNKNOWN
        meta = meta_text(member.metadata) if known else None
        previous = self._reported.get(member.name, _Reported())
        kinds, self._reported[member.name] = translate(previous, member.status, meta)
        for kind in kinds:
            self.write(
                {
                    "t": now,
                    "kind": kind,
                    "name": member.name,
                    "address": member.name,
                    "incarnation": member.clock,
                    "meta": meta if meta is not None else "",
                }
            )


class _SyncListener(Listener[Member]):
    """The library's listener, plus a hook run inside ``notify`` (see the module docstring)."""

    def __init__(self, writer: EventWriter) -> None:
        super().__init__()
        self._writer = writer

    def notify(self, item: Member) -> None:
        self._writer.member_changed(item)
        super().notify(item)


def members_reply(members: Members) -> dict[str, Any]:
    rows = []
    for member in sorted(members):
        known = member.metadata is not Member.METADATA_UNKNOWN
        rows.append(
            {
                "name": member.name,
                "address": member.name,
                "state": _STATE_NAMES.get(member.status, member.status.name.lower()),
                "incarnation": member.clock,
                "meta": meta_text(member.metadata) if known else "",
                "local": member.local,
            }
        )
    return {"members": rows}


def handle_command(line: str, members: Members, writer: EventWriter) -> None:
    """One stdin line. A line that is not a known command gets an ``error`` line back."""
    try:
        command = json.loads(line)
        op = command["op"] if isinstance(command, dict) else None
    except (ValueError, KeyError):
        writer.write({"error": "not a JSON object with an op", "line": line[:200]})
        return
    if op == "meta":
        value = command.get("value")
        if not isinstance(value, str):
            writer.write({"error": "meta needs a string value"})
            return
        local = members.local
        members.update(local, new_metadata=dict(local.metadata) | {META_KEY: value.encode()})
    elif op == "members":
        writer.write(members_reply(members))
    elif op == "leave":
        writer.write({"error": "swim-protocol has no graceful leave", "op": "leave"})
    else:
        writer.write({"error": f"unknown op {op!r}"})


def _read_stdin(loop: asyncio.AbstractEventLoop, on_line: Any, on_eof: Any) -> None:
    for line in sys.stdin:
        if line.strip():
            loop.call_soon_threadsafe(on_line, line)
    loop.call_soon_threadsafe(on_eof)


async def run(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    config = UdpConfig(
        secret=args.secret,
        local_name=args.bind,
        peers=args.peer,
        local_metadata={META_KEY: args.meta.encode()},
    )
    members = Members(config)
    writer = EventWriter(sys.stdout)
    members.listener = _SyncListener(writer)
    worker = Worker(config, members)
    transport = UdpTransport(config, worker)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(transport)  # binds UDP and TCP on the port
        await stack.enter_async_context(worker)
        writer.write({"ready": True, "name": members.local.name, "address": args.bind})
        threading.Thread(
            target=_read_stdin,
            args=(loop, lambda line: handle_command(line, members, writer), stop.set),
            name="stdin",
            daemon=True,
        ).start()
        await stop.wait()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks._swim_protocol_node",
        description="One swim-protocol member speaking Prism's member-process JSON lines.",
    )
    parser.add_argument("--bind", required=True, help="host:port for UDP and TCP; also the name")
    parser.add_argument(
        "--peer",
        action="append",
        default=[],
        help="a known member's host:port (repeat; at least one: swim-protocol's failure "
        "detector needs a member to probe from the start)",
    )
    parser.add_argument("--meta", default="", help="initial metadata text (default: empty)")
    parser.add_argument(
        "--secret", default="prism-bench", help="shared secret that signs every packet"
    )
    args = parser.parse_args(argv)
    if not args.peer:
        parser.error("give at least one --peer")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    code = 0
    try:
        asyncio.run(run(args))
    except KeyboardInterrupt:
        pass
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # the stdin thread may still block in read: do not wait for it


if __name__ == "__main__":
    main()
