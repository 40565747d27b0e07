"""The datagram transports: address text, the in-memory network's UDP-like behaviour, and
a real loopback socket."""

from __future__ import annotations

import socket
from collections import Counter

import pytest
import trio
import trio.testing

from prism.raft.transport import (
    SOCKET_RECEIVE_BUFFER_BYTES,
    MemoryNetwork,
    UdpTransport,
    format_address,
    parse_address,
    receive_batch,
)


def test_addresses_round_trip_as_text() -> None:
    for address in [("127.0.0.1", 7001), ("::1", 7002), ("node-3.example", 0)]:
        assert parse_address(format_address(address)) == address
    for bad in ["7001", "host:", ":7001", "host:port", "host:70000"]:
        with pytest.raises(ValueError, match="address"):
            parse_address(bad)


@pytest.mark.trio
async def test_memory_network_loses_what_udp_would_lose() -> None:
    """Datagrams to nobody, refused by the route hook, or past a full buffer are lost."""
    network = MemoryNetwork(buffer_datagrams=2)
    a, b = network.open(("a", 1)), network.open(("b", 1))
    with pytest.raises(ValueError, match="in use"):
        network.open(("a", 1))
    await a.send(b"1", ("b", 1))
    await a.send(b"2", ("b", 1))
    await a.send(b"3", ("b", 1))  # the buffer holds two
    await a.send(b"x", ("nobody", 1))
    network.route = lambda src, dst, data: data != b"cut"
    await a.send(b"cut", ("b", 1))
    assert network.delivered == 2
    assert network.lost == 3
    assert await b.receive() == (b"1", ("a", 1))
    assert await b.receive() == (b"2", ("a", 1))
    b.close()
    await a.send(b"late", ("b", 1))
    assert network.lost == 4
    assert network.open(("b", 1)) is not b  # the address is free again
    a.close()


@pytest.mark.trio
async def test_udp_transport_binds_port_zero_and_carries_datagrams() -> None:
    a = await UdpTransport.bind(("127.0.0.1", 0))
    b = await UdpTransport.bind(("127.0.0.1", 0))
    try:
        assert a.local_address[1] > 0
        await a.send(b"hello", b.local_address)
        with trio.fail_after(5):
            assert await b.receive() == (b"hello", a.local_address)
    finally:
        a.close()
        b.close()


@pytest.mark.trio
async def test_udp_transport_asks_for_a_large_receive_buffer() -> None:
    """A burst of appends must queue in the kernel, not be dropped: the socket gets the
    buffer asked for, or as much of it as ``net.core.rmem_max`` allows (Linux reports twice
    what it grants, for its own bookkeeping)."""
    allowed = int(await trio.Path("/proc/sys/net/core/rmem_max").read_text())
    transport = await UdpTransport.bind(("127.0.0.1", 0))
    try:
        granted = transport._raw.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2
    finally:
        transport.close()
    assert granted >= min(SOCKET_RECEIVE_BUFFER_BYTES, allowed)


@pytest.mark.trio
async def test_udp_transport_receive_waits_then_reads_and_fails_once_closed() -> None:
    """``receive`` waits for the socket before it reads (the driver calls it on an empty
    socket); closing the transport ends a wait, and a later call, with ClosedResourceError."""
    a = await UdpTransport.bind(("127.0.0.1", 0))
    b = await UdpTransport.bind(("127.0.0.1", 0))
    try:
        async with trio.open_nursery() as nursery:
            received: list[tuple[bytes, tuple[str, int]]] = []

            async def receive_one() -> None:
                received.append(await b.receive())

            nursery.start_soon(receive_one)
            await trio.testing.wait_all_tasks_blocked()
            assert a.send_nowait(b"later", b.local_address)
        assert received == [(b"later", a.local_address)]
        assert b.receive_nowait() is None
        async with trio.open_nursery() as nursery:

            async def receive_until_closed() -> None:
                with pytest.raises(trio.ClosedResourceError):
                    await b.receive()

            nursery.start_soon(receive_until_closed)
            await trio.testing.wait_all_tasks_blocked()
            b.close()
        with pytest.raises(trio.ClosedResourceError):
            await b.receive()
    finally:
        a.close()
        b.close()


class _Scripted:
    """A transport that hands out a fixed script: datagrams, and ICMP errors to raise."""

    def __init__(self, script: list[bytes | OSError]) -> None:
        self.script = script

    def _next(self) -> tuple[bytes, tuple[str, int]] | None:
        if not self.script:
            return None
        item = self.script.pop(0)
        if isinstance(item, OSError):
            raise item
        return item, ("peer", 1)

    async def receive(self) -> tuple[bytes, tuple[str, int]]:
        received = self._next()
        assert received is not None
        return received

    def receive_nowait(self) -> tuple[bytes, tuple[str, int]] | None:
        return self._next()


@pytest.mark.trio
async def test_receive_batch_takes_what_is_queued_up_to_its_limit_and_counts_icmp() -> None:
    drops: Counter[str] = Counter()
    script: list[bytes | OSError] = [b"1", ConnectionRefusedError(), b"2", b"3", b"4", b"5"]
    transport = _Scripted(script)
    assert await receive_batch(transport, 4, drops) == [b"1", b"2", b"3"]  # type: ignore[arg-type]
    assert drops == Counter(receive_error=1)  # the error counts within the limit
    assert await receive_batch(transport, 4, drops) == [b"4", b"5"]  # type: ignore[arg-type]
    transport.script = [ConnectionResetError()]
    assert await receive_batch(transport, 4, drops) == []  # type: ignore[arg-type]
    assert drops == Counter(receive_error=2)
