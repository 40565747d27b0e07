from __future__ import annotations

import itertools
import random
import time
from dataclasses import dataclass
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prism.sim.history import CompletionType, HistoryEvent, OpFunction, Value
from prism.sim.linearizability import check_history

# --- helpers -------------------------------------------------------------------------------


def op(
    process: int,
    f: OpFunction,
    key: str,
    value: Value,
    start: int,
    end: int | None,
    result: Value = None,
    outcome: CompletionType = "ok",
) -> list[HistoryEvent]:
    """An invoke and, unless ``end`` is None, its completion (reads report ``result``)."""
    events = [HistoryEvent(process=process, type="invoke", f=f, key=key, value=value, time=start)]
    if end is not None:
        completion_value = result if f == "read" else value
        events.append(
            HistoryEvent(
                process=process, type=outcome, f=f, key=key, value=completion_value, time=end
            )
        )
    return events


def by_time(*ops: list[HistoryEvent]) -> list[HistoryEvent]:
    """Merge operations into one history ordered by time, invokes first on ties."""
    events = [event for pair in ops for event in pair]
    return sorted(events, key=lambda event: (event.time, event.type != "invoke"))


def verdict(*ops: list[HistoryEvent]) -> str:
    return check_history(by_time(*ops)).verdict


# --- hand-written histories ----------------------------------------------------------------


def test_empty_history() -> None:
    result = check_history([])
    assert result.verdict == "ok"
    assert result.key is None
    assert (result.ops, result.steps) == (0, 0)
    assert result.detail == "0 operations on 0 keys linearizable"


def test_sequential_ok() -> None:
    result = check_history(
        by_time(
            op(1, "read", "x", None, 0, 1, result=None),
            op(1, "write", "x", 1, 2, 3),
            op(2, "read", "x", None, 4, 5, result=1),
            op(2, "cas", "x", (1, 2), 6, 7),
            op(1, "read", "x", None, 8, 9, result=2),
            op(1, "write", "y", 5, 10, 11),
        )
    )
    assert result.verdict == "ok"
    assert result.ops == 6
    assert result.detail == "6 operations on 2 keys linearizable"


@pytest.mark.parametrize("seen", [None, 1])
def test_concurrent_write_and_read_either_order(seen: int | None) -> None:
    assert verdict(op(1, "write", "x", 1, 0, 10), op(2, "read", "x", None, 5, 15, seen)) == "ok"


def test_read_of_a_value_never_written() -> None:
    result = check_history(
        by_time(
            op(1, "write", "x", 1, 0, 10),
            op(2, "read", "x", None, 5, 15, result=2),
            op(3, "write", "other", 2, 0, 10),
        )
    )
    assert result.verdict == "violation"
    assert result.key == "x"
    assert "read by process 2" in result.detail
    assert "returned 2" in result.detail


def test_stale_read_after_completed_write() -> None:
    assert (
        verdict(
            op(1, "write", "x", 1, 0, 1),
            op(1, "write", "x", 2, 2, 3),
            op(2, "read", "x", None, 4, 5, result=1),
        )
        == "violation"
    )


def test_closed_intervals_touching_operations_are_concurrent() -> None:
    # The read is invoked at the very instant the write returns: either order is allowed.
    assert (
        verdict(op(1, "write", "x", 1, 0, 5), op(2, "read", "x", None, 5, 6, result=None)) == "ok"
    )
    assert (
        verdict(op(1, "write", "x", 1, 0, 5), op(2, "read", "x", None, 6, 7, result=None))
        == "violation"
    )


def test_crashed_write_seen_by_concurrent_read() -> None:
    # The Knossos README example: a write of 3 crashes (info), a concurrent read sees 3.
    assert (
        verdict(
            op(1, "write", "x", 3, 0, 10, outcome="info"),
            op(2, "read", "x", None, 5, 7, result=3),
        )
        == "ok"
    )


def test_read_going_back_in_time() -> None:
    assert (
        verdict(
            op(1, "write", "x", 0, 0, 1),
            op(1, "write", "x", 3, 2, 3, outcome="info"),
            op(2, "read", "x", None, 4, 5, result=3),
            op(2, "read", "x", None, 6, 7, result=0),
        )
        == "violation"
    )


