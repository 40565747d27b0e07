"""Explore: many seeds of random fault schedules, in parallel processes, stopping at nothing.

Each seed is an independent run of the ``explore`` scenario (its schedule and network
quality drawn from the seed), so seeds can be spread over worker processes and the result
is the same whatever the number of workers. A failing seed is reported with the command that
replays it, and its fault schedule can be shrunk (``shrink``): faults are dropped one at a
time for as long as the same invariant still breaks, which leaves a smaller schedule that a
person can read (delta debugging, kept simple).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from prism.sim.runner import Fault, Params
from prism.sim.scenarios import explore_schedule, run_scenario


@dataclass(frozen=True, slots=True)
class SeedOutcome:
    seed: int
    ok: bool
    broken: tuple[str, ...]  # invariants or expectations that failed
    first_violation: str
    elections: int
    sim_seconds: float
    wall_seconds: float
    replay: str


def run_seed(params: Params) -> SeedOutcome:
    result = run_scenario("explore", params)
    broken = tuple(
        name
        for name, held in [*result.invariants.items(), *result.expectations.items()]
        if held is not True and not str(held).startswith(("unknown", "not checked"))
    )
    first = ""
    if broken:
        name = broken[0]
        first = f"{name}: {result.invariants.get(name, result.expectations.get(name))}"
    return SeedOutcome(
        params.seed,
        result.ok,
        broken,
        first,
        result.elections,
        result.sim_seconds,
        result.wall_seconds,
        result.replay,
    )


def explore(base: Params, seeds: range, *, jobs: int = 1) -> Iterator[SeedOutcome]:
    """Run ``explore`` for every seed in ``seeds``; yields outcomes in seed order."""
    all_params = [dataclasses.replace(base, seed=seed) for seed in seeds]
    if jobs <= 1:
        for params in all_params:
            yield run_seed(params)
        return
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        yield from pool.map(run_seed, all_params, chunksize=4)


def shrink(
    params: Params,
    schedule: list[Fault],
    still_fails: Callable[[list[Fault]], bool] | None = None,
) -> list[Fault]:
    """A smaller schedule that still breaks the run (one fault removed at a time)."""

    def fails(candidate: list[Fault]) -> bool:
        return not run_scenario("explore", params, candidate).ok

    check = still_fails or fails
    current = list(schedule)
    changed = True
    while changed:
        changed = False
        for i in range(len(current)):
            candidate = current[:i] + current[i + 1 :]
            if check(candidate):
                current = candidate
                changed = True
                break
    return current


def default_schedule(params: Params) -> list[Fault]:
    return explore_schedule(params, params.duration_s or 20.0)
