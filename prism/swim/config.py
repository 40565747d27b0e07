"""SWIM's tunables, each documented with its unit, the formula it feeds and its trade-off.

Time in the core is counted in *ticks*: the driver calls ``SwimCore.tick()`` every
``tick_ms`` milliseconds of real time, the simulator every ``tick_ms`` of virtual time.

Default timing, and why (``SwimConfig.lan()``; memberlist's ``DefaultLANConfig`` is the
reference, since it is the most deployed SWIM and its numbers survived Lifeguard's analysis):

* ``tick_ms = 100``: every SWIM period is a multiple of 100 ms, so ten wake-ups a second
  is all a node needs; a finer tick only costs CPU.
* ``probe_interval_ticks = 10`` (1 s) and ``probe_timeout_ticks = 5`` (500 ms): memberlist's
  LAN values. The SWIM paper wants the period at least three round trips; on a LAN the
  round trip is well under a millisecond, so the 500 ms timeout only waits out scheduling
  stalls, not the network.
* ``coordinated_probes = True``: each period every live member is probed by exactly one
  other (``prism.swim.schedule``), so a crashed member is first probed within one period
  instead of SWIM's exponential wait (p99 4.6 periods). It needs clocks agreeing to well
  within a tick (NTP gives milliseconds); when they do not, it is no worse than random.
* ``nack_timeout_ticks = 4`` (400 ms): a relay must answer a ping-req *before* the prober's
  period ends (after its 500 ms timeout, 500 ms remain). Lifeguard proposes 80 % of that
  window (apple/swift-cluster-membership's ``indirectPingTimeoutMultiplier = 0.8``);
  memberlist nacks after its full probe timeout, which can arrive too late to count.
* ``indirect_checks = 3``: the chance that a live target looks dead falls exponentially in
  k: (1 - q^2)(1 - q^4)^k for delivery rate q, so at 10 % loss k = 3 gives 7.7e-3 against
  6.5e-2 for k = 1, at a load of 4k + 2 messages per prober per period.
* ``stream_probe = True``: when the direct ping goes unanswered, the prober also pings the
  target over TCP, beside the indirect probes (memberlist's fallback; it is on there too).
  Random datagram loss seldom defeats a TCP connection, which retransmits, so false
  suspicions under loss fall; and a path that drops UDP but carries TCP (a firewall or NAT
  rule, the predecessor's complaint) keeps its members alive and says so in a note
  (``swim.probe_stream_only``) instead of flapping them between suspect and alive.
* ``suspicion_mult = 4``, ``suspicion_max_timeout_mult = 6``: the suspicion timeout runs
  from ``6 * min`` down to ``min = 4 * max(1, log10 n) * probe interval`` as independent
  confirmations arrive (4 s / 24 s up to 10 members, 8 s / 48 s at 100). memberlist lowered
  the multiplier from 5 to 4 after Lifeguard, for faster detection at fewer false positives.
* ``retransmit_mult = 4``: each update is piggybacked ``4 * ceil(log10(n + 1))`` times
  (8 at 10 members, 12 at 100); the uninfected fraction after lambda log n rounds falls as
  ``n^-((2 - 4/n) lambda - 2)`` (SWIM §4.1).
* ``gossip_interval_ticks = 2`` / ``gossip_nodes = 3``: a dedicated gossip round every
  200 ms to 3 members, so updates do not wait for the 1 s probe period to spread.
* ``push_pull_interval_ticks = 300`` (30 s): full state exchange with one random member,
  scaled up by ``ceil(log2 n - log2 32) + 1`` above 32 members so the cluster-wide TCP load
  stays bounded. ``reconnect_interval_ticks = 300``: Serf's reconnect; every 30 s one dead
  (not left) member is offered a push-pull, which is how a healed partition re-merges
  (plain memberlist never re-merges once it forgets the dead: hashicorp/memberlist#222).
* ``dead_reap_ticks = left_reap_ticks = 36_000`` (1 h): a dead member is remembered, and
  reconnect attempts continue, for an hour; a left member's tombstone keeps stale ``alive``
  copies from reviving it (hashicorp/memberlist#312). Serf keeps both for 24 h, which costs
  memory and push-pull bytes in churning container clusters; an hour covers partitions
  and rolling restarts.
* ``awareness_max_multiplier = 8``: Lifeguard's saturation S = 8: a node that believes it is
  the slow one waits up to 8 times longer before it accuses anyone.
* ``max_datagram_bytes = 1400``: below a 1,500-byte Ethernet MTU after IP/UDP headers and a
  tunnel's overhead, so no datagram is fragmented. ``envelope_overhead_bytes = 200``: the
  wire envelope with two 64-character ids (about 140 bytes) plus the 29 bytes that AES-GCM
  will add (version, nonce, tag), with room to spare.
* ``max_metadata_bytes = 512``: memberlist's limit; with the largest names and addresses
  one update stays under 820 bytes, so any single update fits any probe datagram.
* ``join_retry_min_ticks = 10`` to ``join_retry_max_ticks = 300``: retry a join after 1 s,
  doubling to at most 30 s, forever (``join_max_attempts = 0``): seeds that start later than
  their peers (containers, rolling deploys) are the common case, not an error.

``wan()`` and ``local()`` are diffs from ``lan()``, with their reasoning next to them.

Lifeguard on and off. Lifeguard (Dadgar et al.) is three mechanisms, each with its own knob so
that the simulator can measure what each buys: the local health multiplier
(``awareness_max_multiplier``; 1 switches it off), LHA-suspicion (``lha_suspicion``: a
suspicion starts at ``suspicion_max_timeout_mult * min`` and shrinks with independent
confirmations, the first k of which are re-gossiped; off, every suspicion lasts exactly
``min``, the plain SWIM timeout) and the buddy system (``buddy_system``: a probe of a suspect
carries the suspicion). ``without_lifeguard()`` switches all three off: what is left is SWIM with
suspicion, nacks and piggybacking, the baseline the Lifeguard paper compares against.
It also switches off ``check_lone_suspicions`` and ``check_hearsay_suspicions``, Prism's own
additions, which rest on the buddy system.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from prism.swim.messages import MAX_BASE_BYTES, MAX_META_BYTES, MAX_UPDATE_BYTES
from prism.validated import Validated


@dataclass(frozen=True, slots=True, kw_only=True)
class SwimConfig(Validated):
    """Configuration of one SWIM core. Build with ``lan()`` / ``wan()`` / ``local()`` and
    ``dataclasses.replace``."""

    tick_ms: int = 100
    """Milliseconds of (real or virtual) time per tick. Only drivers and the simulator read it."""

    probe_interval_ticks: int = 10
    """The protocol period T': one member is probed per period. Scaled by the local health
    multiplier (Lifeguard). Shorter detects faster at a proportionally higher load."""

    coordinated_probes: bool = True
    """Probe on the coordinated schedule (``prism.swim.schedule``): every live member is
    probed by exactly one member per period, on a clock the members share (the wall clock;
    virtual time in the simulator). Off, each member walks its own shuffled list (SWIM's
    randomized round-robin, as memberlist does), and a crashed member waits for its first
    probe about one period on average but 4.6 periods at p99. Same load either way."""

    probe_timeout_ticks: int = 5
    """How long a direct ping waits for its ack before indirect probes start. Scaled by the
    local health multiplier, like the interval (the Lifeguard paper; memberlist scales the
    interval only). Must be below ``probe_interval_ticks``. Safe range: a few round trips."""

    nack_timeout_ticks: int = 4
    """How long a relay waits for the target before it nacks the prober. Must be below
    ``probe_interval_ticks - probe_timeout_ticks`` so the nack arrives in time to count."""

    indirect_checks: int = 3
    """k: members asked to probe a target that missed its direct ping. More means fewer
    false suspicions through lossy links and 4 more messages per failed probe."""

    suspicion_mult: int = 4
    """Suspicion timeout ``min = suspicion_mult * max(1, log10(n)) * probe_interval_ticks``.
    Also sets the confirmations expected, ``k = suspicion_mult - 2``. Larger means fewer
    false deaths and slower detection."""

    suspicion_max_timeout_mult: int = 6
    """Suspicion starts at ``max = suspicion_max_timeout_mult * min`` and shrinks towards
    ``min`` as independent confirmations arrive (Lifeguard LHA-suspicion)."""

    retransmit_mult: int = 4
    """lambda: each update is piggybacked ``retransmit_mult * ceil(log10(n + 1))`` times.
    Larger spreads more reliably under loss, at more bytes per datagram."""

    gossip_interval_ticks: int = 2
    """Period of the dedicated gossip round (0 disables it: updates then ride probes only)."""

    gossip_nodes: int = 3
    """Members sent a gossip datagram each gossip round."""

    gossip_to_the_dead_ticks: int = 300
    """A dead member still receives gossip for this long, so it can learn it was declared
    dead and refute."""

    push_pull_interval_ticks: int = 300
    """Period of the full state exchange with one random live member (0 disables it). Heals
    lost updates. Scaled up above 32 members (see the module docstring)."""

    reconnect_interval_ticks: int = 300
    """Every this many ticks, offer a push-pull to one random dead (not left) member, so
    that a partition heals without an operator (0 disables it)."""

    dead_reap_ticks: int = 36_000
    """A dead member is forgotten this long after it was declared dead."""

    left_reap_ticks: int = 36_000
    """A left member's tombstone is forgotten this long after it left."""

    awareness_max_multiplier: int = 8
    """Lifeguard's S: the local health score runs 0..S-1 and multiplies probe interval and
    timeout by ``score + 1``. 1 disables the local health multiplier."""

    max_datagram_bytes: int = 1400
    """Byte budget of one SWIM datagram, envelope included; piggybacked updates fill what
    the message leaves."""

    envelope_overhead_bytes: int = 200
    """Bytes reserved for the wire envelope (and encryption) in every datagram."""

    max_metadata_bytes: int = 512
    """Largest metadata a member may carry (role, API address, tags). At most 512."""

    join_retry_min_ticks: int = 10
    """First wait before a join is retried; doubles with each attempt (plus jitter)."""

    join_retry_max_ticks: int = 300
    """Longest wait between join attempts."""

    join_max_attempts: int = 0
    """Join attempts before giving up with a ``join_failed`` event; 0 retries forever."""

    max_pending_relays: int = 128
    """Indirect probes this node runs for others at once; more ping-reqs are dropped (a
    flood of ping-reqs must not grow memory without bound)."""

    lha_suspicion: bool = True
    """Lifeguard's LHA-suspicion: start each suspicion at ``suspicion_max_timeout_mult *
    min`` and shrink it towards ``min`` as independent confirmations arrive (and re-gossip
    the first k of them, which bring it to ``min``). Off, a suspicion lasts ``min`` whatever
    others say: detection is as fast as the fastest case with Lifeguard, and a lone,
    possibly mistaken, accuser is believed as quickly as a chorus."""

    buddy_system: bool = True
    """Lifeguard's buddy system: a ping to a suspect carries the suspicion first, so the
    suspect hears it from the prober and can refute at once, instead of waiting for gossip
    to reach it."""

    stream_probe: bool = True
    """When a direct ping goes unanswered, also ping the target over a stream (TCP), beside
    the indirect probes; an ``Ack`` back on that connection saves the target from
    suspicion. An answer by stream alone is noted (``swim.probe_stream_only``: datagrams
    are lost on the way, or blocked) and leaves the local health score as it was, as
    memberlist does. Off: a probe is judged by datagrams alone, as in the SWIM paper."""

    check_lone_suspicions: bool = True
    """Prism's addition to Lifeguard: a suspicion that runs to its maximum without a single
    confirmation (one member's word; at 10 % loss that is a lost ping and lost indirect
    pings, about one probe in 130) does not kill on its own. The member first probes the
    suspect itself, in place of its next round-robin probe; the ping carries the suspicion,
    so a live suspect answers with its alive, which ends it. Only if that probe fails too is
    the suspect declared dead; if it is answered the timer starts over. Without it, a member
    that happened to miss the suspect's refutation (gossip reaches everyone only with high
    probability) declares a live member dead: the simulator found a few such deaths per
    20 x 10 minutes at 100 members and 10 % loss. A real death is confirmed by the other
    probers long before the maximum, so detection does not slow down."""

    check_hearsay_suspicions: bool = True
    """Prism's addition to Lifeguard: a member that only *heard* of a suspicion (no probe of
    its own failed during it) and has since received a message from the suspect itself
    does not declare it dead when its timer runs out; it first probes the suspect, as for a
    lone suspicion. Gossiped confirmations can all be stale: after a partition heals, a
    push-pull merges the far side's verdicts ("dead", from probes across the cut) as
    suspicions of members this side has been talking to all along, and the far side
    confirms them again; if a suspect misses those few transmissions (4 at 6 live
    members), the timers kill it (the simulator: ``swim-partition --nodes 12 --seed 10``,
    2 false deaths). Only contradicted hearsay is checked: checks run one per probe period,
    so checking every hearsay verdict would delay a whole partition's verdicts for
    minutes, until some landed after the heal and killed live members across it. A real
    death costs nothing: a dead member sends nothing to contradict its accusers.

    Under the same switch: a suspicion that began with a push-pull's state (a stale verdict
    merged, not gossip or a probe) is checked too, and a ``dead`` verdict heard about a
    member that has sent us a message since its accuser began to suspect it (the verdict
    carries that age, ``Update.suspected_ms``; at least the minimum suspicion timeout) is
    taken as a suspicion instead: such a verdict is stale, typically from across a
    partition that has healed, where the accuser's suspicion ran through the partition
    and expired just after the heal (``swim-partition --nodes 25 --seed 167``)."""

    @classmethod
    def lan(cls) -> SwimConfig:
        """Defaults for one data centre; see the module docstring for the reasoning."""
        return cls()

    @classmethod
    def wan(cls) -> SwimConfig:
        """Links with 30-300 ms round trips and more loss: memberlist's WAN numbers."""
        return dataclasses.replace(
            cls.lan(),
            probe_interval_ticks=50,  # 5 s: a WAN probe must outlast congestion episodes
            probe_timeout_ticks=30,  # 3 s: ten times a slow intercontinental round trip
            nack_timeout_ticks=16,  # 80 % of the 2 s left in the period
            suspicion_mult=6,  # false deaths across oceans cost more than slow detection
            gossip_interval_ticks=5,  # 500 ms: fewer, fuller datagrams
            gossip_nodes=4,  # more fan-out makes up for the slower rounds
            gossip_to_the_dead_ticks=600,  # 60 s
            push_pull_interval_ticks=600,  # 60 s: TCP state exchange is costlier over a WAN
            reconnect_interval_ticks=600,
            dead_reap_ticks=72_000,  # 2 h: WAN partitions last longer
            left_reap_ticks=72_000,
            join_retry_max_ticks=600,
        )

    @classmethod
    def local(cls) -> SwimConfig:
        """One host or a loopback test cluster: no loss, sub-millisecond round trips, and a
        probe that costs microseconds, so the period can be half of LAN's (memberlist's
        local profile keeps 1 s; halving it halves detection at a load no host notices)."""
        return dataclasses.replace(
            cls.lan(),
            probe_interval_ticks=5,  # 500 ms
            probe_timeout_ticks=2,  # 200 ms: loopback answers in microseconds; this waits out
            # scheduling stalls of a loaded host
            nack_timeout_ticks=2,  # 200 ms: below the 300 ms left in the period
            indirect_checks=1,  # there is no lossy path for extra helpers to route around
            suspicion_mult=3,  # min 1.5 s up to 10 members, 2 s at 20; refutation is fast here
            retransmit_mult=4,  # as LAN: with 2, an update missed a member about one start
            # in ten at 5-20 members (benchmarks/swim_detection), waiting for the next push-pull
            gossip_interval_ticks=1,  # 100 ms
            gossip_to_the_dead_ticks=150,  # 15 s
            push_pull_interval_ticks=150,  # 15 s
            reconnect_interval_ticks=150,
            dead_reap_ticks=600,  # 1 min: test clusters churn
            left_reap_ticks=600,
            join_retry_min_ticks=2,
            join_retry_max_ticks=50,
        )

    def without_lifeguard(self) -> SwimConfig:
        """This configuration with Lifeguard's three mechanisms off (see the module
        docstring): for simulations that measure what Lifeguard is worth."""
        return dataclasses.replace(
            self,
            awareness_max_multiplier=1,
            lha_suspicion=False,
            buddy_system=False,
            check_lone_suspicions=False,
            check_hearsay_suspicions=False,
        )

    @property
    def has_lifeguard(self) -> bool:
        """True when any of Lifeguard's mechanisms is on."""
        return self.awareness_max_multiplier > 1 or self.lha_suspicion or self.buddy_system

    def problems(self) -> list[str]:
        """Every problem with this configuration, one line each (empty when valid)."""
        found = [
            f"{name} must be at least 1"
            for name in (
                "tick_ms",
                "probe_interval_ticks",
                "probe_timeout_ticks",
                "nack_timeout_ticks",
                "suspicion_mult",
                "suspicion_max_timeout_mult",
                "retransmit_mult",
                "gossip_nodes",
                "dead_reap_ticks",
                "left_reap_ticks",
                "awareness_max_multiplier",
                "max_datagram_bytes",
                "join_retry_min_ticks",
                "join_retry_max_ticks",
                "max_pending_relays",
            )
            if getattr(self, name) < 1
        ]
        found.extend(
            f"{name} must be at least 0"
            for name in (
                "indirect_checks",
                "gossip_interval_ticks",
                "gossip_to_the_dead_ticks",
                "push_pull_interval_ticks",
                "reconnect_interval_ticks",
                "envelope_overhead_bytes",
                "max_metadata_bytes",
                "join_max_attempts",
            )
            if getattr(self, name) < 0
        )
        found.extend(
            f"{name} must be a bool"
            for name in (
                "lha_suspicion",
                "buddy_system",
                "check_lone_suspicions",
                "check_hearsay_suspicions",
                "stream_probe",
                "coordinated_probes",
            )
            if type(getattr(self, name)) is not bool
        )
        if self.probe_timeout_ticks >= self.probe_interval_ticks:
            found.append("probe_timeout_ticks must be below probe_interval_ticks")
        if self.nack_timeout_ticks >= self.probe_interval_ticks - self.probe_timeout_ticks:
            found.append(
                "nack_timeout_ticks must be below probe_interval_ticks - probe_timeout_ticks "
                "(a nack must reach the prober before its period ends)"
            )
        if self.max_metadata_bytes > MAX_META_BYTES:
            found.append(f"max_metadata_bytes must be at most {MAX_META_BYTES}")
        if self.join_retry_max_ticks < self.join_retry_min_ticks:
            found.append("join_retry_max_ticks must be at least join_retry_min_ticks")
        room = self.max_datagram_bytes - self.envelope_overhead_bytes
        if room < MAX_BASE_BYTES + MAX_UPDATE_BYTES:
            found.append(
                "max_datagram_bytes - envelope_overhead_bytes must be at least "
                f"{MAX_BASE_BYTES + MAX_UPDATE_BYTES} (the largest message with one update)"
            )
        return found
