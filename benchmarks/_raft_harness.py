"""Shared pieces of the Raft benchmarks on loopback (``raft_loopback``, ``raft_failover``).

The drivers see a cluster only through three small interfaces, so that any Raft
implementation that runs as one process per node with a client port can be measured the
same way:

* :class:`Target`: a client connection to one node: ``put(key, value)`` returns once the
  write is committed (and raises :class:`PutRejected` or ``ConnectionError`` otherwise), and
  ``status()`` says whether that node leads.
* :class:`Cluster`: the running node processes: their names, a way to connect to each, and
  ``kill(name)`` (SIGKILL).
* :class:`System`: a launcher: its ``name`` (the ``system`` field of the JSON lines), why it
  cannot run here (``unavailable()``), and ``start(nodes, workdir)``, an async context
  manager yielding a :class:`Cluster` and killing every process on exit, however it exits.

Node processes are started by :func:`spawn_node`: all traffic stays on 127.0.0.1, every
process gets a pipe as stdin (a node should exit on end of file there, so that none outlives
a driver killed with SIGKILL), and its stdout's first line is read as JSON (its client
port, for instance).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import re
import socket
import statistics
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import trio

from benchmarks._report import git_commit, machine, percentile
from prism.raft.serve import parse_json_line
from prism.raft.transport import receive_some_raw, send_all_raw

LOOPBACK = "127.0.0.1"
# The checkout (the parent of benchmarks/): node processes run from here, so that
# ``python -m benchmarks.<module>`` and ``python -m prism.<module>`` resolve.
REPO_ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------------
# Statistics and output


def summarize(values: Sequence[float], *, scale: float, suffix: str, digits: int) -> dict[str, Any]:
    """``p50``, ``p99``, ``max`` (and ``min``, ``mean``) of ``values`` times ``scale``.

    Keys are ``p50_<suffix>`` and so on; all None when there are no values.
    """
    ordered = sorted(v * scale for v in values)
    if not ordered:
        return {f"{k}_{suffix}": None for k in ("min", "p50", "mean", "p90", "p99", "max")}
    return {
        f"min_{suffix}": round(ordered[0], digits),
        f"p50_{suffix}": round(percentile(ordered, 0.50), digits),
        f"mean_{suffix}": round(statistics.fmean(ordered), digits),
        f"p90_{suffix}": round(percentile(ordered, 0.90), digits),
        f"p99_{suffix}": round(percentile(ordered, 0.99), digits),
        f"max_{suffix}": round(ordered[-1], digits),
    }


def emit_record(
    name: str, top: dict[str, Any], params: dict[str, Any], figures: dict[str, Any]
) -> None:
    """One JSON line: the house envelope (``benchmarks/_report.py``) plus top-level keys.

    Scripts read the fields the issue names (``system``, ``writes_per_s``, ``median_s``, ...)
    at the top level, so ``top`` is written first and flat; ``params`` and ``figures`` hold
    everything, as in every other benchmark.
    """
    record = {
        "name": name,
        **top,
        "params": params,
        "figures": figures,
        "machine": machine(),
        "commit": git_commit(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    print(json.dumps(record), flush=True)


def describe_error(exc: BaseException) -> str:
    """``repr`` of the exception, or of the leaves of an exception group (trio nests them)."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe_error(e) for e in exc.exceptions)
    return repr(exc)


def run_interruptible(main: Callable[..., Awaitable[int]], *args: Any) -> int:
    """``trio.run(main, *args)``; exit status 130 on Ctrl-C (the processes are killed by then)."""
    try:
        return trio.run(main, *args)
    except KeyboardInterrupt:
        return 130
    except BaseExceptionGroup as group:
        if group.subgroup(KeyboardInterrupt) is None:
            raise
        return 130


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# ---------------------------------------------------------------------------------------------
# The three interfaces