def test_cas_success_and_failure() -> None:
    # A cas on an absent key, then a chain of successful cas.
    assert (
        verdict(
            op(1, "cas", "x", (None, 1), 0, 1),
            op(1, "cas", "x", (1, 2), 2, 3),
            op(1, "read", "x", None, 4, 5, result=2),
        )
        == "ok"
    )
    # A cas cannot succeed when the state differs from its expected value.
    assert verdict(op(1, "write", "x", 1, 0, 1), op(1, "cas", "x", (5, 6), 2, 3)) == "violation"
    assert verdict(op(1, "cas", "x", (0, 1), 0, 1)) == "violation"
    # A failed cas did not happen.
    assert (
        verdict(
            op(1, "write", "x", 1, 0, 1),
            op(1, "cas", "x", (1, 2), 2, 3, outcome="fail"),
            op(1, "read", "x", None, 4, 5, result=1),
        )
        == "ok"
    )
    # A cas of unknown outcome may or may not have taken effect...
    for seen in (1, 2):
        assert (
            verdict(
                op(1, "write", "x", 1, 0, 1),
                op(1, "cas", "x", (1, 2), 2, 3, outcome="info"),
                op(2, "read", "x", None, 4, 5, result=seen),
            )
            == "ok"
        )
    # ... but only if its expected value matched.
    assert (
        verdict(
            op(1, "write", "x", 1, 0, 1),
            op(1, "cas", "x", (7, 2), 2, 3, outcome="info"),
            op(2, "read", "x", None, 4, 5, result=2),
        )
        == "violation"
    )


def test_failed_operation_is_ignored() -> None:
    failed_write = op(1, "write", "x", 5, 0, 1, outcome="fail")
    assert verdict(failed_write, op(2, "read", "x", None, 2, 3, result=None)) == "ok"
    assert verdict(failed_write, op(2, "read", "x", None, 2, 3, result=5)) == "violation"
    result = check_history(by_time(failed_write))
    assert (result.verdict, result.ops) == ("ok", 0)


def test_info_write_seen_much_later() -> None:
    assert (
        verdict(
            op(1, "write", "x", 7, 0, 1, outcome="info"),
            op(2, "write", "x", 1, 10, 11),
            op(2, "read", "x", None, 12, 13, result=1),
            op(2, "read", "x", None, 1_000_000, 1_000_001, result=7),
            op(2, "read", "x", None, 1_000_002, 1_000_003, result=7),
        )
        == "ok"
    )
    # Once observed, it cannot be undone by nothing.
    assert (
        verdict(
            op(1, "write", "x", 7, 0, 1, outcome="info"),
            op(2, "write", "x", 1, 10, 11),
            op(2, "read", "x", None, 1_000_000, 1_000_001, result=7),
            op(2, "read", "x", None, 1_000_002, 1_000_003, result=1),
        )
        == "violation"
    )


def test_pending_write_is_like_info() -> None:
    assert (
        verdict(op(1, "write", "x", 4, 0, None), op(2, "read", "x", None, 50, 60, result=4)) == "ok"
    )
    # An info write must not take effect before its invocation.
    assert (
        verdict(op(2, "read", "x", None, 0, 1, result=4), op(1, "write", "x", 4, 2, None))
        == "violation"
    )


def test_info_read_is_dropped() -> None:
    result = check_history(
        by_time(
            op(1, "read", "x", None, 0, 1, result=42, outcome="info"),
            op(2, "read", "x", None, 2, None),
            op(3, "read", "x", None, 4, 5, result=None),
        )
    )
    assert (result.verdict, result.ops) == ("ok", 1)


def test_unobserved_unknown_operations_are_pruned() -> None:
    # 40 crashed writes of values nobody reads: without pruning, every subset of them would
    # be tried before the read of nothing could be placed.
    crashed = [op(p, "write", "x", 100 + p, 0, 1, outcome="info") for p in range(40)]
    unknown_cas = [op(p, "cas", "x", (None, 500 + p), 0, None) for p in range(40, 50)]
    read_nothing = op(99, "read", "x", None, 10, 11, result=None)
    result = check_history(by_time(*crashed, *unknown_cas, read_nothing), max_steps=10_000)
    assert (result.verdict, result.ops) == ("ok", 1)
    # A crashed write that is observed is kept, and the history is still judged correctly.
    seen = op(98, "read", "x", None, 20, 21, result=105)
    result = check_history(by_time(*crashed, *unknown_cas, read_nothing, seen))
    assert (result.verdict, result.ops) == ("ok", 3)
    back = op(98, "read", "x", None, 30, 31, result=None)
    assert check_history(by_time(*crashed, read_nothing, seen, back)).verdict == "violation"
    # An unknown cas whose new value is observed, only through another cas, is kept.
    chain = by_time(
        op(1, "cas", "y", (None, 1), 0, None),
        op(2, "cas", "y", (1, 2), 5, 6),
        op(3, "read", "y", None, 7, 8, result=2),
    )
    assert check_history(chain).verdict == "ok"


