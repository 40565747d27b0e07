"""One Raft node with the key-value state machine, as a process: for benchmarks and crash tests.

::

    python -m prism.raft.serve --id n1 --listen 127.0.0.1:7001 \\
        --peer n2=127.0.0.1:7002 --peer n3=127.0.0.1:7003 --data-dir DIR \\
        [--fsync on|off] [--storage disk|memory] [--client 127.0.0.1:PORT] \\
        [--peer-client n2=127.0.0.1:8002 ...] [--cluster-id prism] [--exit-on-stdin-eof]

Startup: the storage in ``--data-dir`` is opened (``DiskStorage``, recovering what a crash
left; ``--storage memory`` keeps nothing across restarts), the UDP port is bound, then the
client port, and one JSON line goes to stdout::

    {"id": "n1", "raft_port": 7001, "client_port": 8001, "pid": 4242}

Logs go to stderr. SIGINT or SIGTERM stops the node (a write in progress completes first);
with ``--exit-on-stdin-eof`` so does the end of stdin, so a node never outlives the harness
that started it even if the harness is killed.

Client protocol (``--client``): JSON lines over TCP, one object per line each way, the same
shape as ``benchmarks/_pysyncobj_node.py``. Requests may be pipelined on one connection;
each carries an ``id`` (any JSON value) that its reply echoes, and replies come back in
completion order::

    {"id": 1, "op": "put", "key": "k", "value": "v", "client": "c1", "seq": 1}
    {"id": 2, "op": "cas", "key": "k", "expected": "v", "value": "w", "client": "c1", "seq": 2}
    {"id": 3, "op": "delete", "key": "k", "client": "c1", "seq": 3}
    {"id": 4, "op": "get", "key": "k"}
    {"id": 5, "op": "status"}

A write with ``client`` and ``seq`` applies once, however often it is retried (the KV
machine's sessions): retry with the same pair after ``timeout``, ``shutting_down`` or a lost
connection. Replies::

    {"id": 1, "ok": true, "value": "v", "index": 12, "duplicate": false}
    {"id": 2, "ok": false, "error": "cas_failed", "value": "current value", "index": 13}
    {"id": 4, "ok": true, "value": "v"}            (a linearizable read, ReadIndex)
    {"id": 5, "ok": true, "node": "n1", "state": "leader", "leader": "127.0.0.1:8001",
     "leader_id": "n1", "term": 3, "commit": 12, "applied": 12, "leader_since": 5123.4}
    {"id": 1, "ok": false, "error": "not_leader", "leader": "127.0.0.1:8002",
     "leader_id": "n2", "message": "not leader: try 127.0.0.1:8002"}

``leader`` is the leader's client address when ``--peer-client`` gives it, else its Raft
address, else null. ``leader_since`` is this process's ``time.monotonic()`` when it last
became leader (the same clock in every process of a host), or null. Other errors:
``timeout`` (the write may still commit), ``lost`` (it never will), ``overloaded`` and
``dropped`` (refused: nothing happened), ``shutting_down``, ``bad_command`` (the KV machine
refused it), ``bad_request`` (the line is not a valid request).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, final

import trio

from prism.errors import (
    NotLeader,
    Overloaded,
    PrismError,
    ProposalDropped,
    ProposalLost,
    ProposalTimeout,
    ShuttingDown,
)
from prism.raft.config import RaftConfig
from prism.raft.disk import DiskStorage
from prism.raft.driver import DriverConfig, RaftDriver, core_from_storage
from prism.raft.kv import ApplyResult, Command, KVStateMachine, Op
from prism.raft.membership import Membership
from prism.raft.ready import Note
from prism.raft.storage import MemoryStorage, Storage
from prism.raft.transport import Address, DatagramTransport, UdpTransport, format_address
from prism.raft.transport import parse_address as _parse_address

logger = logging.getLogger(__name__)

MAX_LINE_BYTES = 1024 * 1024
"""The longest request line; a longer one closes the connection."""

Reply = dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class ServeOptions:
    """What the command line says; see the module docstring."""

    node_id: str
    listen: Address
    peers: dict[str, Address] = field(default_factory=dict)
    data_dir: Path | None = None  # None: MemoryStorage
    fsync: bool = True
    client: Address | None = None
    peer_clients: dict[str, Address] = field(default_factory=dict)
    cluster_id: str = "prism"
    request_timeout_s: float = 5.0
    exit_on_stdin_eof: bool = False


@dataclass(frozen=True, slots=True)
class Started:
    """Where a started node listens (ports bound, 0 resolved)."""

    raft: Address
    client: Address | None


def parse_args(argv: Sequence[str] | None = None) -> ServeOptions:
    parser = argparse.ArgumentParser(
        prog="python -m prism.raft.serve", description="Run one Raft node with the KV machine."
    )
    parser.add_argument("--id", required=True, help="this node's id")
    parser.add_argument("--listen", required=True, type=_address, help="UDP host:port")
    parser.add_argument("--peer", action="append", default=[], type=_peer, help="ID=HOST:PORT")
    parser.add_argument("--data-dir", required=True, type=Path, help="storage directory")
    parser.add_argument("--fsync", choices=("on", "off"), default="on")
    parser.add_argument("--storage", choices=("disk", "memory"), default="disk")
    parser.add_argument("--client", type=_address, help="TCP host:port of the client protocol")
    parser.add_argument(
        "--peer-client", action="append", default=[], type=_peer, help="ID=HOST:PORT"
    )
    parser.add_argument("--cluster-id", default="prism")
    parser.add_argument("--request-timeout-s", type=float, default=5.0)
    parser.add_argument("--exit-on-stdin-eof", action="store_true")
    args = parser.parse_args(argv)
    peers = dict(args.peer)
    if args.id in peers:
        parser.error(f"--peer names this node ({args.id})")
    return ServeOptions(
        node_id=args.id,
        listen=args.listen,
        peers=peers,
        data_dir=args.data_dir if args.storage == "disk" else None,
        fsync=args.fsync == "on",
        client=args.client,
        peer_clients=dict(args.peer_client),
        cluster_id=args.cluster_id,
        request_timeout_s=args.request_timeout_s,
        exit_on_stdin_eof=args.exit_on_stdin_eof,
    )


def _address(text: str) -> Address:
    try:
        return _parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _peer(text: str) -> tuple[str, Address]:
    node_id, sep, address = text.partition("=")
    if not sep or not node_id:
        raise argparse.ArgumentTypeError(f"expected ID=HOST:PORT, got {text!r}")
    return node_id, _address(address)


def open_storage(options: ServeOptions) -> Storage:
    """The node's storage: ``DiskStorage`` in the data directory, or ``MemoryStorage``."""
    if options.data_dir is None:
        return MemoryStorage()
    storage = DiskStorage.open(options.data_dir, fsync=options.fsync)
    for note in storage.recovery_notes:
        logger.warning("raft.storage_recovered node=%s note=%s", options.node_id, note)
    return storage


