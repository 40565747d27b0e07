"""Explore: random fault schedules over many seeds must keep every invariant, and the
checkers must be able to fail (a checker that cannot fail proves nothing)."""

from __future__ import annotations

import json
import pathlib

from prism.sim.explore import explore, shrink
from prism.sim.runner import Fault, Params
from prism.sim.scenarios import explore_schedule, run_scenario


def test_explore_keeps_every_invariant(explore_seeds: int) -> None:
    failures = [
        f"seed {o.seed}: {o.first_violation}\n  replay: {o.replay}"
        for o in explore(Params(), range(1, explore_seeds + 1), jobs=2)
        if not o.ok
    ]
    assert not failures, "\n".join(failures)


def test_explore_finds_votes_granted_without_the_log_check() -> None:
    """Raft §5.4.1 broken on purpose: explore must report a seed that loses committed data."""
    outcomes = list(explore(Params(unsafe_skip_vote_log_check=True), range(1, 41)))
    failing = [o for o in outcomes if not o.ok]
    assert failing, "explore did not catch votes granted to stale logs in 40 seeds"
    first = failing[0]
    assert {"state-machine-safety", "leader-completeness"} & set(first.broken)
    assert f"--seed {first.seed}" in first.replay
    assert "--unsafe-skip-vote-log-check" in first.replay


def test_figure_8_is_caught_when_old_terms_commit_by_counting() -> None:
    """Raft §5.4.2 / Figure 8 broken on purpose: committing an earlier term's entry by
    counting replicas lets a later leader overwrite it; with the rule it cannot happen."""
    for seed in (1, 2, 3):
        broken = run_scenario("figure-8", Params(seed=seed, unsafe_commit_old_terms=True))
        assert not broken.ok
        assert broken.invariants["state-machine-safety"] is not True
        assert run_scenario("figure-8", Params(seed=seed)).ok


def test_shrink_keeps_a_smaller_schedule_that_still_fails() -> None:
    params = Params(seed=4, unsafe_skip_vote_log_check=True)
    schedule = explore_schedule(params, 20.0)
    assert not run_scenario("explore", params, schedule).ok
    smaller = shrink(params, schedule)
    assert len(smaller) < len(schedule)
    assert not run_scenario("explore", params, smaller).ok


def test_leadership_reported_late_is_judged_in_its_own_term() -> None:
    """Regression (explore seed 2854): n4 won term 2, was paused while its Ready waited
    for the disk, and on resume its inbox moved it to term 4 before the Ready was taken.
    The checker must use the term in the note, not the core's current term, or it reports
    two leaders in term 4 that never existed. The schedule is pinned (explore has drawn
    other faults since membership changes joined it)."""
    path = pathlib.Path(__file__).parent / "data" / "explore-2854-schedule.json"
    schedule = [Fault.from_json(item) for item in json.loads(path.read_text())]
    result = run_scenario("explore", Params(seed=2854), schedule)
    assert result.invariants["election-safety"] is True
    assert result.ok
    late = [e.text for e in result.timeline if "reported late" in e.text]
    assert late
    assert late[0].startswith("became leader of term 2")
