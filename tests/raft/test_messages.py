"""The messages' own validation: the one-pass checks of the common case must accept
exactly what the full checks accept (a differential test against a naive predicate)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prism.raft.messages import AppendEntries, AppendEntriesReply, Entry

_INTS = st.one_of(st.integers(-2, 6), st.booleans())


def _naive_non_negative(*values: object) -> bool:
    return all(type(v) is int and v >= 0 for v in values)


@given(
    term=_INTS,
    prev_log_index=_INTS,
    prev_log_term=_INTS,
    leader_commit=_INTS,
    entries=st.lists(st.tuples(st.integers(0, 7), st.integers(1, 9)), max_size=4),
    as_tuple=st.booleans(),
    stranger=st.booleans(),
)
def test_append_entries_accepts_exactly_the_valid_ones(
    term: int,
    prev_log_index: int,
    prev_log_term: int,
    leader_commit: int,
    entries: list[tuple[int, int]],
    as_tuple: bool,
    stranger: bool,
) -> None:
    """Raft §5.3: entries follow prev_log_index consecutively, none newer than the term."""
    built: list[object] = [Entry(term=t, index=i) for t, i in entries]
    if stranger and built:
        built[-1] = "not an entry"
    valid = (
        _naive_non_negative(term, prev_log_index, prev_log_term, leader_commit)
        and as_tuple
        and all(type(e) is Entry for e in built)
        and all(
            isinstance(e, Entry) and e.index == prev_log_index + 1 + n and e.term <= term
            for n, e in enumerate(built)
        )
    )
    fields = {
        "term": term,
        "prev_log_index": prev_log_index,
        "prev_log_term": prev_log_term,
        "leader_commit": leader_commit,
        "entries": tuple(built) if as_tuple else built,
    }
    if valid:
        AppendEntries(**fields)  # type: ignore[arg-type]
    else:
        with pytest.raises(ValueError, match=r"must be|cannot be"):
            AppendEntries(**fields)  # type: ignore[arg-type]


@given(
    term=_INTS,
    success=st.one_of(st.booleans(), st.integers(0, 1)),
    match_index=_INTS,
    rejected_index=_INTS,
    hint_index=_INTS,
    hint_term=_INTS,
)
def test_append_entries_reply_accepts_exactly_the_valid_ones(
    term: int,
    success: bool,
    match_index: int,
    rejected_index: int,
    hint_index: int,
    hint_term: int,
) -> None:
    fields = {
        "term": term,
        "success": success,
        "match_index": match_index,
        "rejected_index": rejected_index,
        "hint_index": hint_index,
        "hint_term": hint_term,
    }
    valid = type(success) is bool and _naive_non_negative(
        term, match_index, rejected_index, hint_index, hint_term
    )
    if valid:
        AppendEntriesReply(**fields)  # type: ignore[arg-type]
    else:
        with pytest.raises(ValueError, match=r"must be|cannot be"):
            AppendEntriesReply(**fields)  # type: ignore[arg-type]
