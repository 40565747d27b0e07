"""One seed, one SWIM run: the same seed gives the same event log and digest (in another
process too, whatever its string-hash salt); different seeds differ; and tick elision
changes nothing (the same digest as ticking every core every tick)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest

from prism.sim.swim_scenarios import SWIM_SCENARIOS, SwimParams, run_swim_scenario


@pytest.mark.parametrize("name", list(SWIM_SCENARIOS))
def test_same_seed_same_digest_and_timeline(name: str) -> None:
    first = run_swim_scenario(name, SwimParams(nodes=10, seed=11))
    second = run_swim_scenario(name, SwimParams(nodes=10, seed=11))
    assert first.digest == second.digest
    assert [e.render() for e in first.timeline] == [e.render() for e in second.timeline]
    assert first.figures == second.figures
    assert first.messages == second.messages


@pytest.mark.slow
@pytest.mark.parametrize("name", ["swim-crash", "swim-loss"])
def test_different_seeds_differ(name: str) -> None:
    digests = {run_swim_scenario(name, SwimParams(nodes=10, seed=s)).digest for s in range(5)}
    assert len(digests) == 5


@pytest.mark.parametrize("name", list(SWIM_SCENARIOS))
def test_tick_elision_changes_nothing(name: str) -> None:
    """A core sleeps until its next work tick and catches up when a message arrives; with
    ``tick_elision=False`` every core is ticked every tick. Same inputs, same run."""
    lazy = run_swim_scenario(name, SwimParams(nodes=10, seed=5))
    eager = run_swim_scenario(name, SwimParams(nodes=10, seed=5, tick_elision=False))
    assert lazy.digest == eager.digest
    assert lazy.figures == eager.figures


@pytest.mark.slow
def test_tick_elision_changes_nothing_at_forty_members_without_lifeguard() -> None:
    params = SwimParams(nodes=40, seed=2, lifeguard=False)
    lazy = run_swim_scenario("swim-partition", params)
    eager = run_swim_scenario("swim-partition", dataclasses.replace(params, tick_elision=False))
    assert lazy.digest == eager.digest


def _digest_in_subprocess(hash_seed: str) -> str:
    code = (
        "from prism.sim.swim_scenarios import SwimParams, run_swim_scenario\n"
        "print(run_swim_scenario('swim-partition', SwimParams(nodes=8, seed=21)).digest)\n"
    )
    env = dict(os.environ, PYTHONHASHSEED=hash_seed)
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


@pytest.mark.slow
def test_digest_is_stable_across_processes_and_hash_seeds() -> None:
    here = run_swim_scenario("swim-partition", SwimParams(nodes=8, seed=21)).digest
    assert _digest_in_subprocess("1") == here
    assert _digest_in_subprocess("4242") == here
