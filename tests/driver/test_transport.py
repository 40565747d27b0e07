"""The datagram transports: address text, the in-memory network's UDP-like behaviour, and
a real loopback socket."""

from __future__ import annotations

import pytest
import trio

from prism.raft.transport import MemoryNetwork, UdpTransport, format_address, parse_address


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
