"""``prismctl``: the command line of Prism.

For now it only drives the deterministic Raft simulator (``prismctl sim``); the cluster
commands come with the daemon's HTTP API. The simulator is imported inside the commands,
and nothing here imports trio, quart, hypercorn or the daemon, so ``prismctl sim`` starts
fast and works without a cluster.

Exit codes: 0 when the run (or every explored seed) is healthy, 1 when an invariant or an
expectation broke, 2 for bad input (a one-line error on stderr, never a traceback).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any, Literal

from cyclopts import App, Parameter
from rich.console import Console
from rich.text import Text

from prism import __version__

if TYPE_CHECKING:
    from prism.sim.explore import SeedOutcome
    from prism.sim.runner import Fault, Params

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

Output = Literal["text", "json"]
OutputOption = Annotated[Output, Parameter(name=["--output", "-o"])]
UnsafeFlag = Annotated[bool, Parameter(negative="")]


@Parameter(name="*")
@dataclasses.dataclass(frozen=True)
class UnsafeSwitches:
    """Test-only switches that break a Raft rule on purpose (shared by run and explore)."""

    unsafe_commit_old_terms: UnsafeFlag = False
    """TEST ONLY: commit an old term's entry by counting replicas (Figure 8 bug)."""

    unsafe_skip_vote_log_check: UnsafeFlag = False
    """TEST ONLY: grant votes without checking that the candidate's log is up to date."""

    unsafe_local_reads: UnsafeFlag = False
    """TEST ONLY: serve reads from the leader's state without confirming leadership."""

    def as_params(self) -> dict[str, bool]:
        return dataclasses.asdict(self)


NO_UNSAFE = UnsafeSwitches()


def _one_line_error(error: Exception) -> Text:
    """Cyclopts's parse errors as one plain line, like the errors of the commands."""
    message = " ".join(str(error).split())
    return Text(f"prismctl: error: {message}")


app = App(
    name="prismctl",
    help="Prism's command line: the deterministic Raft simulator (cluster commands come later).",
    version=__version__,
    error_formatter=_one_line_error,
    error_console=Console(stderr=True, soft_wrap=True, highlight=False),
)
sim_app = App(
    name="sim",
    help=(
        "Run Prism's Raft and SWIM on a simulated network: named fault scenarios and seed "
        "exploration."
    ),
)
app.command(sim_app)


class UsageError(Exception):
    """Bad input: reported as one line on stderr, exit code 2."""


def _error(message: str) -> int:
    print(f"prismctl: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _warn_unsafe(params: Params) -> None:
    for field in dataclasses.fields(UnsafeSwitches):
        flag = "--" + field.name.replace("_", "-")
        if getattr(params, field.name):
            print(
                f"prismctl: warning: {flag} is a test-only switch that breaks Raft's safety "
                "on purpose; never use it outside the simulator",
                file=sys.stderr,
            )


def _check(params: Params) -> None:
    problems = params.problems()
    if problems:
        raise UsageError("; ".join(problems))


def _load_schedule(path: Path) -> list[Fault]:
    from prism.sim.runner import Fault

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"--schedule {path}: no such file") from None
    except OSError as error:
        raise UsageError(f"--schedule {path}: cannot read it ({error.strerror})") from None
    except UnicodeDecodeError:
        raise UsageError(f"--schedule {path}: not a UTF-8 text file") from None
    try:
        data = json.loads(text)
    except ValueError as error:
        raise UsageError(f"--schedule {path}: not valid JSON ({error})") from None
    if not isinstance(data, list):
        raise UsageError(f"--schedule {path}: expected a JSON list of faults")
    faults = []
    for number, item in enumerate(data, start=1):
        try:
            faults.append(Fault.from_json(item))
        except ValueError as error:
            raise UsageError(f"--schedule {path}: fault {number}: {error}") from None
    return faults


def _open_for_writing(path: Path, option: str) -> IO[str]:
    try:
        return path.open("w", encoding="utf-8")
    except OSError as error:
        raise UsageError(f"{option} {path}: cannot write it ({error.strerror})") from None


@sim_app.command(name="list")
def sim_list() -> int:
    """List the named scenarios: Raft's, then SWIM's (``swim-*``)."""
    from prism.sim.scenarios import SCENARIOS
    from prism.sim.swim_scenarios import SWIM_SCENARIOS

    summaries = {name: s.summary for name, s in SCENARIOS.items()}
    summaries.update((name, s.summary) for name, s in SWIM_SCENARIOS.items())
    width = max(len(name) for name in summaries)
    for name, summary in summaries.items():
        print(f"{name:<{width}}  {summary}")
    return EXIT_OK


