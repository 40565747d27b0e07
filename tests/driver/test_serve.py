"""``python -m prism.raft.serve``: its command line, and three nodes in this process (real
loopback UDP, disk storage in a temporary directory) answering the JSON-lines client
protocol over TCP."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import example, given
from hypothesis import strategies as st

from prism.raft.serve import ServeOptions, Started, main, parse_args, parse_json_line, serve
from prism.raft.transport import UdpTransport, format_address


def test_serve_parses_its_command_line(tmp_path: Path) -> None:
    options = parse_args(
        [
            "--id=n1",
            "--listen=127.0.0.1:7001",
            "--peer=n2=127.0.0.1:7002",
            "--peer=n3=127.0.0.1:7003",
            f"--data-dir={tmp_path}",
            "--fsync=off",
            "--client=127.0.0.1:8001",
            "--peer-client=n2=127.0.0.1:8002",
        ]
    )
    assert options.node_id == "n1"
    assert options.listen == ("127.0.0.1", 7001)
    assert options.peers == {"n2": ("127.0.0.1", 7002), "n3": ("127.0.0.1", 7003)}
    assert options.data_dir == tmp_path
    assert options.fsync is False
    assert options.client == ("127.0.0.1", 8001)
    assert options.peer_clients == {"n2": ("127.0.0.1", 8002)}
    memory = parse_args(["--id=n1", "--listen=h:1", f"--data-dir={tmp_path}", "--storage=memory"])
    assert memory.data_dir is None


@pytest.mark.parametrize(
    "argv",
    [
        ["--id=n1", "--listen=nowhere", "--data-dir=d"],
        ["--id=n1", "--listen=h:1", "--data-dir=d", "--peer=n2"],
        ["--id=n1", "--listen=h:1", "--data-dir=d", "--peer=n1=h:2"],
    ],
)
def test_serve_rejects_a_bad_command_line(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)


class LineClient:
    """One JSON-lines connection: write requests, read replies."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def send(self, *requests: dict[str, Any]) -> None:
        await self.stream.send_all(b"".join(json.dumps(r).encode() + b"\n" for r in requests))

    async def reply(self) -> dict[str, Any]:
        while b"\n" not in self.buffer:
            chunk = await self.stream.receive_some(65_536)
            assert chunk, "the node closed the connection"
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        reply: dict[str, Any] = json.loads(line)
        return reply

    async def call(self, **request: Any) -> dict[str, Any]:
        await self.send(request)
        return await self.reply()


@pytest.mark.trio
@pytest.mark.slow
async def test_serve_three_nodes_answer_the_client_protocol(tmp_path: Path) -> None:
    ids = ["n1", "n2", "n3"]
    transports = {n: await UdpTransport.bind(("127.0.0.1", 0)) for n in ids}
    raft = {n: t.local_address for n, t in transports.items()}
    async with trio.open_nursery() as nursery:
        started: dict[str, Started] = {}
        for node_id in ids:
            options = ServeOptions(
                node_id=node_id,
                listen=raft[node_id],
                peers={n: a for n, a in raft.items() if n != node_id},
                data_dir=tmp_path / node_id,
                fsync=False,
                client=("127.0.0.1", 0),
            )
            started[node_id] = await nursery.start(
                partial(serve, options, transport=transports[node_id])
            )
        clients: dict[str, LineClient] = {}
        for node_id, where in started.items():
            assert where.raft == raft[node_id]
            assert where.client is not None
            clients[node_id] = LineClient(await trio.open_tcp_stream(*where.client))

        statuses: dict[str, dict[str, Any]] = {}

        async def poll_statuses() -> None:
            for node_id, client in clients.items():
                statuses[node_id] = await client.call(op="status")

        with trio.fail_after(10):
            while not any(s.get("state") == "leader" for s in statuses.values()):
                await poll_statuses()
                await trio.sleep(0.02)
        leader = next(n for n, s in statuses.items() if s["state"] == "leader")
        assert statuses[leader]["leader_since"] is not None
        lead = clients[leader]

        put = {"op": "put", "key": "k", "value": "v", "client": "c1", "seq": 1}
        first = await lead.call(id=1, **put)
        assert first == {"id": 1, "ok": True, "index": first["index"], "duplicate": False}
        again = await lead.call(id=2, **put)  # a retry: a new entry that changes nothing
        assert again == {"id": 2, "ok": True, "index": again["index"], "duplicate": True}
        assert again["index"] > first["index"]
        assert await lead.call(id=3, op="get", key="k") == {"id": 3, "ok": True, "value": "v"}
        cas = await lead.call(op="cas", key="k", expected="nope", value="w", client="c1", seq=2)
        assert cas["ok"] is False
        assert cas["error"] == "cas_failed"
        assert cas["value"] == "v"  # what it found instead
        swapped = await lead.call(op="cas", key="k", expected="v", value="w", client="c1", seq=3)
        assert swapped["ok"] is True
        assert "value" not in swapped  # a write that applied echoes nothing of itself
        assert await lead.call(id=4, op="get", key="k") == {"id": 4, "ok": True, "value": "w"}

        follower = next(n for n in ids if n != leader)
        with trio.fail_after(5):
            while True:
                redirect = await clients[follower].call(op="put", key="x", value="1")
                if redirect.get("leader"):
                    break
                await trio.sleep(0.02)
        assert redirect["error"] == "not_leader"
        assert redirect["leader_id"] == leader
        assert redirect["leader"] == format_address(raft[leader])
        assert redirect["message"] == f"not leader: try {format_address(raft[leader])}"

        await lead.send({"id": 10, "op": "get", "key": "k"}, {"id": 11, "op": "status"})
        pipelined = {(await lead.reply())["id"], (await lead.reply())["id"]}
        assert pipelined == {10, 11}
        bad = [
            await lead.call(op="fly", key="k"),
            await lead.call(op="put", key=1, value="v"),
            await lead.call(op="put", key="k", value="v", seq=-1),
            await lead.call(op="put", key="\ud800", value="v"),  # a lone surrogate
            await lead.call(op=["put"], key="k", value="v"),  # an op that is no str
            await lead.call(op={"put": 1}, key="k", value="v"),
        ]
        assert [b["error"] for b in bad] == ["bad_request"] * 6
        await lead.stream.send_all(b"not json\n")
        assert (await lead.reply())["error"] == "bad_request"
        for client in clients.values():
            await client.stream.aclose()
        nursery.cancel_scope.cancel()


