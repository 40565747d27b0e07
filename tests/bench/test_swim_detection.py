"""The SWIM loopback benchmark's harness: argument parsing, event lines, the accounting of
detection, metadata spread and false deaths; and, marked slow, tiny real runs."""

from __future__ import annotations

import argparse
import json
import random

import pytest
import trio

from benchmarks._swim_harness import (
    ClusterView,
    FalseDeath,
    LineError,
    MemberEvent,
    PrismSwim,
    SwimProtocol,
    free_dual_ports,
    parse_event,
    parse_line,
    spread_time,
)
from benchmarks.swim_detection import (
    Plan,
    Trial,
    _cpu_percent,
    main,
    make_plans,
    parse_args,
    run_trial,
    summary,
    top_fields,
)


def _event(t: float, kind: str, name: str, meta: str = "") -> MemberEvent:
    return MemberEvent(t=t, kind=kind, name=name, address=f"addr-{name}", incarnation=1, meta=meta)


# ---------------------------------------------------------------------------------------------
# Arguments


def test_parse_args_defaults() -> None:
    args = parse_args([])
    assert args.members == [5]
    assert args.profile == ["local"]
    assert args.peer == "swim-protocol"
    assert args.trials == 10


def test_parse_args_repeats_sizes_and_profiles() -> None:
    argv = ["--members", "5", "--members", "20", "--profile", "lan", "--profile", "local"]
    args = parse_args([*argv, "--profile", "lan", "--peer", "none", "--trials", "3"])
    assert args.members == [5, 20]
    assert args.profile == ["lan", "local"]  # in order, each once
    assert args.peer == "none"
    assert args.trials == 3


@pytest.mark.parametrize(
    "argv",
    [
        ["--members", "2"],
        ["--trials", "0"],
        ["--cap", "0"],
        ["--settle", "-1"],
        ["--peer", "serf"],
        ["--profile", "fast"],
    ],
)
def test_parse_args_rejects_bad_values(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)


# ---------------------------------------------------------------------------------------------
# Lines


def test_parse_event_reads_a_contract_line() -> None:
    raw = (
        b'{"t": 1700000000.25, "kind": "dead", "name": "m3", "address": "127.0.0.1:4203",'
        b' "incarnation": 4, "meta": "role=worker"}'
    )
    event = parse_event(parse_line(raw))
    assert event == MemberEvent(
        t=1700000000.25,
        kind="dead",
        name="m3",
        address="127.0.0.1:4203",
        incarnation=4,
        meta="role=worker",
    )


def test_parse_event_defaults_optional_fields() -> None:
    event = parse_event({"t": 5, "kind": "joined", "name": "m2"})
    assert (event.t, event.incarnation, event.meta, event.address) == (5.0, 0, "", "")


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"[1, 2]", b"\xff\xfe", b'"text"'],
)
def test_parse_line_rejects_what_is_not_an_object(raw: bytes) -> None:
    with pytest.raises(LineError):
        parse_line(raw)


@pytest.mark.parametrize(
    "line",
    [
        {"kind": "dead", "name": "m1"},  # no time
        {"t": "now", "kind": "dead", "name": "m1"},
        {"t": True, "kind": "dead", "name": "m1"},
        {"t": float("nan"), "kind": "dead", "name": "m1"},
        {"t": 1.0, "kind": "exploded", "name": "m1"},
        {"t": 1.0, "kind": "dead", "name": ""},
        {"t": 1.0, "kind": "dead", "name": 7},
        {"t": 1.0, "kind": "dead", "name": "m1", "incarnation": "3"},
        {"t": 1.0, "kind": "dead", "name": "m1", "incarnation": False},
        {"t": 1.0, "kind": "dead", "name": "m1", "meta": b"x".hex().encode()},
    ],
)
def test_parse_event_rejects_bad_fields(line: dict[str, object]) -> None:
    with pytest.raises(LineError):
        parse_event(line)


# ---------------------------------------------------------------------------------------------
# The view


def test_all_alive_needs_every_member_to_see_every_other() -> None:
    view = ClusterView()
    names = ["a", "b", "c"]
    view.record("a", _event(1, "joined", "b"))
    view.record("a", _event(1, "joined", "c"))
    view.record("b", _event(1, "joined", "a"))
    view.record("b", _event(1, "joined", "c"))
    view.record("c", _event(1, "joined", "a"))
    assert not view.all_alive(names)  # c has not seen b
    view.record("c", _event(2, "updated", "b"))  # news about an unknown member: alive
    assert view.all_alive(names)
    view.record("c", _event(3, "suspect", "b"))
    assert view.state("c", "b") == "suspect"
    assert not view.all_alive(names)
    view.record("c", _event(4, "updated", "b", meta="x"))  # metadata keeps the suspicion
    assert view.state("c", "b") == "suspect"
    view.record("c", _event(5, "alive_again", "b"))
    assert view.all_alive(names)
    view.record("c", _event(6, "dead", "b"))
    view.record("c", _event(7, "reaped", "b"))
    assert view.state("c", "b") is None
    view.record("c", _event(8, "left", "a"))
    assert view.state("c", "a") == "left"