@sim_app.command(name="run")
def sim_run(
    scenario: str,
    /,
    *,
    nodes: int = 5,
    seed: int = 1,
    duration: float | None = None,
    loss: float | None = None,
    latency: float | None = None,
    prevote: bool = True,
    check_quorum: bool = True,
    clients: int | None = None,
    rate: float | None = None,
    liveness: float = 10.0,
    lifeguard: bool = True,
    stream_probe: bool = True,
    coordinated_probes: bool = True,
    unsafe: UnsafeSwitches = NO_UNSAFE,
    history: Path | None = None,
    schedule: Path | None = None,
    save_schedule: Path | None = None,
    verbose: Annotated[bool, Parameter(negative="")] = False,
    output: OutputOption = "text",
) -> int:
    """Run one named scenario and judge it.

    Parameters
    ----------
    scenario
        Scenario name (see ``prismctl sim list``).
    nodes
        Cluster size.
    seed
        Seed of every random choice: the same seed gives the same run.
    duration
        Simulated seconds of the fault phase (default: the scenario's).
    loss
        Message loss on every link, a fraction (0.1 is 10%).
    latency
        One-way link latency in milliseconds.
    prevote
        Pre-vote before campaigning (--no-prevote switches it off).
    check_quorum
        A leader that hears no quorum steps down (--no-check-quorum switches it off).
    clients
        Number of clients (default: the scenario's workload).
    rate
        Client operations per simulated second, all clients together.
    liveness
        Simulated seconds the healed cluster has to recover.
    lifeguard
        SWIM scenarios: Lifeguard's local health multiplier, LHA-suspicion and buddy
        system (--no-lifeguard switches all three off, to compare).
    stream_probe
        SWIM scenarios: when a direct ping goes unanswered, also ping over TCP
        (--no-stream-probe judges probes by datagrams alone, to compare).
    coordinated_probes
        SWIM scenarios: every member probed once per period on a shared schedule
        (--no-coordinated-probes: each member probes in its own random order, to compare).
    history
        Write the client history to this file as JSON lines.
    schedule
        Replay the faults in this JSON file instead of the scenario's schedule.
    save_schedule
        Write the schedule that ran to this file as JSON.
    verbose
        Show every timeline line (votes, acknowledged writes).
    output
        text or json.
    """
    from prism.sim.runner import Params, Runner
    from prism.sim.scenarios import SCENARIOS
    from prism.sim.swim_scenarios import SWIM_SCENARIOS

    if scenario in SWIM_SCENARIOS:
        raft_only = {
            "--no-prevote": not prevote,
            "--no-check-quorum": not check_quorum,
            "--clients": clients is not None,
            "--rate": rate is not None,
            "--liveness": liveness != 10.0,
            "--history": history is not None,
            "--schedule": schedule is not None,
            "--save-schedule": save_schedule is not None,
            **{"--" + name.replace("_", "-"): value for name, value in unsafe.as_params().items()},
        }
        given = [flag for flag, used in raft_only.items() if used]
        if given:
            return _error(f"{given[0]} applies to Raft scenarios only, not to {scenario}")
        return _run_swim(
            scenario,
            nodes=nodes,
            seed=seed,
            duration=duration,
            loss=loss,
            latency=latency,
            lifeguard=lifeguard,
            stream_probe=stream_probe,
            coordinated_probes=coordinated_probes,
            verbose=verbose,
            output=output,
        )
    swim_only = {
        "--no-lifeguard": not lifeguard,
        "--no-stream-probe": not stream_probe,
        "--no-coordinated-probes": not coordinated_probes,
    }
    for flag, used in swim_only.items():
        if used:
            return _error(f"{flag} applies to SWIM scenarios only, not to {scenario}")
    if scenario not in SCENARIOS:
        known = ", ".join([*SCENARIOS, *SWIM_SCENARIOS])
        return _error(f"unknown scenario {scenario!r}; known: {known}")
    params = Params(
        nodes=nodes,
        seed=seed,
        duration_s=duration,
        loss=loss,
        latency_ms=latency,
        pre_vote=prevote,
        check_quorum=check_quorum,
        clients=clients,
        ops_per_s=rate,
        liveness_s=liveness,
        **unsafe.as_params(),
    )
    with contextlib.ExitStack() as files:
        try:
            _check(params)
            if not 0 < liveness <= 3600:
                raise UsageError("--liveness must be between 0 and 3600 simulated seconds")
            faults = _load_schedule(schedule) if schedule is not None else None
            runner = Runner(SCENARIOS[scenario], params, faults)
            history_file = (
                files.enter_context(_open_for_writing(history, "--history")) if history else None
            )
            schedule_file = (
                files.enter_context(_open_for_writing(save_schedule, "--save-schedule"))
                if save_schedule
                else None
            )
        except (UsageError, ValueError) as error:
            return _error(str(error).replace("\n", "; "))
        _warn_unsafe(params)
        try:
            result = runner.run()
        except Exception as error:
            if faults is None:
                raise
            # A fault read from the file names a node that does not exist, lacks an argument
            # or carries one of the wrong type: bad input, not a bug of the simulator.
            why = (
                f"missing argument {error}"
                if isinstance(error, KeyError)
                else f"{type(error).__name__}: {error}"
                if not isinstance(error, ValueError)
                else str(error)
            )
            return _error(f"--schedule {schedule}: a fault could not be applied: {why}")
        if history_file is not None:
            from prism.sim.history import write_jsonl

            write_jsonl(result.history, history_file)
        if schedule_file is not None:
            json.dump([f.to_json() for f in result.schedule], schedule_file, indent=2)
            schedule_file.write("\n")
    if output == "json":
        print(json.dumps(result.to_json(), indent=2))
    else:
        from prism.sim.render import RunSetup, run_lines

        setup = RunSetup(__version__, runner.duration_s, runner.link.loss, runner.link.latency_ms)
        print("\n".join(run_lines(result, setup, verbose=verbose)))
    return EXIT_OK if result.ok else EXIT_FAILED