def _close_storage(storage: Storage) -> None:
    if isinstance(storage, DiskStorage):
        storage.close()


async def serve(
    options: ServeOptions,
    *,
    transport: DatagramTransport | None = None,
    task_status: trio.TaskStatus[Started] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the node until cancelled. ``transport`` replaces binding ``options.listen`` (tests
    bind port 0 first to learn the ports); the driver closes it."""
    storage = await trio.to_thread.run_sync(open_storage, options)
    try:
        if transport is None:
            transport = await UdpTransport.bind(options.listen)
        node = _Node(options, storage, transport)
        async with trio.open_nursery() as nursery:
            await nursery.start(node.driver.run)
            client = None
            if options.client is not None:
                client = await _start_client_port(nursery, node, options.client)
            task_status.started(Started(transport.local_address, client))
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(_close_storage, storage)


async def _start_client_port(nursery: trio.Nursery, node: _Node, address: Address) -> Address:
    host, port = address
    listeners = await nursery.start(partial(trio.serve_tcp, node.serve_connection, port, host=host))
    bound = listeners[0].socket.getsockname()
    return str(bound[0]), int(bound[1])


@final
class _Node:
    """The driver, the KV machine, and the client protocol's request handling."""

    def __init__(
        self, options: ServeOptions, storage: Storage, transport: DatagramTransport
    ) -> None:
        self.options = options
        self.kv = KVStateMachine()
        self.leader_since: float | None = None
        addresses = {options.node_id: transport.local_address, **options.peers}
        membership = Membership.of(
            list(addresses), addresses={k: format_address(v) for k, v in addresses.items()}
        )
        core = core_from_storage(
            options.node_id, membership, storage, config=RaftConfig.lan(), rng=random.Random()
        )
        self.driver: RaftDriver[ApplyResult] = RaftDriver(
            core,
            storage,
            self.kv,
            transport,
            addresses,
            config=DriverConfig(cluster_id=options.cluster_id),
            on_note=self._on_note,
        )

    def _on_note(self, note: Note) -> None:
        if note.event == "raft.became_leader":
            self.leader_since = time.monotonic()

    async def serve_connection(self, stream: trio.SocketStream) -> None:
        """One client connection: each request line answered by its own task."""
        lock = trio.Lock()
        buffer = b""
        try:
            async with trio.open_nursery() as nursery:
                while True:
                    chunk = await stream.receive_some(65_536)
                    if not chunk:
                        break
                    *lines, buffer = (buffer + chunk).split(b"\n")
                    for line in lines:
                        if line.strip():
                            nursery.start_soon(self._answer_line, stream, lock, line)
                    if len(buffer) > MAX_LINE_BYTES:
                        break
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the client went away; its pending requests were answered or dropped
        finally:
            await stream.aclose()

    async def _answer_line(self, stream: trio.SocketStream, lock: trio.Lock, line: bytes) -> None:
        try:
            request = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError):
            request = None
        if isinstance(request, dict):
            reply = await self.answer(request)
            reply = {"id": request.get("id"), **reply}
        else:
            reply = {"id": None, "ok": False, "error": "bad_request", "message": "not an object"}
        data = json.dumps(reply, separators=(",", ":")).encode() + b"\n"
        async with lock:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.send_all(data)

    async def answer(self, request: dict[str, Any]) -> Reply:
        """The reply to one request (without its ``id``)."""
        op = request.get("op")
        try:
            if op == "status":
                return self._status()
            key = request.get("key")
            if not isinstance(key, str):
                return _bad_request("key must be a string")
            if op == "get":
                value = await self.driver.read(
                    lambda: self.kv.get(key), timeout_s=self.options.request_timeout_s
                )
                return {"ok": True, "value": value}
            if isinstance(op, str) and op in _WRITE_OPS:
                return await self._write(_WRITE_OPS[op], key, request)
            return _bad_request(f"unknown op {op!r}")
        except NotLeader as exc:
            return self._redirect(exc)
        except (Overloaded, ProposalDropped, ProposalTimeout, ProposalLost, ShuttingDown) as exc:
            return {"ok": False, "error": _error_name(exc), "message": str(exc)}

    async def _write(self, op: Op, key: str, request: dict[str, Any]) -> Reply:
        value, expected = request.get("value"), request.get("expected")
        client, seq = request.get("client", ""), request.get("seq", 0)
        if op != "delete" and not isinstance(value, str):
            return _bad_request(f"{op} needs a string value")
        if expected is not None and not isinstance(expected, str):
            return _bad_request("expected must be a string or null")
        if not isinstance(client, str) or type(seq) is not int or seq < 0:
            return _bad_request("client must be a string and seq a non-negative int")
        command = Command(op=op, key=key, value=value, expected=expected)
        result = await self.driver.propose(
            command.encode(), client_id=client, seq=seq, timeout_s=self.options.request_timeout_s
        )
        reply: Reply = {"ok": result.ok, "value": result.value, "index": result.index}
        reply["duplicate"] = result.duplicate
        if not result.ok:
            reply["error"] = "bad_command" if result.error else "cas_failed"
            if result.error:
                reply["message"] = result.error
        return reply

    def _status(self) -> Reply:
        core = self.driver.core
        return {
            "ok": True,
            "node": core.id,
            "state": str(core.role),
            "leader": self._leader_address(core.leader),
            "leader_id": core.leader,
            "term": core.term,
            "commit": core.commit,
            "applied": self.driver.applied_index,
            "leader_since": self.leader_since,
        }

    def _leader_address(self, leader: str | None) -> str | None:
        if leader is None:
            return None
        if leader == self.options.node_id and self.options.client is not None:
            return format_address(self.options.client)
        client = self.options.peer_clients.get(leader)
        if client is not None:
            return format_address(client)
        address = self.driver.addresses.get(leader)
        return format_address(address) if address is not None else None

    def _redirect(self, exc: NotLeader) -> Reply:
        address = self._leader_address(exc.leader_hint)
        message = f"not leader: try {address}" if address else "not leader: no leader known"
        return {
            "ok": False,
            "error": "not_leader",
            "leader": address,
            "leader_id": exc.leader_hint,
            "message": message,
        }


