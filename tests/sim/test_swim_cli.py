"""``prismctl sim run swim-*``: the timeline a person reads, the JSON, exit codes and bad
input (the Raft side of ``prismctl sim`` is tested in ``tests/cli``)."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from prism import __version__, cli
from prism.sim.swim_render import run_lines
from prism.sim.swim_scenarios import SWIM_SCENARIOS, SwimParams, run_swim_scenario


@dataclasses.dataclass
class Ran:
    code: int
    out: str
    err: str


def prismctl(capsys: pytest.CaptureFixture[str], *args: str) -> Ran:
    code = cli.run(list(args))
    out, err = capsys.readouterr()
    return Ran(code, out, err)


def test_crash_timeline_reads_as_a_story(capsys: pytest.CaptureFixture[str]) -> None:
    ran = prismctl(capsys, "sim", "run", "swim-crash", "--nodes", "10")
    assert ran.code == 0, ran.out
    assert ran.err == ""
    lines = ran.out.splitlines()
    assert lines[0].startswith(f"prism {__version__} sim swim-crash seed=1 nodes=10 ")
    assert lines[0].endswith("lifeguard=on")
    assert "10 members start within 2s and join through n1" in ran.out
    assert re.search(r"^\s+\d+\.\d{3}s  n\d+\s+crashes \(all SWIM state lost\)$", ran.out, re.M)
    assert re.search(r"suspects n\d+: no ack, direct or indirect", ran.out)
    assert re.search(r"declares n\d+ dead: its suspicion timed out", ran.out)
    assert re.search(
        r"every running member now sees n\d+ dead, \d+\.\d{3}s after its crash", ran.out
    )
    assert re.search(r"dead everywhere after the crash\s+\d+\.\d{3}s", ran.out)
    assert re.search(r"dead_detected\s+held", ran.out)
    assert "result:       ok" in ran.out
    assert lines[-1] == "replay: prismctl sim run swim-crash --seed 1 --nodes 10"


def test_text_output_is_what_render_returns(capsys: pytest.CaptureFixture[str]) -> None:
    ran = prismctl(
        capsys, "sim", "run", "swim-partition", "--nodes", "8", "--seed", "3", "--verbose"
    )
    result = run_swim_scenario("swim-partition", SwimParams(nodes=8, seed=3))
    expected = run_lines(result, version=__version__, duration_s=30.0, loss=0.0, verbose=True)

    def without_wall(text: str) -> str:
        return re.sub(r"^(wall seconds|speed):.*$", "", text, flags=re.M)

    assert without_wall(ran.out) == without_wall("\n".join(expected) + "\n")
    assert "partition {" in ran.out
    assert "re-merged: every member alive everywhere" in ran.out


def test_json_has_the_common_fields_and_the_figures(capsys: pytest.CaptureFixture[str]) -> None:
    ran = prismctl(
        capsys, "sim", "run", "swim-loss", "--nodes", "6", "--loss", "0.05", "--duration",
        "20", "--no-lifeguard", "-o", "json",
    )  # fmt: skip
    assert ran.code == 0, ran.out
    data = json.loads(ran.out)
    for name in ("scenario", "seed", "nodes", "ok", "invariants", "sim_seconds", "digest"):
        assert name in data
    assert (data["scenario"], data["nodes"], data["lifeguard"]) == ("swim-loss", 6, False)
    assert data["loss"] == 0.05
    assert data["phase_s"] == 20.0
    assert isinstance(data["msgs_per_member_per_period"], float)
    assert data["replay"].endswith("--duration 20 --loss 0.05 --no-lifeguard")


def test_a_broken_invariant_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    """Three seconds are too short for any member to be declared dead."""
    ran = prismctl(capsys, "sim", "run", "swim-crash", "--nodes", "5", "--duration", "3")
    assert ran.code == 1
    assert re.search(r"dead_detected\s+BROKEN: n\d was marked dead by 0 of 4", ran.out)
    assert "result:       FAILED" in ran.out


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--nodes", "1"), "--nodes must be between 2 and 2000 for SWIM scenarios"),
        (("--loss", "2"), "--loss is a fraction"),
        (("--clients", "3"), "--clients applies to Raft scenarios only, not to swim-join"),
        (("--no-prevote",), "--no-prevote applies to Raft scenarios only"),
        (("--unsafe-local-reads",), "--unsafe-local-reads applies to Raft scenarios only"),
    ],
)
def test_bad_swim_input_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], args: tuple[str, ...], expected: str
) -> None:
    ran = prismctl(capsys, "sim", "run", "swim-join", *args)
    assert ran.code == 2
    assert ran.out == ""
    assert ran.err.startswith("prismctl: error: ")
    assert expected in ran.err
    assert len(ran.err.strip().splitlines()) == 1


@pytest.mark.parametrize("flag", ["--no-lifeguard", "--no-stream-probe", "--no-coordinated-probes"])
def test_swim_switches_are_for_swim_only(capsys: pytest.CaptureFixture[str], flag: str) -> None:
    ran = prismctl(capsys, "sim", "run", "minority-leader", flag)
    assert ran.code == 2
    assert f"{flag} applies to SWIM scenarios only" in ran.err


def test_no_stream_probe_runs_with_datagrams_alone(capsys: pytest.CaptureFixture[str]) -> None:
    args = ("sim", "run", "swim-loss", "--nodes", "5", "--duration", "30", "--no-stream-probe")
    ran = prismctl(capsys, *args, "-o", "json")
    assert ran.code == 0, ran.out
    data = json.loads(ran.out)
    assert data["stream_probe"] is False
    assert data["params"]["stream_probe"] is False
    assert data["messages"].get("stream_Ping", 0) == 0  # no fallback ping went out
    assert data["replay"].endswith("--duration 30 --no-stream-probe")
    text = prismctl(capsys, *args)
    assert text.out.splitlines()[0].endswith("lifeguard=on stream-probe=off")
    with_probe = json.loads(prismctl(capsys, *args[:-1], "-o", "json").out)
    assert with_probe["stream_probe"] is True
    assert with_probe["messages"]["stream_Ping"] > 0  # 10 % loss: some direct pings fail


def test_no_coordinated_probes_runs_in_random_order(capsys: pytest.CaptureFixture[str]) -> None:
    args = ("sim", "run", "swim-crash", "--nodes", "8", "--no-coordinated-probes")
    ran = prismctl(capsys, *args, "-o", "json")
    assert ran.code == 0, ran.out
    data = json.loads(ran.out)
    assert data["coordinated_probes"] is False
    assert data["params"]["coordinated_probes"] is False
    assert data["replay"].endswith("--no-coordinated-probes")
    assert prismctl(capsys, *args).out.splitlines()[0].endswith("lifeguard=on probes=random")
    coordinated = json.loads(prismctl(capsys, *args[:-1], "-o", "json").out)
    assert coordinated["coordinated_probes"] is True
    assert coordinated["digest"] != data["digest"]  # a different run, not a relabelled one


def test_unknown_scenario_names_the_swim_ones_too(capsys: pytest.CaptureFixture[str]) -> None:
    ran = prismctl(capsys, "sim", "run", "swim-nothing")
    assert ran.code == 2
    for name in SWIM_SCENARIOS:
        assert name in ran.err
