"""Quorum arithmetic as pure functions, so it can be tested against a naive version."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping


class VoteResult(enum.StrEnum):
    PENDING = "pending"
    WON = "won"
    LOST = "lost"


def majority(voters: int) -> int:
    """Smallest number of voters that is more than half of ``voters``."""
    return voters // 2 + 1


def committed_index(match_indexes: Iterable[int]) -> int:
    """The highest index that a majority of voters have durably (one match index each)."""
    ordered = sorted(match_indexes, reverse=True)
    if not ordered:
        raise ValueError("no voters")
    return ordered[majority(len(ordered)) - 1]


def vote_result(votes: Mapping[str, bool], voters: int) -> VoteResult:
    """Whether ``votes`` (voter id to granted) already decide an election among ``voters``."""
    granted = sum(1 for granted in votes.values() if granted)
    rejected = len(votes) - granted
    needed = majority(voters)
    if granted >= needed:
        return VoteResult.WON
    if rejected > voters - needed:
        return VoteResult.LOST
    return VoteResult.PENDING
