"""``Note``: the trace events both cores emit as data (cores never log)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Note:
    """A trace event, ``subsystem.event`` with key=value fields. Cores never log; drivers log
    these and the simulator writes them to its timeline."""

    event: str
    fields: dict[str, str | int] = field(default_factory=dict)

    def render(self) -> str:
        pairs = " ".join(f"{k}={v}" for k, v in self.fields.items())
        return f"{self.event} {pairs}".rstrip()
