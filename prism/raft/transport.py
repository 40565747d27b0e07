"""Datagram transports for the Raft driver: one UDP socket, or an in-memory network.

The driver needs three things from a transport: send one datagram to an address, receive
the next datagram, and close; and, so that a busy node does not pay a trip through the event
loop per datagram, the same without waiting (``send_nowait``, ``receive_nowait``): the driver
drains every datagram already queued before it handles what they did, and sends a whole
``Ready`` in one go. ``DatagramTransport`` is that interface. ``UdpTransport`` is
one trio UDP socket; ``MemoryNetwork`` hands out ``MemoryTransport`` endpoints that deliver
to each other in memory, for tests under trio's ``MockClock`` (no sockets, no wall clock).

Both behave like UDP: a send never waits for the receiver and never fails because nobody
listens. A datagram to an address nobody holds, to a full receive buffer (the kernel's
socket buffer, ``buffer_datagrams`` in memory), or one the network's ``route`` hook refuses,
is lost without a word.

Addresses are ``(host, port)`` pairs; ``parse_address`` and ``format_address`` convert them
to and from the ``host:port`` text that command lines and ``Membership`` carry.
"""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Callable
from typing import Protocol, final

import trio

Address = tuple[str, int]
"""Where a node listens: ``(host, port)``."""

Route = Callable[[Address, Address, bytes], bool]
"""A ``MemoryNetwork`` hook: ``route(source, destination, data)`` returns whether to deliver."""

RECEIVE_BUFFER_BYTES = 65_536
"""What one receive reads: more than the largest UDP payload (65,507 bytes)."""

SOCKET_RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024
"""The kernel buffer asked for each UDP socket (``SO_RCVBUF``; Linux grants at most
``net.core.rmem_max``). A datagram that arrives while it is full is dropped, and a dropped
append costs a rejection, a back-off and a resend. With Linux's default of 208 KB a follower
taking 256 writes in flight of 1 KB values (32 KB appends) dropped one datagram in five
(``RcvbufErrors`` in ``/proc/net/snmp``). memberlist asks for 2 MB for the same reason."""


