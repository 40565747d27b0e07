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
a leader first hands leadership to its most caught-up follower (``hand_over_leadership``),
so a planned stop costs the cluster a redirect rather than an election timeout; a second
signal stops at once. With ``--exit-on-stdin-eof`` the end of stdin stops the node too (no
hand-over), so a node never outlives the harness that started it even if that is killed.

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

    {"id": 1, "ok": true, "index": 12, "duplicate": false}
    {"id": 2, "ok": false, "error": "cas_failed", "value": "current value", "index": 13,
     "duplicate": false}
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
import json
import logging
import math
import os
import random
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Final, final

import msgspec
import trio

from prism.collector import fewer_collections
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
from prism.raft.driver_requests import Waiter
from prism.raft.kv import ApplyResult, KVStateMachine, Op, encode_command
from prism.raft.membership import Membership
from prism.raft.ready import Note
from prism.raft.storage import MemoryStorage, Storage
from prism.raft.transport import (
    Address,
    DatagramTransport,
    UdpTransport,
    format_address,
    receive_some_raw,
    send_all_raw,
)
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
    driver: RaftDriver[ApplyResult] | None = None


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
            task_status.started(Started(transport.local_address, client, node.driver))
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
            # A disk that does not fsync is written inline: the page cache is faster than a
            # trip to a worker thread.
            config=DriverConfig(
                cluster_id=options.cluster_id,
                persist_in_thread=options.fsync if options.data_dir is not None else None,
            ),
            on_note=self._on_note,
            on_settled=self.flush,
        )
        # Connections with replies queued since the last flush, in the order they got one.
        self._unflushed: dict[_Connection, None] = {}

    def _on_note(self, note: Note) -> None:
        if note.event == "raft.became_leader":
            self.leader_since = time.monotonic()

    async def serve_connection(self, stream: trio.SocketStream) -> None:
        """One client connection; see ``_Connection``. At the end of the client's stream,
        every request already read is answered before the connection closes."""
        connection = _Connection(self, stream)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(connection.send_loop)
                async with trio.open_nursery() as reads:
                    await connection.receive_loop(reads)
                connection.close_when_answered()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the client went away
        finally:
            connection.forget_pending()
            self._unflushed.pop(connection, None)
            connection.close()
            await stream.aclose()

    def unflushed(self, connection: _Connection) -> None:
        """``connection`` has replies queued: send them at the next ``flush``."""
        self._unflushed[connection] = None

    def flush(self) -> None:
        """Send the replies queued on every connection, each with one non-blocking send.
        The driver calls it (``on_settled``) after each batch of waiter callbacks, in its own
        task: it must not raise."""
        unflushed = self._unflushed
        if not unflushed:
            return
        self._unflushed = {}
        for connection in unflushed:
            try:
                connection.flush_nowait()
            except Exception:  # a bug here must not take the driver down
                logger.exception("serve.flush_failed")

    async def answer(self, request: dict[str, Any]) -> Reply:
        """The reply to one request (without its ``id``)."""
        op = request.get("op")
        try:
            if op == "status":
                return self.answer_status()
            key = request.get("key")
            if not isinstance(key, str):
                return _bad_request("key must be a string")
            if op == "get":
                value = await self.driver.read(
                    lambda: self.kv.get(key), timeout_s=self.options.request_timeout_s
                )
                return {"ok": True, "value": value}
            if isinstance(op, str) and op in _WRITE_OPS:
                started = self.start_write(request)
                if isinstance(started, dict):
                    return started
                index, waiter = started
                try:
                    result = await waiter.wait(
                        self.options.request_timeout_s, partial(self.timeout_error, index)
                    )
                finally:
                    self.driver.forget_proposal(index, waiter)
                return self.write_reply(result)
            return _bad_request(f"unknown op {op!r}")
        except NotLeader as exc:
            return self._redirect(exc)
        except (Overloaded, ProposalDropped, ProposalTimeout, ProposalLost, ShuttingDown) as exc:
            return _error_reply(exc)

    def start_write(self, request: dict[str, Any]) -> Reply | tuple[int, Waiter[ApplyResult]]:
        """Check a write request and propose it, without waiting: the reply when it is
        answered at once (refused, redirected), else the entry's index and its waiter."""
        op, key = request.get("op"), request.get("key")
        if not isinstance(key, str):
            return _bad_request("key must be a string")
        if not isinstance(op, str) or op not in _WRITE_OPS:
            return _bad_request(f"unknown op {op!r}")
        kind: Op = _WRITE_OPS[op]
        value, expected = request.get("value"), request.get("expected")
        client, seq = request.get("client", ""), request.get("seq", 0)
        if kind != "delete" and not isinstance(value, str):
            return _bad_request(f"{kind} needs a string value")
        if expected is not None and not isinstance(expected, str):
            return _bad_request("expected must be a string or null")
        if not isinstance(client, str) or type(seq) is not int or seq < 0:
            return _bad_request("client must be a string and seq a non-negative int")
        try:
            command = encode_command(kind, key, value, expected)
        except UnicodeEncodeError:  # JSON can carry lone surrogates ("\ud800"); UTF-8 cannot
            return _bad_request("key and values must be valid Unicode text")
        try:
            index, _term, waiter = self.driver.propose_nowait(command, client_id=client, seq=seq)
        except NotLeader as exc:
            return self._redirect(exc)
        except (Overloaded, ProposalDropped, ShuttingDown) as exc:
            return _error_reply(exc)
        return index, waiter

    def timeout_error(self, index: int) -> ProposalTimeout:
        return ProposalTimeout(
            f"entry {index} not applied on {self.options.node_id} within "
            f"{self.options.request_timeout_s} s; it may still commit"
        )

    def settled_write_reply(self, waiter: Waiter[ApplyResult]) -> Reply:
        """The reply to a write whose waiter has its outcome."""
        try:
            return self.write_reply(waiter.outcome())
        except NotLeader as exc:
            return self._redirect(exc)
        except (Overloaded, ProposalDropped, ProposalTimeout, ProposalLost, ShuttingDown) as exc:
            return _error_reply(exc)

    @staticmethod
    def write_reply(result: ApplyResult) -> Reply:
        """A write that applied echoes nothing of the command (etcd's put answers with its
        revision alone): a 1 KB value sent back cost the leader and the client more than
        the rest of the reply. A failed cas gives the value it found instead."""
        if result.ok:
            return {"ok": True, "index": result.index, "duplicate": result.duplicate}
        reply: Reply = {"ok": False, "index": result.index, "duplicate": result.duplicate}
        if result.error:
            reply["error"] = "bad_command"
            reply["message"] = result.error
        else:
            reply["error"] = "cas_failed"
            reply["value"] = result.value
        return reply

    def answer_status(self) -> Reply:
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


