"""Linearizability checker for client histories of the simulated key-value register.

Theory of operation.

*Model.* Each key is a compare-and-set register, initially absent (None). A read is legal
iff it returns the current state; a write of v is always legal and sets v; a cas
``(expected, new)`` that completed ``ok`` is legal iff the state equals ``expected`` and then
sets ``new``; a cas whose outcome is unknown is always legal and sets ``new`` only if the
state equals ``expected``.

*Preprocessing* follows Jepsen/Knossos. Each invoke is paired with the next completion of
the same process. A ``fail`` operation definitely did not happen and is dropped. An ``info``
operation, or one never completed, may take effect at any instant after its invocation, or
never: it gets a return time of +infinity. A read with an unknown outcome carries no
information and is dropped. Intervals are closed: on equal timestamps, calls sort before
returns, so two operations that touch at an instant are concurrent. Last, an operation of
unknown outcome that sets a value no read returned and no cas expected is dropped: it can be
moved to "never" in any linearization, and left in it would be tried at every point of the
search (crashed writes of unique values are common, and each one can double the search space).

*Per key.* Linearizability is compositional (Herlihy & Wing's locality, which Porcupine calls
P-compositionality): a history is linearizable iff its restriction to each key is. The search
is exponential in the number of concurrent operations, so checking each key alone turns one
huge search into many small ones.

*Search.* For one key, the Wing & Gong algorithm with Lowe's memoization, in the shape of
Porcupine's ``checkSingle``: calls and returns sit in a doubly linked list ordered by time.
Walking from the head, a call whose operation is legal in the current state is linearized:
its call and return entries are lifted out of the list, the choice is pushed on an explicit
stack (no recursion, so no depth limit) and the walk restarts from the head. Reaching a
return entry means that operation's deadline passed before it could be linearized: the last
choice is undone (its entries are put back) and the walk continues after it. An empty stack
at a return entry means no linearization exists. The memo is the set of configurations
already entered, a configuration being (set of linearized operations as an int bitset, model
state): two paths reaching the same configuration have the same future, so the second one is
cut. Operations with an infinite return time have no return entry; once every operation with
a finite return is linearized, the rest can be placed at the end (they are always legal) and
the key is linearizable.

*Budget.* Memoization trades time for memory, and both can still explode: an unbounded check
once took 3 GB on a single history in our research (many concurrent ``info`` writes on one
key make the memo grow with the number of their subsets). Every iteration of the search loop
is one step, and ``max_steps`` bounds the total. Keys are searched in rounds, in sorted
order; a round gives each undecided key a quantum of steps (10,000 at first, four times more
each round) and a key's search resumes where it stopped. A cheap key is thus decided in the
first round, and one pathological key cannot use up the memory or the budget before a
violation on another key is found. A key still undecided when the budget is spent makes the
verdict "unknown", unless some key is a violation, which wins. Memory is bounded by the
steps: at most one memo entry per step.

The checker is deterministic: keys are visited in sorted order, and operations in the order
of their timestamps with the history's order breaking ties.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, final

from prism.sim.history import HistoryEvent, OpFunction

Verdict = Literal["ok", "violation", "unknown"]

FIRST_QUANTUM = 10_000
"""Steps each undecided key gets in the first round."""
QUANTUM_GROWTH = 4
"""Factor by which the per-key quantum grows from one round to the next."""

# Kinds of operations, after preprocessing.
_READ = 0  # completed ok: legal iff state == output
_WRITE = 1  # always legal
_CAS = 2  # completed ok: legal iff state == expected
_CAS_UNKNOWN = 3  # info or never completed: always legal, sets new iff state == expected

_State = int | None


@final
@dataclass(frozen=True, slots=True)
class LinearizabilityResult:
    """The outcome of ``check_history``.

    ``key`` is the key that is not linearizable (verdict "violation") or the first key still
    undecided (verdict "unknown"); None when the verdict is "ok". ``ops`` counts operations
    after preprocessing, ``steps`` the search steps spent.
    """

    verdict: Verdict
    key: str | None
    ops: int
    steps: int
    detail: str


@dataclass(frozen=True, slots=True)
class _Op:
    process: int
    f: OpFunction
    kind: int
    arg: _State  # read: the output; write: the value; cas: expected
    new: _State  # cas: the new value; None otherwise
    call: int
    ret: int | None  # None: +infinity (outcome unknown)


def _int_or_none(value: object, what: str) -> _State:
    if value is None or isinstance(value, int):
        return value
    raise ValueError(f"{what}: expected an int or None, got {value!r}")


def _cas_pair(value: object, what: str) -> tuple[_State, int]:
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], int):
        return _int_or_none(value[0], what), value[1]
    raise ValueError(f"{what}: expected (expected, new), got {value!r}")


def _make_op(invoke: HistoryEvent, completion: HistoryEvent | None) -> _Op | None:
    """The operation to check, or None when it carries no constraint."""
    if completion is not None and completion.type == "fail":
        return None
    known = completion is not None and completion.type == "ok"
    ret = completion.time if completion is not None and known else None
    where = f"process {invoke.process} {invoke.f} on key {invoke.key!r} at t={invoke.time}"
    if invoke.f == "read":
        if completion is None or not known:
            return None
        output = _int_or_none(completion.value, where)
        return _Op(invoke.process, "read", _READ, output, None, invoke.time, ret)
    if invoke.f == "write":
        written = _int_or_none(invoke.value, where)
        if written is None:
            raise ValueError(f"{where}: a write carries the int written")
        if completion is not None and known and completion.value != written:
            raise ValueError(f"{where}: completed with {completion.value!r}, wrote {written!r}")
        return _Op(invoke.process, "write", _WRITE, written, None, invoke.time, ret)
    expected, new = _cas_pair(invoke.value, where)
    if completion is not None and known and completion.value != invoke.value:
        raise ValueError(f"{where}: completed with {completion.value!r}, not {invoke.value!r}")
    kind = _CAS if known else _CAS_UNKNOWN
    return _Op(invoke.process, "cas", kind, expected, new, invoke.time, ret)


def _operations(events: Iterable[HistoryEvent]) -> dict[str, list[_Op]]:
    """Pair invokes with completions and group the resulting operations by key.

    Raises ValueError on a malformed history (a completion without a pending invoke, a second
    invoke while one is pending, a completion that does not match its invoke).
    """
    invokes: list[HistoryEvent] = []
    completions: list[HistoryEvent | None] = []
    open_ops: dict[int, int] = {}  # process -> index of its pending invoke
    for event in events:
        if event.type == "invoke":
            if event.process in open_ops:
                raise ValueError(
                    f"process {event.process} invoked at t={event.time} while an operation "
                    "was pending"
                )
            open_ops[event.process] = len(invokes)
            invokes.append(event)
            completions.append(None)
            continue
        index = open_ops.pop(event.process, None)
        if index is None:
            raise ValueError(
                f"process {event.process} completed at t={event.time} without a pending invoke"
            )
        invoke = invokes[index]
        if event.f != invoke.f or event.key != invoke.key:
            raise ValueError(
                f"process {event.process}: completion {event.f} on {event.key!r} does not match "
                f"invoke {invoke.f} on {invoke.key!r}"
            )
        if event.time < invoke.time:
            raise ValueError(
                f"process {event.process}: completed at t={event.time} before its invoke at "
                f"t={invoke.time}"
            )
        completions[index] = event
    by_key: dict[str, list[_Op]] = {}
    for invoke, completion in zip(invokes, completions, strict=True):
        op = _make_op(invoke, completion)
        if op is not None:
            by_key.setdefault(invoke.key, []).append(op)
    pruned = {key: _without_unobserved(ops) for key, ops in by_key.items()}
    return {key: ops for key, ops in pruned.items() if ops}


def _without_unobserved(ops: list[_Op]) -> list[_Op]:
    """Drop the operations of unknown outcome whose effect no operation could observe.

    An unknown write of v, or an unknown cas setting v, where no read returned v and no cas
    expected v, can be moved to "never" in any linearization: what follows it up to the next
    write is then only unknown cas ops that did not fire, which can be moved to the end.
    """
    # A read's output and a cas's expected value are both held in ``arg``.
    observed = {op.arg for op in ops if op.kind != _WRITE and op.arg is not None}
    return [
        op
        for op in ops
        if op.ret is not None or (op.new if op.kind == _CAS_UNKNOWN else op.arg) in observed
    ]


def _seconds(ns: int) -> str:
    return f"{ns // 1_000_000_000}.{ns % 1_000_000_000 // 1_000:06d}s"


def _show(value: _State) -> str:
    return "absent" if value is None else str(value)


def _describe(op: _Op) -> str:
    at = f"by process {op.process} at t={_seconds(op.call)}"
    if op.kind == _READ:
        returned = "nothing (key absent)" if op.arg is None else str(op.arg)
        return f"read {at} returned {returned}"
    if op.kind == _WRITE:
        return f"write of {op.arg} {at}"
    return f"cas {_show(op.arg)}->{_show(op.new)} {at} succeeded"


@final
class _KeySearch:
    """A resumable Wing & Gong / Lowe search over the operations on one key.

    The linked list lives in arrays indexed by node: node 0 is the head, node ``m + 1`` the
    tail, nodes ``1..m`` the call and return entries in time order.
    """

    def __init__(self, key: str, ops: list[_Op]) -> None:
        self.key = key
        # Stable sort: operations called at the same instant keep the history's order.
        self.ops = sorted(ops, key=lambda op: op.call)
        timeline: list[tuple[int, int, int]] = []  # (time, 0 call / 1 return, op index)
        for index, op in enumerate(self.ops):
            timeline.append((op.call, 0, index))
            if op.ret is not None:
                timeline.append((op.ret, 1, index))
        timeline.sort()
        size = len(timeline)
        self.tail = size + 1
        self.node_op = [-1] * (size + 2)
        self.node_is_call = [False] * (size + 2)
        self.match = [-1] * (size + 2)  # call node -> its return node, or -1 (+infinity)
        call_node = [0] * len(self.ops)
        for node, (_, is_return, index) in enumerate(timeline, start=1):
            self.node_op[node] = index
            if is_return:
                self.match[call_node[index]] = node
            else:
                self.node_is_call[node] = True
                call_node[index] = node
        self.next = [*range(1, size + 2), self.tail]
        self.prev = [0, *range(0, size + 1)]
        self.kinds = [op.kind for op in self.ops]
        self.args = [op.arg for op in self.ops]
        self.news = [op.new for op in self.ops]
        self.stack: list[tuple[int, _State]] = []  # (linearized call node, state before it)
        self.cache: set[tuple[int, _State]] = set()
        self.state: _State = None
        self.linearized = 0
        self.entry = self.next[0]
        self.remaining = sum(1 for op in self.ops if op.ret is not None)
        self.deepest = -1
        self.blocked = -1  # op whose return was hit at the deepest point
        self.verdict: Literal["ok", "violation"] | None = "ok" if self.remaining == 0 else None

    def run(self, budget: int) -> int:
        """Search for at most ``budget`` steps; return the steps used. Sets ``verdict``."""
        if self.verdict is not None:
            return 0
        nxt, prv, match = self.next, self.prev, self.match
        node_op, node_is_call = self.node_op, self.node_is_call
        kinds, args, news = self.kinds, self.args, self.news
        stack, cache = self.stack, self.cache
        state, linearized, entry = self.state, self.linearized, self.entry
        remaining = self.remaining
        steps = 0
        while steps < budget:
            steps += 1
            if node_is_call[entry]:
                index = node_op[entry]
                kind = kinds[index]
                if kind == _READ:
                    legal = state == args[index]
                    new_state = state
                elif kind == _WRITE:
                    legal = True
                    new_state = args[index]
                elif kind == _CAS:
                    legal = state == args[index]
                    new_state = news[index]
                else:
                    legal = True
                    new_state = news[index] if state == args[index] else state
                if legal:
                    new_linearized = linearized | (1 << index)
                    config = (new_linearized, new_state)
                    if config not in cache:
                        cache.add(config)
                        stack.append((entry, state))
                        state = new_state
                        linearized = new_linearized
                        # Lift the call entry, then its return entry.
                        nxt[prv[entry]] = nxt[entry]
                        prv[nxt[entry]] = prv[entry]
                        ret = match[entry]
                        if ret >= 0:
                            nxt[prv[ret]] = nxt[ret]
                            prv[nxt[ret]] = prv[ret]
                            remaining -= 1
                            if remaining == 0:
                                self.verdict = "ok"
                                break
                        entry = nxt[0]
                        continue
                entry = nxt[entry]
                continue
            # A return entry: its operation's deadline passed before it was linearized.
            if entry == self.tail:  # pragma: no cover - a finite return always precedes it
                raise AssertionError("linearizability search walked off the list")
            if len(stack) > self.deepest:
                self.deepest = len(stack)
                self.blocked = node_op[entry]
            if not stack:
                self.verdict = "violation"
                break
            call, state = stack.pop()
            linearized &= ~(1 << node_op[call])
            # Put back the return entry, then the call entry (reverse order of the lift).
            ret = match[call]
            if ret >= 0:
                nxt[prv[ret]] = ret
                prv[nxt[ret]] = ret
                remaining += 1
            nxt[prv[call]] = call
            prv[nxt[call]] = call
            entry = nxt[call]
        self.state, self.linearized, self.entry = state, linearized, entry
        self.remaining = remaining
        return steps

    def violation_detail(self) -> str:
        op = self.ops[self.blocked]
        return (
            f"key {self.key}: {_describe(op)}, which no linearization allows (completed at "
            f"t={_seconds(op.ret or 0)}; longest linearizable prefix: {self.deepest} of "
            f"{len(self.ops)} operations)"
        )


def check_history(
    events: Iterable[HistoryEvent], *, max_steps: int = 2_000_000
) -> LinearizabilityResult:
    """Check that ``events`` is linearizable for a per-key compare-and-set register.

    Raises ValueError on a malformed history or a negative ``max_steps``.
    """
    if max_steps < 0:
        raise ValueError(f"max_steps must be non-negative, got {max_steps}")
    by_key = _operations(events)
    keys = sorted(by_key)
    ops = sum(len(key_ops) for key_ops in by_key.values())
    searches = [_KeySearch(key, by_key[key]) for key in keys]
    undecided = [search for search in searches if search.verdict is None]
    steps = 0
    quantum = FIRST_QUANTUM
    while undecided and steps < max_steps:
        still_undecided: list[_KeySearch] = []
        for search in undecided:
            steps += search.run(min(quantum, max_steps - steps))
            if search.verdict == "violation":
                return LinearizabilityResult(
                    "violation", search.key, ops, steps, search.violation_detail()
                )
            if search.verdict is None:
                still_undecided.append(search)
        undecided = still_undecided
        quantum *= QUANTUM_GROWTH
    if undecided:
        first = undecided[0]
        return LinearizabilityResult(
            "unknown",
            first.key,
            ops,
            steps,
            f"key {first.key}: undecided after {steps} steps (max_steps={max_steps}); "
            f"{len(undecided)} of {len(keys)} keys undecided, no violation found",
        )
    return LinearizabilityResult(
        "ok", None, ops, steps, f"{ops} operations on {len(keys)} keys linearizable"
    )