def test_first_time_filters_by_subject_time_kind_and_meta() -> None:
    view = ClusterView()
    view.record("a", _event(1.0, "updated", "b", meta="new"))  # before `since`
    view.record("a", _event(2.0, "updated", "c", meta="new"))  # another subject
    view.record("a", _event(3.0, "suspect", "b", meta="old"))
    view.record("a", _event(4.0, "alive_again", "b", meta="new"))
    view.record("a", _event(5.0, "dead", "b", meta="new"))
    assert view.first_time("a", "b", since=1.5, meta="new") == 4.0
    assert view.first_time("a", "b", since=1.5, kind="dead") == 5.0
    assert view.first_time("a", "b", since=0.0, meta="new") == 1.0
    assert view.first_time("a", "b", since=5.5) is None
    assert view.first_time("nobody", "b", since=0.0) is None
    assert view.first_times(["a", "z"], "b", since=4.5) == {"a": 5.0, "z": None}


def test_spread_time_first_and_all() -> None:
    assert spread_time({"a": 12.0, "b": 14.5}, 10.0) == (2.0, 4.5)
    assert spread_time({"a": 12.0, "b": None}, 10.0) == (2.0, None)
    assert spread_time({"a": None}, 10.0) == (None, None)


def test_false_deaths_count_every_wrong_report() -> None:
    view = ClusterView()
    view.record("a", _event(1.0, "dead", "c"))  # c was never killed: false
    view.record("b", _event(1.5, "dead", "c"))  # a second report about c: counted too
    view.record("b", _event(2.0, "dead", "d"))  # d, before its kill at 10: false
    view.record("a", _event(11.0, "dead", "d"))  # d after its kill: a detection
    view.record("c", _event(11.5, "suspect", "a"))  # a suspicion, not a death
    deaths = view.false_deaths(killed="d", killed_at=10.0)
    assert deaths == [
        FalseDeath("a", "c", 1.0),
        FalseDeath("b", "c", 1.5),
        FalseDeath("b", "d", 2.0),
    ]
    # Before anything was killed, every death is false.
    assert len(view.false_deaths(killed=None, killed_at=None)) == 4


def test_suspicions_of_live_leave_out_the_killed_member_after_the_kill() -> None:
    view = ClusterView()
    view.record("a", _event(1.0, "suspect", "b"))
    view.record("a", _event(2.0, "suspect", "d"))
    view.record("b", _event(11.0, "suspect", "d"))
    assert view.suspicions_of_live(killed="d", killed_at=10.0) == 2
    assert view.suspicions_of_live(killed=None, killed_at=None) == 3


# ---------------------------------------------------------------------------------------------
# Plans and figures


def test_make_plans_never_kills_the_seed_nor_the_publisher() -> None:
    plans = make_plans(3, 200, random.Random(7))
    assert [p.trial for p in plans] == list(range(1, 201))
    assert all(p.victim in (1, 2) and p.publisher != p.victim for p in plans)
    assert {p.victim for p in plans} == {1, 2}
    assert {p.publisher for p in plans} == {0, 1, 2}
    assert len({p.value for p in plans}) == 200
    assert make_plans(3, 200, random.Random(7)) == plans  # the seed decides everything


def _trial(n: int, detect: float | None, meta: float | None, false: int = 0) -> Trial:
    trial = Trial("prism", "local", 5, n, detect_all_s=detect, metadata_all_s=meta)
    trial.detect_first_s = None if detect is None else detect / 2
    trial.false_deaths = false
    return trial


def test_summary_medians_percentiles_and_false_deaths() -> None:
    trials = [_trial(i, float(i), 0.1 * i) for i in range(1, 6)]  # 1..5 s
    trials.append(_trial(6, None, 0.2, false=2))  # not detected within the cap
    failed = _trial(7, None, None, false=1)
    failed.error = "RuntimeError('boom')"
    trials.append(failed)
    figures = summary(trials)
    assert figures["trials"] == 6
    assert figures["failed_trials"] == 1
    assert figures["undetected_trials"] == 1
    assert figures["detect_all_median_s"] == 3.0
    assert figures["detect_all_p99_s"] == 5.0  # nearest rank: with few trials, the maximum
    assert figures["detect_all_max_s"] == 5.0
    assert figures["detect_first_median_s"] == 1.5
    assert figures["metadata_all_median_s"] == 0.25  # median of 0.1, 0.2, 0.2, 0.3, 0.4, 0.5
    assert figures["false_deaths"] == 3  # the failed trial's are counted too
    assert figures["trials_with_false_deaths"] == 2
    assert figures["detect_all_s_values"] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert figures["errors"] == ["RuntimeError('boom')"]
    top = top_fields(PrismSwim("local"), 5, figures)
    assert top["system"] == "prism"
    assert top["profile"] == "local"
    assert (top["detect_all_s"], top["detect_all_p99_s"]) == (3.0, 5.0)
    assert top["metadata_all_s"] == 0.25
    assert top["false_deaths"] == 3