def _error_reply(exc: Exception) -> Reply:
    return {"ok": False, "error": _error_name(exc), "message": str(exc)}


_ENCODE: Final = json.JSONEncoder(separators=(",", ":")).encode
# msgspec's decoder: it parses a 1 KB request line in 0.5 µs, where json takes 1.4.
_FAST_DECODE: Final = msgspec.json.Decoder().decode


def parse_json_line(line: bytes) -> Any:
    """``json.loads(line)``, or None when the line is not JSON text in UTF-8.

    msgspec parses the line first. What it accepts, json accepts with the same value (big
    ints included); what it refuses (NaN, Infinity, a lone surrogate escape, and every
    malformed line) goes to ``json.loads``, which takes the first three as json does and
    refuses the rest. So the language accepted is json's own, at a third of the cost for
    the lines clients send."""
    try:
        return _FAST_DECODE(line)
    except Exception:  # any refusal: json decides, as below
        pass
    try:
        return json.loads(line.decode())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None


_ENCODE_STR: Final = json.encoder.encode_basestring_ascii  # what _ENCODE does with a str


def _encode_reply(request_id: Any, reply: Reply) -> bytes:
    return _ENCODE({"id": request_id, **reply}).encode() + b"\n"


def _json_value(value: Any) -> bytes:
    """``_ENCODE(value).encode()``, with the encoder's own machinery skipped for the ids a
    request usually carries (an int, a str); the bytes are the same."""
    kind = type(value)
    if kind is int:
        return b"%d" % value
    if kind is str:
        return _ENCODE_STR(value).encode()
    return _ENCODE(value).encode()