def test_serve_exits_1_naming_the_damage_in_a_corrupt_data_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A data directory that fails its checks stops the node with one clear line, never
    with a traceback or by starting from an empty log."""
    for seq in (2, 4):  # segment 3 is missing: no crash explains that
        (tmp_path / f"wal-{seq:016d}.log").write_bytes(b"garbage")
    argv = ["--id=n1", "--listen=127.0.0.1:0", f"--data-dir={tmp_path}"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("prism.raft.serve: ")
    assert "wal-0000000000000003.log" in err


async def start_solo_leader(nursery: trio.Nursery, tmp_path: Path) -> LineClient:
    """A one-node cluster (fsync off) served in ``nursery``, and a client connected to it
    once the node leads."""
    transport = await UdpTransport.bind(("127.0.0.1", 0))
    options = ServeOptions(
        node_id="solo",
        listen=transport.local_address,
        data_dir=tmp_path / "solo",
        fsync=False,
        client=("127.0.0.1", 0),
    )
    started: Started = await nursery.start(partial(serve, options, transport=transport))
    assert started.client is not None
    client = LineClient(await trio.open_tcp_stream(*started.client))
    with trio.fail_after(10):
        while True:  # polling with a deadline: the node says when it leads, nothing else
            if (await client.call(op="status"))["state"] == "leader":
                return client
            await trio.sleep(0.01)


@pytest.mark.trio
async def test_serve_answers_every_pipelined_request_before_closing(tmp_path: Path) -> None:
    """A client that sends a batch of requests and then ends its side of the stream gets
    every reply (writes included, answered once applied) and then the end of the stream."""
    async with trio.open_nursery() as nursery:
        client = await start_solo_leader(nursery, tmp_path)
        with trio.fail_after(10):
            puts = [{"id": i, "op": "put", "key": f"k{i}", "value": str(i)} for i in range(50)]
            await client.send(
                *puts, {"id": "s", "op": "status"}, {"id": "g", "op": "get", "key": "k0"}
            )
            await client.stream.send_eof()
            replies = {}
            for _ in range(52):
                reply = await client.reply()
                replies[reply["id"]] = reply
            assert await client.stream.receive_some(1) == b""  # then the node closes
        assert all(replies[i]["ok"] for i in range(50))
        # Each put committed on its own, in the order sent (one connection, one leader).
        indexes = [replies[i]["index"] for i in range(50)]
        assert indexes == list(range(indexes[0], indexes[0] + 50))
        assert replies["s"]["state"] == "leader"
        assert replies["g"] == {"id": "g", "ok": True, "value": "0"}
        await client.stream.aclose()
        nursery.cancel_scope.cancel()


@pytest.mark.trio
@pytest.mark.slow
async def test_serve_answers_a_client_that_reads_late(tmp_path: Path) -> None:
    """Replies that the socket has no room for (the client reads nothing for a while) wait
    in the node and all arrive, in full, once the client reads."""
    async with trio.open_nursery() as nursery:
        client = await start_solo_leader(nursery, tmp_path)
        with trio.fail_after(20):
            value = "v" * 8192
            assert (await client.call(op="put", key="k", value=value))["ok"]
            count = 1000  # reads of it: 8 MB of replies, more than the socket buffers hold
            for first in range(0, count, 100):
                await client.send(
                    *({"id": i, "op": "get", "key": "k"} for i in range(first, first + 100))
                )
            await client.send({"id": "s", "op": "status"})
            replies = {}
            while len(replies) < count + 1:
                reply = await client.reply()
                replies[reply["id"]] = reply
        assert all(replies[i] == {"id": i, "ok": True, "value": value} for i in range(count))
        await client.stream.aclose()
        nursery.cancel_scope.cancel()


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(
    st.one_of(
        _JSON_VALUES.map(lambda v: json.dumps(v).encode()),
        st.tuples(_JSON_VALUES, st.sampled_from(["", " ", "\t", "\r", " 1", "}", "x"])).map(
            lambda vs: (json.dumps(vs[0]) + vs[1]).encode()
        ),
        _JSON_VALUES.map(lambda v: (" " + json.dumps(v)).encode()),
        st.binary(max_size=40),
        st.text(max_size=40).map(str.encode),
    )
)
@example(b"NaN")  # msgspec refuses these five; json takes them
@example(b"-Infinity")
@example(b"1e400")
@example(b'["\\ud800"]')
@example(b"123456789012345678901234567890")  # an int, not a float, either way
@example(b"\xef\xbb\xbf{}")  # a byte order mark: both refuse
@example(b'{"a":"\xff"}')  # not UTF-8: both refuse
@example(b'{"a":1,"a":2}')
@example(b"[" * 5000)
def test_a_request_line_parses_as_json_loads_says(line: bytes) -> None:
    """The client port parses with msgspec first: it must agree with ``json.loads`` on
    every line, and answer None where ``json.loads`` raises."""
    try:
        expected = json.loads(line.decode())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        assert parse_json_line(line) is None
        return
    assert repr(parse_json_line(line)) == repr(expected)  # repr: NaN equals itself there