class PutRejected(Exception):
    """The node answered a put with an error (not the leader, leadership lost, ...)."""

    def __init__(self, reason: str, leader: str | None = None) -> None:
        super().__init__(reason if leader is None else f"{reason} (leader: {leader})")
        self.reason = reason
        self.leader = leader


@dataclass(frozen=True, slots=True)
class NodeStatus:
    is_leader: bool
    term: int | None = None
    # time.monotonic() at which the node became leader, on the node's clock (CLOCK_MONOTONIC
    # is shared by all processes on Linux), when the system reports it; None otherwise.
    leader_since: float | None = None


class Target(ABC):
    """A client connection to one node."""

    @abstractmethod
    async def put(self, key: str, value: bytes) -> None:
        """Return once the write is committed; raise PutRejected or ConnectionError if not."""

    @abstractmethod
    async def status(self) -> NodeStatus: ...

    @abstractmethod
    async def aclose(self) -> None: ...


class Cluster(ABC):
    """Running node processes."""

    @property
    @abstractmethod
    def names(self) -> list[str]: ...

    @abstractmethod
    def connect(self, name: str) -> AbstractAsyncContextManager[Target]:
        """A client connection to node ``name``, closed on exit."""

    @abstractmethod
    def kill(self, name: str) -> None:
        """SIGKILL node ``name`` (no goodbye, sockets closed by the kernel)."""

    @abstractmethod
    def terminate(self, name: str) -> None:
        """SIGTERM node ``name``: a planned stop, done however the system does one."""


class System(ABC):
    """A Raft implementation and mode, as it appears in the JSON lines."""

    name: str
    fsync: bool

    def unavailable(self) -> str | None:
        """Why this system cannot run here (printed as ``skipped``), or None."""
        return None

    def describe(self) -> dict[str, Any]:
        """The configuration that defines this system and mode, for the JSON line."""
        return {}

    @abstractmethod
    def start(self, nodes: int, workdir: Path) -> AbstractAsyncContextManager[Cluster]:
        """Start ``nodes`` processes; on exit, kill every one of them."""


# ---------------------------------------------------------------------------------------------
# Processes


