"""Tests for prism.wire: round trips, the tag table, and hostile input."""

from __future__ import annotations

import typing
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prism import wire
from prism.errors import DecodeError
from prism.raft.messages import (
    AppendEntries,
    AppendEntriesReply,
    Entry,
    EntryKind,
    Heartbeat,
    HeartbeatReply,
    InstallSnapshot,
    InstallSnapshotReply,
    RaftMessage,
    RequestVote,
    RequestVoteReply,
    TimeoutNow,
)
from prism.swim.messages import (
    Ack,
    Gossip,
    JoinRefused,
    Nack,
    Ping,
    PingReq,
    PushPull,
    PushPullReply,
    SwimMessage,
    Update,
    UpdateKind,
)
from tests.swim.test_bad_input import MESSAGE_STRATEGIES as SWIM_STRATEGIES

ALIVE = Update(kind=UpdateKind.ALIVE, node="n1", incarnation=3, address="10.0.0.1:4200")
DEAD = Update(kind=UpdateKind.DEAD, node="n4", incarnation=2, origin="n2", suspected_ms=12_300)

FAST = settings(max_examples=60, deadline=None)

TAG_OF = {cls: tag for tag, cls in wire.TAGS.items()}

# --- Strategies ------------------------------------------------------------------------------

uints = st.integers(min_value=0, max_value=wire.MAX_WIRE_INT)
ids = st.text(min_size=1, max_size=wire.MAX_ID_LEN)


@st.composite
def append_entries(draw: st.DrawFn) -> AppendEntries:
    term = draw(uints)
    prev_log_index = draw(st.integers(min_value=0, max_value=2**62))
    count = draw(st.integers(min_value=0, max_value=6))
    entries = tuple(
        Entry(
            term=draw(st.integers(min_value=0, max_value=term)),
            index=prev_log_index + 1 + offset,
            kind=draw(st.sampled_from(EntryKind)),
            data=draw(st.binary(max_size=100)),
            client_id=draw(st.text(max_size=20)),
            seq=draw(uints),
        )
        for offset in range(count)
    )
    return AppendEntries(
        term=term,
        prev_log_index=prev_log_index,
        prev_log_term=draw(uints),
        entries=entries,
        leader_commit=draw(uints),
    )


@st.composite
def snapshot_chunks(draw: st.DrawFn) -> InstallSnapshot:
    data = draw(st.binary(max_size=200))
    offset = draw(st.integers(min_value=0, max_value=2**40))
    return InstallSnapshot(
        term=draw(uints),
        index=draw(st.integers(min_value=1, max_value=2**62)),
        snapshot_term=draw(uints),
        membership=draw(st.binary(max_size=50)),
        total=offset + len(data) + draw(st.integers(min_value=0, max_value=2**40)),
        offset=offset,
        data=data,
    )


STRATEGIES: dict[type[Any], st.SearchStrategy[Any]] = {
    RequestVote: st.builds(
        RequestVote,
        term=uints,
        last_log_index=uints,
        last_log_term=uints,
        pre_vote=st.booleans(),
        transfer=st.booleans(),
    ),
    RequestVoteReply: st.builds(
        RequestVoteReply, term=uints, granted=st.booleans(), pre_vote=st.booleans()
    ),
    AppendEntries: append_entries(),
    AppendEntriesReply: st.builds(
        AppendEntriesReply,
        term=uints,
        success=st.booleans(),
        match_index=uints,
        rejected_index=uints,
        hint_index=uints,
        hint_term=uints,
    ),
    Heartbeat: st.builds(Heartbeat, term=uints, commit=uints, read_ctx=uints),
    HeartbeatReply: st.builds(HeartbeatReply, term=uints, read_ctx=uints),
    InstallSnapshot: snapshot_chunks(),
    InstallSnapshotReply: st.builds(
        InstallSnapshotReply, term=uints, index=uints, next_offset=uints, done=st.booleans()
    ),
    TimeoutNow: st.builds(TimeoutNow, term=uints),
    **SWIM_STRATEGIES,
}
messages = st.one_of(*STRATEGIES.values())
encodings = st.builds(wire.encode, messages, cluster_id=ids, sender_id=ids)

# Any value msgpack can carry (except ext types), to put where a field belongs.
msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=10)
    | st.binary(max_size=10),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=12,
)


