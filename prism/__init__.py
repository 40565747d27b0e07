"""Prism: a distributed runtime for AI agents, built on its own Raft and SWIM cores."""

__version__ = "0.1.0"
