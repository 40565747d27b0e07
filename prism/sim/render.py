"""Text rendering of simulator results for ``prismctl sim``: pure functions returning lines.

Nothing here prints or reads the clock, so tests can call these functions directly and
compare their output with golden files.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from prism.sim.explore import SeedOutcome
from prism.sim.loop import NS_PER_S
from prism.sim.runner import Fault, SimResult

OVERLAP_NOTE = [
    "  (without check-quorum a leader cut off in a minority keeps believing it leads,",
    "  but it cannot commit anything: no majority acknowledges its entries)",
]
MAX_STEP_DOWNS = 5


@dataclass(frozen=True, slots=True)
class RunSetup:
    """What the runner resolved for a run: the header shows it."""

    version: str
    duration_s: float
    loss: float
    latency_ms: float


def header_line(result: SimResult, setup: RunSetup) -> str:
    return (
        f"prism {setup.version} sim {result.scenario} seed={result.seed} nodes={result.nodes} "
        f"duration={setup.duration_s:g}s link: loss={setup.loss:.4g} ({setup.loss * 100:.4g}%) "
        f"latency={setup.latency_ms:g}ms"
    )


def timeline_lines(result: SimResult, *, verbose: bool = False) -> list[str]:
    return [entry.render() for entry in result.timeline if verbose or not entry.verbose]


def verdict_text(value: bool | str) -> str:
    """``held``, ``BROKEN: <first violation>``, or an ``unknown``/``not checked`` note."""
    if value is True:
        return "held"
    if value is False:
        return "BROKEN"
    text = str(value)
    if text.startswith(("unknown", "not checked")):
        return text
    return "BROKEN: " + text.removeprefix("violated: ")


def _verdict_block(title: str, verdicts: Mapping[str, bool | str]) -> list[str]:
    if not verdicts:
        return [f"{title}: none"]
    width = max(len(name) for name in verdicts)
    lines = [f"{title}:"]
    lines.extend(f"  {name:<{width}}  {verdict_text(value)}" for name, value in verdicts.items())
    return lines


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in counts.items()) or "none"


def step_down_lines(result: SimResult) -> list[str]:
    downs = [e for e in result.timeline if e.text.startswith("steps down")]
    if not downs:
        return ["leaders that stepped down: none"]
    lines = ["leaders that stepped down:"]
    for entry in downs[:MAX_STEP_DOWNS]:
        why = entry.text.removeprefix("steps down").lstrip(":( ").rstrip(")")
        lines.append(f"  {entry.node} at {entry.time_ns / NS_PER_S:.3f}s ({why})")
    if len(downs) > MAX_STEP_DOWNS:
        lines.append(f"  and {len(downs) - MAX_STEP_DOWNS} more")
    return lines


def speed_text(sim_seconds: float, wall_seconds: float) -> str:
    if wall_seconds <= 0:
        return "n/a"
    return f"{sim_seconds / wall_seconds:.0f}x real time"


def summary_lines(result: SimResult) -> list[str]:
    lines = ["", "summary", f"elections: {result.elections}"]
    if result.leaders_by_term:
        lines.append("leaders by term:")
        lines.extend(f"  term {t}: {n}" for t, n in sorted(result.leaders_by_term.items()))
    else:
        lines.append("leaders by term: none")
    lines.append(
        f"max simultaneous leaders: {result.max_leaders_at_once} (overlap {result.overlap_s:.3f}s)"
    )
    if result.max_leaders_at_once > 1:
        lines.extend(OVERLAP_NOTE)
    lines.extend(step_down_lines(result))
    writes = result.writes
    lost = writes.get("lost", 0)
    lines.append(
        f"writes: acknowledged {writes.get('acknowledged', 0)}, "
        f"committed {writes.get('committed', 0)}, lost {lost}"
    )
    if lost == 0:
        lines.append("  no acknowledged write was lost")
    elif lost == 1:
        lines.append("  1 acknowledged write was LOST")
    else:
        lines.append(f"  {lost} acknowledged writes were LOST")
    if result.liveness_s is None:
        lines.append("recovery: the cluster did not recover after the heal")
    else:
        lines.append(f"recovery: {result.liveness_s:.3f}s after the heal")
    lines.extend(_verdict_block("invariants", result.invariants))
    lines.extend(_verdict_block("expectations", result.expectations))
    lines.append(f"operations: {_counts(result.operations)}")
    lines.append(f"messages: {_counts(result.messages)}")
    lines.append(f"sim seconds:  {result.sim_seconds:.3f}")
    lines.append(f"wall seconds: {result.wall_seconds:.3f}")
    lines.append(f"speed:        {speed_text(result.sim_seconds, result.wall_seconds)}")
    lines.append(f"digest:       {result.digest}")
    lines.append(f"result:       {'ok' if result.ok else 'FAILED'}")
    lines.append(f"replay: {result.replay}")
    return lines


def run_lines(result: SimResult, setup: RunSetup, *, verbose: bool = False) -> list[str]:
    """The whole text report of ``prismctl sim run``."""
    return [
        header_line(result, setup),
        "",
        *timeline_lines(result, verbose=verbose),
        *summary_lines(result),
    ]


# ---------------------------------------------------------------- explore


def failure_lines(outcome: SeedOutcome) -> list[str]:
    return [f"seed {outcome.seed}: {outcome.first_violation}", f"  replay: {outcome.replay}"]


def progress_bar(done: int, total: int, failed: int, *, width: int = 30) -> str:
    filled = width * done // total if total else width
    percent = 100 * done // total if total else 100
    return (
        f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} seeds "
        f"({percent}%), {failed} failed"
    )


def explore_summary_lines(outcomes: Iterable[SeedOutcome], seeds: range) -> list[str]:
    done = list(outcomes)
    failed = [o.seed for o in done if not o.ok]
    sim_s = sum(o.sim_seconds for o in done)
    lines = [
        f"explored seeds {seeds.start}..{seeds.stop - 1}: {len(done) - len(failed)} ok, "
        f"{len(failed)} failed ({sim_s:.1f} simulated seconds)"
    ]
    if failed:
        shown = ", ".join(str(s) for s in failed[:20])
        more = f" and {len(failed) - 20} more" if len(failed) > 20 else ""
        lines.append(f"failing seeds: {shown}{more}")
    return lines


def shrink_lines(
    outcome: SeedOutcome, before: list[Fault], after: list[Fault], schedule_json: str
) -> list[str]:
    removed = len(before) - len(after)
    return [
        f"shrunk schedule of seed {outcome.seed}: {len(after)} faults left, "
        f"{removed} of {len(before)} removed",
        *schedule_json.splitlines(),
        f"save it to FILE and replay it with: {outcome.replay} --schedule FILE",
    ]
