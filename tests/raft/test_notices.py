"""The leader's held commit notices (``prism.raft.notices``), which the driver and the
simulator share."""

from __future__ import annotations

from prism.raft.messages import AppendEntries, AppendEntriesReply, Entry
from prism.raft.notices import NoticeHold
from prism.raft.ready import Outbound


def notice(to: str, *, commit: int, term: int = 2) -> Outbound:
    return Outbound(
        to,
        AppendEntries(
            term=term, prev_log_index=5, prev_log_term=term, entries=(), leader_commit=commit
        ),
    )


def append(to: str, *, commit: int, term: int = 2) -> Outbound:
    entry = Entry(term=term, index=6, data=b"x")
    return Outbound(
        to,
        AppendEntries(
            term=term, prev_log_index=5, prev_log_term=term, entries=(entry,), leader_commit=commit
        ),
    )


def test_a_leaders_commit_notice_waits_for_the_tick_and_the_newest_wins() -> None:
    hold = NoticeHold()
    assert not hold.admit(notice("n2", commit=4), leading=True)
    assert not hold.admit(notice("n2", commit=5), leading=True)
    assert not hold.admit(notice("n3", commit=5), leading=True)
    assert hold
    released = hold.release(leading=True, term=2)
    assert [(o.to, o.message.leader_commit) for o in released] == [("n2", 5), ("n3", 5)]  # type: ignore[union-attr]
    assert hold.superseded == 1
    assert not hold
    assert hold.release(leading=True, term=2) == []


def test_an_append_that_tells_as_much_drops_the_held_notice() -> None:
    hold = NoticeHold()
    hold.admit(notice("n2", commit=5), leading=True)
    hold.admit(notice("n3", commit=5), leading=True)
    assert hold.admit(append("n2", commit=5), leading=True)
    assert hold.admit(append("n3", commit=4), leading=True)  # tells less: n3 keeps its notice
    assert [o.to for o in hold.release(leading=True, term=2)] == ["n3"]
    assert hold.superseded == 1


def test_an_append_of_another_term_does_not_drop_the_notice() -> None:
    hold = NoticeHold()
    hold.admit(notice("n2", commit=5, term=2), leading=True)
    assert hold.admit(append("n2", commit=9, term=3), leading=True)
    assert [o.to for o in hold.release(leading=True, term=2)] == ["n2"]


def test_nothing_held_is_sent_once_leadership_or_its_term_is_gone() -> None:
    hold = NoticeHold()
    hold.admit(notice("n2", commit=5), leading=True)
    assert hold.release(leading=False, term=2) == []
    hold.admit(notice("n2", commit=5), leading=True)
    assert hold.release(leading=True, term=3) == []
    assert not hold


def test_only_a_leaders_empty_appends_are_held() -> None:
    hold = NoticeHold()
    assert hold.admit(notice("n2", commit=5), leading=False)
    assert hold.admit(append("n2", commit=5), leading=True)
    assert hold.admit(
        Outbound("n2", AppendEntriesReply(term=2, success=True, match_index=5)), leading=True
    )
    assert not hold


def test_a_notice_held_again_yields_to_a_newer_one() -> None:
    hold = NoticeHold()
    old = notice("n2", commit=4)
    hold.admit(old, leading=True)
    (released,) = hold.release(leading=True, term=2)
    hold.admit(notice("n2", commit=6), leading=True)  # held while the socket was full
    hold.hold_again(released)
    (kept,) = hold.release(leading=True, term=2)
    assert kept.message.leader_commit == 6  # type: ignore[union-attr]
    hold.hold_again(old)
    assert hold.release(leading=True, term=2) == [old]