def accepts_or_rejects(data: bytes) -> wire.Envelope | None:
    """Decode ``data``; a DecodeError is fine, any other exception fails the test."""
    try:
        return wire.decode(data)
    except DecodeError:
        return None


def raw(tag: int, fields: object, *, version: object = 1, cluster: object = "c") -> bytes:
    """Pack an envelope by hand, bypassing encode's checks."""
    return msgpack.packb([version, cluster, "n1", tag, fields], use_bin_type=True)


def valid_fields(cls: type[Any]) -> list[object]:
    """The fields array of a valid message of type ``cls``, as it travels."""
    examples: dict[type[Any], RaftMessage] = {
        RequestVote: RequestVote(term=1, last_log_index=2, last_log_term=1),
        RequestVoteReply: RequestVoteReply(term=1, granted=True),
        AppendEntries: AppendEntries(
            term=2,
            prev_log_index=0,
            prev_log_term=0,
            entries=(Entry(term=1, index=1), Entry(term=2, index=2, kind=EntryKind.NOOP)),
            leader_commit=0,
        ),
        AppendEntriesReply: AppendEntriesReply(term=1, success=False, hint_index=3),
        Heartbeat: Heartbeat(term=1, commit=2),
        HeartbeatReply: HeartbeatReply(term=1),
        InstallSnapshot: InstallSnapshot(
            term=3, index=9, snapshot_term=2, membership=b"{}", total=10, offset=4, data=b"abc"
        ),
        InstallSnapshotReply: InstallSnapshotReply(term=3, index=9, next_offset=7, done=False),
        TimeoutNow: TimeoutNow(term=4),
        Ping: Ping(seq=1, target="n2", reply_to="10.0.0.1:4200", updates=(ALIVE,)),
        Ack: Ack(seq=1, target="n2", updates=(ALIVE,)),
        PingReq: PingReq(seq=2, target="n3", target_address="10.0.0.3:4200", reply_to="a:1"),
        Nack: Nack(seq=2, target="n3"),
        Gossip: Gossip(updates=(ALIVE, DEAD)),
        PushPull: PushPull(join=True, members=(ALIVE,)),
        PushPullReply: PushPullReply(members=(ALIVE,)),
        JoinRefused: JoinRefused(name="n2", address="10.0.0.2:4200", reason="name taken"),
    }
    envelope = msgpack.unpackb(wire.encode(examples[cls], cluster_id="c", sender_id="n1"))
    fields: list[object] = envelope[4]
    return fields


def assert_rejected(data: bytes, **kwargs: Any) -> None:
    with pytest.raises(DecodeError):
        wire.decode(data, **kwargs)


# --- Round trips and the tag table -----------------------------------------------------------


def test_tag_table_covers_every_raft_and_swim_message() -> None:
    raft, swim = set(typing.get_args(RaftMessage)), set(typing.get_args(SwimMessage))
    assert set(wire.TAGS.values()) == raft | swim
    assert len(TAG_OF) == len(wire.TAGS), "a message type has two tags"
    assert all(1 <= tag <= 31 for tag, cls in wire.TAGS.items() if cls in raft), "Raft: 1..31"
    assert all(32 <= tag <= 63 for tag, cls in wire.TAGS.items() if cls in swim), "SWIM: 32..63"


def test_strategies_cover_every_message_type() -> None:
    assert set(STRATEGIES) == set(wire.TAGS.values())


@pytest.mark.parametrize("cls", list(STRATEGIES), ids=lambda cls: cls.__name__)
@FAST
@given(data=st.data(), cluster_id=ids, sender_id=ids)
def test_round_trip(cls: type[Any], data: st.DataObject, cluster_id: str, sender_id: str) -> None:
    msg = data.draw(STRATEGIES[cls])
    envelope = wire.decode(wire.encode(msg, cluster_id=cluster_id, sender_id=sender_id))
    assert envelope == wire.Envelope(
        version=wire.PROTOCOL_VERSION, cluster_id=cluster_id, sender_id=sender_id, message=msg
    )
    assert type(envelope.message) is cls


