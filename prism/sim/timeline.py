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


@final
class Timeline:
    def __init__(self) -> None:
        self.entries: list[TimelineEntry] = []
        self._digest = hashlib.blake2b(digest_size=16)
        self.messages = 0

    def add(self, time_ns: int, node: str, text: str, *, verbose: bool = False) -> None:
        entry = TimelineEntry(time_ns, node, text, verbose)
        self.entries.append(entry)
        self._digest.update(f"{time_ns} {node} {text}\n".encode())

    def digest_message(self, time_ns: int, src: str, dst: str, message: RaftMessage) -> None:
        self.messages += 1
        extra = len(message.entries) if isinstance(message, AppendEntries) else 0
        self._digest.update(
            f"{time_ns} {src}>{dst} {type(message).__name__} {message.term} {extra}\n".encode()
        )

    def digest(self) -> str:
        return self._digest.hexdigest()

    def render(self, *, verbose: bool = False) -> list[str]:
        return [e.render() for e in self.entries if verbose or not e.verbose]
