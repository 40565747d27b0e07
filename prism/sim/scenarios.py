"""The named scenarios of ``prismctl sim``: the faults that broke real Raft deployments,
replayed on the simulated cluster (``../shared/research/raft-anchors.md`` section (b)).

Each scenario is a fault schedule (data, see ``prism.sim.runner.Fault``), optionally a
script for faults that must follow the cluster's state step by step (``figure-8``), and
expectations specific to it (for example "the one-way-cut node never disrupts the leader").
The invariants are checked in every scenario; expectations state what the scenario is for.
With pre-vote or check-quorum switched off, the expectations that depend on them are reported
as not checked rather than failed: those runs exist to show what goes wrong without them.
"""

from __future__ import annotations

from collections.abc import Callable

from prism.raft.messages import AppendEntries, RequestVote
from prism.sim.clients import Workload
from prism.sim.cluster import ClientRequest
from prism.sim.loop import NS_PER_S
from prism.sim.network import LinkSpec
from prism.sim.rng import derive
from prism.sim.runner import Fault, Params, Runner, Scenario, Schedule, SimResult

Expectation = tuple[str, bool | str]
ExpectationCheck = Callable[[Runner], Expectation]
NOT_CHECKED = "not checked: needs pre-vote, check-quorum and at least 3 nodes"


def _protected(runner: Runner) -> bool:
    params = runner.params
    return params.pre_vote and params.check_quorum and params.nodes >= 3


def _fault_window(runner: Runner, action: str) -> tuple[float, float]:
    """From the first ``action`` fault to the next heal (or the end of the safety phase)."""
    times = sorted(f.at_s for f in runner.schedule if f.action == action)
    start = times[0] if times else 0.0
    heals = sorted(f.at_s for f in runner.schedule if f.action == "heal" and f.at_s > start)
    return start, heals[0] if heals else runner.duration_s


def _stepped_down_between(runner: Runner, start_s: float, end_s: float, why: str) -> bool:
    lo, hi = int(start_s * NS_PER_S), int(end_s * NS_PER_S)
    return any(
        lo <= e.time_ns < hi and e.text.startswith("steps down") and why in e.text
        for e in runner.sim.timeline.entries
    )


def expect_no_disruption(action: str) -> ExpectationCheck:
    def check(runner: Runner) -> Expectation:
        name = "leader-undisturbed"
        if not _protected(runner):
            return name, NOT_CHECKED
        start, end = _fault_window(runner, action)
        changes = runner.elections_between(start, end)
        if changes:
            return name, f"violated: {changes} new leader(s) between {start:g}s and {end:g}s"
        return name, True

    return check


def expect_step_down(action: str, why: str) -> ExpectationCheck:
    def check(runner: Runner) -> Expectation:
        name = "cut-off-leader-steps-down"
        if not _protected(runner):
            return name, NOT_CHECKED
        start, end = _fault_window(runner, action)
        if _stepped_down_between(runner, start, end, why):
            return name, True
        return name, f"violated: no leader stepped down ({why}) between {start:g}s and {end:g}s"

    return check


def _leader_before(runner: Runner, at_s: float) -> tuple[str, int] | None:
    """The node that last became leader before ``at_s``, and its term."""
    latest = None
    for term, node in sorted(runner.sim.checkers.leaders_by_term.items()):
        became = [
            e.time_ns
            for e in runner.sim.timeline.entries
            if e.node == node and e.text.startswith(f"became leader of term {term}")
        ]
        if became and became[0] < at_s * NS_PER_S:
            latest = (node, term)
    return latest


# Acknowledgements of entries committed just before a fault may still be on their way
# (a disk write and the client link): that much slack, no more.
ACK_SLACK_NS = 10_000_000


