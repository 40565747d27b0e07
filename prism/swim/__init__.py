"""SWIM membership with Lifeguard, as a sans-IO core (see ``prism.swim.core``)."""

from __future__ import annotations

from prism.swim.config import SwimConfig as SwimConfig
from prism.swim.core import SwimCore as SwimCore
from prism.swim.core import SwimStatistics as SwimStatistics
from prism.swim.members import Member as Member
from prism.swim.members import MemberState as MemberState
from prism.swim.messages import Ack as Ack
from prism.swim.messages import Gossip as Gossip
from prism.swim.messages import JoinRefused as JoinRefused
from prism.swim.messages import Nack as Nack
from prism.swim.messages import Ping as Ping
from prism.swim.messages import PingReq as PingReq
from prism.swim.messages import PushPull as PushPull
from prism.swim.messages import PushPullReply as PushPullReply
from prism.swim.messages import SwimMessage as SwimMessage
from prism.swim.messages import Update as Update
from prism.swim.messages import UpdateKind as UpdateKind
from prism.swim.meta import NodeMeta as NodeMeta
from prism.swim.ready import EventKind as EventKind
from prism.swim.ready import MemberEvent as MemberEvent
from prism.swim.ready import Note as Note
from prism.swim.ready import Outbound as Outbound
from prism.swim.ready import Ready as Ready

__all__ = [
    "Ack",
    "EventKind",
    "Gossip",
    "JoinRefused",
    "Member",
    "MemberEvent",
    "MemberState",
    "Nack",
    "NodeMeta",
    "Note",
    "Outbound",
    "Ping",
    "PingReq",
    "PushPull",
    "PushPullReply",
    "Ready",
    "SwimConfig",
    "SwimCore",
    "SwimMessage",
    "SwimStatistics",
    "Update",
    "UpdateKind",
]
