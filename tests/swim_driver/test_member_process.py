"""``python -m prism.swim.member_process``: one SWIM member per OS process on loopback,
driven through its JSON-lines contract (stdin commands, stdout ready line and events).

Each child's stdout is read by a thread into a queue; waits poll that queue with a
deadline. Every child is killed in a ``finally``.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
STATE_OF_KIND = {
    "joined": "alive",
    "alive_again": "alive",
    "updated": "alive",
    "suspect": "suspect",
    "dead": "dead",
    "left": "left",
}


class Member:
    """One child process and everything it printed so far."""

    def __init__(self, name: str, *args: str) -> None:
        self.name = name
        self.process = subprocess.Popen(
            [sys.executable, "-m", "prism.swim.member_process", "--name", name, *args],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.output: list[dict[str, Any]] = []
        self.stderr: list[bytes] = []
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        self.ready = self.wait_for(lambda line: "ready" in line, timeout_s=20)
        self.address: str = self.ready["address"]

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self.lines.put(json.loads(raw))
        self.lines.put(None)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        self.stderr.extend(self.process.stderr)

    def take(self, *, block_s: float = 0.0) -> None:
        """Move what the child printed into ``output`` (waiting up to ``block_s`` for a
        first line)."""
        try:
            line = self.lines.get(timeout=block_s) if block_s else self.lines.get_nowait()
            while True:
                if line is not None:
                    self.output.append(line)
                line = self.lines.get_nowait()
        except queue.Empty:
            return

    def wait_for(
        self, match: Callable[[dict[str, Any]], bool], *, timeout_s: float = 10
    ) -> dict[str, Any]:
        """The first line (printed so far or later) that ``match`` accepts."""
        deadline = time.monotonic() + timeout_s
        checked = 0
        while True:
            for line in self.output[checked:]:
                if match(line):
                    return line
            checked = len(self.output)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.name}: no matching line in {self.output}")
            self.take(block_s=min(left, 0.1))

    def send(self, command: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command).encode() + b"\n")
        self.process.stdin.flush()

    def view(self) -> dict[str, str]:
        """The state of each member this one has printed events about."""
        self.take()
        seen: dict[str, str] = {}
        for line in self.output:
            kind = line.get("kind")
            if kind in STATE_OF_KIND:
                seen[line["name"]] = STATE_OF_KIND[kind]
            elif kind == "reaped":
                seen.pop(line["name"], None)
        return seen

    def meta_of(self, name: str) -> str | None:
        self.take()
        metas = [line["meta"] for line in self.output if line.get("name") == name]
        return metas[-1] if metas else None

    def exit_code(self, timeout_s: float = 10) -> int:
        return self.process.wait(timeout=timeout_s)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        for pipe in (self.process.stdin, self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


def wait_until(predicate: Callable[[], bool], *, timeout_s: float, members: list[Member]) -> None:
    """Poll ``predicate`` while reading the members' output, until it holds or time is up."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            views = {m.name: m.view() for m in members}
            raise AssertionError(f"condition not reached within {timeout_s} s: {views}")
        members[0].take(block_s=0.05)


@contextmanager
def cluster() -> Iterator[dict[str, Member]]:
    members: dict[str, Member] = {}
    try:
        yield members
    finally:
        for member in members.values():
            member.kill()


def sees(observers: list[Member], subject: str, state: str) -> Callable[[], bool]:
    return lambda: all(o.view().get(subject) == state for o in observers)


def alive_to(observer: Member, names: list[str]) -> Callable[[], bool]:
    return lambda: all(observer.view().get(name) == "alive" for name in names)


def test_member_processes_join_update_crash_leave_and_restart() -> None:
    with cluster() as m:
        m["a"] = Member("a", "--bind", "127.0.0.1:0", "--meta", "first", "--seed", "1")
        for name in ["b", "c", "d"]:
            m[name] = Member(name, "--bind", "127.0.0.1:0", "--join", m["a"].address)
        everyone = list(m.values())
        for member in everyone:
            others = [o.name for o in everyone if o is not member]
            wait_until(alive_to(member, others), timeout_s=10, members=everyone)
        assert m["b"].meta_of("a") == "first"

        m["b"].send({"op": "meta", "value": "role=api ✓"})
        others = [m["a"], m["c"], m["d"]]
        # Gossip carries it in a few 100 ms rounds; a member the epidemic happens to miss
        # gets it from the next push-pull (15 s in the local profile).
        wait_until(
            lambda: all(o.meta_of("b") == "role=api ✓" for o in others),
            timeout_s=20,
            members=everyone,
        )
        m["a"].send({"op": "members"})
        listing = m["a"].wait_for(lambda line: "members" in line)["members"]
        rows = {row["name"]: row for row in listing}
        assert set(rows) == {"a", "b", "c", "d"}
        assert {row["state"] for row in listing} == {"alive"}
        assert rows["b"]["meta"] == "role=api ✓"
        assert rows["b"]["incarnation"] >= 1
        assert rows["b"]["address"] == m["b"].address

        # kill -9: dead at every survivor.
        d_address = m["d"].address
        m["d"].process.send_signal(signal.SIGKILL)
        m["d"].exit_code()
        survivors = [m["a"], m["b"], m["c"]]
        wait_until(sees(survivors, "d", "dead"), timeout_s=30, members=survivors)

        # A graceful leave: left (not dead) everywhere, and exit status 0.
        m["c"].send({"op": "leave"})
        assert m["c"].exit_code() == 0
        wait_until(sees([m["a"], m["b"]], "c", "left"), timeout_s=5, members=survivors)

        # d restarts at its old address: alive again everywhere.
        m["d"].kill()
        m["d"] = Member("d", "--bind", d_address, "--join", m["a"].address)
        wait_until(sees([m["a"], m["b"]], "d", "alive"), timeout_s=10, members=[m["a"], m["b"]])
        wait_until(alive_to(m["d"], ["a", "b"]), timeout_s=10, members=[m["d"]])

        # SIGTERM leaves gracefully too.
        m["b"].process.send_signal(signal.SIGTERM)
        assert m["b"].exit_code() == 0
        wait_until(sees([m["a"], m["d"]], "b", "left"), timeout_s=5, members=[m["a"], m["d"]])
        for observer in [m["a"], m["d"]]:
            kinds = [line["kind"] for line in observer.output if line.get("name") == "b"]
            assert "dead" not in kinds
        for line in m["a"].output:
            if "kind" in line:
                assert set(line) == {"t", "kind", "name", "address", "incarnation", "meta"}
                assert isinstance(line["t"], float)