def test_known_bytes_do_not_change() -> None:
    # Pins the format: if this fails, the wire changed and old nodes cannot talk to new ones.
    heartbeat = wire.encode(Heartbeat(term=1, commit=2, read_ctx=3), cluster_id="c", sender_id="n1")
    # [version 1, "c", "n1", tag 5, [1, 2, 3]]
    assert heartbeat == bytes.fromhex("95 01 a163 a26e31 05 93 01 02 03")
    append = AppendEntries(
        term=3,
        prev_log_index=1,
        prev_log_term=1,
        entries=(Entry(term=2, index=2, kind=EntryKind.NOOP, data=b"x", client_id="k", seq=9),),
        leader_commit=1,
    )
    encoded = wire.encode(append, cluster_id="c", sender_id="n1")
    # [1, "c", "n1", tag 3, [3, 1, 1, [[2, 2, 1, bin "x", "k", 9]], 1]]
    assert encoded == bytes.fromhex(
        "95 01 a163 a26e31 03 95 03 01 01 91 96 02 02 01 c40178 a16b 09 01"
    )


def test_round_trip_at_the_limits() -> None:
    big = wire.MAX_WIRE_INT
    msg = AppendEntriesReply(
        term=big, success=True, match_index=big, rejected_index=0, hint_index=big, hint_term=big
    )
    long_id = "é" * wire.MAX_ID_LEN
    envelope = wire.decode(wire.encode(msg, cluster_id=long_id, sender_id="x"))
    assert envelope.message == msg
    assert envelope.cluster_id == long_id


# --- Encoding: caller bugs -------------------------------------------------------------------

HEARTBEAT = Heartbeat(term=1, commit=0)


@pytest.mark.parametrize("bad_id", ["", "x" * (wire.MAX_ID_LEN + 1)])
def test_encode_rejects_bad_ids(bad_id: str) -> None:
    with pytest.raises(ValueError, match="cluster_id"):
        wire.encode(HEARTBEAT, cluster_id=bad_id, sender_id="n1")
    with pytest.raises(ValueError, match="sender_id"):
        wire.encode(HEARTBEAT, cluster_id="c", sender_id=bad_id)


def test_encode_rejects_ints_above_the_wire_limit() -> None:
    with pytest.raises(ValueError, match="wire limit"):
        wire.encode(Heartbeat(term=wire.MAX_WIRE_INT + 1, commit=0), cluster_id="c", sender_id="n")


def test_encode_rejects_non_messages() -> None:
    with pytest.raises(TypeError, match="not a wire message"):
        wire.encode(Entry(term=1, index=1), cluster_id="c", sender_id="n1")  # type: ignore[arg-type]


# --- Fuzzing: anything in, an Envelope or DecodeError out ------------------------------------


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300))
def test_decode_random_bytes_never_crashes(data: bytes) -> None:
    accepts_or_rejects(data)


@FAST
@given(encoded=encodings)
def test_decode_rejects_every_truncation(encoded: bytes) -> None:
    for end in range(len(encoded)):
        assert_rejected(encoded[:end])


@settings(max_examples=200, deadline=None)
@given(encoded=encodings, data=st.data())
def test_decode_survives_flipped_bytes(encoded: bytes, data: st.DataObject) -> None:
    mutated = bytearray(encoded)
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        position = data.draw(st.integers(min_value=0, max_value=len(mutated) - 1))
        mutated[position] ^= data.draw(st.integers(min_value=1, max_value=255))
    accepts_or_rejects(bytes(mutated))


@FAST
@given(encoded=encodings, garbage=st.binary(min_size=1, max_size=20))
def test_decode_rejects_appended_garbage(encoded: bytes, garbage: bytes) -> None:
    assert_rejected(encoded + garbage)


@settings(max_examples=200, deadline=None)
@given(tag=st.integers(min_value=0, max_value=70), fields=msgpack_values)
def test_decode_survives_arbitrary_fields(tag: int, fields: object) -> None:
    accepts_or_rejects(raw(tag, fields))


@settings(max_examples=200, deadline=None)
@given(cls=st.sampled_from(list(STRATEGIES)), value=msgpack_values, data=st.data())
def test_decode_survives_one_field_replaced(
    cls: type[Any], value: object, data: st.DataObject
) -> None:
    fields = valid_fields(cls)
    fields[data.draw(st.integers(min_value=0, max_value=len(fields) - 1))] = value
    accepts_or_rejects(raw(TAG_OF[cls], fields))


# --- Targeted bad input: one category per test -----------------------------------------------

HB = TAG_OF[Heartbeat]
RV = TAG_OF[RequestVote]
AE = TAG_OF[AppendEntries]
GOOD = raw(HB, [1, 2, 3])


