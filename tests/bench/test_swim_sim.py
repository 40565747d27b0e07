"""``python -m benchmarks.swim_sim`` on small clusters: every mode prints JSON lines with
the figures the issue's targets are judged on (the real runs are hand-run; see
``benchmarks/README.md``)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from benchmarks import swim_sim


def lines(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict[str, Any]]:
    swim_sim.main(list(argv))
    out = capsys.readouterr().out
    return [json.loads(line) for line in out.splitlines()]


def test_detect_reports_median_p99_and_the_spread_in_rounds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    records = lines(capsys, "--mode", "detect", "--nodes", "10", "--trials", "2", "--crashes", "2")
    assert [r["name"] for r in records] == [
        "swim_sim.detect.trial",
        "swim_sim.detect.trial",
        "swim_sim.detect.cluster",
    ] * 2 + ["swim_sim.detect"]
    summary = records[-1]["figures"]
    assert summary["samples"] == 4  # 2 clusters x 2 crashes, each crash one sample
    assert summary["clusters_not_ok"] == 0
    assert summary["false_deaths"] == 0
    assert 0 < summary["suspect_first_median_s"] < summary["detect_first_median_s"]
    assert summary["detect_first_median_s"] <= summary["detect_all_p99_s"]
    assert summary["detect_target_s"] == pytest.approx(3 + 4.0)  # 3 periods + min suspicion
    assert summary["spread_rounds_target"] == pytest.approx(3 * 3.3219, abs=0.01)
    trials = [r["figures"] for r in records if r["name"] == "swim_sim.detect.trial"]
    # The second crash of a cluster strikes after the first victim came back: detected too.
    assert all(t["detect_all_s"] > t["detect_first_s"] > t["suspect_first_s"] for t in trials)
    assert records[2]["figures"]["spread_rounds"] > 0
    assert records[2]["figures"]["ok"] is True


def test_loss_puts_lifeguard_on_and_off_side_by_side(capsys: pytest.CaptureFixture[str]) -> None:
    records = lines(
        capsys, "--mode", "loss", "--loss-nodes", "6", "--seeds", "2", "--loss-minutes", "0.5"
    )
    (summary,) = records
    figures = summary["figures"]
    assert set(figures) == {"lifeguard_on", "lifeguard_off", "target_met"}
    assert summary["params"]["seeds"] == 2
    assert figures["lifeguard_on"]["false_suspicions"] >= 0


def test_load_compares_sizes_and_speed_times_both_starts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    records = lines(capsys, "--mode", "load", "--sizes", "5", "10", "--window", "10")
    load = records[-1]["figures"]
    assert load["steady"] == {"5": 2.0, "10": 2.0}  # a ping and an ack per member per period
    assert load["steady_target_met"]
    records = lines(capsys, "--mode", "speed", "--nodes", "10")
    assert [r["name"] for r in records] == ["swim_sim.speed.cold", "swim_sim.speed.steady"]
    assert records[0]["figures"]["converged"] is True
    assert records[1]["figures"]["cpu_seconds"] > 0