def test_summary_of_no_trials_has_no_figures() -> None:
    figures = summary([])
    assert figures["trials"] == 0
    assert figures["detect_all_median_s"] is None
    assert figures["false_deaths"] == 0


def test_cpu_percent_is_the_mean_per_member() -> None:
    start: dict[str, float | None] = {"a": 1.0, "b": 2.0, "c": None}
    end: dict[str, float | None] = {"a": 1.5, "b": 3.5, "c": 9.0, "d": 1.0}
    assert _cpu_percent(start, end, 10.0) == 10.0  # (0.5 + 1.5) / 2 over 10 s
    assert _cpu_percent({}, end, 10.0) is None


def test_free_dual_ports_are_distinct() -> None:
    ports = free_dual_ports(4)
    assert len(set(ports)) == 4


def test_member_commands_of_each_system() -> None:
    addresses = ["127.0.0.1:1000", "127.0.0.1:1001", "127.0.0.1:1002"]
    seed = PrismSwim("lan").argv(0, addresses, meta="m1-start", cluster="c", seed=9)
    joiner = PrismSwim("lan").argv(2, addresses, meta="m3-start", cluster="c", seed=9)
    assert "--join" not in seed
    assert joiner[joiner.index("--join") + 1] == addresses[0]
    assert joiner[joiner.index("--name") + 1] == "m3"
    assert joiner[joiner.index("--profile") + 1] == "lan"
    first = SwimProtocol().argv(0, addresses, meta="m1-start", cluster="c", seed=9)
    third = SwimProtocol().argv(2, addresses, meta="m3-start", cluster="c", seed=9)
    assert first[first.index("--peer") + 1] == addresses[1]  # the seed needs a peer too
    assert third[third.index("--peer") + 1] == addresses[0]


# ---------------------------------------------------------------------------------------------
# swim-protocol's status changes as contract events


def test_swim_protocol_changes_become_contract_kinds() -> None:
    from swimprotocol.status import Status

    from benchmarks._swim_protocol_node import _Reported, translate

    record = _Reported()
    kinds, record = translate(record, Status.ONLINE, None)  # first ack, metadata unknown
    assert kinds == ["joined"]
    kinds, record = translate(record, Status.ONLINE, "v1")  # its metadata arrives
    assert kinds == ["updated"]
    kinds, record = translate(record, Status.SUSPECT, "v1")
    assert kinds == ["suspect"]
    kinds, record = translate(record, Status.ONLINE, "v2")  # refuted, with new metadata
    assert kinds == ["alive_again", "updated"]
    kinds, record = translate(record, Status.SUSPECT, "v2")
    kinds, record = translate(record, Status.OFFLINE, "v2")
    assert kinds == ["dead"]
    kinds, record = translate(record, Status.ONLINE, "v2")  # a restarted member
    assert kinds == ["alive_again"]
    # A member first seen with its metadata joins with it, and no separate update.
    kinds, _ = translate(_Reported(), Status.ONLINE, "v1")
    assert kinds == ["joined"]
    # A member never seen alive is not reported dead.
    kinds, _ = translate(_Reported(), Status.OFFLINE, None)
    assert kinds == []


# ---------------------------------------------------------------------------------------------
# Real processes


def _args(*extra: str) -> argparse.Namespace:
    return parse_args(["--settle", "0.2", "--cap", "40", "--meta-cap", "20", *extra])


@pytest.mark.slow
def test_one_swim_protocol_trial_on_loopback() -> None:
    """Three swim-protocol processes: join, metadata, SIGKILL, detection (about 10 s)."""
    plan = Plan(trial=1, publisher=0, victim=2, node_seed=5, value="bench-value")
    trial = trio.run(run_trial, SwimProtocol(), 3, plan, _args())
    assert trial.error is None, trial.error
    assert trial.metadata_all_s is not None
    assert trial.metadata_all_s > 0
    assert trial.detect_all_s is not None
    assert trial.detect_all_s > 0
    assert trial.undetected_by == []
    assert trial.bad_lines == 0


@pytest.mark.slow
def test_tiny_prism_run_prints_one_line_of_the_promised_shape(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--peer", "none", "--members", "3", "--trials", "1", "--settle", "0.2"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 1
    record = lines[0]
    assert exit_info.value.code == 0, record["figures"]
    assert record["name"] == "swim_detection"
    assert (record["system"], record["members"], record["profile"]) == ("prism", 3, "local")
    assert record["trials"] == 1
    for key in ("detect_all_s", "detect_all_p99_s", "metadata_all_s", "metadata_all_p99_s"):
        assert isinstance(record[key], float), key
        assert record[key] > 0, key
    assert isinstance(record["false_deaths"], int)
    assert record["params"]["system_config"]["profile"] == "local"
    assert {"machine", "commit", "date", "figures"} <= record.keys()
