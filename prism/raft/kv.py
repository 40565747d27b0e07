"""A small key-value state machine driven by the Raft log: put, delete, compare-and-set.

Commands are JSON objects (the cores may not depend on msgpack); values are strings.
Exactly-once: an entry that carries a ``client_id`` and ``seq`` is applied at most once per
client and sequence number; a retry of the last applied command gets the cached result
(thesis §6.3). Sessions are kept for every client seen; expiring them deterministically
(by log time, as LogCabin does) comes with the daemon's client sessions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal, final

from prism.raft.messages import Entry, EntryKind

Op = Literal["put", "delete", "cas"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    op: Op
    key: str
    value: str | None = None
    expected: str | None = None  # for cas: the value required now; None means "absent"

    def encode(self) -> bytes:
        body: dict[str, str | None] = {"op": self.op, "key": self.key}
        if self.op != "delete":
            body["value"] = self.value
        if self.op == "cas":
            body["expected"] = self.expected
        return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> Command:
        """Parse a command; raises ValueError on anything malformed."""
        try:
            body = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"command is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise ValueError("command must be a JSON object")
        op, key = body.get("op"), body.get("key")
        value, expected = body.get("value"), body.get("expected")
        if op not in ("put", "delete", "cas") or not isinstance(key, str):
            raise ValueError("command needs op put|delete|cas and a string key")
        if op != "delete" and not isinstance(value, str):
            raise ValueError(f"{op} needs a string value")
        if expected is not None and not isinstance(expected, str):
            raise ValueError("expected must be a string or null")
        return cls(op=op, key=key, value=value, expected=expected)


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What applying one entry did. ``ok`` is False for a failed cas or a bad command."""

    index: int
    ok: bool
    value: str | None = None  # the value now held at the key
    duplicate: bool = False  # a retried command: the first application's result, again
    error: str = ""


@final
class KVStateMachine:
    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.applied_index = 0
        # client id -> (last applied seq, its result)
        self._sessions: dict[str, tuple[int, ApplyResult]] = {}

    def get(self, key: str) -> str | None:
        return self.data.get(key)

    def snapshot(self) -> bytes:
        """The whole state (data and sessions) as of ``applied_index``."""
        sessions = {
            client: [seq, result.ok, result.value, result.error, result.index]
            for client, (seq, result) in self._sessions.items()
        }
        body = {"applied": self.applied_index, "data": self.data, "sessions": sessions}
        return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()

    def restore(self, data: bytes) -> None:
        """Replace the whole state with a ``snapshot()``; raises ValueError if malformed."""
        try:
            body = json.loads(data)
            applied, values, sessions = body["applied"], body["data"], body["sessions"]
            if type(applied) is not int or not isinstance(values, dict):
                raise TypeError("bad fields")
            if not all(type(k) is str and type(v) is str for k, v in values.items()):
                raise TypeError("values must be strings")
            restored = {
                client: (seq, ApplyResult(index, ok, value, error=error))
                for client, (seq, ok, value, error, index) in sessions.items()
            }
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ValueError(f"not a key-value snapshot: {exc}") from None
        self.applied_index = applied
        self.data = dict(values)
        self._sessions = restored

    def apply(self, entry: Entry) -> ApplyResult:
        """Apply the next committed entry; entries must come in index order, once each."""
        if entry.index != self.applied_index + 1:
            raise ValueError(f"applying {entry.index} after {self.applied_index}")
        self.applied_index = entry.index
        if entry.kind is not EntryKind.NORMAL:  # no-ops and membership are Raft's own
            return ApplyResult(entry.index, True)
        if entry.client_id:
            session = self._sessions.get(entry.client_id)
            if session is not None and entry.seq <= session[0]:
                first = session[1]
                return ApplyResult(
                    entry.index, first.ok, first.value, duplicate=True, error=first.error
                )
        result = self._execute(entry)
        if entry.client_id:
            self._sessions[entry.client_id] = (entry.seq, result)
        return result

    def _execute(self, entry: Entry) -> ApplyResult:
        try:
            command = Command.decode(entry.data)
        except ValueError as exc:
            return ApplyResult(entry.index, False, error=str(exc))
        current = self.data.get(command.key)
        if command.op == "put":
            assert command.value is not None
            self.data[command.key] = command.value
            return ApplyResult(entry.index, True, command.value)
        if command.op == "delete":
            self.data.pop(command.key, None)
            return ApplyResult(entry.index, True, None)
        if current != command.expected:
            return ApplyResult(entry.index, False, current)
        assert command.value is not None
        self.data[command.key] = command.value
        return ApplyResult(entry.index, True, command.value)