def _run_swim(
    scenario: str,
    *,
    nodes: int,
    seed: int,
    duration: float | None,
    loss: float | None,
    latency: float | None,
    lifeguard: bool,
    stream_probe: bool,
    coordinated_probes: bool,
    verbose: bool,
    output: Output,
) -> int:
    """``prismctl sim run swim-*``: one SWIM scenario (``prism.sim.swim_scenarios``)."""
    from prism.sim.swim_render import run_lines
    from prism.sim.swim_scenarios import SWIM_SCENARIOS, SwimParams, SwimRun

    params = SwimParams(
        nodes=nodes,
        seed=seed,
        duration_s=duration,
        loss=loss,
        latency_ms=latency,
        lifeguard=lifeguard,
        stream_probe=stream_probe,
        coordinated_probes=coordinated_probes,
    )
    problems = params.problems()
    if problems:
        return _error("; ".join(problems))
    run = SwimRun(SWIM_SCENARIOS[scenario], params)
    result = run.run()
    if output == "json":
        print(json.dumps(result.to_json(), indent=2))
    else:
        lines = run_lines(
            result, version=__version__, duration_s=run.duration_s, loss=run.loss, verbose=verbose
        )
        print("\n".join(lines))
    return EXIT_OK if result.ok else EXIT_FAILED


@sim_app.command(name="explore")
def sim_explore(
    *,
    seeds: int = 200,
    start: int = 1,
    jobs: int = 1,
    nodes: int = 5,
    duration: float | None = None,
    unsafe: UnsafeSwitches = NO_UNSAFE,
    shrink: Annotated[bool, Parameter(negative="")] = False,
    output: OutputOption = "text",
) -> int:
    """Run the explore scenario (random faults drawn from the seed) over many seeds.

    Parameters
    ----------
    seeds
        How many seeds to run.
    start
        The first seed.
    jobs
        Worker processes (the outcome does not depend on it).
    nodes
        Cluster size.
    duration
        Simulated seconds of the fault phase of each seed (default 20).
    shrink
        Shrink the fault schedule of the first failing seed.
    output
        text, or json (one object per seed, then a summary object).
    """
    from prism.sim.runner import Params

    params = Params(
        nodes=nodes,
        duration_s=duration,
        **unsafe.as_params(),
    )
    try:
        _check(params)
        if not 1 <= seeds <= 10_000_000:
            raise UsageError("--seeds must be between 1 and 10000000")
        if start < 0:
            raise UsageError("--start must not be negative")
        if not 1 <= jobs <= 256:
            raise UsageError("--jobs must be between 1 and 256")
    except UsageError as error:
        return _error(str(error))
    _warn_unsafe(params)
    return _Explorer(params, range(start, start + seeds), jobs, output, shrink).run()


