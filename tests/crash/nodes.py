"""Real ``python -m prism.raft.serve`` processes on loopback for the crash tests: free ports,
a restartable node process, and a JSON-lines client connection."""

from __future__ import annotations

import json
import random
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, TextIO

import trio

from benchmarks._raft_harness import read_line

LOOPBACK: Final = "127.0.0.1"
SERVER_REQUEST_TIMEOUT_S: Final = 2.0
START_TIMEOUT_S: Final = 20.0
STOP_TIMEOUT_S: Final = 15.0
REPO_ROOT: Final = Path(__file__).resolve().parents[2]

Reply = dict[str, Any]

CONNECTION_ERRORS: Final = (
    OSError,  # ConnectionError and ConnectionRefusedError among them
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    trio.TooSlowError,
)


def free_ports(count: int) -> list[int]:
    """``count`` port numbers free for both TCP and UDP on loopback, taken below the
    ephemeral range: a killed node's ports cannot be handed to an outgoing connection (ours)
    while it is down, so it can always bind them again when it restarts."""
    low, _high = (
        int(p) for p in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    )
    floor = 10_000
    if low - floor < 1000:
        raise RuntimeError(f"the ephemeral range starts at {low}: no room below it for ports")
    picker = random.Random()  # not the seeded one: concurrent runs must not pick alike
    ports: list[int] = []
    for port in picker.sample(range(floor, low), low - floor):
        if _bindable(port):
            ports.append(port)
            if len(ports) == count:
                return ports
    raise RuntimeError(f"no {count} free ports between {floor} and {low}")


def _bindable(port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind((LOOPBACK, port))
            except OSError:
                return False
    return True


def _open_log(path: Path, banner: str) -> TextIO:
    log = path.open("a")
    log.write(f"\n===== {banner} =====\n")
    log.flush()
    return log


async def _wait_and_close(process: trio.Process) -> None:
    """Wait for the process to exit, then close our ends of its pipes."""
    await process.wait()
    for pipe in (process.stdin, process.stdout):
        if pipe is not None:
            await pipe.aclose()


class NodeProcess:
    """One ``prism.raft.serve`` process, restartable from its data directory on the same
    ports; its stderr from every start goes to ``<name>.log``."""

    def __init__(
        self,
        name: str,
        raft_ports: Mapping[str, int],
        client_ports: Mapping[str, int],
        workdir: Path,
    ) -> None:
        self.name = name
        self.raft_port = raft_ports[name]
        self.client_port = client_ports[name]
        self.data_dir = workdir / name
        self.log_path = workdir / f"{name}.log"
        self.process: trio.Process | None = None
        self.starts = 0
        self.argv = [
            sys.executable,
            "-m",
            "prism.raft.serve",
            "--id",
            name,
            "--listen",
            f"{LOOPBACK}:{self.raft_port}",
            "--client",
            f"{LOOPBACK}:{self.client_port}",
            "--data-dir",
            str(self.data_dir),
            "--fsync",
            "on",
            "--request-timeout-s",
            str(SERVER_REQUEST_TIMEOUT_S),
            "--exit-on-stdin-eof",
        ]
        for other in raft_ports:
            if other != name:
                self.argv += ["--peer", f"{other}={LOOPBACK}:{raft_ports[other]}"]
                self.argv += ["--peer-client", f"{other}={LOOPBACK}:{client_ports[other]}"]

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    async def start(self) -> None:
        """Start the process and wait for its hello line (storage opened, ports bound)."""
        assert self.process is None, f"{self.name} is already running"
        self.starts += 1
        log = _open_log(self.log_path, f"start {self.starts}")
        try:
            self.process = await trio.lowlevel.open_process(
                self.argv,
                stdin=subprocess.PIPE,  # its end of file stops the node if this test dies
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=REPO_ROOT,
            )
        finally:
            log.close()
        assert self.process.stdout is not None
        try:
            with trio.fail_after(START_TIMEOUT_S):
                line = await read_line(self.process.stdout)
            hello = json.loads(line)
        except (trio.TooSlowError, ValueError) as exc:
            raise AssertionError(
                f"{self.name} did not start (start {self.starts}, from its data directory): "
                f"{exc!r}; its log ends with:\n{self.log_tail()}"
            ) from exc
        assert hello["raft_port"] == self.raft_port, hello
        assert hello["client_port"] == self.client_port, hello

    def check_alive(self) -> None:
        process = self.process
        assert process is not None, f"{self.name} is not running"
        if process.poll() is not None:
            raise AssertionError(
                f"{self.name} exited by itself with status {process.returncode}; "
                f"its log ends with:\n{self.log_tail()}"
            )

    async def kill(self) -> None:
        """SIGKILL (no goodbye; the kernel closes its sockets) and reap it."""
        self.check_alive()
        process = self.process
        assert process is not None
        process.kill()
        await _wait_and_close(process)
        assert process.returncode == -signal.SIGKILL, process.returncode
        self.process = None

    def terminate(self) -> None:
        """SIGTERM: the node stops gracefully (a write in progress completes first)."""
        self.check_alive()
        assert self.process is not None
        self.process.terminate()

    async def wait_stopped(self) -> int:
        process = self.process
        assert process is not None
        with trio.fail_after(STOP_TIMEOUT_S):
            await _wait_and_close(process)
        self.process = None
        code = process.returncode
        assert code is not None
        return code

    async def reap(self) -> None:
        """Kill the process if it still runs and wait for it: safe under cancellation."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            await _wait_and_close(process)


class LineConnection:
    """One JSON-lines connection with one request outstanding at a time."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._buffer = b""

    @classmethod
    async def open(cls, port: int) -> LineConnection:
        return cls(await trio.open_tcp_stream(LOOPBACK, port))

    async def call(self, request: Mapping[str, Any]) -> Reply:
        await self._stream.send_all(json.dumps(request).encode() + b"\n")
        while b"\n" not in self._buffer:
            chunk = await self._stream.receive_some(65_536)
            if not chunk:
                raise ConnectionError("the node closed the connection")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        reply = json.loads(line)
        assert isinstance(reply, dict), f"not a reply: {line!r}"
        return reply

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            await self._stream.aclose()


async def close_all(connections: dict[str, LineConnection]) -> None:
    while connections:
        _name, connection = connections.popitem()
        await connection.aclose()


async def status_of(node: NodeProcess) -> Reply | None:
    """The node's ``status`` reply, or None if it does not answer within a second."""
    connection: LineConnection | None = None
    try:
        with trio.fail_after(1.0):
            connection = await LineConnection.open(node.client_port)
            return await connection.call({"op": "status"})
    except CONNECTION_ERRORS:
        return None
    finally:
        if connection is not None:
            await connection.aclose()


async def find_leader(nodes: Mapping[str, NodeProcess]) -> str:
    """Poll ``status`` until a node says it leads. No deadline of its own."""
    while True:
        for name, node in nodes.items():
            status = await status_of(node)
            if status is not None and status.get("state") == "leader":
                return name
        await trio.sleep(0.01)
