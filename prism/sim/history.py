"""Client histories of the simulated key-value register, in a Jepsen-like shape.

A history is the sequence of events clients observed: each operation is an ``invoke`` event
followed, on the same process, by at most one completion: ``ok`` (it happened, with this
result), ``fail`` (it definitely did not happen) or ``info`` (unknown: a timeout or a crash;
it may take effect at any later time, or never). Times are simulated nanoseconds.

Values, by operation:

* ``write``: the int written, on the invoke and on an ``ok``;
* ``read``: None on the invoke; on an ``ok``, the int read, or None if the key was absent;
* ``cas``: ``(expected, new)`` on the invoke and on the completion; ``expected`` None means
  "the key is absent".

A ``fail`` or ``info`` completion may carry None instead of the value, since nothing is known
from it. The JSON form of an event is ``{"process", "type", "f", "key", "value", "time"}``
with a cas value as a two-element list; ``from_json`` validates it strictly.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, final

OpType = Literal["invoke", "ok", "fail", "info"]
OpFunction = Literal["read", "write", "cas"]
CompletionType = Literal["ok", "fail", "info"]
Value = int | None | tuple[int | None, int]

_OP_TYPES: dict[str, OpType] = {"invoke": "invoke", "ok": "ok", "fail": "fail", "info": "info"}
_COMPLETION_TYPES: dict[str, CompletionType] = {"ok": "ok", "fail": "fail", "info": "info"}
_FUNCTIONS: dict[str, OpFunction] = {"read": "read", "write": "write", "cas": "cas"}
_FIELDS = ("process", "type", "f", "key", "value", "time")


def _is_int(value: object) -> bool:
    # bool is a subclass of int, but True is not a register value nor a process id.
    return isinstance(value, int) and not isinstance(value, bool)


def _value_problem(f: OpFunction, op_type: OpType, value: object) -> str | None:
    """Why ``value`` is not acceptable for this function and event type, or None if it is."""
    if f == "write":
        if _is_int(value) or (value is None and op_type in ("fail", "info")):
            return None
        return "a write carries the int written"
    if f == "read":
        if op_type == "invoke":
            return None if value is None else "a read invoke carries None"
        return None if value is None or _is_int(value) else "a read returns an int or None"
    if value is None and op_type in ("fail", "info"):
        return None
    if (
        isinstance(value, tuple)
        and len(value) == 2
        and (value[0] is None or _is_int(value[0]))
        and _is_int(value[1])
    ):
        return None
    return "a cas carries (expected, new): expected an int or None, new an int"


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryEvent:
    """One event of a client history; validated on construction (ValueError)."""

    process: int
    type: OpType
    f: OpFunction
    key: str
    value: Value
    time: int

    def __post_init__(self) -> None:
        if not _is_int(self.process) or self.process < 0:
            raise ValueError(f"process must be a non-negative int, got {self.process!r}")
        if not isinstance(self.type, str) or self.type not in _OP_TYPES:
            raise ValueError(f"type must be one of invoke/ok/fail/info, got {self.type!r}")
        if not isinstance(self.f, str) or self.f not in _FUNCTIONS:
            raise ValueError(f"f must be one of read/write/cas, got {self.f!r}")
        if not isinstance(self.key, str):
            raise ValueError(f"key must be a str, got {self.key!r}")
        if not _is_int(self.time) or self.time < 0:
            raise ValueError(f"time must be a non-negative int (ns), got {self.time!r}")
        problem = _value_problem(self.f, self.type, self.value)
        if problem is not None:
            raise ValueError(f"bad value {self.value!r} for {self.f} {self.type}: {problem}")


def to_json(event: HistoryEvent) -> dict[str, Any]:
    """The Jepsen-like dict of ``event``; a cas value becomes a two-element list."""
    value: Any = list(event.value) if isinstance(event.value, tuple) else event.value
    return {
        "process": event.process,
        "type": event.type,
        "f": event.f,
        "key": event.key,
        "value": value,
        "time": event.time,
    }


def from_json(data: object) -> HistoryEvent:
    """Parse and validate the dict produced by ``to_json``; ValueError on any bad input."""
    if not isinstance(data, Mapping):
        raise ValueError(f"a history event must be a JSON object, got {type(data).__name__}")
    missing = [name for name in _FIELDS if name not in data]
    if missing:
        raise ValueError(f"history event lacks field(s) {', '.join(missing)}")
    extra = sorted(str(name) for name in data if name not in _FIELDS)
    if extra:
        raise ValueError(f"history event has unknown field(s) {', '.join(extra)}")
    raw_type = data["type"]
    op_type = _OP_TYPES.get(raw_type) if isinstance(raw_type, str) else None
    if op_type is None:
        raise ValueError(f"type must be one of invoke/ok/fail/info, got {raw_type!r}")
    raw_f = data["f"]
    f = _FUNCTIONS.get(raw_f) if isinstance(raw_f, str) else None
    if f is None:
        raise ValueError(f"f must be one of read/write/cas, got {raw_f!r}")
    raw_value = data["value"]
    value: Any = tuple(raw_value) if isinstance(raw_value, list) else raw_value
    if isinstance(raw_value, list) and f != "cas":
        raise ValueError(f"bad value {raw_value!r} for {f} {op_type}: only a cas carries a list")
    return HistoryEvent(
        process=data["process"],
        type=op_type,
        f=f,
        key=data["key"],
        value=value,
        time=data["time"],
    )


class _TextSink(Protocol):
    def write(self, text: str, /) -> object: ...


def write_jsonl(events: Iterable[HistoryEvent], file: _TextSink) -> None:
    """Write one compact JSON object per line."""
    for event in events:
        file.write(json.dumps(to_json(event), separators=(",", ":")) + "\n")


def read_jsonl(lines: Iterable[str]) -> list[HistoryEvent]:
    """Parse JSON lines (blank lines are skipped); ValueError names the bad line."""
    events: list[HistoryEvent] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            events.append(from_json(json.loads(line)))
        except ValueError as error:  # json.JSONDecodeError is a ValueError too
            raise ValueError(f"line {number}: {error}") from error
    return events


@final
class History:
    """An append-only recorder of client events.

    A process has at most one pending operation: ``invoke`` while one is pending, or
    ``complete`` with none pending, raises RuntimeError.
    """

    def __init__(self) -> None:
        self._events: list[HistoryEvent] = []
        self._pending: dict[int, HistoryEvent] = {}

    def invoke(self, process: int, f: OpFunction, key: str, value: Value, time: int) -> None:
        """Record that ``process`` starts operation ``f`` on ``key`` at ``time``."""
        if process in self._pending:
            raise RuntimeError(f"process {process} invoked {f} while an operation is pending")
        event = HistoryEvent(process=process, type="invoke", f=f, key=key, value=value, time=time)
        self._pending[process] = event
        self._events.append(event)

    def complete(self, process: int, type: CompletionType, value: Value, time: int) -> None:
        """Record the outcome of the pending operation of ``process``."""
        invoked = self._pending.get(process)
        if invoked is None:
            raise RuntimeError(f"process {process} completed an operation it never invoked")
        if not isinstance(type, str) or type not in _COMPLETION_TYPES:
            raise ValueError(f"a completion type is ok, fail or info, got {type!r}")
        if _is_int(time) and time < invoked.time:
            raise ValueError(
                f"process {process} completed at t={time} before its invoke at t={invoked.time}"
            )
        event = HistoryEvent(
            process=process, type=type, f=invoked.f, key=invoked.key, value=value, time=time
        )
        del self._pending[process]
        self._events.append(event)

    @property
    def events(self) -> tuple[HistoryEvent, ...]:
        return tuple(self._events)

    def pending(self) -> tuple[HistoryEvent, ...]:
        """The invoke events still awaiting completion, in invocation order."""
        return tuple(self._pending.values())

    def __len__(self) -> int:
        return len(self._events)