class _Explorer:
    """The loop of ``prismctl sim explore``: progress on stderr, results on stdout."""

    def __init__(
        self, params: Params, seeds: range, jobs: int, output: Output, shrink: bool
    ) -> None:
        self.params = params
        self.seeds = seeds
        self.jobs = jobs
        self.json = output == "json"
        self.shrink = shrink
        self.tty = sys.stderr.isatty()
        self.bar_shown = False
        self.next_report = 1

    def progress(self, done: int, failed: int) -> None:
        from prism.sim.render import progress_bar

        total = len(self.seeds)
        if self.tty:
            sys.stderr.write("\r" + progress_bar(done, total, failed))
            sys.stderr.flush()
            self.bar_shown = True
        elif done * 10 >= self.next_report * total:
            while done * 10 >= self.next_report * total:
                self.next_report += 1
            print(f"explore: {progress_bar(done, total, failed)}", file=sys.stderr)

    def clear_bar(self) -> None:
        if self.bar_shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
            self.bar_shown = False

    def emit(self, lines: Sequence[str]) -> None:
        self.clear_bar()
        print("\n".join(lines), flush=True)

    def run(self) -> int:
        from prism.sim.explore import explore
        from prism.sim.render import explore_summary_lines, failure_lines

        outcomes: list[SeedOutcome] = []
        failed: list[SeedOutcome] = []
        for outcome in explore(self.params, self.seeds, jobs=self.jobs):
            outcomes.append(outcome)
            if self.json:
                self.emit([json.dumps({"type": "seed", **_outcome_json(outcome)})])
            if not outcome.ok:
                failed.append(outcome)
                if not self.json:
                    self.emit(failure_lines(outcome))
            self.progress(len(outcomes), len(failed))
        self.clear_bar()
        shrunk = self.shrink_first(failed[0]) if self.shrink and failed else None
        if self.json:
            summary: dict[str, Any] = {
                "type": "summary",
                "start": self.seeds.start,
                "seeds": len(self.seeds),
                "ok": len(outcomes) - len(failed),
                "failed": len(failed),
                "failed_seeds": [o.seed for o in failed],
            }
            if shrunk is not None:
                summary["shrunk"] = shrunk
            print(json.dumps(summary))
        else:
            print("\n".join(explore_summary_lines(outcomes, self.seeds)))
        return EXIT_FAILED if failed else EXIT_OK

    def shrink_first(self, outcome: SeedOutcome) -> dict[str, Any]:
        from prism.sim.explore import default_schedule, shrink
        from prism.sim.render import shrink_lines
        from prism.sim.scenarios import run_scenario

        params = dataclasses.replace(self.params, seed=outcome.seed)
        before = default_schedule(params)
        broken = set(outcome.broken)

        attempts = 0

        def same_failure(candidate: list[Fault]) -> bool:
            nonlocal attempts
            attempts += 1
            status = f"shrink: attempt {attempts}, trying {len(candidate)} of {len(before)} faults"
            if self.tty:
                sys.stderr.write("\r\033[K" + status)
                sys.stderr.flush()
                self.bar_shown = True
            elif attempts % 10 == 0:
                print(status, file=sys.stderr)
            result = run_scenario("explore", params, candidate)
            verdicts = {**result.invariants, **result.expectations}
            return not result.ok and any(verdicts.get(name) is not True for name in broken)

        print(
            f"shrinking the schedule of seed {outcome.seed} (one full run per attempt)...",
            file=sys.stderr,
        )
        after = shrink(params, before, same_failure)
        self.clear_bar()
        schedule = [f.to_json() for f in after]
        if not self.json:
            print("\n".join(shrink_lines(outcome, before, after, json.dumps(schedule, indent=2))))
        return {
            "seed": outcome.seed,
            "faults_before": len(before),
            "removed": len(before) - len(after),
            "schedule": schedule,
        }


def _outcome_json(outcome: SeedOutcome) -> dict[str, Any]:
    return {
        "seed": outcome.seed,
        "ok": outcome.ok,
        "broken": list(outcome.broken),
        "first_violation": outcome.first_violation,
        "elections": outcome.elections,
        "sim_seconds": round(outcome.sim_seconds, 3),
        "wall_seconds": round(outcome.wall_seconds, 3),
        "replay": outcome.replay,
    }


def _exit_code(code: object) -> int:
    if code is None:
        return EXIT_OK
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return EXIT_FAILED


def run(argv: Sequence[str]) -> int:
    """Run ``prismctl`` with ``argv`` (without the program name); returns the exit code."""
    try:
        result = app(list(argv), result_action="return_value")
    except SystemExit as stop:  # cyclopts exits 2 on a parse error, 0 after --help
        return _exit_code(stop.code)
    if isinstance(result, bool):
        return EXIT_OK if result else EXIT_FAILED
    return result if isinstance(result, int) else EXIT_OK


def main() -> None:
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
