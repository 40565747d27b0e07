"""The member table: what this node believes about every member it knows.

Theory of operation. Each member has a state (``alive``, ``suspect``, ``dead``, ``left``), an
incarnation number that only the member itself raises, its advertise address, its metadata
and the tick its state last changed (which reaping reads). News about a member arrives as
an ``Update`` and is applied only if it is *newer* under SWIM's precedence (SWIM §4.2,
memberlist ``state.go``), decided in one place, ``supersedes``:

* ``alive`` at incarnation i replaces anything at an incarnation below i (a member refutes a
  suspicion, or comes back after death or leave, by raising its incarnation);
* ``suspect`` at i replaces ``alive`` at i or below, and ``suspect`` below i;
* ``dead`` at i replaces ``alive`` or ``suspect`` at i or below;
* ``left`` at i replaces ``alive``, ``suspect`` or ``dead`` at i or below (a graceful leave
  is the better explanation for a silent member than a crash).

News about an unknown member is accepted only when it is ``alive``: a suspicion or death of
a member we never heard of teaches nothing we could act on. News about this node itself
never reaches the table: the core refutes it instead.

Iteration order is insertion order (a dict), never a set's, so that equal seeds give equal
runs.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from prism.swim.messages import Update, UpdateKind


class MemberState(enum.StrEnum):
    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"


_STATE_OF_KIND = {
    UpdateKind.ALIVE: MemberState.ALIVE,
    UpdateKind.SUSPECT: MemberState.SUSPECT,
    UpdateKind.DEAD: MemberState.DEAD,
    UpdateKind.LEFT: MemberState.LEFT,
}
_KIND_OF_STATE = {state: kind for kind, state in _STATE_OF_KIND.items()}
_RANK = {MemberState.ALIVE: 0, MemberState.SUSPECT: 1, MemberState.DEAD: 2, MemberState.LEFT: 3}


def state_of(kind: UpdateKind) -> MemberState:
    return _STATE_OF_KIND[kind]


@dataclass(slots=True)
class Member:
    """One member as this node sees it.

    Invariant: ``incarnation`` never decreases while the member is in the table.
    Invariant: ``state_tick`` is the tick of the last change of ``state``.
    """

    name: str
    address: str
    incarnation: int
    meta: bytes
    state: MemberState
    state_tick: int
    heard_tick: int = -1  # the last tick a message came from it directly (-1: never)

    @property
    def is_live(self) -> bool:
        """Alive or suspect: probed, gossiped to, and counted in the cluster size."""
        return self.state is MemberState.ALIVE or self.state is MemberState.SUSPECT

    def as_update(self, origin: str) -> Update:
        """This member's state as news (push-pull carries the whole table this way)."""
        kind = _KIND_OF_STATE[self.state]
        return Update(
            kind=kind,
            node=self.name,
            incarnation=self.incarnation,
            address=self.address,
            meta=self.meta,
            origin=origin if kind in (UpdateKind.SUSPECT, UpdateKind.DEAD) else "",
        )


def supersedes(member: Member | None, update: Update) -> bool:
    """True when ``update`` is newer than what we hold about its member (module docstring).

    A suspect at the *same* incarnation as a suspect we hold is not newer: it may still be a
    confirmation, which the suspicion timer counts.
    """
    if member is None:
        return update.kind is UpdateKind.ALIVE
    if update.kind is UpdateKind.ALIVE:
        return update.incarnation > member.incarnation
    if update.incarnation < member.incarnation:
        return False
    new = state_of(update.kind)
    if update.incarnation > member.incarnation:
        # A later incarnation wins, except that news of a failure never revives a member
        # that is already dead or gone (only the member's own alive can do that).
        return _RANK[new] >= _RANK[member.state]
    return _RANK[new] > _RANK[member.state]


class MemberTable:
    """Members by name, this node included.

    Invariant: ``_counts[state]`` is the number of members in ``state``; every change of a
    member's state goes through ``set_state`` (or ``add`` / ``remove``) to keep it so.
    Invariant: ``version`` changes whenever a member is added, removed or changes state, so
    that callers may cache lists derived from the table until it does.
    """

    def __init__(self) -> None:
        self._members: dict[str, Member] = {}
        self._counts: dict[MemberState, int] = dict.fromkeys(MemberState, 0)
        self.version = 0
        self.lookup = self._members.get  # ``get`` without a call in between (a hot path)

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, name: object) -> bool:
        return name in self._members

    def get(self, name: str) -> Member | None:
        return self._members.get(name)

    def add(self, member: Member) -> None:
        old = self._members.get(member.name)
        if old is not None:
            self._counts[old.state] -= 1
        self._members[member.name] = member
        self._counts[member.state] += 1
        self.version += 1

    def remove(self, name: str) -> None:
        member = self._members.pop(name)
        self._counts[member.state] -= 1
        self.version += 1

    def set_state(self, member: Member, state: MemberState, tick: int) -> None:
        """Move ``member`` (which is in the table) to ``state`` as of ``tick``."""
        self._counts[member.state] -= 1
        self._counts[state] += 1
        member.state = state
        member.state_tick = tick
        self.version += 1

    def all(self) -> list[Member]:
        return list(self._members.values())

    def names(self) -> list[str]:
        return list(self._members)

    def live_count(self) -> int:
        counts = self._counts
        return counts[MemberState.ALIVE] + counts[MemberState.SUSPECT]

    def count(self, state: MemberState) -> int:
        return self._counts[state]
