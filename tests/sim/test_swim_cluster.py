"""``SwimSim``: the faults (crash, restart, leave, pause, partition) and the bookkeeping the
scenarios' figures come from (views, detection times, false deaths)."""

from __future__ import annotations

import pytest

from prism.sim.loop import NS_PER_S
from prism.sim.network import LinkSpec
from prism.sim.swim_cluster import SOCKET_BUFFER_DATAGRAMS, SwimSim
from prism.swim.config import SwimConfig
from prism.swim.members import MemberState
from prism.swim.ready import EventKind


def joined(nodes: int = 6, *, seed: int = 1) -> SwimSim:
    sim = SwimSim(nodes=nodes, seed=seed, config=SwimConfig.lan(), link=LinkSpec())
    for name in sim.names:
        sim.start(name, [sim.names[0]])
    assert sim.run_for(10.0, sim.converged)
    return sim


def test_start_twice_is_refused() -> None:
    sim = joined(3)
    with pytest.raises(ValueError, match="already running"):
        sim.start("n2", ["n1"])


def test_crash_is_detected_everywhere_then_a_restart_rejoins_and_refutes() -> None:
    """A restarted member (a fresh core at incarnation 0) learns it was declared dead and
    raises its incarnation past the verdict; everyone takes it back."""
    sim = joined(6, seed=2)
    crashed_at = sim.now_ns
    sim.crash("n4")
    assert sim.run_for(40.0, lambda: "n4" in sim.all_dead_ns)
    assert sim.sees_dead_everywhere("n4")
    assert crashed_at < sim.first_dead_ns["n4"] <= sim.all_dead_ns["n4"]
    assert all(sim.view(o, "n4") is MemberState.DEAD for o in sim.running())
    sim.restart("n4", ["n1"])
    assert sim.run_for(10.0, sim.converged)
    assert sim.core("n4").incarnation >= 1
    assert all(sim.view(o, "n4") is MemberState.ALIVE for o in sim.running() if o != "n4")
    assert not sim.false_deaths


def test_leave_is_left_everywhere_and_not_a_death() -> None:
    sim = joined(5, seed=3)
    sim.leave("n2")
    sim.run_for(5.0)
    assert "n2" not in sim.running()
    assert all(sim.view(o, "n2") is MemberState.LEFT for o in sim.running())
    assert sim.deaths == 0
    assert not sim.false_deaths
    assert sim.converged()  # among the members still running


def test_a_paused_member_reads_its_socket_when_it_resumes() -> None:
    sim = joined(5, seed=4)
    core = sim.core("n3")
    sim.pause("n3")
    frozen = core.now
    sim.run_for(2.0)
    assert core.now == frozen  # no ticks while paused (as under SIGSTOP)
    waiting = len(sim.nodes["n3"].inbox)
    assert 0 < waiting <= SOCKET_BUFFER_DATAGRAMS
    sim.resume("n3")
    assert not sim.nodes["n3"].inbox
    sim.run_for(2.0)
    assert core.now > frozen  # it goes on from where it stopped
    assert core.now < frozen + 25  # and does not replay the two seconds it missed
    assert not sim.false_deaths
    assert sim.run_for(10.0, sim.converged)


def test_a_member_paused_past_the_suspicion_timeout_is_a_false_death() -> None:
    """The checker can fail: a member that is running (paused is running) but declared
    dead is counted, with who declared it."""
    sim = joined(6, seed=5)
    sim.pause("n5")
    sim.run_for(40.0)
    assert sim.false_deaths
    death = sim.false_deaths[0]
    assert death.subject == "n5"
    assert death.by  # whose verdict it was
    sim.resume("n5")
    assert sim.run_for(10.0, sim.converged)  # it refutes and is taken back


def test_deaths_across_a_partition_are_expected_not_false() -> None:
    sim = joined(6, seed=6)
    sim.partition([["n1", "n2", "n3"], ["n4", "n5", "n6"]])
    sim.run_for(30.0)
    assert sim.deaths > 0
    assert sim.view("n1", "n5") is MemberState.DEAD
    assert not sim.false_deaths
    assert sim.was_cut("n1", "n5")
    assert not sim.was_cut("n1", "n2")
    sim.heal()
    assert sim.was_cut("n1", "n5")  # within the cut memory: late verdicts are expected too
    assert sim.run_for(60.0, sim.converged)


def test_metadata_update_reaches_every_member() -> None:
    sim = joined(8, seed=7)
    heard: dict[str, int] = {}

    def on_event(observer: str, kind: EventKind, subject: str, incarnation: int) -> None:
        if kind is EventKind.UPDATED and subject == "n3":
            heard.setdefault(observer, sim.now_ns)

    sim.on_event.append(on_event)
    started = sim.now_ns
    sim.update_metadata("n3", b"role=gpu")
    assert sim.run_for(5.0, lambda: len(heard) == 7)
    assert max(heard.values()) - started < 2 * NS_PER_S
    assert all(sim.core(o).member("n3").meta == b"role=gpu" for o in sim.running())  # type: ignore[union-attr]


def test_a_seed_nobody_holds_is_counted_as_unroutable() -> None:
    sim = SwimSim(nodes=3, seed=1, config=SwimConfig.lan(), link=LinkSpec())
    sim.start("n1", ["n1"])
    sim.start("n2", ["n9"])  # no member n9: the join goes nowhere
    sim.run_for(3.0)
    assert sim.unroutable >= 2  # the first attempt and a retry
    assert sim.core("n2").is_joining


def test_cores_are_ticked_only_when_they_have_work() -> None:
    """Tick elision: a steady member wakes about once per probe period (plus its ack and
    the probes of others), not ten times."""
    sim = joined(10, seed=8)
    sim.run_for(5.0)  # the join news has gone out
    events = sim.loop.events_run
    sim.run_for(10.0)
    per_member_second = (sim.loop.events_run - events) / 10 / 10
    assert per_member_second < 6  # wakes + ping + ack arrivals (~4), not 10 ticks alone