def expect_no_stale_acks(action: str) -> ExpectationCheck:
    """The leader deposed or cut off by ``action`` acknowledges nothing from then on in its
    old term: without a quorum it cannot commit, and so must not answer ok."""

    def check(runner: Runner) -> Expectation:
        name = "old-leader-acknowledges-nothing"
        start, _ = _fault_window(runner, action)
        old = _leader_before(runner, start)
        if old is None:
            return name, "not checked: no leader before the fault"
        node, term = old
        lo = int(start * NS_PER_S) + ACK_SLACK_NS
        stale = [
            a for a in runner.sim.acks if a.node == node and a.term == term and a.time_ns >= lo
        ]
        if stale:
            first = stale[0]
            return name, (
                f"violated: {node} acknowledged entry {first.index} of term {term} at "
                f"{first.time_ns / NS_PER_S:.3f}s, after it was cut off"
            )
        return name, True

    return check


def expect_paused_leader_deposed(runner: Runner) -> Expectation:
    name = "paused-leader-deposed"
    if runner.params.nodes < 3:
        return name, NOT_CHECKED
    start, _ = _fault_window(runner, "pause")
    resumes = [f.at_s for f in runner.schedule if f.action == "resume"]
    end = resumes[0] + 2.0 if resumes else runner.duration_s
    if _stepped_down_between(runner, start, end, "higher term"):
        return name, True
    return name, "violated: the paused leader did not step down after it resumed"


def expect_stable_partial_connectivity(runner: Runner) -> Expectation:
    name = "no-leader-churn"
    if not _protected(runner):
        return name, NOT_CHECKED
    topologies = sorted(f.at_s for f in runner.schedule if f.action == "topology")
    heals = sorted(f.at_s for f in runner.schedule if f.action == "heal")
    churn = []
    for start in topologies:
        end = min([h for h in heals if h > start], default=runner.duration_s)
        # The second window starts with the leader poorly connected: one hand-over is due.
        allowed = 1 if start != topologies[0] else 0
        count = runner.elections_between(start, end)
        if count > allowed:
            churn.append(f"{count} leaders elected in {start:g}s-{end:g}s (allowed {allowed})")
    return name, True if not churn else "violated: " + "; ".join(churn)


# ---------------------------------------------------------------- schedules


def _leader_crash(p: Params, d: float) -> Schedule:
    return [
        Fault(3.0, "crash", {"node": "leader"}),
        Fault(d * 0.4, "restart", {"node": "all"}),
        Fault(d * 0.55, "crash", {"node": "leader"}),
        Fault(d * 0.8, "restart", {"node": "all"}),
    ]