def parse_address(text: str) -> Address:
    """``"host:port"`` or ``"[v6 host]:port"`` to ``(host, port)``; ValueError if malformed."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"not a host:port address: {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    port = int(port_text)
    if not 0 <= port <= 65_535:
        raise ValueError(f"port out of range in the address {text!r}")
    return host, port


def format_address(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class DatagramTransport(Protocol):
    """One endpoint that sends and receives whole datagrams."""

    @property
    def local_address(self) -> Address:
        """The address peers reach this endpoint at (the bound port, once bound)."""
        ...

    async def send(self, data: bytes, address: Address) -> None:
        """Send one datagram. May raise OSError (the driver counts it and goes on)."""
        ...

    def send_nowait(self, data: bytes, address: Address) -> bool:
        """Send one datagram without waiting; False (nothing sent) when the send would have
        to wait for room, and then ``send`` is the way. May raise OSError, as ``send``."""
        ...

    async def receive(self) -> tuple[bytes, Address]:
        """The next datagram and its source address."""
        ...

    def receive_nowait(self) -> tuple[bytes, Address] | None:
        """The next datagram if one is already queued, else None; never waits. May raise
        ``ConnectionResetError`` or ``ConnectionRefusedError`` as ``receive`` may."""
        ...

    def close(self) -> None:
        """Release the endpoint; idempotent."""
        ...


_ICMP_ERRORS = (ConnectionResetError, ConnectionRefusedError)


async def receive_batch(
    transport: DatagramTransport, limit: int, drops: Counter[str]
) -> list[bytes]:
    """Wait for a datagram, then take every one already queued, up to ``limit`` in all, so
    that a driver steps them together and handles one batch (one save, one send per peer).
    ICMP errors that some platforms report on a UDP socket are no datagrams: each is counted
    in ``drops["receive_error"]`` (and within ``limit``). May return an empty list."""
    try:
        data, _source = await transport.receive()
    except _ICMP_ERRORS:
        drops["receive_error"] += 1
        await trio.lowlevel.checkpoint()
        return []
    batch = [data]
    taken = 1
    while taken < limit:
        try:
            queued = transport.receive_nowait()
        except _ICMP_ERRORS:
            drops["receive_error"] += 1
            taken += 1
            continue
        if queued is None:
            break
        batch.append(queued[0])
        taken += 1
    return batch


async def receive_some_raw(sock: socket.socket, max_bytes: int) -> bytes:
    """What a non-blocking stream socket has, up to ``max_bytes`` (empty at its end): read
    straight away once trio says it is readable, without the failed read that trio's stream
    wrapper tries before it waits nor the pass through the scheduler it makes after."""
    while True:
        await trio.lowlevel.wait_readable(sock)
        try:
            return sock.recv(max_bytes)
        except BlockingIOError:
            continue  # readable, then not: wait again


async def send_all_raw(sock: socket.socket, data: bytes) -> None:
    """Send the whole of ``data`` on a non-blocking stream socket: straight system calls
    while the socket has room, a wait through trio only when its buffer is full."""
    view = memoryview(data)
    while view:
        try:
            sent = sock.send(view)
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)
            continue
        view = view[sent:]


@final
class UdpTransport:
    """One bound UDP socket: a non-blocking stdlib socket, waited on through trio.

    ``send_nowait`` and ``receive_nowait`` call the socket directly (one system call, no
    address resolution, no checkpoint). ``send`` waits with trio's socket wrapper around
    the same socket. ``receive`` waits for the socket to be readable, then reads it directly:
    a driver calls it only once ``receive_nowait`` has found the socket empty, so the read
    that trio's wrapper tries before it waits would fail every time, and the extra pass
    through the scheduler it makes after a read that succeeds would cost a busy node one per
    batch. The wait is the checkpoint.
    """

    def __init__(self, sock: socket.socket, local_address: Address) -> None:
        sock.setblocking(False)
        self._raw = sock
        self._sock = trio.socket.from_stdlib_socket(sock)
        self._local_address = local_address

    @classmethod
    async def bind(cls, address: Address) -> UdpTransport:
        """Bind ``address``; port 0 picks a free port (read it from ``local_address``)."""
        host, port = address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        raw = socket.socket(family, socket.SOCK_DGRAM)
        try:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_RECEIVE_BUFFER_BYTES)
            await trio.socket.from_stdlib_socket(raw).bind((host, port))
        except BaseException:
            raw.close()
            raise
        bound = raw.getsockname()
        return cls(raw, (str(bound[0]), int(bound[1])))

    @property
    def local_address(self) -> Address:
        return self._local_address

    async def send(self, data: bytes, address: Address) -> None:
        await self._sock.sendto(data, address)

    def send_nowait(self, data: bytes, address: Address) -> bool:
        try:
            self._raw.sendto(data, address)
        except BlockingIOError:
            return False
        return True

    async def receive(self) -> tuple[bytes, Address]:
        raw = self._raw
        if raw.fileno() == -1:
            raise trio.ClosedResourceError("the transport is closed")  # as MemoryTransport
        while True:
            await trio.lowlevel.wait_readable(raw)
            received = self.receive_nowait()
            if received is not None:  # else readable, then empty again: wait once more
                return received

    def receive_nowait(self) -> tuple[bytes, Address] | None:
        try:
            data, source = self._raw.recvfrom(RECEIVE_BUFFER_BYTES)
        except BlockingIOError:
            return None
        return data, (str(source[0]), int(source[1]))

    def close(self) -> None:
        self._sock.close()


@final
class MemoryNetwork:
    """Endpoints that deliver datagrams to each other in memory, at once, in order.

    ``route`` (settable at any time) decides per datagram whether it is delivered, which is
    how tests cut links and isolate nodes. ``delivered`` and ``lost`` count datagrams.
    """

    def __init__(self, *, buffer_datagrams: int = 1024) -> None:
        if buffer_datagrams < 1:
            raise ValueError("buffer_datagrams must be at least 1")
        self.buffer_datagrams = buffer_datagrams
        self.route: Route | None = None
        self.delivered = 0
        self.lost = 0
        self._endpoints: dict[Address, MemoryTransport] = {}

    def open(self, address: Address) -> MemoryTransport:
        """A new endpoint at ``address``; ValueError if that address is in use."""
        if address in self._endpoints:
            raise ValueError(f"address {format_address(address)} is in use")
        endpoint = MemoryTransport(self, address)
        self._endpoints[address] = endpoint
        return endpoint

    def deliver(self, source: Address, destination: Address, data: bytes) -> None:
        """Hand ``data`` to the endpoint at ``destination``, or lose it (as UDP would)."""
        endpoint = self._endpoints.get(destination)
        if endpoint is None or (
            self.route is not None and not self.route(source, destination, data)
        ):
            self.lost += 1
            return
        if endpoint.put(data, source):
            self.delivered += 1
        else:
            self.lost += 1

    def _closed(self, endpoint: MemoryTransport) -> None:
        if self._endpoints.get(endpoint.local_address) is endpoint:
            del self._endpoints[endpoint.local_address]


@final
class MemoryTransport:
    """An endpoint of a ``MemoryNetwork``; build with ``MemoryNetwork.open``."""

    def __init__(self, network: MemoryNetwork, address: Address) -> None:
        self._network = network
        self._address = address
        self._inbox_send, self._inbox = trio.open_memory_channel[tuple[bytes, Address]](
            network.buffer_datagrams
        )

    @property
    def local_address(self) -> Address:
        return self._address

    def put(self, data: bytes, source: Address) -> bool:
        """Queue an arriving datagram; False (lost) when the buffer is full or closed."""
        try:
            self._inbox_send.send_nowait((data, source))
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            return False
        return True

    async def send(self, data: bytes, address: Address) -> None:
        self._network.deliver(self._address, address, data)
        await trio.lowlevel.checkpoint()

    def send_nowait(self, data: bytes, address: Address) -> bool:
        self._network.deliver(self._address, address, data)
        return True

    async def receive(self) -> tuple[bytes, Address]:
        return await self._inbox.receive()

    def receive_nowait(self) -> tuple[bytes, Address] | None:
        try:
            return self._inbox.receive_nowait()
        except trio.WouldBlock:
            return None

    def close(self) -> None:
        self._network._closed(self)
        self._inbox_send.close()
        self._inbox.close()
