"""The SWIM driver's transports: frames, the in-memory stream network, and one port number
bound for both UDP and TCP."""

from __future__ import annotations

import errno

import pytest
import trio
import trio.testing

from prism.swim.transport import (
    FRAME_HEADER,
    FrameError,
    MemoryStreamNetwork,
    MemorySwimNetwork,
    bind_udp_and_tcp,
    receive_frame,
    send_frame,
)

pytestmark = pytest.mark.trio


async def _frame_error(data: bytes, *, max_bytes: int = 100) -> str:
    """The reason ``receive_frame`` gives for a peer that sends ``data`` and closes."""
    left, right = trio.testing.memory_stream_pair()
    await left.send_all(data)
    await left.aclose()
    with pytest.raises(FrameError) as caught:
        await receive_frame(right, max_bytes=max_bytes)
    return caught.value.reason


async def test_frames_round_trip_and_bad_ones_name_their_reason() -> None:
    left, right = trio.testing.memory_stream_pair()
    payload = bytes(range(256)) * 300  # several receive chunks
    await send_frame(left, payload)
    await send_frame(left, b"second")
    assert await receive_frame(right, max_bytes=len(payload)) == payload
    assert await receive_frame(right, max_bytes=len(payload)) == b"second"

    assert await _frame_error(b"") == "stream_closed"
    assert await _frame_error(b"\x00\x00") == "stream_truncated"
    assert await _frame_error(FRAME_HEADER.pack(10) + b"12345") == "stream_truncated"
    assert await _frame_error(FRAME_HEADER.pack(0)) == "stream_malformed"
    # Refused from its header: the announced bytes are never awaited.
    assert await _frame_error(FRAME_HEADER.pack(101)) == "stream_oversize"
    assert await _frame_error(FRAME_HEADER.pack(2**32 - 1)) == "stream_oversize"


async def test_memory_streams_connect_only_where_someone_serves_and_the_route_allows() -> None:
    network = MemoryStreamNetwork(backlog=1)
    a, b = network.open(("a", 1)), network.open(("b", 1))
    with pytest.raises(ValueError, match="in use"):
        network.open(("a", 1))
    with pytest.raises(ConnectionRefusedError):
        await a.connect(("b", 1))  # b does not serve yet
    with pytest.raises(ConnectionRefusedError):
        await a.connect(("nobody", 1))
    received: list[bytes] = []

    async def echo(stream: trio.abc.Stream) -> None:
        async with stream:
            data = await stream.receive_some(100)
            received.append(data)
            await stream.send_all(data.upper())

    async with trio.open_nursery() as nursery:
        await nursery.start(b.serve, echo)
        stream = await a.connect(("b", 1))
        await stream.send_all(b"hello")
        assert await stream.receive_some(100) == b"HELLO"
        await stream.aclose()
        assert received == [b"hello"]
        network.route = lambda src, dst, _data: src != ("a", 1)
        with pytest.raises(ConnectionRefusedError):
            await a.connect(("b", 1))
        network.route = None
        b.close()
        with pytest.raises(ConnectionRefusedError):
            await a.connect(("b", 1))  # closed: the address is free again
        nursery.cancel_scope.cancel()
    assert network.connected == 1
    assert network.refused == 4
    assert network.open(("b", 1)) is not b


async def test_memory_stream_backlog_refuses_past_its_size() -> None:
    network = MemoryStreamNetwork(backlog=2)
    a, b = network.open(("a", 1)), network.open(("b", 1))

    async def never_accepting(*, task_status: trio.TaskStatus[None]) -> None:
        b._serving = True  # listening, but the accept loop never runs
        task_status.started()

    async with trio.open_nursery() as nursery:
        await nursery.start(never_accepting)
        first = await a.connect(("b", 1))
        second = await a.connect(("b", 1))
        with pytest.raises(ConnectionRefusedError):
            await a.connect(("b", 1))
        await first.aclose()
        await second.aclose()


async def test_one_route_hook_cuts_datagrams_and_streams_alike() -> None:
    network = MemorySwimNetwork()
    a_datagrams, a_streams = network.open(("a", 1))
    b_datagrams, b_streams = network.open(("b", 1))

    async def ignore(stream: trio.abc.Stream) -> None:
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        await nursery.start(b_streams.serve, ignore)
        network.route = lambda src, dst, _data: dst != ("b", 1)
        await a_datagrams.send(b"x", ("b", 1))
        assert network.datagrams.lost == 1
        with pytest.raises(ConnectionRefusedError):
            await a_streams.connect(("b", 1))
        network.route = None
        await a_datagrams.send(b"y", ("b", 1))
        assert await b_datagrams.receive() == (b"y", ("a", 1))
        stream = await a_streams.connect(("b", 1))
        await stream.aclose()
        nursery.cancel_scope.cancel()


async def test_udp_and_tcp_are_bound_on_one_port_number() -> None:
    udp, tcp = await bind_udp_and_tcp(("127.0.0.1", 0))
    try:
        host, port = udp.local_address
        assert port > 0
        assert tcp.local_address == (host, port)
        # Both answer on that number: a datagram arrives, a connection is accepted.
        other, _ = await bind_udp_and_tcp(("127.0.0.1", 0))
        try:
            await other.send(b"ping", (host, port))
            with trio.fail_after(5):
                assert (await udp.receive())[0] == b"ping"
        finally:
            other.close()
            _.close()
        accepted: list[bytes] = []

        async def handler(stream: trio.abc.Stream) -> None:
            async with stream:
                accepted.append(await receive_frame(stream, max_bytes=10))

        async with trio.open_nursery() as nursery:
            await nursery.start(tcp.serve, handler)
            with trio.fail_after(5):
                stream = await tcp.connect((host, port))
                async with stream:
                    await send_frame(stream, b"hello")
                while not accepted:  # noqa: ASYNC110 (a bounded poll of the handler's result)
                    await trio.sleep(0.01)
            assert accepted == [b"hello"]
            nursery.cancel_scope.cancel()
        # A given port that is taken is an error, not a silent move to another port.
        with pytest.raises(OSError, match="in use") as taken:
            await bind_udp_and_tcp((host, port))
        assert taken.value.errno == errno.EADDRINUSE
    finally:
        udp.close()
        tcp.close()