def _minority_leader(p: Params, d: float) -> Schedule:
    return [
        Fault(3.0, "partition", {"leader_side": max(1, (p.nodes - 1) // 2)}),
        Fault(d - 3, "heal"),
    ]


def _split_brain(p: Params, d: float) -> Schedule:
    minority = max(1, (p.nodes - 1) // 2)
    return [
        Fault(3.0, "partition", {"leader_side": minority}),
        Fault(d * 0.45, "heal"),
        Fault(d * 0.55, "partition", {"leader_side": p.nodes - minority}),
        Fault(d - 3, "heal"),
    ]


def _one_way_cut(p: Params, d: float) -> Schedule:
    return [Fault(3.0, "deafen", {"node": "follower"}), Fault(d - 3, "heal")]


def _leader_send_only(p: Params, d: float) -> Schedule:
    return [Fault(3.0, "deafen", {"node": "leader"}), Fault(d - 3, "heal")]


def _bridge(p: Params, d: float) -> Schedule:
    return [Fault(3.0, "bridge", {"bridge": "follower"}), Fault(d - 3, "heal")]


def _flapping(p: Params, d: float) -> Schedule:
    return [
        Fault(2.0, "flap", {"a": "leader", "b": "follower", "period_s": 0.15, "until_s": d - 3}),
        Fault(d - 3, "heal"),
    ]


def _rolling_restart(p: Params, d: float) -> Schedule:
    faults = []
    step = max(1.0, (d - 4.0) / max(1, p.nodes))
    for i in range(p.nodes):
        at = 2.0 + i * step
        faults.append(Fault(round(at, 3), "crash", {"node": f"n{i + 1}"}))
        faults.append(Fault(round(at + step * 0.5, 3), "restart", {"node": f"n{i + 1}"}))
    return faults


def _partitioned_rejoin(p: Params, d: float) -> Schedule:
    return [Fault(3.0, "isolate", {"node": "follower"}), Fault(d * 0.5, "heal")]


def _quorum_loss(p: Params, d: float) -> Schedule:
    majority = p.nodes // 2 + 1
    faults = [Fault(3.0, "crash", {"node": "leader"})]
    faults += [Fault(3.0 + 0.01 * i, "crash", {"node": "random"}) for i in range(1, majority)]
    return [*faults, Fault(d * 0.5, "restart", {"node": "all"})]


def expect_rejoin_undisturbed(runner: Runner) -> Expectation:
    name = "leader-undisturbed"
    if not _protected(runner):
        return name, NOT_CHECKED
    start, heal = _fault_window(runner, "isolate")
    changes = runner.elections_between(start, heal + 3.0)
    if changes:
        return name, f"violated: {changes} new leader(s) after the isolated node returned"
    return name, True


def _nothing(p: Params, d: float) -> Schedule:
    return []


def _leader_pause(p: Params, d: float) -> Schedule:
    return [
        Fault(3.0, "pause", {"node": "leader"}),
        Fault(5.0, "resume", {"node": "all"}),
        Fault(d * 0.6, "pause", {"node": "leader"}),
        Fault(d * 0.6 + 1.5, "resume", {"node": "all"}),
    ]


def _partial_connectivity(p: Params, d: float) -> Schedule:
    return [
        Fault(3.0, "topology", {}),
        Fault(d * 0.5, "heal"),
        Fault(d * 0.5 + 1.0, "topology", {"leader_poorly_connected": True}),
        Fault(d - 2, "heal"),
    ]


def _stale_read(p: Params, d: float) -> Schedule:
    return [
        Fault(3.0, "partition", {"leader_side": max(1, (p.nodes - 1) // 2)}),
        Fault(d * 0.5, "heal"),
        Fault(d * 0.6, "crash", {"node": "leader"}),
        Fault(d * 0.6 + 2, "restart", {"node": "all"}),
    ]


def _snapshot_catchup(p: Params, d: float) -> Schedule:
    return [
        Fault(2.0, "crash", {"node": "follower"}),
        Fault(d * 0.6, "restart", {"node": "all"}),
    ]


def expect_snapshot_installed(runner: Runner) -> Expectation:
    """The node that was down caught up through a snapshot, not entry by entry."""
    name = "caught-up-by-snapshot"
    if runner.params.nodes < 2:
        return name, "not checked: needs at least 2 nodes"
    installed = runner.sim.snapshots_installed
    return name, True if installed else "violated: no snapshot was installed"


def _grow(p: Params, d: float) -> Schedule:
    """One server at a time, each after the previous change had time to commit."""
    return [
        Fault(round(2.0 + 1.5 * i, 3), "add", {"node": "non-member"}) for i in range(p.nodes - 1)
    ]


def _shrink(p: Params, d: float) -> Schedule:
    removals = max(0, min(2, p.nodes - 1))
    return [Fault(3.0 + 3.0 * i, "remove", {"node": "follower"}) for i in range(removals)]


def _remove_leader(p: Params, d: float) -> Schedule:
    return [Fault(3.0, "remove", {"node": "leader"}), Fault(d * 0.6, "add", {"node": "non-member"})]


def _change_then_partition(p: Params, d: float) -> Schedule:
    """A change starts, and the leader is cut into a minority before it can commit."""
    return [
        Fault(3.0, "add", {"node": "non-member"}),
        Fault(3.001, "partition", {"leader_side": max(1, (p.nodes - 1) // 2)}),
        Fault(d * 0.5, "heal"),
        Fault(d * 0.5 + 1.0, "add", {"node": "non-member"}),
    ]


def _change_then_leader_crash(p: Params, d: float) -> Schedule:
    return [
        Fault(3.0, "remove", {"node": "follower"}),
        Fault(3.001, "crash", {"node": "leader"}),
        Fault(d * 0.5, "restart", {"node": "all"}),
        Fault(d * 0.5 + 1.0, "add", {"node": "non-member"}),
    ]


def expect_members(count: Callable[[Params], int]) -> ExpectationCheck:
    def check(runner: Runner) -> Expectation:
        name = "membership-reached"
        want = count(runner.params)
        sim = runner.sim
        leader = sim.leader()
        core = sim.nodes[leader].core if leader else None
        if core is None:
            return name, "violated: no leader at the end"
        voters = core.voters
        if len(voters) != want or core.membership.learners:
            learners = list(core.membership.learners)
            return name, f"violated: want {want} voters; voters {list(voters)}, learners {learners}"
        return name, True

    return check


def _disk_stall(p: Params, d: float) -> Schedule:
    return [Fault(3.0, "stall-disk", {"node": "leader", "for_s": 4.0})]


def expect_new_leader_during_stall(runner: Runner) -> Expectation:
    """A leader whose disk stalls stops sending (its handling loop waits on the write), so
    the others elect a new leader within about an election timeout, and the cluster keeps
    committing (raft-anchors (b) 37: HashiCorp Raft's leader held the cluster instead)."""
    name = "new-leader-during-stall"
    if not _protected(runner):
        return name, NOT_CHECKED
    start, _ = _fault_window(runner, "stall-disk")
    if runner.elections_between(start, start + 1.0):
        return name, True
    return name, f"violated: no new leader within 1 s of the stall at {start:g}s"


def _transfers(p: Params, d: float) -> Schedule:
    return [
        Fault(3.0, "transfer", {"target": "random"}),
        Fault(6.0, "transfer", {}),
        Fault(9.0, "transfer", {"target": "random"}),
    ]


def expect_transfers_complete(runner: Runner) -> Expectation:
    """Each transfer hands leadership over within an election timeout."""
    name = "transfer-completes"
    starts = [
        e.time_ns for e in runner.sim.timeline.entries if "starts leadership transfer" in e.text
    ]
    if not starts:
        return name, "violated: no transfer started"
    slow = [
        t / NS_PER_S
        for t in starts
        if runner.elections_between(t / NS_PER_S, t / NS_PER_S + 0.5) == 0
    ]
    if slow:
        return name, f"violated: no new leader within 0.5 s of the transfers at {slow}"
    return name, True


def explore_schedule(p: Params, d: float) -> Schedule:
    """Random faults drawn from the seed's ``explore`` stream, ending healed."""
    rng = derive(p.seed, "explore")
    ids = [f"n{i}" for i in range(1, p.nodes + 1)]
    faults: Schedule = []
    t = 1.0 + rng.uniform(0.0, 1.0)
    while t < d - 1.0:
        kind = rng.choice(
            [
                "partition",
                "partition",
                "isolate",
                "deafen",
                "bridge",
                "crash",
                "crash",
                "pause",
                "topology",
                "flap",
                "cut",
                "reconfigure",
                "transfer",
                "stall-disk",
            ]
        )
        hold = round(rng.uniform(0.3, 4.0), 3)
        at = round(t, 3)
        if kind == "partition":
            shuffled = ids[:]
            rng.shuffle(shuffled)
            cut = rng.randrange(1, len(ids)) if len(ids) > 1 else 1
            faults.append(
                Fault(at, "partition", {"groups": [sorted(shuffled[:cut]), sorted(shuffled[cut:])]})
            )
            faults.append(Fault(at + hold, "heal"))
        elif kind in ("crash", "pause"):
            who = rng.choice(["leader", "random"])
            faults.append(Fault(at, kind, {"node": who}))
            faults.append(
                Fault(at + hold, "restart" if kind == "crash" else "resume", {"node": "all"})
            )
        elif kind == "isolate":
            faults.append(Fault(at, "isolate", {"node": rng.choice(["leader", "random"])}))
            faults.append(Fault(at + hold, "heal"))
        elif kind == "deafen":
            faults.append(Fault(at, "deafen", {"node": rng.choice(["leader", "follower"])}))
            faults.append(Fault(at + hold, "heal"))
        elif kind == "bridge":
            faults.append(Fault(at, "bridge", {"bridge": "random"}))
            faults.append(Fault(at + hold, "heal"))
        elif kind == "topology" and p.nodes >= 4:
            faults.append(Fault(at, "topology", {"leader_poorly_connected": rng.random() < 0.5}))
            faults.append(Fault(at + hold, "heal"))
        elif kind == "flap":
            faults.append(
                Fault(
                    at,
                    "flap",
                    {"a": "leader", "b": "random", "period_s": 0.1, "until_s": at + hold},
                )
            )
        elif kind == "cut":
            a, b = rng.sample(ids, 2) if len(ids) > 1 else (ids[0], ids[0])
            faults.append(Fault(at, "cut", {"src": a, "dst": b}))
            faults.append(Fault(at + hold, "heal"))
        elif kind == "reconfigure" and p.nodes >= 3:
            # A member leaves and comes back as a voter, possibly while other faults run.
            faults.append(Fault(at, "remove", {"node": rng.choice(["leader", "follower"])}))
            faults.append(Fault(at + hold, "add", {"node": "non-member"}))
        elif kind == "stall-disk":
            who = rng.choice(["leader", "random"])
            faults.append(Fault(at, "stall-disk", {"node": who, "for_s": hold}))
        elif kind == "transfer":
            faults.append(Fault(at, "transfer", {"target": rng.choice(["random", None])}))
        t += rng.expovariate(1.0 / 1.5)
    return faults


# ---------------------------------------------------------------- figure 8


def _figure_8(runner: Runner) -> None:
    """Raft paper Figure 8, forced step by step on five nodes.

    (a) S1 leads and replicates entry X only to S2; S1 crashes. (b) S5 leads the next term
    with S3 and S4 and appends its own entry at X's index, which reaches no one; S5
    crashes. (c) S1 (or S2) leads again and copies X to a majority, but not its own term's
    no-op. A correct leader must not count those replicas to commit X; with
    ``--unsafe-commit-old-terms`` it does. (d) S5 returns, wins with its newer last term and
    overwrites X everywhere: harmless if X was never committed, a lost committed entry if it
    was, which the leader-completeness and state-machine-safety checkers report.
    """
    sim, net = runner.sim, runner.sim.network
    if len(sim.ids) != 5:
        runner.note("figure-8 needs exactly 5 nodes; running without its script")
        return
    if not sim.run_for(5.0, lambda: sim.leader() is not None):
        return
    s1 = sim.leader()
    assert s1 is not None
    rest = [n for n in sim.ids if n != s1]
    s2 = runner.rng.choice(rest)
    majority = [n for n in rest if n != s2]
    sim.run_for(0.5)
    # (a)
    net.partition([[s1, s2], majority])
    runner.note(f"figure-8 (a): partition {{{s1},{s2}}}|{{{','.join(majority)}}}; write X to {s1}")
    sim.request(s1, ClientRequest(10**9, "figure-8", 1, "write", "x", "1"), lambda _: None)
    sim.run_for(0.05)
    sim.crash(s1)
    # (b)
    side = set(majority)
    net.filters.append(
        lambda src, dst, m: src in side and isinstance(m, AppendEntries) and bool(m.entries)
    )
    runner.note("figure-8 (b): appends from the majority side carry no entries")
    if not sim.run_for(5.0, lambda: sim.leader() in side):
        return
    s5 = sim.leader()
    assert s5 is not None
    sim.run_for(0.05)
    sim.crash(s5)
    # (c)
    net.filters.clear()
    net.heal()
    sim.restart(s1)
    s2_core = sim.nodes[s2].core
    first_term = s2_core.log.term_at(s2_core.log.last_index) if s2_core else None

    def drop_new_term_entries(src: str, dst: str, m: object) -> bool:
        # Drop the new leader's own-term entries, but only where the receiver would accept
        # them: probes it would reject anyway still go through, so the back-off finds X.
        if src not in (s1, s2) or not isinstance(m, AppendEntries):
            return False
        if all(e.term == first_term for e in m.entries):
            return False
        core = sim.nodes[dst].core
        return core is None or core.log.term_at(m.prev_log_index) == m.prev_log_term

    net.filters.append(drop_new_term_entries)
    runner.note(f"figure-8 (c): {s5} down, {s1} back; only entries of term {first_term} replicate")
    if not sim.run_for(5.0, lambda: sim.leader() in (s1, s2)):
        return
    s3 = sim.leader()
    assert s3 is not None
    sim.run_for(0.5)
    # (d)
    sim.crash(s3)
    net.filters.clear()
    net.filters.append(lambda src, dst, m: isinstance(m, RequestVote) and src != s5)
    sim.run_for(0.3)
    sim.restart(s5)
    runner.note(f"figure-8 (d): {s3} down, {s5} back and the only node asking for votes")
    sim.run_for(5.0, lambda: sim.leader() == s5)
    sim.run_for(0.5)
    net.filters.clear()


# ---------------------------------------------------------------- the table

_FEW_CLIENTS = Workload(clients=0)
# Snapshots every 100 entries in chunks of 1 KB, so a short run exercises both.
_SMALL_SNAPSHOTS = {
    "snapshot_threshold_entries": 100,
    "snapshot_trailing_entries": 20,
    "snapshot_chunk_bytes": 1024,
}

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("leader-crash", "the leader crashes twice and comes back", 18.0, _leader_crash),
        Scenario(
            "minority-leader",
            "the leader is cut off in a minority: it must step down and acknowledge nothing",
            15.0,
            _minority_leader,
            expectations=(
                expect_step_down("partition", "no quorum"),
                expect_no_stale_acks("partition"),
            ),
        ),
        Scenario(
            "split-brain",
            "symmetric split (leader in the minority, then the majority) and heal",
            20.0,
            _split_brain,
            expectations=(expect_step_down("partition", "no quorum"),),
        ),
        Scenario(
            "one-way-cut",
            "a follower can send but not receive: it must not disrupt the leader",
            15.0,
            _one_way_cut,
            expectations=(expect_no_disruption("deafen"),),
        ),
        Scenario(
            "leader-send-only",
            "the leader can send but not receive: check-quorum must depose it",
            15.0,
            _leader_send_only,
            expectations=(expect_step_down("deafen", "no quorum"),),
        ),
        Scenario(
            "bridge",
            "two halves that only one node sees both of: no leader churn",
            15.0,
            _bridge,
            expectations=(expect_no_disruption("bridge"),),
        ),
        Scenario(
            "flapping-link",
            "the link between the leader and a follower goes up and down every 150 ms",
            15.0,
            _flapping,
            expectations=(expect_no_disruption("flap"),),
        ),
        Scenario(
            "rolling-restart", "every node restarted in turn under load", 20.0, _rolling_restart
        ),
        Scenario(
            "lossy-network",
            "10% loss with duplication and reordering on every link",
            15.0,
            _nothing,
            link=LinkSpec(loss=0.1, duplicate=0.05, reorder=0.1, jitter_ms=2.0),
        ),
        Scenario(
            "partitioned-rejoin",
            "a follower isolated for seconds returns: pre-vote keeps it from deposing the leader",
            15.0,
            _partitioned_rejoin,
            expectations=(expect_rejoin_undisturbed,),
        ),
        Scenario(
            "quorum-loss",
            "a majority crashes under load: nothing commits until it returns",
            14.0,
            _quorum_loss,
        ),
        Scenario(
            "clock-skew",
            "every node's clock runs at its own rate, up to 30% fast or slow, under faults",
            20.0,
            explore_schedule,
            clock_skew=0.3,
        ),
        Scenario(
            "leader-pause",
            "the leader freezes past the election timeout, then resumes: its stale writes fail",
            12.0,
            _leader_pause,
            expectations=(
                expect_paused_leader_deposed,
                expect_no_stale_acks("pause"),
            ),
        ),
        Scenario(
            "figure-8",
            "Raft Figure 8: an old term's entry must not commit by counting replicas",
            12.0,
            _nothing,
            workload=_FEW_CLIENTS,
            script=_figure_8,
            raft={"max_append_entries": 1},
        ),
        Scenario(
            "partial-connectivity",
            "every node sees some but not all others (the etcd outage livelock)",
            20.0,
            _partial_connectivity,
            expectations=(expect_stable_partial_connectivity,),
        ),
        Scenario(
            "stale-read",
            "reads from a deposed leader and right after an election must not be stale",
            14.0,
            _stale_read,
            workload=Workload(keys=1, read_fraction=0.6, cas_fraction=0.1),
        ),
        Scenario(
            "snapshot-catchup",
            "a follower down for long returns and catches up from a snapshot under load",
            20.0,
            _snapshot_catchup,
            expectations=(expect_snapshot_installed,),
            raft=_SMALL_SNAPSHOTS,
        ),
        Scenario(
            "grow",
            "one server grows into five, one at a time (learner, then voter), under load",
            14.0,
            _grow,
            initial_voters=1,
            expectations=(expect_members(lambda p: p.nodes),),
            raft=_SMALL_SNAPSHOTS,
        ),
        Scenario(
            "shrink",
            "five servers shrink to three, one at a time, under load",
            12.0,
            _shrink,
            expectations=(expect_members(lambda p: max(1, p.nodes - 2)),),
        ),
        Scenario(
            "remove-leader",
            "the leader removes itself: it steps down once that commits; it is added back",
            14.0,
            _remove_leader,
            expectations=(expect_members(lambda p: p.nodes),),
        ),
        Scenario(
            "change-partition",
            "a membership change is cut off by a partition of the leader into a minority",
            16.0,
            _change_then_partition,
            initial_voters=3,
        ),
        Scenario(
            "change-leader-crash",
            "the leader crashes right after starting a membership change",
            16.0,
            _change_then_leader_crash,
        ),
        Scenario(
            "disk-stall",
            "the leader's disk stalls for 4 s while its process and network are fine",
            12.0,
            _disk_stall,
            # The stalled leader's late acknowledgements are of entries its followers had
            # committed without it, so "acknowledges nothing" does not apply here; the
            # invariants judge what it acknowledges.
            expectations=(
                expect_new_leader_during_stall,
                expect_step_down("stall-disk", "no quorum"),
            ),
        ),
        Scenario(
            "leadership-transfer",
            "leadership handed over three times under load; no write lost",
            12.0,
            _transfers,
            expectations=(expect_transfers_complete,),
        ),
        Scenario(
            "explore",
            "random fault schedules and network quality drawn from the seed",
            20.0,
            explore_schedule,
            swarm=True,
        ),
    )
}


def run_scenario(name: str, params: Params, schedule: Schedule | None = None) -> SimResult:
    """Run the named scenario; raises KeyError for an unknown name."""
    scenario = SCENARIOS[name]
    return Runner(scenario, params, schedule).run()


__all__ = ["SCENARIOS", "explore_schedule", "run_scenario"]
