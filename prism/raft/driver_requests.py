"""The callers waiting on a Raft driver, and their bounds.

A proposal waits until the entry at its index is applied: it resolves with the state
machine's result if that entry has the proposal's term, and fails with ``ProposalLost`` if
another leader's entry took the index (log matching: an (index, term) pair names one entry).
A read waits until the core confirms its read index (a ``ReadState``) and the state machine
has applied that index; a read the core drops (it stopped leading) fails with ``NotLeader``.

The waiting is bounded: past ``max_proposals`` proposals, ``max_bytes`` bytes of them, or
``max_reads`` reads, a new request fails at once with ``Overloaded``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, TypeVar, final

import trio

from prism.errors import Overloaded, ProposalLost, RaftError
from prism.raft.messages import Entry
from prism.raft.ready import ReadState

R = TypeVar("R")
T = TypeVar("T")


class Waiter(Generic[T]):
    """One waiting caller's outcome: a value, or an exception to raise. Set once.

    A caller either awaits ``wait``, or gives a callback (``on_done``) that runs, once, in
    the task that settles the outcome: it must not block and should not raise.
    """

    __slots__ = ("_callback", "_done", "_error", "_event", "_value")

    def __init__(self) -> None:
        self._done = False
        self._event: trio.Event | None = None  # made by wait(): callers with a callback need none
        self._value: tuple[T] | None = None
        self._error: RaftError | None = None
        self._callback: Callable[[Waiter[T]], None] | None = None

    @property
    def done(self) -> bool:
        return self._done

    @property
    def succeeded(self) -> bool:
        """Settled with a value (``outcome()`` returns it without raising)."""
        return self._value is not None

    def resolve(self, value: T) -> None:
        if not self._done:
            self._value = (value,)
            self._settled()

    def fail(self, error: RaftError) -> None:
        if not self._done:
            self._error = error
            self._settled()

    def _settled(self) -> None:
        self._done = True
        if self._event is not None:
            self._event.set()
        callback, self._callback = self._callback, None
        if callback is not None:
            callback(self)

    def on_done(self, callback: Callable[[Waiter[T]], None]) -> None:
        """Call ``callback(self)`` once the outcome is known (now, if it already is)."""
        if self.done:
            callback(self)
        else:
            self._callback = callback

    def outcome(self) -> T:
        """The value of a settled waiter, or raise its error (RuntimeError if unsettled)."""
        if self._error is not None:
            raise self._error
        if self._value is None:
            raise RuntimeError("the outcome is not known yet")
        return self._value[0]

    async def wait(self, timeout_s: float, on_timeout: Callable[[], RaftError]) -> T:
        """The value, or raise the error; ``on_timeout()`` if nothing came in time."""
        if not self._done:
            self._event = trio.Event()
            with trio.move_on_after(timeout_s):
                await self._event.wait()
        else:
            await trio.lowlevel.checkpoint()
        if self._error is not None:
            raise self._error
        if self._value is None:
            raise on_timeout()
        return self._value[0]


# A proposal waiting for its entry: (term, size in bytes, waiter). A plain tuple: the leader
# makes one per write, and a slotted dataclass took five times as long to build.
_Proposal = tuple[int, int, Waiter[R]]


@final
class PendingRequests(Generic[R]):
    """Proposals by log index and reads by request id, with their bounds.

    Invariant: ``bytes`` is the sum of the sizes of the proposals held.
    """

    def __init__(self, *, max_proposals: int, max_bytes: int, max_reads: int) -> None:
        self.max_proposals = max_proposals
        self.max_bytes = max_bytes
        self.max_reads = max_reads
        self.bytes = 0
        self.lost = 0  # proposals that failed with ProposalLost
        self._proposals: dict[int, _Proposal[R]] = {}
        self._reads: dict[int, Waiter[int]] = {}
        self._confirmed: list[tuple[int, int]] = []  # (read index, request id)

    @property
    def proposals(self) -> int:
        return len(self._proposals)

    @property
    def reads(self) -> int:
        return len(self._reads)

    # ------------------------------------------------------------------ proposals

    def check_room_for_proposal(self, size: int, node_id: str) -> None:
        if len(self._proposals) >= self.max_proposals:
            raise Overloaded(
                f"{len(self._proposals)} proposals already wait on {node_id} "
                f"(max_pending_proposals={self.max_proposals})"
            )
        if self.bytes + size > self.max_bytes:
            raise Overloaded(
                f"{self.bytes} bytes of proposals already wait on {node_id}; "
                f"{size} more would pass max_pending_bytes={self.max_bytes}"
            )

    def add_proposal(self, index: int, term: int, size: int) -> Waiter[R]:
        """Wait for the entry (``index``, ``term``). An older proposal of ours at the same
        index was truncated away (we proposed again there): it is lost."""
        previous = self._proposals.get(index)
        if previous is not None:
            previous_term, _, previous_waiter = previous
            self.forget_proposal(index, previous_waiter)
            previous_waiter.fail(self._lost(index, previous_term))
        waiter: Waiter[R] = Waiter()
        self._proposals[index] = (term, size, waiter)
        self.bytes += size
        return waiter

    def forget_proposal(self, index: int, waiter: Waiter[R]) -> None:
        """Stop tracking the proposal (its caller gave up); no-op if already gone."""
        proposal = self._proposals.get(index)
        if proposal is not None and proposal[2] is waiter:
            del self._proposals[index]
            self.bytes -= proposal[1]

    def applied(self, entry: Entry, result: R) -> None:
        """``entry`` was applied with ``result``: resolve (or lose) the proposal there."""
        proposal = self._proposals.pop(entry.index, None)
        if proposal is None:
            return
        term, size, waiter = proposal
        self.bytes -= size  # forgotten, as forget_proposal would
        if term == entry.term:
            waiter.resolve(result)
        else:
            waiter.fail(self._lost(entry.index, term))

    def _lost(self, index: int, term: int) -> ProposalLost:
        self.lost += 1
        return ProposalLost(f"entry {index} of term {term} was overwritten by another leader")

    # ------------------------------------------------------------------ reads

    def check_room_for_read(self, node_id: str) -> None:
        if len(self._reads) >= self.max_reads:
            raise Overloaded(
                f"{len(self._reads)} reads already wait on {node_id} "
                f"(max_pending_reads={self.max_reads})"
            )

    def add_read(self, request_id: int) -> Waiter[int]:
        waiter: Waiter[int] = Waiter()
        self._reads[request_id] = waiter
        return waiter

    def forget_read(self, request_id: int) -> None:
        self._reads.pop(request_id, None)

    def reads_progressed(
        self,
        confirmed: Sequence[ReadState],
        dropped: Sequence[int],
        applied_index: int,
        not_leader: Callable[[], RaftError],
    ) -> None:
        """Take one ``Ready``'s read states and dropped reads; serve every confirmed read
        whose index is applied (with the applied index)."""
        self._confirmed.extend(
            (s.index, s.request_id) for s in confirmed if s.request_id in self._reads
        )
        for request_id in dropped:
            waiter = self._reads.pop(request_id, None)
            if waiter is not None:
                waiter.fail(not_leader())
        waiting = []
        for index, request_id in self._confirmed:
            if index > applied_index:
                waiting.append((index, request_id))
                continue
            served = self._reads.pop(request_id, None)
            if served is not None:
                served.resolve(applied_index)
        self._confirmed = waiting

    # ------------------------------------------------------------------ all

    def fail_all(self, error: RaftError) -> None:
        proposals, self._proposals = self._proposals, {}
        reads, self._reads = self._reads, {}
        self.bytes = 0
        self._confirmed = []
        for _, _, proposer in proposals.values():
            proposer.fail(error)
        for waiter in reads.values():
            waiter.fail(error)
