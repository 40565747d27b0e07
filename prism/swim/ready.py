"""``Ready``: everything a SWIM core wants done, as data.

The handling loop, written once (a driver and the simulator run exactly this)::

    core.tick() every tick_ms; core.step(src, msg) for every decoded message
    while core.has_ready():
        ready = core.ready()
        for out in ready.packets: send one datagram to out.to (UDP)
        for out in ready.streams: send out.message over a stream (TCP) to out.to; a
            PushPullReply / JoinRefused goes back on the connection its PushPull came in on
            (``to`` names the requester's advertise address for drivers that reconnect)
        hand ready.events to the membership listeners, in order
        log ready.notes

Nothing a SWIM core emits depends on a disk write, so there is no persist step and no
``advance``: ``ready()`` hands the batch over and forgets it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from prism.notes import Note as Note  # the cores' trace events, re-exported
from prism.swim.messages import SwimMessage


@dataclass(frozen=True, slots=True)
class Outbound:
    """A message for the member (or seed) at advertise address ``to``."""

    to: str
    message: SwimMessage


class EventKind(enum.StrEnum):
    """What changed about a member, as the node's reconciler and ``/v1/events`` see it."""

    JOINED = "joined"  # first seen, or back after leaving
    UPDATED = "updated"  # new metadata (or address after death) at a higher incarnation
    SUSPECT = "suspect"
    ALIVE_AGAIN = "alive_again"  # a suspect refuted, or a dead member came back
    DEAD = "dead"
    LEFT = "left"
    REAPED = "reaped"  # a dead or left member forgotten
    NAME_CONFLICT = "name_conflict"  # our join was refused: a live member holds our name
    JOIN_FAILED = "join_failed"  # every join attempt went unanswered


@dataclass(frozen=True, slots=True)
class MemberEvent:
    """One change of membership, in the order this node saw them."""

    kind: EventKind
    name: str
    address: str
    incarnation: int
    meta: bytes = b""
    reason: str = ""  # for NAME_CONFLICT and JOIN_FAILED: a sentence for the operator


@dataclass(frozen=True, slots=True)
class Ready:
    """One batch of work from a core; see the module docstring."""

    packets: tuple[Outbound, ...]
    streams: tuple[Outbound, ...]
    events: tuple[MemberEvent, ...]
    notes: tuple[Note, ...]
