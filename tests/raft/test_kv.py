"""The key-value state machine's exactly-once sessions (thesis §6.3), with many commands
of one client in flight, and its snapshots."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prism.raft.kv import SESSION_WINDOW, ApplyResult, Command, KVStateMachine, Op, encode_command
from prism.raft.messages import Entry


class Log:
    """Feeds a machine entries with consecutive indexes."""

    def __init__(self, kv: KVStateMachine) -> None:
        self.kv = kv

    def put(self, key: str, value: str, *, client: str = "c", seq: int = 0) -> ApplyResult:
        data = Command(op="put", key=key, value=value).encode()
        entry = Entry(term=1, index=self.kv.applied_index + 1, data=data, client_id=client, seq=seq)
        return self.kv.apply(entry)


def test_commands_of_one_client_committing_out_of_order_all_apply_once() -> None:
    """A client with several writes in flight: seq 5 may commit before seq 3. Both apply;
    a retry of 3 gets 3's own result, not the latest one's (a crash test found the old
    single-slot session answering seq 3 with seq 5's result, and never applying it)."""
    kv = KVStateMachine()
    log = Log(kv)
    assert log.put("k5", "v5", seq=5).ok
    three = log.put("k3", "v3", seq=3)
    assert three.ok
    assert not three.duplicate
    assert kv.get("k3") == "v3"
    again = log.put("k3", "v3", seq=3)
    assert again.duplicate
    assert again.ok
    assert again.value == "v3"
    assert log.put("k5", "other", seq=5).value == "v5"
    assert kv.get("k5") == "v5"


def test_a_seq_older_than_the_window_is_refused_not_acknowledged() -> None:
    kv = KVStateMachine()
    log = Log(kv)
    for seq in range(2, SESSION_WINDOW + 3):
        assert log.put(f"k{seq}", "v", seq=seq).ok
    # seq 2 was forgotten (the window moved past it); seq 1 was never applied. Neither can
    # be told apart from the other, so both are refused.
    for seq in (1, 2):
        result = log.put("late", "x", seq=seq)
        assert not result.ok
        assert "cannot be told" in result.error
    assert kv.get("late") is None
    assert log.put("k100", "again", seq=100).duplicate


def test_snapshot_round_trip_keeps_sessions() -> None:
    kv = KVStateMachine()
    log = Log(kv)
    log.put("a", "1", client="x", seq=7)
    log.put("b", "2", client="x", seq=4)
    log.put("c", "3", client="y", seq=1)
    restored = KVStateMachine()
    restored.restore(kv.snapshot())
    assert restored.data == kv.data
    assert restored.applied_index == kv.applied_index
    retry = Log(restored).put("b", "changed", client="x", seq=4)
    assert retry.duplicate
    assert retry.value == "2"
    assert restored.get("b") == "2"


@pytest.mark.parametrize(
    "data",
    [b"", b"[]", b'{"applied": 1}', b'{"applied": "1", "data": {}, "sessions": {}}', b"[" * 50_000],
)
def test_restore_rejects_what_is_not_a_snapshot(data: bytes) -> None:
    with pytest.raises(ValueError, match="not a key-value snapshot"):
        KVStateMachine().restore(data)


_TEXT = st.text()  # lone surrogates included: encode must refuse them, not mangle them


@given(
    op=st.sampled_from(["put", "delete", "cas"]),
    key=_TEXT,
    value=_TEXT,
    expected=st.none() | _TEXT,
)
def test_command_encoding_round_trips(op: Op, key: str, value: str, expected: str | None) -> None:
    command = Command(
        op=op,
        key=key,
        value=None if op == "delete" else value,
        expected=expected if op == "cas" else None,
    )
    try:
        data = command.encode()
    except UnicodeEncodeError:
        assert any(0xD800 <= ord(c) <= 0xDFFF for c in key + value + (expected or ""))
        return
    assert Command.decode(data) == command
    assert encode_command(command.op, command.key, command.value, command.expected) == data


@given(st.binary(max_size=64))
def test_decoding_garbage_raises_value_error_or_yields_the_same_bytes(data: bytes) -> None:
    """Any other exception would escape ``KVStateMachine.apply`` and stop the node."""
    try:
        command = Command.decode(data)
    except ValueError:
        return
    assert command.encode() == data  # one encoding per command: nothing was glossed over


@pytest.mark.parametrize(
    ("data", "complaint"),
    [
        (b"", "empty"),
        (b"X\x00\x00\x00\x01k", "unknown command op byte 0x58"),
        (b"P\x00\x00\x00\x05k", "truncated"),
        (b"P\x00\x00", "truncated"),
        (b"D\x00\x00\x00\x01kz", "trailing bytes"),
        (b"D\x00\x00\x00\x01\xff", "utf-8"),
    ],
)
def test_a_malformed_command_applies_as_a_failed_entry(data: bytes, complaint: str) -> None:
    """A bad command in the log (written by a buggy client) fails that entry, not the node."""
    kv = KVStateMachine()
    result = kv.apply(Entry(term=1, index=1, data=data))
    assert not result.ok
    assert complaint in result.error
    assert kv.applied_index == 1


def test_encoding_a_put_without_a_value_is_refused() -> None:
    with pytest.raises(ValueError, match="put needs a value"):
        encode_command("put", "k", None, None)


@given(
    st.one_of(
        st.binary(max_size=48).map(lambda tail: b"P" + tail),
        st.tuples(st.text(max_size=8), st.text(max_size=8)).map(
            lambda kv: _encode_or_garbage(kv[0], kv[1])
        ),
    )
)
def test_a_put_applies_as_command_decode_says(data: bytes) -> None:
    """``apply`` parses a put on a path of its own: it must agree with ``Command.decode``
    on every input, well-formed or not."""
    kv = KVStateMachine()
    result = kv.apply(Entry(term=1, index=1, data=data))
    error: str | None = None
    try:
        command = Command.decode(data)
    except ValueError as exc:
        error = str(exc)
    if error is not None:
        assert result == ApplyResult(1, False, error=error)
        assert kv.data == {}
        return
    assert command.op == "put"
    assert result == ApplyResult(1, True, command.value)
    assert kv.data == {command.key: command.value}


def _encode_or_garbage(key: str, value: str) -> bytes:
    try:
        return encode_command("put", key, value, None)
    except UnicodeEncodeError:  # a lone surrogate: no command carries it
        return b"P"