def test_hand_packed_envelope_is_valid() -> None:
    # The targeted tests below change one thing in this envelope.
    assert wire.decode(GOOD).message == Heartbeat(term=1, commit=2, read_ctx=3)


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\xff" * 7, b"not msgpack at all"])
def test_decode_rejects_random_bytes(data: bytes) -> None:
    assert_rejected(data)


def test_decode_rejects_truncated_data() -> None:
    assert_rejected(GOOD[:-1])
    assert_rejected(GOOD[:1])


def test_decode_rejects_trailing_garbage() -> None:
    assert_rejected(GOOD + b"\x00")
    assert_rejected(GOOD + GOOD)


@pytest.mark.parametrize("envelope", [1, "hello", {}, [], None])
def test_decode_rejects_non_array_envelope(envelope: object) -> None:
    assert_rejected(msgpack.packb(envelope))


def test_decode_rejects_str_where_int_expected() -> None:
    assert_rejected(raw(HB, ["1", 2, 3]))


def test_decode_rejects_bool_where_int_expected() -> None:
    assert_rejected(raw(HB, [True, 2, 3]))
    assert_rejected(raw(HB, [1, False, 3]))


def test_decode_rejects_int_where_bool_expected() -> None:
    assert_rejected(raw(RV, [1, 2, 1, 1]))
    assert_rejected(raw(TAG_OF[RequestVoteReply], [1, 0, False]))


def test_decode_rejects_float_where_int_expected() -> None:
    assert_rejected(raw(HB, [1.0, 2, 3]))


def test_decode_rejects_bytes_where_str_expected() -> None:
    assert_rejected(raw(HB, [1, 2, 3], cluster=b"c"))
    assert_rejected(raw(AE, [1, 0, 0, [[1, 1, 0, b"", b"client", 0]], 0]))


def test_decode_rejects_str_where_bytes_expected() -> None:
    assert_rejected(raw(AE, [1, 0, 0, [[1, 1, 0, "data", "", 0]], 0]))


def test_decode_rejects_negative_int() -> None:
    assert_rejected(raw(HB, [-1, 2, 3]))
    assert_rejected(raw(AE, [1, 0, 0, [[1, 1, 0, b"", "", -5]], 0]))


def test_decode_rejects_integer_too_large() -> None:
    assert_rejected(raw(HB, [wire.MAX_WIRE_INT + 1, 2, 3]))
    assert_rejected(raw(HB, [2**64 - 1, 2, 3]))


def test_decode_rejects_invalid_message() -> None:
    # Well-typed values the dataclass refuses: index 0, non-consecutive entries.
    assert_rejected(raw(AE, [1, 0, 0, [[1, 0, 0, b"", "", 0]], 0]))
    assert_rejected(raw(AE, [1, 0, 0, [[1, 1, 0, b"", "", 0], [1, 3, 0, b"", "", 0]], 0]))


def test_decode_rejects_unknown_entry_kind() -> None:
    assert_rejected(raw(AE, [1, 0, 0, [[1, 1, 7, b"", "", 0]], 0]))


def test_decode_rejects_malformed_entries() -> None:
    assert_rejected(raw(AE, [1, 0, 0, [1], 0]))
    assert_rejected(raw(AE, [1, 0, 0, [[1, 1, 0, b"", ""]], 0]))
    assert_rejected(raw(AE, [1, 0, 0, "entries", 0]))


@pytest.mark.parametrize("tag", [0, 7, 31, 32, 63, 64, -1, 2**40])
def test_decode_rejects_unknown_tag(tag: int) -> None:
    assert_rejected(raw(tag, [1, 2, 3]))


def test_decode_rejects_non_int_tag() -> None:
    assert_rejected(msgpack.packb([1, "c", "n1", True, [1, 2, 3]]))
    assert_rejected(msgpack.packb([1, "c", "n1", "5", [1, 2, 3]]))


@pytest.mark.parametrize("version", [0, 2, -1, True, 1.0, "1", None])
def test_decode_rejects_unknown_version(version: object) -> None:
    assert_rejected(raw(HB, [1, 2, 3], version=version))


@pytest.mark.parametrize("cluster", ["", "x" * (wire.MAX_ID_LEN + 1), 7, None])
def test_decode_rejects_bad_ids(cluster: object) -> None:
    assert_rejected(raw(HB, [1, 2, 3], cluster=cluster))
    assert_rejected(msgpack.packb([1, "c", cluster, HB, [1, 2, 3]]))


