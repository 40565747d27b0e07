"""Prism's Raft: a sans-IO consensus core (see ``prism.raft.core``) and what it needs.

The trio driver (``prism.raft.driver``) and the disk storage (``prism.raft.disk``) are not
imported here, so importing the core (as the simulator does) never loads trio.
"""

from prism.raft.config import RaftConfig as RaftConfig
from prism.raft.core import RaftCore as RaftCore
from prism.raft.core import Role as Role
from prism.raft.kv import KVStateMachine as KVStateMachine
from prism.raft.membership import Membership as Membership
from prism.raft.ready import HardState as HardState
from prism.raft.ready import Ready as Ready
from prism.raft.snapshot import Snapshot as Snapshot
from prism.raft.snapshot import SnapshotMeta as SnapshotMeta
from prism.raft.storage import MemoryStorage as MemoryStorage
from prism.raft.storage import Storage as Storage

__all__ = [
    "HardState",
    "KVStateMachine",
    "Membership",
    "MemoryStorage",
    "RaftConfig",
    "RaftCore",
    "Ready",
    "Role",
    "Snapshot",
    "SnapshotMeta",
    "Storage",
]
