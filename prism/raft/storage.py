"""Storage of what a Raft core was told to make durable; the in-memory kind.

``MemoryStorage`` is what the simulator keeps for each node: after a crash, only what was
written here survives, exactly as only what was fsynced survives a power cut. The disk kind,
with a write-ahead log, comes with the daemon (issue 3) and passes the same checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import final

from prism.raft.messages import Entry
from prism.raft.ready import HardState


@final
class MemoryStorage:
    def __init__(self) -> None:
        self.hard_state = HardState()
        self.entries: list[Entry] = []

    def save(self, hard_state: HardState | None, entries: Sequence[Entry]) -> None:
        """Persist one Ready: replace the log from ``entries[0].index`` on, then the state."""
        if entries:
            first = entries[0].index
            if first > len(self.entries) + 1:
                raise ValueError(f"gap: storage ends at {len(self.entries)}, got {first}")
            del self.entries[first - 1 :]
            self.entries.extend(entries)
        if hard_state is not None:
            self.hard_state = hard_state