def test_decode_rejects_wrong_field_count() -> None:
    assert_rejected(raw(HB, [1, 2]))
    assert_rejected(raw(HB, [1, 2, 3, 4]))
    assert_rejected(raw(HB, []))


def test_decode_rejects_wrong_envelope_length() -> None:
    assert_rejected(msgpack.packb([1, "c", "n1", HB]))
    assert_rejected(msgpack.packb([1, "c", "n1", HB, [1, 2, 3], 0]))


def test_decode_rejects_nesting_bomb() -> None:
    depth = 60_000
    assert_rejected(b"\x91" * depth + b"\x00")
    # Also inside a well-formed envelope, where a field belongs.
    four_items = msgpack.packb([1, "c", "n1", HB])
    assert_rejected(b"\x95" + four_items[1:] + b"\x91" * depth + b"\x00")


def test_decode_rejects_oversize_input() -> None:
    padding = "x" * (wire.MAX_DATAGRAM_BYTES + 1)
    assert_rejected(raw(HB, [1, 2, 3], cluster=padding))
    assert_rejected(GOOD, max_bytes=len(GOOD) - 1)
    assert wire.decode(GOOD, max_bytes=len(GOOD)).message == Heartbeat(term=1, commit=2, read_ctx=3)


@pytest.mark.parametrize(
    "header",
    [
        b"\xdd\xff\xff\xff\xff",  # array 32 of 2**32-1 items
        b"\xdf\xff\xff\xff\xff",  # map 32
        b"\xdb\xff\xff\xff\xff",  # str 32
        b"\xc6\xff\xff\xff\xff",  # bin 32
        b"\xc9\xff\xff\xff\xff\x01",  # ext 32
    ],
)
def test_decode_rejects_huge_declared_lengths(header: bytes) -> None:
    assert_rejected(header)
    assert_rejected(header + b"\x00" * 100)


@pytest.mark.parametrize(
    "ext",
    [msgpack.ExtType(1, b""), msgpack.ExtType(5, b"abcd"), msgpack.Timestamp(seconds=1)],
    ids=["empty", "fixext4", "timestamp"],
)
def test_decode_rejects_ext_types(ext: object) -> None:
    assert_rejected(msgpack.packb(ext))
    assert_rejected(raw(HB, [ext, 2, 3]))


def test_decode_rejects_non_str_map_keys() -> None:
    # The format has no maps at all, so these fail before map keys are even looked at.
    assert_rejected(raw(HB, {1: 1, 2: 2, 3: 3}))
    assert_rejected(raw(HB, [{b"k": 1}, 2, 3]))


def test_decode_rejects_maps() -> None:
    assert_rejected(raw(HB, {"term": 1, "commit": 2, "read_ctx": 3}))
    assert_rejected(raw(HB, [1, 2, {}]))


def test_decode_rejects_invalid_utf8() -> None:
    # A str 8 of 2 bytes that are not UTF-8, as the cluster id.
    data = GOOD.replace(b"\xa1c", b"\xa2\xff\xfe", 1)
    assert_rejected(data)


_ENTRY_VALUES = st.one_of(
    st.integers(-3, 3),
    st.integers(2**63 - 2, 2**64),
    st.booleans(),
    st.binary(max_size=4),
    st.text(max_size=4),
    st.none(),
    st.floats(allow_nan=False),
)


@given(
    st.lists(_ENTRY_VALUES, min_size=6, max_size=6)
    | st.tuples(
        st.integers(-1, 3),
        st.integers(-1, 3),
        st.integers(-1, 3),
        st.binary(max_size=4),
        st.text(max_size=4),
        st.integers(-1, 3),
    ).map(list)
    | st.lists(_ENTRY_VALUES, max_size=8)
)
def test_entry_fast_path_agrees_with_the_dataclass(fields: list[object]) -> None:
    """The wire builds a well-formed ``Entry`` without its ``__init__``: it must accept
    exactly what the generic path (the dataclass's own checks) accepts, and build the same
    entry."""
    fast = wire._EntryKind()
    generic = wire._Struct(Entry)
    try:
        expected = generic.decode(list(fields))
    except DecodeError:
        with pytest.raises(DecodeError):
            fast.decode([list(fields)])
        return
    (entry,) = fast.decode([list(fields)])
    assert entry == expected
    assert type(entry) is Entry
    assert hash(entry) == hash(expected)
