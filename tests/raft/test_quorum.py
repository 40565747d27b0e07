"""``prism.raft.quorum`` against naive versions that follow the definitions word for word."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prism.raft.quorum import VoteResult, committed_index, majority, vote_result

FAST = settings(max_examples=200, deadline=None)


def naive_committed_index(matches: Sequence[int]) -> int:
    """The largest index that more than half of the voters hold (each holds every index up
    to its match index)."""
    return max(
        index
        for index in range(max(matches) + 1)
        if 2 * sum(1 for m in matches if m >= index) > len(matches)
    )


def naive_vote_result(votes: Mapping[str, bool], voters: Sequence[str]) -> VoteResult:
    """Try every way the voters who have not answered could still vote."""
    silent = [v for v in voters if v not in votes]
    outcomes = set()
    for rest in itertools.product([True, False], repeat=len(silent)):
        granted = sum(votes.values()) + sum(rest)
        outcomes.add(2 * granted > len(voters))
    if outcomes == {True}:
        return VoteResult.WON
    if outcomes == {False}:
        return VoteResult.LOST
    return VoteResult.PENDING


@pytest.mark.slow
@FAST
@given(st.lists(st.integers(0, 20), min_size=1, max_size=9))
def test_committed_index_matches_naive(matches: list[int]) -> None:
    assert committed_index(matches) == naive_committed_index(matches)
    assert committed_index(reversed(matches)) == committed_index(matches)


@pytest.mark.slow
@FAST
@given(st.integers(1, 9), st.data())
def test_vote_result_matches_naive(size: int, data: st.DataObject) -> None:
    voters = [f"n{i}" for i in range(size)]
    answered = data.draw(st.lists(st.sampled_from(voters), unique=True))
    votes = {v: data.draw(st.booleans(), label=v) for v in answered}
    assert vote_result(votes, size) is naive_vote_result(votes, voters)


@pytest.mark.parametrize(("voters", "needed"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (7, 4)])
def test_majority(voters: int, needed: int) -> None:
    assert majority(voters) == needed


def test_committed_index_needs_voters() -> None:
    with pytest.raises(ValueError, match="no voters"):
        committed_index([])