def free_ports(count: int, *, udp: bool = False) -> list[int]:
    """``count`` distinct TCP (or UDP) ports that were free on 127.0.0.1 a moment ago."""
    kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, kind)
            sock.bind((LOOPBACK, 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class NodeProcess:
    name: str
    process: trio.Process
    log_path: Path
    hello: dict[str, Any] = field(default_factory=dict)

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()  # SIGKILL on POSIX

    def terminate(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()  # SIGTERM on POSIX

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


async def read_line(stream: trio.abc.ReceiveStream) -> bytes:
    """The first line of ``stream`` (without its newline); what follows it is dropped, so
    use it only for a process's first line (its hello)."""
    data = b""
    while b"\n" not in data:
        chunk = await stream.receive_some(4096)
        if not chunk:
            break
        data += chunk
    return data.partition(b"\n")[0]


async def spawn_node(
    name: str, argv: Sequence[str], log_path: Path, *, ready_timeout: float = 30.0
) -> NodeProcess:
    """Start one node process and read its first stdout line as JSON (``hello``).

    stderr goes to ``log_path``. On failure the process is killed and the error carries the
    tail of its log.
    """
    log: TextIO
    with log_path.open("w") as log:
        process = await trio.lowlevel.open_process(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=REPO_ROOT,
        )
    node = NodeProcess(name, process, log_path)
    try:
        assert process.stdout is not None
        with trio.fail_after(ready_timeout):
            line = await read_line(process.stdout)
        node.hello = json.loads(line)
    except BaseException as exc:
        node.kill()
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await process.wait()
        if isinstance(exc, Exception):
            raise RuntimeError(
                f"node {name} did not start ({exc!r}); its log ends with:\n{node.log_tail()}"
            ) from exc
        raise
    return node


async def kill_all(nodes: Sequence[NodeProcess]) -> None:
    """SIGKILL every process still running and reap it; safe under cancellation."""
    for node in nodes:
        node.kill()
    with trio.CancelScope(shield=True), trio.move_on_after(10):
        for node in nodes:
            await node.process.wait()
            if node.process.stdin is not None:
                await node.process.stdin.aclose()
            if node.process.stdout is not None:
                await node.process.stdout.aclose()


# ---------------------------------------------------------------------------------------------
# A JSON-lines client (the protocol of benchmarks/_pysyncobj_node.py)


class _Pending:
    __slots__ = ("done", "reply")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.reply: dict[str, Any] | None = None


_ENCODE = json.JSONEncoder(separators=(",", ":")).encode
_ENCODE_STR = json.encoder.encode_basestring_ascii  # what _ENCODE does with a str


class JsonLinesTarget(Target):
    """Requests ``{"id", "op", ...}`` and replies ``{"id", "ok", ...}``, pipelined, any order.

    One writer task sends every request queued since it last ran in one send; one reader
    task hands each reply to the request with its ``id``: to the task waiting for it, or
    to the callback of a put started with ``put_nowait`` (a load generator keeping N puts
    in flight then needs no task per put, nor a task switch per reply). A lost connection
    fails every pending and later request with ConnectionError.

    The client shares the machine's cores with the nodes it measures, so its own CPU per
    request is kept low: the socket is read and written directly (non-blocking, on a
    duplicate descriptor), waiting through trio only when it is not ready (trio's stream
    methods add a failed read before each wait and a pass through the scheduler after each
    read and send); puts are encoded without building a dict, and no encoder is built per
    request (``json.dumps`` with ``separators`` builds one per call).
    """

    def __init__(self, stream: trio.SocketStream, nursery: trio.Nursery) -> None:
        self._stream = stream
        self._raw = socket.socket(fileno=os.dup(stream.socket.fileno()))
        self._raw.setblocking(False)
        self._pending: dict[int, _Pending] = {}
        self._put_callbacks: dict[int, Callable[[Exception | None], None]] = {}
        self._next_id = 0
        self._closed: BaseException | None = None
        self._outbox: list[bytes] = []
        self._outbox_ready = trio.Event()
        self._nursery = nursery
        nursery.start_soon(self._writer)
        nursery.start_soon(self._reader)

    async def _writer(self) -> None:
        raw = self._raw
        try:
            while True:
                await self._outbox_ready.wait()
                self._outbox_ready = trio.Event()
                data = b"".join(self._outbox)
                self._outbox.clear()
                await send_all_raw(raw, data)
        except (trio.ClosedResourceError, OSError) as exc:
            self._fail(ConnectionError(f"connection lost: {exc!r}"))

    async def _reader(self) -> None:
        raw = self._raw
        buffer = b""
        try:
            while True:
                chunk = await receive_some_raw(raw, 65536)
                if not chunk:
                    break
                lines = (buffer + chunk).split(b"\n") if buffer else chunk.split(b"\n")
                buffer = lines.pop()
                callbacks = self._put_callbacks
                for line in lines:
                    committed = _COMMITTED.match(line)
                    if committed is not None:
                        on_done = callbacks.pop(int(committed[1]), None)
                        if on_done is not None:
                            on_done(None)
                            continue
                    reply = parse_json_line(line)
                    if not isinstance(reply, dict):
                        raise ValueError(f"the node answered a line that is no object: {line!r}")
                    rid = reply.get("id")
                    pending = self._pending.pop(rid, None)
                    if pending is not None:
                        pending.reply = reply
                        pending.done.set()
                        continue
                    on_done = self._put_callbacks.pop(rid, None)
                    if on_done is not None:
                        on_done(_put_outcome(reply))
            self._fail(ConnectionError("connection closed by the node"))
        except (trio.ClosedResourceError, OSError) as exc:
            self._fail(ConnectionError(f"connection lost: {exc!r}"))

    def _fail(self, exc: BaseException) -> None:
        if self._closed is None:
            self._closed = exc
        pending, self._pending = self._pending, {}
        for p in pending.values():
            p.done.set()
        callbacks, self._put_callbacks = self._put_callbacks, {}
        for on_done in callbacks.values():
            on_done(ConnectionError(str(self._closed)))

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        rid = self._next_id + 1
        line = _ENCODE({"id": rid, "op": op, **fields}).encode() + b"\n"
        return await self._call(rid, line)

    async def _call(self, rid: int, line: bytes) -> dict[str, Any]:
        """Send ``line`` (a request with id ``rid``, the next one, and its newline) and wait
        for its reply."""
        if self._closed is not None:
            raise ConnectionError(str(self._closed))
        self._next_id = rid
        pending = _Pending()
        self._pending[rid] = pending
        self._outbox.append(line)
        self._outbox_ready.set()
        try:
            await pending.done.wait()
        finally:
            self._pending.pop(rid, None)
        if pending.reply is None:
            raise ConnectionError(str(self._closed))
        return pending.reply

    async def put(self, key: str, value: bytes) -> None:
        rid = self._next_id + 1
        error = _put_outcome(await self._call(rid, _put_line(rid, key, value)))
        if error is not None:
            raise error

    def put_nowait(
        self,
        key: str,
        value: bytes,
        on_done: Callable[[Exception | None], None],
        *,
        plain: bool = False,
    ) -> None:
        """Start a put without waiting for it: ``on_done(None)`` runs in the reader task
        once the put has committed, ``on_done(error)`` once it has failed (PutRejected or
        ConnectionError); it must not block. Raises ConnectionError at once if the
        connection is already lost. ``plain``: the caller vouches that ``value`` holds only
        what a JSON string holds as it is (``make_value``'s do), so it is not checked."""
        if self._closed is not None:
            raise ConnectionError(str(self._closed))
        rid = self._next_id = self._next_id + 1
        self._put_callbacks[rid] = on_done
        self._outbox.append(_put_line(rid, key, value, plain=plain))
        self._outbox_ready.set()

    async def status(self) -> NodeStatus:
        reply = await self.request("status")
        return NodeStatus(
            is_leader=reply.get("state") == "leader",
            term=reply.get("term"),
            leader_since=reply.get("leader_since"),
        )

    async def aclose(self) -> None:
        self._fail(ConnectionError("client closed"))
        trio.lowlevel.notify_closing(self._raw)  # ends a wait of the reader or the writer
        self._raw.close()
        await self._stream.aclose()


_JSON_PLAIN = bytes(b for b in range(0x20, 0x7F) if b not in b'"\\')
"""The bytes a JSON string holds as they are: printable ASCII but the quote and backslash."""


def _put_line(rid: int, key: str, value: bytes, *, plain: bool = False) -> bytes:
    """``request("put", key=key, value=value.decode("ascii"))``'s line, byte for byte, with
    its newline. A value with nothing to escape (``plain``, or found so) is quoted as it is:
    at 1 KB, JSON escaping cost the client 2 µs a write, about a quarter of what it spends
    on one, and looking for what to escape 0.5 µs."""
    if plain or not value.translate(None, _JSON_PLAIN):
        quoted = b'"' + value + b'"'
    else:
        quoted = _ENCODE_STR(value.decode("ascii")).encode()
    key_json = _ENCODE_STR(key).encode()
    return b'{"id":%d,"op":"put","key":%s,"value":%s}\n' % (rid, key_json, quoted)


# The reply to a put that committed, as both nodes word it; anything else is parsed whole.
_COMMITTED = re.compile(rb'\{"id":(\d+),"ok":true[,}]')


def _put_outcome(reply: dict[str, Any]) -> PutRejected | None:
    """None for a put the node committed, else the PutRejected to raise."""
    if reply.get("ok"):
        return None
    return PutRejected(str(reply.get("error")), reply.get("leader"))


@asynccontextmanager
async def open_json_lines_target(port: int, host: str = LOOPBACK) -> AsyncIterator[JsonLinesTarget]:
    stream = await trio.open_tcp_stream(host, port)
    async with trio.open_nursery() as nursery:
        target = JsonLinesTarget(stream, nursery)
        try:
            yield target
        finally:
            await target.aclose()
            nursery.cancel_scope.cancel()


# ---------------------------------------------------------------------------------------------
# Helpers on top of the interfaces


async def find_leader(
    targets: dict[str, Target], *, poll_s: float = 0.005
) -> tuple[str, NodeStatus, float]:
    """Poll ``targets`` until one leads; return its name, status and the time it was seen.

    A node whose connection fails is skipped (it may have been killed). No time limit: wrap
    the call in ``trio.fail_after``.
    """
    while True:
        for name, target in targets.items():
            try:
                status = await target.status()
            except ConnectionError:
                continue
            if status.is_leader:
                return name, status, time.monotonic()
        await trio.sleep(poll_s)


async def wait_writable(target: Target, *, key: str = "probe") -> None:
    """Put until one put commits (the leader has its followers and commits in its term).

    No time limit: wrap the call in ``trio.fail_after``.
    """
    while True:
        try:
            await target.put(key, b"probe")
        except PutRejected:
            await trio.sleep(0.05)
        else:
            return


def make_value(size: int, seq: int) -> bytes:
    """``size`` ASCII bytes that differ from one write to the next, plain in JSON."""
    head = b"%x-" % seq
    if size < len(head):
        return _fill(size)
    return head + _fill(size - len(head))


@functools.cache
def _fill(size: int) -> bytes:
    return b"v" * size


# ---------------------------------------------------------------------------------------------
# A cluster of node processes


class ProcessCluster(Cluster):
    """Node processes started with :func:`spawn_node`; ``connect`` is given by the launcher."""

    def __init__(
        self,
        nodes: Sequence[NodeProcess],
        connect: Callable[[NodeProcess], AbstractAsyncContextManager[Target]],
    ) -> None:
        self._nodes = {node.name: node for node in nodes}
        self._connect = connect

    @property
    def names(self) -> list[str]:
        return list(self._nodes)

    def node(self, name: str) -> NodeProcess:
        return self._nodes[name]

    def connect(self, name: str) -> AbstractAsyncContextManager[Target]:
        return self._connect(self._nodes[name])

    def kill(self, name: str) -> None:
        self._nodes[name].kill()

    def terminate(self, name: str) -> None:
        self._nodes[name].terminate()

    def pids(self) -> dict[str, int]:
        return {name: node.process.pid for name, node in self._nodes.items()}


def add_cluster_options(
    parser: argparse.ArgumentParser, *, fsync: str, peer: str, peer_help: str
) -> None:
    """``--fsync``, ``--peer`` and ``--nodes``, as every Raft benchmark takes them."""
    parser.add_argument(
        "--fsync",
        choices=["on", "off", "both"],
        default=fsync,
        help=f"Prism's fsync (default: {fsync}); PySyncObj never fsyncs",
    )
    parser.add_argument(
        "--peer",
        choices=["pysyncobj", "none"],
        default=peer,
        help=f"{peer_help} (default: {peer})",
    )
    parser.add_argument("--nodes", type=int, default=3, help="cluster size (default: 3)")


def add_write_stream_options(parser: argparse.ArgumentParser) -> None:
    """The steady write stream of the failover and stability benchmarks."""
    parser.add_argument(
        "--write-interval-ms",
        type=float,
        default=10.0,
        help="one write every this many ms (default: 10)",
    )
    parser.add_argument(
        "--write-timeout", type=float, default=2.0, help="give up on one write (default: 2 s)"
    )
    parser.add_argument(
        "--value-bytes", type=int, default=100, help="value size in bytes (default: 100)"
    )