_WRITE_OPS: dict[str, Op] = {"put": "put", "cas": "cas", "delete": "delete"}

_ERROR_NAMES: tuple[tuple[type[Exception], str], ...] = (
    (Overloaded, "overloaded"),  # before ProposalDropped, its base
    (ProposalDropped, "dropped"),
    (ProposalTimeout, "timeout"),
    (ProposalLost, "lost"),
    (ShuttingDown, "shutting_down"),
)


def _error_name(exc: Exception) -> str:
    return next(name for kind, name in _ERROR_NAMES if isinstance(exc, kind))


def _bad_request(message: str) -> Reply:
    return {"ok": False, "error": "bad_request", "message": message}


async def _run(options: ServeOptions) -> None:
    async with trio.open_nursery() as nursery:
        started: Started = await nursery.start(serve, options)
        hello = {
            "id": options.node_id,
            "raft_port": started.raft[1],
            "client_port": started.client[1] if started.client is not None else None,
            "pid": os.getpid(),
        }
        print(json.dumps(hello), flush=True)
        nursery.start_soon(_stop_on_signals, nursery.cancel_scope)
        if options.exit_on_stdin_eof:
            nursery.start_soon(_stop_on_stdin_eof, nursery.cancel_scope)


async def _stop_on_signals(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            logger.info("raft.stopping signal=%s", signal.Signals(signum).name)
            scope.cancel()
            return


async def _stop_on_stdin_eof(scope: trio.CancelScope) -> None:
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    async with stdin:
        while await stdin.receive_some(4096):
            pass
    logger.info("raft.stopping reason=stdin_closed")
    scope.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    try:
        trio.run(_run, options)
    except (PrismError, BaseExceptionGroup) as exc:
        errors = _prism_errors(exc)
        if not errors:
            raise
        for error in errors:
            print(f"prism.raft.serve: {error}", file=sys.stderr)
        return 1
    return 0


def _prism_errors(exc: BaseException) -> list[PrismError]:
    """The Prism errors that ended the run (a storage that fails its checks, a bad
    configuration), out of trio's exception groups; empty if anything else is in them."""
    if isinstance(exc, PrismError):
        return [exc]
    if not isinstance(exc, BaseExceptionGroup):
        return []
    matched, rest = exc.split(PrismError)
    if rest is not None or matched is None:
        return []
    found: list[PrismError] = []
    for inner in matched.exceptions:
        found.extend(_prism_errors(inner))
    return found


if __name__ == "__main__":
    sys.exit(main())