def _encode_applied(request_id: Any, result: ApplyResult) -> bytes:
    """``_encode_reply(request_id, _Node.write_reply(result))`` for a write that succeeded,
    byte for byte, without building the dict."""
    return b'{"id":%s,"ok":true,"index":%d,"duplicate":%s}\n' % (
        _json_value(request_id),
        result.index,
        b"true" if result.duplicate else b"false",
    )


@final
class _Connection:
    """One client connection, served without a task per request.

    The receive loop parses every line of each chunk as it arrives. A write is proposed at
    once (``_Node.start_write``); its reply is queued by the waiter's callback when the
    entry is applied (or fails), in the driver's task, and the driver's ``on_settled``
    (``_Node.flush``) then sends every reply of the batch with one non-blocking send, still
    in that task: answering a batch wakes no task here. ``status`` is answered at once;
    anything else (``get``, which waits for a read index) gets a task. The send loop sends
    what the socket had no room for, and gives a write that has waited ``request_timeout_s``
    its ``timeout`` reply. Replies go out in completion order.

    The socket is read and written directly, on a duplicate of its descriptor, after
    waiting for it through trio only when it is not ready: trio's stream methods try a read
    before each wait (which fails every time here: the client sends only after answers) and
    make a pass through the scheduler after each read or send that succeeded.
    """

    def __init__(self, node: _Node, stream: trio.SocketStream) -> None:
        self._node = node
        self._stream = stream
        self._raw = socket.socket(fileno=os.dup(stream.socket.fileno()))
        self._raw.setblocking(False)
        self._timeout_s = node.options.request_timeout_s
        self._outbox: list[bytes] = []
        self._wake = trio.Event()
        # Writes waiting for their outcome, in arrival order (so in deadline order):
        # (deadline, index, waiter, request id). Answered ones leave from the front lazily.
        self._waiting: deque[tuple[float, int, Waiter[ApplyResult], Any]] = deque()
        self._unanswered = 0  # writes proposed and not answered yet
        self._closing = False
        self._sending = False  # the send loop is writing the socket: nobody else may

    def _push(self, data: bytes) -> None:
        """Queue one reply; the next ``_Node.flush`` (or the send loop) sends it."""
        if not self._outbox:
            self._node.unflushed(self)
        self._outbox.append(data)

    def queue(self, request_id: Any, reply: Reply) -> None:
        self._push(_encode_reply(request_id, reply))

    async def receive_loop(self, reads: trio.Nursery) -> None:
        raw = self._raw
        buffer = b""
        while True:
            chunk = await receive_some_raw(raw, 65_536)
            if not chunk:
                return
            *lines, buffer = (buffer + chunk).split(b"\n") if buffer else chunk.split(b"\n")
            deadline = trio.current_time() + self._timeout_s
            for line in lines:
                if line.strip():
                    self._take(line, reads, deadline)
            self._node.flush()  # the replies given at once (refusals, status)
            if len(buffer) > MAX_LINE_BYTES:
                return

    def _take(self, line: bytes, reads: trio.Nursery, deadline: float) -> None:
        request = parse_json_line(line)
        if not isinstance(request, dict):
            self.queue(None, {"ok": False, "error": "bad_request", "message": "not an object"})
            return
        request_id = request.get("id")
        op = request.get("op")
        if type(op) is str and op in _WRITE_OPS:  # an unhashable op must not raise here
            started = self._node.start_write(request)
            if isinstance(started, dict):
                self.queue(request_id, started)
                return
            index, waiter = started
            self._unanswered += 1
            self._waiting.append((deadline, index, waiter, request_id))
            waiter.on_done(partial(self._settled, request_id))
        elif op == "status":
            self.queue(request_id, self._node.answer_status())
        else:
            reads.start_soon(self._answer, request_id, request)

    def _settled(self, request_id: Any, waiter: Waiter[ApplyResult]) -> None:
        """The waiter's callback: runs in the driver's task, must not raise."""
        self._unanswered -= 1
        if self._closing:
            self._wake.set()  # the send loop ends once every write is answered
        try:
            result = waiter.outcome() if waiter.succeeded else None
            if result is not None and result.ok and type(result.index) is int:
                self._push(_encode_applied(request_id, result))
                return
            reply = self._node.settled_write_reply(waiter)
        except Exception:  # a bug here must not take the driver down
            logger.exception("serve.reply_failed")
            reply = {"ok": False, "error": "internal", "message": "see the node's log"}
        self.queue(request_id, reply)

    async def _answer(self, request_id: Any, request: dict[str, Any]) -> None:
        self.queue(request_id, await self._node.answer(request))
        self._node.flush()

    def flush_nowait(self) -> None:
        """Send the queued replies if the socket takes them now; what it does not take (or
        an error, which the send loop then meets) is left to the send loop."""
        waiting = self._waiting
        while waiting and waiting[0][2].done:
            waiting.popleft()  # answered: the send loop's deadline need not visit them
        if self._sending or not self._outbox:
            return  # the send loop is writing, and sends these next
        outbox = self._outbox
        data = outbox[0] if len(outbox) == 1 else b"".join(outbox)
        outbox.clear()
        try:
            sent = self._raw.send(data)
        except OSError:  # full (BlockingIOError), or the client went away
            sent = 0
        if sent < len(data):
            outbox.append(data[sent:])
            self._wake.set()

    def close_when_answered(self) -> None:
        """No more requests: the send loop ends once every write is answered and sent."""
        self._closing = True
        self._wake.set()

    async def send_loop(self) -> None:
        while True:
            if not self._outbox:
                if self._closing and not self._unanswered:
                    return  # every request read has been answered, and sent
                with trio.move_on_at(self._next_deadline()):
                    await self._wake.wait()
                self._wake = trio.Event()
            self._expire(trio.current_time())
            if self._outbox:
                data = b"".join(self._outbox)
                self._outbox.clear()
                self._sending = True
                try:
                    await send_all_raw(self._raw, data)
                finally:
                    self._sending = False

    def _next_deadline(self) -> float:
        waiting = self._waiting
        while waiting and waiting[0][2].done:
            waiting.popleft()
        return waiting[0][0] if waiting else math.inf

    def _expire(self, now: float) -> None:
        waiting = self._waiting
        while waiting and (waiting[0][2].done or waiting[0][0] <= now):
            _deadline, index, waiter, _request_id = waiting.popleft()
            if not waiter.done:
                self._node.driver.forget_proposal(index, waiter)
                waiter.fail(self._node.timeout_error(index))  # queues the reply via _settled

    def forget_pending(self) -> None:
        """The connection is gone: stop tracking its writes in the driver."""
        for _deadline, index, waiter, _request_id in self._waiting:
            if not waiter.done:
                self._node.driver.forget_proposal(index, waiter)
        self._waiting.clear()

    def close(self) -> None:
        """Release the duplicate descriptor (the stream closes its own)."""
        trio.lowlevel.notify_closing(self._raw)
        self._raw.close()


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
        nursery.start_soon(_stop_on_signals, nursery.cancel_scope, started.driver)
        if options.exit_on_stdin_eof:
            nursery.start_soon(_stop_on_stdin_eof, nursery.cancel_scope)


HAND_OVER_TIMEOUT_S = 1.0
"""How long a stopping leader waits for its transfer: the core aborts one after the minimum
election timeout (200 ms on LAN timing), so this is only a bound for a stuck one."""


async def _stop_on_signals(scope: trio.CancelScope, driver: RaftDriver[ApplyResult] | None) -> None:
    """The first SIGINT or SIGTERM hands leadership over (when this node leads), then stops
    the node; a second one stops it at once."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as stopping:
            async for signum in signals:
                name = signal.Signals(signum).name
                if stopping.child_tasks or driver is None:
                    logger.info("raft.stopping signal=%s now=true", name)
                    scope.cancel()
                    return
                logger.info("raft.stopping signal=%s", name)
                stopping.start_soon(_hand_over_then_stop, scope, driver)


async def _hand_over_then_stop(scope: trio.CancelScope, driver: RaftDriver[ApplyResult]) -> None:
    await driver.hand_over_leadership(timeout_s=HAND_OVER_TIMEOUT_S)
    scope.cancel()


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
        with fewer_collections():
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
