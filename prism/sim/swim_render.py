"""Text rendering of SWIM simulation results for ``prismctl sim run swim-*``: pure
functions returning lines (no printing, no clock), like ``prism.sim.render`` for Raft."""

from __future__ import annotations

from prism.sim.render import speed_text, verdict_text
from prism.sim.swim_scenarios import SwimResult

# How each figure reads in the summary, in this order; others follow under their own name.
_FIGURES: tuple[tuple[str, str], ...] = (
    ("converged_s", "converged (all see all alive)"),
    ("settled_s", "join news settled after"),
    ("crashed", "crashed member"),
    ("suspect_first_s", "first suspicion after the crash"),
    ("detect_first_s", "first marked dead after the crash"),
    ("detect_all_s", "dead everywhere after the crash"),
    ("detect_target_s", "target: 3 periods + min suspicion"),
    ("within_target", "within the target"),
    ("detect_bound_s", "bound checked (dead_detected)"),
    ("loss", "uniform loss"),
    ("slow_member", "stalling member"),
    ("stalls", "stalls"),
    ("stalled_s", "stalled in all"),
    ("longest_stall_s", "longest stall"),
    ("false_deaths_about_slow", "false deaths about it"),
    ("false_deaths_by_slow", "false deaths declared by it"),
    ("split_s", "each side sees the other dead after"),
    ("remerge_s", "re-merged after the heal"),
    ("remerge_bound_s", "re-merge bound"),
    ("reconverged_s", "converged again after"),
    ("false_deaths", "false deaths"),
    ("false_suspicions", "false suspicions"),
    ("refutations", "refutations"),
    ("phase_s", "scenario phase lasted"),
    ("msgs_per_member_per_period", "datagrams per member per probe period"),
    ("streams_per_member_per_period", "streams per member per probe period"),
    ("suspicion_min_s", "suspicion timeout min"),
    ("suspicion_max_s", "suspicion timeout max"),
)


def header_line(result: SwimResult, *, version: str, duration_s: float, loss: float) -> str:
    latency = result.params.get("latency_ms")
    link = f"latency={latency:g}ms" if isinstance(latency, int | float) else "latency=1ms"
    return (
        f"prism {version} sim {result.scenario} seed={result.seed} nodes={result.nodes} "
        f"duration={duration_s:g}s loss={loss:.4g} ({loss * 100:.4g}%) {link} "
        f"lifeguard={'on' if result.lifeguard else 'off'}"
        + ("" if result.stream_probe else " stream-probe=off")
        + ("" if result.coordinated_probes else " probes=random")
    )


def figure_text(name: str, value: object) -> str:
    if value is None:
        return "never"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if name.endswith("_s") and isinstance(value, int | float):
        return f"{value:.3f}s"
    if name == "loss" and isinstance(value, int | float):
        return f"{value * 100:.4g}%"
    return str(value)


def summary_lines(result: SwimResult) -> list[str]:
    figures = result.figures
    labels = dict(_FIGURES)
    names = [name for name, _ in _FIGURES if name in figures]
    names += [name for name in figures if name not in labels]
    width = max((len(labels.get(name, name)) for name in names), default=0)
    lines = ["", "summary"]
    lines.extend(
        f"{labels.get(name, name):<{width}}  {figure_text(name, figures[name])}" for name in names
    )
    verdict_width = max((len(name) for name in result.invariants), default=0)
    lines.append("invariants:")
    lines.extend(
        f"  {name:<{verdict_width}}  {verdict_text(value)}"
        for name, value in result.invariants.items()
    )
    lines.extend(
        f"  false death at {death.time_ns / 1e9:.3f}s: {death.observer} marked "
        f"{death.subject} dead (verdict of {death.by or 'unknown'})"
        for death in result.false_deaths[:5]
    )
    if len(result.false_deaths) > 5:
        lines.append(f"  and {len(result.false_deaths) - 5} more false deaths")
    messages = ", ".join(f"{name} {count}" for name, count in result.messages.items())
    lines.append(f"messages: {messages or 'none'}")
    lines.append(f"sim seconds:  {result.sim_seconds:.3f}")
    lines.append(f"wall seconds: {result.wall_seconds:.3f}")
    lines.append(f"speed:        {speed_text(result.sim_seconds, result.wall_seconds)}")
    lines.append(f"digest:       {result.digest}")
    lines.append(f"result:       {'ok' if result.ok else 'FAILED'}")
    lines.append(f"replay: {result.replay}")
    return lines


def run_lines(
    result: SwimResult, *, version: str, duration_s: float, loss: float, verbose: bool = False
) -> list[str]:
    """The whole text report of ``prismctl sim run swim-...``."""
    return [
        header_line(result, version=version, duration_s=duration_s, loss=loss),
        "",
        *(entry.render() for entry in result.timeline if verbose or not entry.verbose),
        *summary_lines(result),
    ]
