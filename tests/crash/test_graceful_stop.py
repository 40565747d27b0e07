"""A planned stop with real processes: SIGTERM to the leader of three ``prism.raft.serve``
nodes hands leadership over before the node exits, so a follower leads again in far less than
an election timeout would take, the stopped node exits 0, and writes go on."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Final

import pytest
import trio

from tests.crash.nodes import LineConnection, NodeProcess, find_leader, free_ports, status_of

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not sys.platform.startswith("linux"),
        reason="picks ports outside Linux's ephemeral range",
    ),
]

NODE_NAMES: Final = ("n1", "n2", "n3")
TIMEOUT_S: Final = 20.0
HAND_OVER_BOUND_S: Final = 0.35
"""A survivor must lead this soon after the SIGTERM. Without a hand-over the survivors would
first wait out an election timeout (400-800 ms on LAN timing, plus pre-vote and a vote)."""


async def _put(port: int, key: str, value: str) -> dict[str, object]:
    connection = await LineConnection.open(port)
    try:
        return await connection.call({"op": "put", "key": key, "value": value})
    finally:
        await connection.aclose()


@pytest.mark.trio
async def test_sigterm_to_the_leader_hands_leadership_over(tmp_path: Path) -> None:
    ports = free_ports(2 * len(NODE_NAMES))
    raft_ports = dict(zip(NODE_NAMES, ports[:3], strict=True))
    client_ports = dict(zip(NODE_NAMES, ports[3:], strict=True))
    nodes = {name: NodeProcess(name, raft_ports, client_ports, tmp_path) for name in NODE_NAMES}
    try:
        for node in nodes.values():
            await node.start()
        with trio.fail_after(TIMEOUT_S):
            old = await find_leader(nodes)
            assert (await _put(nodes[old].client_port, "before", "1"))["ok"] is True
            old_status = await status_of(nodes[old])
            assert old_status is not None
            survivors = {name: node for name, node in nodes.items() if name != old}

            stopped_at = trio.current_time()
            nodes[old].terminate()
            new = await find_leader(survivors)
            took_s = trio.current_time() - stopped_at
            code = await nodes[old].wait_stopped()

            assert code == 0, nodes[old].log_tail()
            assert "raft.handed_over" in nodes[old].log_tail(), nodes[old].log_tail()
            assert took_s < HAND_OVER_BOUND_S, f"a survivor led only after {took_s:.3f} s"
            new_status = await status_of(nodes[new])
            assert new_status is not None
            assert new_status["term"] == old_status["term"] + 1  # one transfer, no election
            assert (await _put(nodes[new].client_port, "after", "2"))["ok"] is True
    finally:
        for node in nodes.values():
            await node.reap()