def test_member_process_input_errors_eof_and_name_conflicts() -> None:
    with cluster() as m:
        m["a"] = Member("a", "--bind", "127.0.0.1:0")
        m["a"].send({"op": "bogus"})
        m["a"].wait_for(lambda line: "unknown op" in line.get("error", ""))
        assert m["a"].process.stdin is not None
        m["a"].process.stdin.write(b"{not json\n")
        m["a"].process.stdin.flush()
        m["a"].wait_for(lambda line: "JSON object" in line.get("error", ""))
        m["a"].send({"op": "meta", "value": "x" * 513})
        m["a"].wait_for(lambda line: "exceeds" in line.get("error", ""))
        m["a"].process.stdin.write(b"[" * 200_000 + b"\n")  # past the 64 KiB line limit
        m["a"].process.stdin.flush()
        m["a"].wait_for(lambda line: "longer than" in line.get("error", ""))
        m["a"].send({"op": "members"})
        assert [
            row["name"] for row in m["a"].wait_for(lambda line: "members" in line)["members"]
        ] == ["a"]

        # End of stdin: b keeps running, and still hears news.
        m["b"] = Member("b", "--bind", "127.0.0.1:0", "--join", m["a"].address)
        assert m["b"].process.stdin is not None
        m["b"].process.stdin.close()
        wait_until(sees([m["a"]], "b", "alive"), timeout_s=10, members=[m["a"]])
        m["a"].send({"op": "meta", "value": "after eof"})
        wait_until(lambda: m["b"].meta_of("a") == "after eof", timeout_s=20, members=[m["b"]])
        assert m["b"].process.poll() is None

        # With --exit-on-stdin-eof, the end of stdin is a graceful leave.
        m["c"] = Member(
            "c", "--bind", "127.0.0.1:0", "--join", m["a"].address, "--exit-on-stdin-eof"
        )
        # a knows c before c has a's answer: a leave right then still reaches a (the seed).
        wait_until(sees([m["a"]], "c", "alive"), timeout_s=10, members=[m["a"]])
        assert m["c"].process.stdin is not None
        m["c"].process.stdin.close()
        assert m["c"].exit_code() == 0
        wait_until(sees([m["a"]], "c", "left"), timeout_s=10, members=[m["a"]])

        # A second live "b" elsewhere is refused: name_conflict printed, exit status 1.
        m["twin"] = Member("b", "--bind", "127.0.0.1:0", "--join", m["a"].address)
        conflict = m["twin"].wait_for(lambda line: line.get("kind") == "name_conflict")
        assert conflict["address"] == m["b"].address
        assert m["twin"].exit_code() == 1
        assert b"held by a live member" in b"".join(m["twin"].stderr)
        assert m["a"].view().get("b") == "alive"

        m["a"].process.send_signal(signal.SIGINT)
        assert m["a"].exit_code() == 0


@pytest.mark.parametrize(
    "args",
    [
        ["--name", "a"],
        ["--name", "a", "--bind", "nowhere"],
        ["--name", "a", "--bind", "127.0.0.1:0", "--join", "127.0.0.1:0"],
        ["--name", "a", "--bind", "0.0.0.0:0"],
        ["--name", "", "--bind", "127.0.0.1:0"],
        ["--name", "a", "--bind", "127.0.0.1:0", "--profile", "fast"],
        ["--name", "a", "--bind", "127.0.0.1:0", "--meta", "x" * 600],
    ],
)
def test_member_process_bad_arguments_exit_2_with_one_line(args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "prism.swim.member_process", *args],
        cwd=ROOT,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == b""
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("python -m prism.swim.member_process: error:")
