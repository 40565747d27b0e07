"""The run's event log: lines a person can read, and a digest that proves determinism.

Every timeline line and every delivered message is folded into a running BLAKE2b digest,
so two runs with the same seed must end with the same digest, byte for byte; a leak of wall
clock, global random or set order shows up as a different digest.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import final

from prism.raft.messages import AppendEntries, RaftMessage
from prism.sim.loop import NS_PER_S


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    time_ns: int
    node: str  # "-" for the network or the scenario itself
    text: str
    verbose: bool = False  # shown only with --verbose

    def render(self) -> str:
        return f"{self.time_ns / NS_PER_S:9.3f}s  {self.node:<4} {self.text}"


_FLUSH_LINES = 4096  # digest lines buffered before they are hashed in one update


@final
class Timeline:
    """Digest lines are buffered and hashed in batches: BLAKE2b over the concatenation is
    the same as one update per line, and one call per thousands of messages is cheaper."""

    def __init__(self) -> None:
        self.entries: list[TimelineEntry] = []
        self._digest = hashlib.blake2b(digest_size=16)
        self._pending: list[str] = []
        self.messages = 0

    def add(self, time_ns: int, node: str, text: str, *, verbose: bool = False) -> None:
        entry = TimelineEntry(time_ns, node, text, verbose)
        self.entries.append(entry)
        self._pending.append(f"{time_ns} {node} {text}\n")
        if len(self._pending) >= _FLUSH_LINES:
            self._flush()

    def digest_message(self, time_ns: int, src: str, dst: str, message: RaftMessage) -> None:
        self.messages += 1
        extra = len(message.entries) if isinstance(message, AppendEntries) else 0
        pending = self._pending
        pending.append(f"{time_ns} {src}>{dst} {type(message).__name__} {message.term} {extra}\n")
        if len(pending) >= _FLUSH_LINES:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._digest.update("".join(self._pending).encode())
            self._pending = []

    def digest(self) -> str:
        self._flush()
        return self._digest.hexdigest()

    def render(self, *, verbose: bool = False) -> list[str]:
        return [e.render() for e in self.entries if verbose or not e.verbose]