def test_violation_detail_names_key_operation_and_prefix() -> None:
    result = check_history(
        by_time(
            op(1, "write", "k3", 5, 1_000_000_000, 1_100_000_000),
            op(4, "read", "k3", None, 1_234_567_000, 1_300_000_000, result=7),
        )
    )
    assert result.verdict == "violation"
    assert result.key == "k3"
    assert result.detail.startswith(
        "key k3: read by process 4 at t=1.234567s returned 7, which no linearization allows"
    )
    assert "longest linearizable prefix: 1 of 2 operations" in result.detail


@pytest.mark.parametrize(
    ("history", "message"),
    [
        (op(1, "write", "x", 1, 0, 1)[1:], "without a pending invoke"),
        (op(1, "write", "x", 1, 0, None) + op(1, "write", "x", 2, 1, None), "pending"),
        (
            [
                HistoryEvent(process=1, type="invoke", f="read", key="x", value=None, time=0),
                HistoryEvent(process=1, type="ok", f="read", key="y", value=None, time=1),
            ],
            "does not match",
        ),
        (
            [
                HistoryEvent(process=1, type="invoke", f="write", key="x", value=1, time=5),
                HistoryEvent(process=1, type="ok", f="write", key="x", value=1, time=4),
            ],
            "before its invoke",
        ),
        (
            [
                HistoryEvent(process=1, type="invoke", f="write", key="x", value=1, time=0),
                HistoryEvent(process=1, type="ok", f="write", key="x", value=2, time=1),
            ],
            "completed with",
        ),
        (
            [
                HistoryEvent(process=1, type="invoke", f="cas", key="x", value=(1, 2), time=0),
                HistoryEvent(process=1, type="ok", f="cas", key="x", value=(1, 3), time=1),
            ],
            "completed with",
        ),
    ],
)
def test_malformed_history_is_rejected(history: list[HistoryEvent], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_history(history)


def test_negative_budget_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_steps"):
        check_history([], max_steps=-1)


# --- generated histories -------------------------------------------------------------------

Fate = Literal["ok", "fail", "info", "lost", "pending"]


@dataclass(frozen=True)
class Spec:
    """One operation to simulate against a sequential register.

    ``fate``: ok (completes ok), fail (no effect, reported fail), info (takes effect, reported
    info), lost (no effect, reported info), pending (takes effect, never completes; only the
    last operation of a process can be pending, earlier ones become info).
    """

    process: int
    f: OpFunction
    key: str
    value: int
    expected: int | None
    gap: int
    duration: int
    point: int  # where the effect happens, in thousandths of the interval
    fate: Fate


def simulate(specs: list[Spec]) -> list[HistoryEvent]:
    """A history of a sequential register whose operations take effect inside their intervals.

    Operations with an unknown outcome may take effect a little after they are reported.
    """
    clock: dict[int, int] = {}
    last_of_process = {spec.process: index for index, spec in enumerate(specs)}
    planned: list[tuple[int, int, Spec, int, int, Fate]] = []
    for index, spec in enumerate(specs):
        start = clock.get(spec.process, 0) + spec.gap
        end = start + spec.duration
        clock[spec.process] = end
        fate = spec.fate
        if fate == "pending" and last_of_process[spec.process] != index:
            fate = "info"
        reach = spec.duration + (30 if fate in ("info", "pending") else 0)
        planned.append((start + reach * spec.point // 1000, index, spec, start, end, fate))
    state: dict[str, int] = {}
    events: list[tuple[int, int, int, HistoryEvent]] = []
    for _, index, spec, start, end, fate in sorted(planned, key=lambda item: item[:2]):
        current = state.get(spec.key)
        invoke_value: Value
        completion_value: Value
        if spec.f == "read":
            invoke_value, completion_value = None, current
        elif spec.f == "write":
            invoke_value = completion_value = spec.value
            if fate in ("ok", "info", "pending"):
                state[spec.key] = spec.value
        else:
            invoke_value = completion_value = (spec.expected, spec.value)
            if current != spec.expected:
                fate = "fail" if fate == "ok" else fate
            elif fate in ("ok", "info", "pending"):
                state[spec.key] = spec.value
        p, f, key = spec.process, spec.f, spec.key
        events.append(
            (
                start,
                0,
                index,
                HistoryEvent(
                    process=p, type="invoke", f=f, key=key, value=invoke_value, time=start
                ),
            )
        )
        if fate != "pending":
            kind: CompletionType = "info" if fate == "lost" else fate
            completion = HistoryEvent(
                process=p, type=kind, f=f, key=key, value=completion_value, time=end
            )
            events.append((end, 1, index, completion))
    events.sort(key=lambda item: item[:3])
    return [event for *_, event in events]


OK: list[Fate] = ["ok"]
FATES: list[Fate] = [*(OK * 8), "fail", "info", "lost", "pending"]

specs_strategy = st.lists(
    st.builds(
        Spec,
        process=st.integers(0, 3),
        f=st.sampled_from(["read", "write", "cas"]),
        key=st.sampled_from(["a", "b"]),
        value=st.integers(0, 9),
        expected=st.none() | st.integers(0, 9),
        gap=st.integers(1, 10),
        duration=st.integers(0, 40),
        point=st.integers(0, 1000),
        fate=st.sampled_from(FATES),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None, database=None)
@given(specs_strategy)
def test_simulated_register_histories_are_linearizable(specs: list[Spec]) -> None:
    result = check_history(simulate(specs))
    assert result.verdict == "ok", result.detail


@settings(max_examples=150, deadline=None, database=None)
@given(
    specs_strategy,
    st.sampled_from(["a", "b"]),
    st.integers(0, 500),
    st.integers(0, 50),
)
def test_read_of_a_never_written_value_is_a_violation(
    specs: list[Spec], key: str, start: int, duration: int
) -> None:
    history = simulate(specs)
    process = 1 + max((spec.process for spec in specs), default=0)
    liar = op(process, "read", key, None, start, start + duration, result=999)
    result = check_history(by_time(history, liar))
    assert result.verdict == "violation"
    assert result.key == key


Interval = tuple[HistoryEvent, HistoryEvent | None]


def brute_force_linearizable(events: list[HistoryEvent]) -> bool:
    """An independent oracle: try every order of every subset of the uncertain operations."""
    pending: dict[int, HistoryEvent] = {}
    pairs: list[Interval] = []
    for event in events:
        if event.type == "invoke":
            pending[event.process] = event
        else:
            pairs.append((pending.pop(event.process), event))
    pairs += [(invoke, None) for invoke in pending.values()]
    certain = [pair for pair in pairs if pair[1] is not None and pair[1].type == "ok"]
    uncertain = [pair for pair in pairs if pair[1] is None or pair[1].type == "info"]

    def end(pair: Interval) -> float:
        done = pair[1]
        return float("inf") if done is None or done.type != "ok" else done.time

    def legal(order: tuple[Interval, ...]) -> bool:
        for i, later in enumerate(order):
            if any(end(later) < earlier[0].time for earlier in order[:i]):
                return False  # ``later`` returned before ``earlier`` was invoked
        state: dict[str, int] = {}
        for invoke, done in order:
            current = state.get(invoke.key)
            known = done is not None and done.type == "ok"
            if invoke.f == "read":
                if known and done is not None and done.value != current:
                    return False
            elif invoke.f == "write":
                assert isinstance(invoke.value, int)
                state[invoke.key] = invoke.value
            else:
                assert isinstance(invoke.value, tuple)
                expected, new = invoke.value
                if current == expected:
                    state[invoke.key] = new
                elif known:
                    return False
        return True

    for mask in range(1 << len(uncertain)):
        chosen = certain + [pair for i, pair in enumerate(uncertain) if mask >> i & 1]
        if any(legal(order) for order in itertools.permutations(chosen)):
            return True
    return False


@st.composite
def small_random_histories(draw: st.DrawFn) -> list[HistoryEvent]:
    """Up to 6 arbitrary operations (one process each), most of them not linearizable."""
    ops: list[list[HistoryEvent]] = []
    for process in range(draw(st.integers(0, 6))):
        f: OpFunction = draw(st.sampled_from(["read", "write", "cas"]))
        key = draw(st.sampled_from(["a", "b"]))
        start = draw(st.integers(0, 10))
        end = None if draw(st.integers(0, 5)) == 0 else start + draw(st.integers(0, 5))
        outcome: CompletionType = draw(st.sampled_from(["ok", "ok", "ok", "fail", "info"]))
        small = st.integers(0, 2)
        value: Value = None
        result: Value = None
        if f == "read":
            result = draw(st.none() | small)
        elif f == "write":
            value = draw(small)
        else:
            value = (draw(st.none() | small), draw(small))
        ops.append(op(process, f, key, value, start, end, result=result, outcome=outcome))
    return by_time(*ops)


@settings(max_examples=400, deadline=None, database=None)
@given(small_random_histories())
def test_agrees_with_brute_force(history: list[HistoryEvent]) -> None:
    expected = "ok" if brute_force_linearizable(history) else "violation"
    assert check_history(history).verdict == expected


def generated_history(seed: int, count: int, keys: int, processes: int) -> list[HistoryEvent]:
    rng = random.Random(seed)
    fates: list[Fate] = [*(OK * 97), "fail", "info", "lost"]
    specs = [
        Spec(
            process=rng.randrange(processes),
            f=rng.choice(["read", "read", "write", "cas"]),
            key=f"k{rng.randrange(keys)}",
            value=rng.randrange(10),
            expected=rng.choice([None, *range(10)]),
            gap=rng.randint(1, 50_000),
            duration=rng.randint(0, 200_000),
            point=rng.randint(0, 1000),
            fate=rng.choice(fates),
        )
        for _ in range(count)
    ]
    return simulate(specs)


# --- budget and performance ----------------------------------------------------------------


def expensive_key(key: str, writers: int) -> list[list[HistoryEvent]]:
    """Concurrent info writes of distinct values, then reads 1, 2, ..., n, 1 one after another.

    Not linearizable (1 cannot come back), but proving it means trying every subset of the
    writes that could have taken effect before each read.
    """
    ops = [op(p, "write", key, p, p, p + 1, outcome="info") for p in range(1, writers + 1)]
    t = 1_000
    for value in [*range(1, writers + 1), 1]:
        ops.append(op(100, "read", key, None, t, t + 1, result=value))
        t += 2
    return ops


def test_budget_exhausted_gives_unknown_quickly() -> None:
    history = by_time(*expensive_key("hot", 16))
    began = time.perf_counter()
    result = check_history(history, max_steps=20_000)
    elapsed = time.perf_counter() - began
    assert result.verdict == "unknown"
    assert result.key == "hot"
    assert result.steps == 20_000
    assert "undecided" in result.detail
    assert elapsed < 2.0
    assert check_history(history, max_steps=0).verdict == "unknown"


def test_violation_on_a_small_key_beats_an_expensive_key() -> None:
    history = by_time(
        *expensive_key("a-hot", 16),  # sorted first: searched first in every round
        op(200, "write", "b-small", 1, 0, 1),
        op(200, "write", "b-small", 2, 2, 3),
        op(201, "read", "b-small", None, 4, 5, result=1),
    )
    result = check_history(history, max_steps=200_000)
    assert result.verdict == "violation"
    assert result.key == "b-small"
    assert result.steps < 20_000
    # An expensive key that is merely undecided does not hide a decided ok key either.
    ok_small = by_time(*expensive_key("a-hot", 16), op(200, "write", "b-small", 1, 0, 1))
    assert check_history(ok_small, max_steps=50_000).verdict == "unknown"


def test_generated_history_is_deterministic() -> None:
    history = generated_history(seed=7, count=400, keys=3, processes=5)
    assert check_history(history) == check_history(history)


@pytest.mark.slow
def test_performance_5000_operations() -> None:
    history = generated_history(seed=2024, count=5_000, keys=20, processes=5)
    began = time.perf_counter()
    result = check_history(history)
    elapsed = time.perf_counter() - began
    print(f"\n5,000 operations, 20 keys: {result.ops} ops checked in {elapsed:.3f}s")
    assert result.verdict == "ok", result.detail
    assert result.ops > 3_500
    assert elapsed < 10.0
