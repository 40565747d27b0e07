"""Prism's Raft: a sans-IO consensus core (see ``prism.raft.core``) and what it needs."""

from prism.raft.config import RaftConfig as RaftConfig
from prism.raft.core import RaftCore as RaftCore
from prism.raft.core import Role as Role
from prism.raft.kv import KVStateMachine as KVStateMachine
from prism.raft.ready import HardState as HardState
from prism.raft.ready import Ready as Ready
from prism.raft.storage import MemoryStorage as MemoryStorage

__all__ = [
    "HardState",
    "KVStateMachine",
    "MemoryStorage",
    "RaftConfig",
    "RaftCore",
    "Ready",
    "Role",
]
