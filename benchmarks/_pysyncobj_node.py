"""One PySyncObj node with a local client port, for the Raft loopback benchmarks.

PySyncObj is a library, not a server: it has no client protocol of its own. This process
holds one ``SyncObj`` (a replicated key-value map with a single replicated method,
``put(key, value)``) and adds a small client port on 127.0.0.1 that speaks JSON lines, so
that the benchmark driver can load it from another process exactly as it loads Prism:

* ``{"id": 7, "op": "put", "key": "k1", "value": "..."}`` is answered
  ``{"id": 7, "ok": true}`` once the entry is committed and applied on this node (the
  replicated call's callback fired with ``FAIL_REASON.SUCCESS``), or
  ``{"id": 7, "ok": false, "error": "not_leader", "leader": "127.0.0.1:P"}`` at once when
  this node is not the leader, or ``{"id": 7, "ok": false, "error": "<FAIL_REASON name>"}``
  when PySyncObj reports a failure.
* ``{"id": 8, "op": "status"}`` is answered with ``state`` (``leader``, ``candidate`` or
  ``follower``), ``leader`` (the last known leader's address or null), ``term``,
  ``applied`` and ``leader_since``: the ``time.monotonic()`` at which this node last
  became leader (CLOCK_MONOTONIC on Linux, the same clock in every process), or null.

Replies to puts can come back in any order; the client matches them by ``id``. Several
requests may be pipelined on one connection.

When its client port is bound, the process prints one JSON line on stdout,
``{"client_port": P, "pid": N}``. It exits when its stdin reaches end of file, so it does
not outlive the driver even if the driver is killed with SIGKILL.

PySyncObj runs with ``autoTick`` (its default): its own thread drives Raft, and this
process's main thread runs the client port on asyncio. That is the library's documented
way of being used from an application. ``--nobatch`` sets ``appendEntriesUseBatch=False``;
every other setting is PySyncObj's default (see ``benchmarks/README.md``).

    python -m benchmarks._pysyncobj_node --self 127.0.0.1:P1 \\
        --partner 127.0.0.1:P2 --partner 127.0.0.1:P3 [--nobatch] [--journal FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
import traceback
from typing import Any

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated  # type: ignore[import-untyped]

_STATE_NAMES = {0: "follower", 1: "candidate", 2: "leader"}
_LEADER = 2
_FAIL_NAMES = {
    value: name
    for name, value in vars(FAIL_REASON).items()
    if not name.startswith("_") and isinstance(value, int)
}


class ReplicatedMap(SyncObj):  # type: ignore[misc]
    """A dict replicated by PySyncObj; ``put`` is the only replicated method."""

    def __init__(self, self_address: str, partners: list[str], conf: SyncObjConf) -> None:
        super().__init__(self_address, partners, conf=conf)
        # Set after SyncObj.__init__, as PySyncObj's docs do: attributes that exist before it
        # are taken for its own and left out of its snapshots.
        self.data: dict[str, str] = {}

    @replicated  # type: ignore[untyped-decorator]
    def put(self, key: str, value: str) -> None:
        self.data[key] = value


def make_conf(*, nobatch: bool, journal: str | None, on_state: Any) -> SyncObjConf:
    """PySyncObj's defaults, except ``appendEntriesUseBatch`` off with ``nobatch``."""
    kwargs: dict[str, Any] = {"onStateChanged": on_state}
    if nobatch:
        kwargs["appendEntriesUseBatch"] = False
    if journal is not None:
        kwargs["journalFile"] = journal
    return SyncObjConf(**kwargs)


class Node:
    def __init__(self, args: argparse.Namespace) -> None:
        self.leader_since: float | None = None
        conf = make_conf(nobatch=args.nobatch, journal=args.journal, on_state=self._on_state)
        self.obj = ReplicatedMap(args.self_address, args.partner, conf)

    def _on_state(self, old: int, new: int) -> None:  # PySyncObj's tick thread
        if new == _LEADER:
            self.leader_since = time.monotonic()

    def status(self) -> dict[str, Any]:
        obj = self.obj
        leader = obj._getLeader()
        return {
            "ok": True,
            "state": "leader" if obj._isLeader() else _STATE_NAMES.get(_raft_state(obj), "?"),
            "leader": None if leader is None else str(leader),
            "term": obj.raftCurrentTerm,
            "applied": obj.raftLastApplied,
            "partners_connected": sum(1 for n in obj.otherNodes if obj.isNodeConnected(n)),
            "leader_since": self.leader_since if obj._isLeader() else None,
        }


def _raft_state(obj: SyncObj) -> int:
    # The state has no public getter apart from getStatus(), which walks dicts that PySyncObj's
    # thread mutates; its name-mangled attribute is a plain int read.
    return int(getattr(obj, "_SyncObj__raftState", -1))


async def _serve_client(
    node: Node, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    loop = asyncio.get_running_loop()

    def send(reply: dict[str, Any]) -> None:
        if not writer.is_closing():
            writer.write(json.dumps(reply, separators=(",", ":")).encode() + b"\n")

    try:
        while line := await reader.readline():
            request = json.loads(line)
            rid = request.get("id")
            op = request.get("op")
            if op == "put":
                if not node.obj._isLeader():
                    leader = node.obj._getLeader()
                    send(
                        {
                            "id": rid,
                            "ok": False,
                            "error": "not_leader",
                            "leader": None if leader is None else str(leader),
                        }
                    )
                else:

                    def done(result: Any, error: int, rid: Any = rid) -> None:
                        # Runs on PySyncObj's tick thread: hand the reply to the event loop.
                        if error == FAIL_REASON.SUCCESS:
                            reply = {"id": rid, "ok": True}
                        else:
                            reply = {"id": rid, "ok": False, "error": _FAIL_NAMES.get(error, error)}
                        loop.call_soon_threadsafe(send, reply)

                    node.obj.put(request["key"], request["value"], callback=done)
            elif op == "status":
                send({"id": rid, **node.status()})
            else:
                send({"id": rid, "ok": False, "error": f"unknown op {op!r}"})
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


def _exit_on_stdin_eof() -> None:
    sys.stdin.buffer.read()
    os._exit(0)


async def _main(args: argparse.Namespace) -> None:
    node = Node(args)
    server = await asyncio.start_server(
        lambda r, w: _serve_client(node, r, w), "127.0.0.1", args.client_port
    )
    port = server.sockets[0].getsockname()[1]
    sys.stdout.write(json.dumps({"client_port": port, "pid": os.getpid()}) + "\n")
    sys.stdout.flush()
    async with server:
        await server.serve_forever()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks._pysyncobj_node",
        description="One PySyncObj node with a JSON-lines client port on 127.0.0.1.",
    )
    parser.add_argument("--self", dest="self_address", required=True, help="host:port for Raft")
    parser.add_argument(
        "--partner", action="append", default=[], help="a partner's host:port (repeat)"
    )
    parser.add_argument(
        "--client-port", type=int, default=0, help="client port on 127.0.0.1 (default: any)"
    )
    parser.add_argument(
        "--nobatch", action="store_true", help="appendEntriesUseBatch=False (default: True)"
    )
    parser.add_argument(
        "--journal", default=None, help="journalFile (default: none, the log is in memory)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    threading.Thread(target=_exit_on_stdin_eof, name="stdin-eof", daemon=True).start()
    code = 0
    try:
        asyncio.run(_main(args))
    except KeyboardInterrupt:
        pass
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stderr.flush()
    os._exit(code)  # PySyncObj's tick thread is not a daemon: do not wait for it


if __name__ == "__main__":
    main()
