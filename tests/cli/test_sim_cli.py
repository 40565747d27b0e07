"""``prismctl sim`` and ``prismd``: output, exit codes and bad input.

The commands run in-process through ``prism.cli.run`` (the token list without the program
name; it returns the exit code), with pytest's ``capsys`` capturing stdout and stderr.
Subprocesses are used only where the process itself matters: the import check and one
end-to-end run of the installed ``prismctl`` console script.

Golden files live in ``tests/cli/golden``; set ``PRISM_REWRITE=1`` to regenerate them after
an intended change of the simulator or of the output format.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from prism import __version__, cli, daemon
from prism.sim import render
from prism.sim.runner import Fault, Params
from prism.sim.scenarios import run_scenario

GOLDEN = Path(__file__).parent / "golden"
REWRITE = os.environ.get("PRISM_REWRITE") == "1"
WALL = "<wall>"


@dataclasses.dataclass
class Ran:
    code: int
    out: str
    err: str


def prismctl(capsys: pytest.CaptureFixture[str], *args: str) -> Ran:
    code = cli.run(list(args))
    out, err = capsys.readouterr()
    return Ran(code, out, err)


def normalise_text(text: str) -> str:
    """Drop what depends on the wall clock or on the package version."""
    text = re.sub(r"^wall seconds: .*$", f"wall seconds: {WALL}", text, flags=re.M)
    text = re.sub(r"^speed: .*$", f"speed:        {WALL}", text, flags=re.M)
    return text.replace(f"prism {__version__} sim", "prism <version> sim", 1)


def normalise_json(text: str) -> str:
    data = json.loads(text)
    data["wall_seconds"] = WALL
    return json.dumps(data, indent=2) + "\n"


def check_golden(name: str, actual: str) -> None:
    path = GOLDEN / name
    if REWRITE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(actual, encoding="utf-8")
        return
    assert path.exists(), f"{path.name} is missing: run the tests with PRISM_REWRITE=1"
    expected = path.read_text(encoding="utf-8")
    if actual != expected:
        diff = difflib.unified_diff(
            expected.splitlines(),
            actual.splitlines(),
            f"golden/{name}",
            "actual",
            lineterm="",
        )
        pytest.fail(
            f"output differs from golden/{name} (PRISM_REWRITE=1 regenerates it):\n"
            + "\n".join(diff)
        )


# ---------------------------------------------------------------- golden output


def test_run_text_matches_golden(capsys: pytest.CaptureFixture[str]) -> None:
    ran = prismctl(capsys, "sim", "run", "minority-leader", "--seed", "7")
    assert ran.code == 0, ran.err
    assert ran.err == ""
    check_golden("minority-leader-seed7.txt", normalise_text(ran.out))


@pytest.mark.parametrize(
    "args",
    [
        ("sim", "run", "minority-leader", "--seed", "7", "-o", "json"),
        ("sim", "run", "-o", "json", "minority-leader", "--seed", "7"),
        ("sim", "run", "minority-leader", "--output", "json", "--seed", "7"),
    ],
    ids=["after-positional", "before-positional", "long-option"],
)
def test_run_json_matches_golden(capsys: pytest.CaptureFixture[str], args: tuple[str, ...]) -> None:
    ran = prismctl(capsys, *args)
    assert ran.code == 0, ran.err
    data = json.loads(ran.out)  # stdout holds the JSON document and nothing else
    assert data["ok"] is True
    assert data["seed"] == 7
    check_golden("minority-leader-seed7.json", normalise_json(ran.out))


def test_text_output_is_what_render_returns(capsys: pytest.CaptureFixture[str]) -> None:
    ran = prismctl(capsys, "sim", "run", "one-way-cut", "--duration", "5", "--verbose")
    result = run_scenario("one-way-cut", Params(duration_s=5))
    setup = render.RunSetup(__version__, 5.0, 0.0, 1.0)
    expected = "\n".join(render.run_lines(result, setup, verbose=True)) + "\n"
    assert normalise_text(ran.out) == normalise_text(expected)
    assert any(e.verbose for e in result.timeline)
    quiet = render.timeline_lines(result)
    assert len(quiet) < len(render.timeline_lines(result, verbose=True))


# ---------------------------------------------------------------- exit codes and summaries


def test_healthy_run_exits_0_and_shows_the_old_leader_stepping_down(
    capsys: pytest.CaptureFixture[str],
) -> None:
    ran = prismctl(capsys, "sim", "run", "minority-leader", "--seed", "7")
    assert ran.code == 0
    assert "leaders that stepped down:\n  n5 at 3.153s (no quorum heard" in ran.out
    assert "steps down: no quorum heard within the election timeout" in ran.out
    assert re.search(r"cut-off-leader-steps-down\s+held", ran.out)
    assert "max simultaneous leaders: 1 " in ran.out
    assert "no acknowledged write was lost" in ran.out
    assert "result:       ok" in ran.out
    assert ran.out.rstrip().splitlines()[-1] == (
        "replay: prismctl sim run minority-leader --seed 7 --nodes 5"
    )


def test_unprotected_minority_leader_shows_two_leaders_but_loses_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    ran = prismctl(
        capsys, "sim", "run", "minority-leader", "--seed", "7", "--no-prevote", "--no-check-quorum"
    )
    assert ran.code == 0, ran.out
    assert re.search(r"max simultaneous leaders: 2 \(overlap \d+\.\d{3}s\)", ran.out)
    assert "without check-quorum a leader cut off in a minority keeps believing" in ran.out
    assert "no acknowledged write was lost" in ran.out
    assert re.search(r"cut-off-leader-steps-down\s+not checked: needs pre-vote", ran.out)
    assert "--no-prevote --no-check-quorum" in ran.out


def test_figure_8_with_the_commit_bug_exits_1_and_reports_leader_completeness(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A short run at 10 ms latency: once the broken build has lost a committed entry, its
    # leader and followers exchange rejected appends without pause, and at the default 1 ms
    # latency the default run takes minutes of wall clock. The violation comes at ~2.9 s.
    ran = prismctl(
        capsys,
        "sim",
        "run",
        "figure-8",
        "--unsafe-commit-old-terms",
        *("--duration", "3", "--liveness", "0.5", "--latency", "10"),
    )
    assert ran.code == 1
    assert re.search(r"leader-completeness\s+BROKEN: \d+\.\d{3}s: ", ran.out)
    assert "result:       FAILED" in ran.out
    assert "warning: --unsafe-commit-old-terms is a test-only switch" in ran.err
    assert "--unsafe-commit-old-terms" in ran.out.splitlines()[-1]


def test_figure_8_without_the_bug_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    ran = prismctl(capsys, "sim", "run", "figure-8", "-o", "json")
    assert ran.code == 0
    assert json.loads(ran.out)["invariants"]["leader-completeness"] is True
    assert ran.err == ""


def test_json_run_of_a_broken_build_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    ran = prismctl(
        capsys, "sim", "run", "explore", "--seed", "4", "--unsafe-skip-vote-log-check", "-o", "json"
    )
    assert ran.code == 1
    data = json.loads(ran.out)
    assert data["ok"] is False
    assert data["invariants"]["leader-completeness"] is not True
    assert data["replay"].endswith("--unsafe-skip-vote-log-check")
    assert "warning: --unsafe-skip-vote-log-check" in ran.err


def test_header_shows_what_the_runner_resolved(capsys: pytest.CaptureFixture[str]) -> None:
    ran = prismctl(
        capsys, "sim", "run", "leader-crash", "--nodes", "3", "--duration", "4", "--loss", "0.05"
    )
    assert ran.code == 0, ran.out
    assert ran.out.splitlines()[0] == (
        f"prism {__version__} sim leader-crash seed=1 nodes=3 duration=4s "
        "link: loss=0.05 (5%) latency=1ms"
    )


# ---------------------------------------------------------------- explore


def test_explore_finds_the_vote_bug_and_prints_its_seed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    ran = prismctl(
        capsys, "sim", "explore", "--start", "1", "--seeds", "5", "--unsafe-skip-vote-log-check"
    )
    assert ran.code == 1
    lines = ran.out.splitlines()
    failing = [line for line in lines if line.startswith("seed ")]
    assert failing, "the vote bug went unnoticed in 5 seeds"
    first = failing[0].split(":")[0].removeprefix("seed ")
    replay = lines[lines.index(failing[0]) + 1]
    assert replay.startswith(f"  replay: prismctl sim run explore --seed {first} ")
    assert "--unsafe-skip-vote-log-check" in replay
    assert f"{5 - len(failing)} ok, {len(failing)} failed" in ran.out
    assert "5/5 seeds (100%)" in ran.err  # progress, one line per 10% when not a terminal


def test_healthy_explore_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    ran = prismctl(capsys, "sim", "explore", "--seeds", "3")
    assert ran.code == 0
    assert "explored seeds 1..3: 3 ok, 0 failed" in ran.out
    assert "seed " not in ran.out.replace("explored seeds", "")


def explore_json(ran: Ran) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    records = [json.loads(line) for line in ran.out.splitlines()]
    assert records[-1]["type"] == "summary"
    assert all(r["type"] == "seed" for r in records[:-1])
    return records[:-1], records[-1]


def test_explore_json_lines_do_not_depend_on_jobs(capsys: pytest.CaptureFixture[str]) -> None:
    one = prismctl(capsys, "sim", "explore", "--seeds", "3", "--duration", "5", "-o", "json")
    two = prismctl(
        capsys, "sim", "explore", "--seeds", "3", "--duration", "5", "--jobs", "2", "-o", "json"
    )
    assert one.code == two.code == 0
    seeds_one, summary = explore_json(one)
    seeds_two, _ = explore_json(two)
    assert [s["seed"] for s in seeds_one] == [1, 2, 3]
    for record in (*seeds_one, *seeds_two):
        record.pop("wall_seconds")
    assert seeds_one == seeds_two
    assert summary == {
        "type": "summary",
        "start": 1,
        "seeds": 3,
        "ok": 3,
        "failed": 0,
        "failed_seeds": [],
    }


def test_explore_shrink_prints_the_smaller_schedule(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real shrink runs the seed once per attempt (minutes for seed 4); the plumbing is
    # what is tested here, with a stand-in that keeps the first two faults.
    calls: list[int] = []

    def fake_shrink(params: Params, schedule: list[Fault], still_fails: Any) -> list[Fault]:
        calls.append(params.seed)
        return schedule[:2]

    monkeypatch.setattr("prism.sim.explore.shrink", fake_shrink)
    args = ("sim", "explore", "--start", "4", "--seeds", "1", "--unsafe-skip-vote-log-check")
    ran = prismctl(capsys, *args, "--shrink")
    assert ran.code == 1
    assert calls == [4]
    match = re.search(r"shrunk schedule of seed 4: 2 faults left, (\d+) of (\d+) removed", ran.out)
    assert match
    assert int(match[1]) == int(match[2]) - 2
    start = ran.out.index("[", match.end())
    end = ran.out.index("\n]", start) + 2
    schedule = json.loads(ran.out[start:end])
    assert [Fault.from_json(f) for f in schedule]
    assert "--seed 4 --nodes 5 --unsafe-skip-vote-log-check --schedule FILE" in ran.out

    ran = prismctl(capsys, *args, "--shrink", "-o", "json")
    _, summary = explore_json(ran)
    assert summary["failed_seeds"] == [4]
    assert summary["shrunk"]["seed"] == 4
    assert len(summary["shrunk"]["schedule"]) == 2


def test_explore_progress_bar_on_a_terminal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    ran = prismctl(capsys, "sim", "explore", "--seeds", "2", "--duration", "3")
    assert ran.code == 0
    assert "\r[###############...............] 1/2 seeds (50%), 0 failed" in ran.err
    assert "\r[##############################] 2/2 seeds (100%), 0 failed" in ran.err
    assert "\n" not in ran.err  # the bar is rewritten in place, then cleared


def test_render_helpers() -> None:
    assert render.verdict_text(True) == "held"
    assert render.verdict_text("violated: 2 new leaders") == "BROKEN: 2 new leaders"
    assert render.verdict_text("1.000s: x") == "BROKEN: 1.000s: x"
    assert render.verdict_text("unknown: too many ops").startswith("unknown")
    assert render.verdict_text("not checked: needs pre-vote").startswith("not checked")
    assert render.progress_bar(0, 4, 0, width=4) == "[....] 0/4 seeds (0%), 0 failed"
    assert render.speed_text(10.0, 0.5) == "20x real time"
    assert render.speed_text(10.0, 0.0) == "n/a"


# ---------------------------------------------------------------- files


def test_history_is_json_lines_with_the_jepsen_keys(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "history.jsonl"
    ran = prismctl(
        capsys, "sim", "run", "minority-leader", "--duration", "5", "--history", str(path)
    )
    assert ran.code == 0
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) > 10
    for line in lines:
        event = json.loads(line)
        assert set(event) == {"process", "type", "f", "key", "value", "time"}


def test_saved_schedule_replays_the_same_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "schedule.json"
    first = prismctl(
        capsys,
        "sim",
        "run",
        "split-brain",
        "--duration",
        "6",
        "--save-schedule",
        str(path),
        "-o",
        "json",
    )
    assert first.code == 0, first.out
    saved = json.loads(path.read_text(encoding="utf-8"))
    assert saved == json.loads(first.out)["schedule"]
    assert [f["action"] for f in saved] == ["partition", "heal", "partition", "heal"]
    again = prismctl(
        capsys,
        "sim",
        "run",
        "split-brain",
        "--duration",
        "6",
        "--schedule",
        str(path),
        "-o",
        "json",
    )
    assert again.code == 0
    assert json.loads(again.out)["digest"] == json.loads(first.out)["digest"]
    # A different schedule gives a different run.
    path.write_text(json.dumps(saved[:2]), encoding="utf-8")
    other = prismctl(
        capsys,
        "sim",
        "run",
        "split-brain",
        "--duration",
        "6",
        "--schedule",
        str(path),
        "-o",
        "json",
    )
    assert json.loads(other.out)["digest"] != json.loads(first.out)["digest"]


# ---------------------------------------------------------------- bad input


RUN = ("sim", "run", "minority-leader", "--duration", "3")
SCHEDULE = "{schedule}"  # replaced by the path of a file holding the case's schedule text


@pytest.mark.parametrize(
    ("args", "schedule", "expected"),
    [
        (("sim", "run", "no-such-thing"), None, "unknown scenario 'no-such-thing'; known: "),
        ((*RUN, "--loss", "1.5"), None, "--loss is a fraction"),
        ((*RUN, "--nodes", "0"), None, "--nodes must be between 1 and 64"),
        (("sim", "run", "minority-leader", "--duration", "0"), None, "--duration must be"),
        ((*RUN, "--schedule", "absent.json"), None, "no such file"),
        ((*RUN, "--schedule", SCHEDULE), "[{", "not valid JSON"),
        ((*RUN, "--schedule", SCHEDULE), "{}", "expected a JSON list of faults"),
        (
            (*RUN, "--schedule", SCHEDULE),
            '[{"at_s": 1, "action": "heal"}, {"at_s": 2, "action": "explode"}]',
            "fault 2: unknown fault action 'explode'",
        ),
        (
            (*RUN, "--schedule", SCHEDULE),
            '[{"at_s": 1, "action": "cut", "args": {}}]',
            "a fault could not be applied: missing argument 'src'",
        ),
        (
            (*RUN, "--schedule", SCHEDULE),
            '[{"at_s": 1, "action": "crash", "args": {"node": "n9"}}]',
            "a fault could not be applied: unknown node 'n9'",
        ),
        ((*RUN, "--history", "no-dir/h.jsonl"), None, "--history"),
        ((*RUN, "--seed", "seven"), None, "Invalid value for --seed"),
        ((*RUN, "-o", "yaml"), None, 'Invalid value "yaml"'),
        ((*RUN, "--frobnicate"), None, "Unknown option"),
        (("sim", "explore", "--seeds", "0"), None, "--seeds must be between"),
        (("sim", "explore", "--nodes", "65"), None, "--nodes must be between"),
    ],
    ids=[
        "unknown-scenario",
        "loss",
        "nodes",
        "duration",
        "missing-schedule",
        "not-json-schedule",
        "not-a-list-schedule",
        "bad-fault",
        "bad-fault-args",
        "unknown-node",
        "unwritable-history",
        "non-numeric",
        "bad-output",
        "unknown-option",
        "explore-seeds",
        "explore-nodes",
    ],
)
def test_bad_input_exits_2_with_one_line_on_stderr(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: tuple[str, ...],
    schedule: str | None,
    expected: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    if schedule is not None:
        (tmp_path / "schedule.json").write_text(schedule, encoding="utf-8")
    args = tuple("schedule.json" if a == SCHEDULE else a for a in args)
    ran = prismctl(capsys, *args)
    assert ran.code == 2
    assert ran.out == ""
    assert "Traceback" not in ran.err
    assert ran.err.startswith("prismctl: error: ")
    assert expected in ran.err
    assert len(ran.err.strip().splitlines()) == 1, ran.err


# ---------------------------------------------------------------- the rest of prismctl


def test_list_shows_every_scenario_with_its_summary(capsys: pytest.CaptureFixture[str]) -> None:
    from prism.sim.scenarios import SCENARIOS
    from prism.sim.swim_scenarios import SWIM_SCENARIOS

    ran = prismctl(capsys, "sim", "list")
    assert ran.code == 0
    lines = ran.out.splitlines()
    listed = [(name, s.summary) for name, s in [*SCENARIOS.items(), *SWIM_SCENARIOS.items()]]
    assert len(lines) == len(listed)
    width = max(len(name) for name, _ in listed)
    for line, (name, summary) in zip(lines, listed, strict=True):
        assert line == f"{name:<{width}}  {summary}"


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    ran = prismctl(capsys, "--version")
    assert (ran.code, ran.out.strip()) == (0, __version__)
    ran = prismctl(capsys, "--help")
    assert ran.code == 0
    assert "sim" in ran.out
    ran = prismctl(capsys, "sim", "run", "--help")
    assert ran.code == 0
    for option in ("--no-prevote", "--no-check-quorum", "--unsafe-local-reads", "--output"):
        assert option in ran.out


def test_sim_does_not_import_trio_quart_or_the_daemon() -> None:
    code = (
        "import sys\n"
        "from prism import cli\n"
        "code = cli.run(['sim', 'list'])\n"
        "loaded = [m for m in ('trio', 'quart', 'quart_trio', 'hypercorn', 'prism.daemon')"
        " if m in sys.modules]\n"
        "print(code, loaded)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.splitlines()[-1] == "0 []"


def test_prismctl_console_script_end_to_end(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("prismctl")
    if not script.exists():
        pytest.skip("the prismctl console script is not installed next to this interpreter")
    done = subprocess.run(
        [
            str(script),
            "sim",
            "run",
            "minority-leader",
            "--seed",
            "7",
            "--duration",
            "5",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["replay"] == (
        "prismctl sim run minority-leader --seed 7 --nodes 5 --duration 5"
    )
    bad = subprocess.run(
        [str(script), "sim", "run", "minority-leader", "--nodes", "x"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr
    assert "Invalid value for --nodes" in bad.stderr


# ---------------------------------------------------------------- prismd


def test_prismd_is_not_built_yet_and_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        daemon.main()
    assert stop.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "usage: prismd --serf=ADDR:PORT --api=ADDR:PORT --name=NAME [--join=ADDR:PORT]" in err
    assert "not built yet" in err
