"""The SWIM driver's transports: datagrams for probes and gossip, streams for push-pull.

A SWIM member listens on one port number twice: UDP for the datagrams (pings, acks,
ping-reqs, nacks, gossip) and TCP for the whole-state exchange that does not fit a datagram
(``PushPull`` and its answer). The datagram side is Raft's ``DatagramTransport``
(``prism.raft.transport``: one UDP socket, or a ``MemoryNetwork`` endpoint), reused as is.
This module adds the stream side, with the same two faces:

* ``TcpStreamTransport``: TCP listeners on the node's port and ``trio.open_tcp_stream`` to
  reach others. ``bind_udp_and_tcp`` binds both sockets on one port number (with port 0 it
  picks a number free for both).
* ``MemoryStreamTransport``, from a ``MemoryStreamNetwork``: connections made of
  ``trio.testing.memory_stream_pair``, for tests under ``MockClock``. ``MemorySwimNetwork``
  bundles a datagram ``MemoryNetwork`` with a stream network that obeys the same ``route``
  hook, so one hook cuts both (as a real partition does).

Framing. A stream carries frames: a 4-byte big-endian length, then that many bytes of one
wire envelope (``prism.wire``). A frame longer than the receiver's limit is refused from its
header, before anything is read into memory; ``receive_frame`` raises ``FrameError`` (a
``DecodeError``: the peer's fault) with a ``reason`` that the driver counts.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Awaitable, Callable
from typing import Final, Protocol, final

import trio
import trio.testing

from prism.errors import DecodeError
from prism.raft.transport import Address, MemoryNetwork, MemoryTransport, Route, UdpTransport

StreamHandler = Callable[[trio.abc.Stream], Awaitable[None]]
"""What a listening transport runs for each accepted connection (it owns the stream)."""

FRAME_HEADER: Final = struct.Struct(">I")
"""A frame's length prefix: 4 bytes, big-endian, unsigned."""

RECEIVE_CHUNK_BYTES: Final = 65_536
"""The most one ``receive_some`` asks for while reading a frame."""

BIND_ATTEMPTS: Final = 16
"""Tries at finding a port number free for both UDP and TCP when binding port 0."""


class FrameError(DecodeError):
    """A stream frame we cannot accept; ``reason`` is the counter name the driver uses."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


async def send_frame(stream: trio.abc.SendStream, payload: bytes) -> None:
    """Write one frame (length prefix and payload) in one ``send_all``."""
    await stream.send_all(FRAME_HEADER.pack(len(payload)) + payload)


async def receive_frame(stream: trio.abc.ReceiveStream, *, max_bytes: int) -> bytes:
    """Read one frame's payload. Raises ``FrameError``: ``stream_closed`` (the peer closed
    before a frame began), ``stream_truncated`` (it closed in the middle of one),
    ``stream_oversize`` (the header announces more than ``max_bytes``; nothing more is
    read) or ``stream_malformed`` (an empty frame)."""
    header = await _receive_exactly(stream, FRAME_HEADER.size, at_start=True)
    (size,) = FRAME_HEADER.unpack(header)
    if size == 0:
        raise FrameError("stream_malformed", "an empty frame")
    if size > max_bytes:
        raise FrameError(
            "stream_oversize", f"a frame of {size} bytes exceeds the limit of {max_bytes}"
        )
    return await _receive_exactly(stream, size, at_start=False)


async def _receive_exactly(stream: trio.abc.ReceiveStream, size: int, *, at_start: bool) -> bytes:
    buffer = bytearray()
    while len(buffer) < size:
        chunk = await stream.receive_some(min(size - len(buffer), RECEIVE_CHUNK_BYTES))
        if not chunk:
            if at_start and not buffer:
                raise FrameError("stream_closed", "the peer closed the stream")
            raise FrameError("stream_truncated", "the stream ended inside a frame")
        buffer += chunk
    return bytes(buffer)


class StreamTransport(Protocol):
    """Connections to other members, and a listener for theirs."""

    @property
    def local_address(self) -> Address:
        """Where peers connect to this node (the bound port, once bound)."""
        ...

    async def connect(self, address: Address) -> trio.abc.Stream:
        """A new connection to ``address``. Raises ``OSError`` if it cannot be made."""
        ...

    async def serve(
        self, handler: StreamHandler, *, task_status: trio.TaskStatus[None] = ...
    ) -> None:
        """Accept connections until cancelled, running ``handler(stream)`` for each in a
        task of its own. Reports started once connections are being accepted."""
        ...

    def close(self) -> None:
        """Stop listening; idempotent."""
        ...


@final
class TcpStreamTransport:
    """TCP listeners bound at construction; outgoing connections by ``open_tcp_stream``."""

    def __init__(self, listeners: list[trio.SocketListener], local_address: Address) -> None:
        if not listeners:
            raise ValueError("at least one listener is needed")
        self._listeners = listeners
        self._local_address = local_address
        self.accept_errors = 0

    @classmethod
    async def bind(cls, address: Address) -> TcpStreamTransport:
        """Listen on ``address``; port 0 picks a free port (read it from ``local_address``)."""
        host, port = address
        listeners = await trio.open_tcp_listeners(port, host=host)
        bound = listeners[0].socket.getsockname()
        return cls(listeners, (str(bound[0]), int(bound[1])))

    @property
    def local_address(self) -> Address:
        return self._local_address

    async def connect(self, address: Address) -> trio.abc.Stream:
        host, port = address
        return await trio.open_tcp_stream(host, port)

    async def serve(
        self,
        handler: StreamHandler,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with trio.open_nursery() as nursery:
            for listener in self._listeners:
                nursery.start_soon(self._accept_loop, listener, handler, nursery)
            task_status.started()

    async def _accept_loop(
        self, listener: trio.SocketListener, handler: StreamHandler, nursery: trio.Nursery
    ) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                # Out of file descriptors or memory, or an aborted handshake: nothing a
                # peer should be able to crash us with. Back off briefly, as trio's own
                # serve_listeners does, so the loop does not spin on a full fd table.
                self.accept_errors += 1
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS):
                    await trio.sleep(0.1)
                continue
            nursery.start_soon(handler, stream)

    def close(self) -> None:
        for listener in self._listeners:
            listener.socket.close()


async def bind_udp_and_tcp(address: Address) -> tuple[UdpTransport, TcpStreamTransport]:
    """A UDP socket and TCP listeners on the same port number of ``address``'s host.

    With port 0 the UDP socket picks the number and TCP follows it; if that number is taken
    for TCP, both are released and another is tried (``BIND_ATTEMPTS`` times). With a given
    port the first failure is raised (``OSError``).
    """
    host, port = address
    attempts = BIND_ATTEMPTS if port == 0 else 1
    for attempt in range(1, attempts + 1):
        udp = await UdpTransport.bind((host, port))
        try:
            tcp = await TcpStreamTransport.bind((host, udp.local_address[1]))
        except OSError as exc:
            udp.close()
            if exc.errno != errno.EADDRINUSE or attempt == attempts:
                raise
            continue
        except BaseException:
            udp.close()
            raise
        return udp, tcp
    raise AssertionError("unreachable")  # pragma: no cover


@final
class MemoryStreamNetwork:
    """Stream endpoints that connect to each other in memory.

    A connection is refused (``ConnectionRefusedError``) when nobody serves the address,
    when the listener's backlog of not yet accepted connections is full, or when ``route``
    (or, given ``datagrams``, that network's ``route``) refuses ``(source, destination,
    b"")``. ``connected`` and ``refused`` count attempts.
    """

    def __init__(self, *, datagrams: MemoryNetwork | None = None, backlog: int = 64) -> None:
        if backlog < 1:
            raise ValueError("backlog must be at least 1")
        self.backlog = backlog
        self.route: Route | None = None
        self.connected = 0
        self.refused = 0
        self._datagrams = datagrams
        self._endpoints: dict[Address, MemoryStreamTransport] = {}

    def open(self, address: Address) -> MemoryStreamTransport:
        """A new endpoint at ``address``; ValueError if that address is in use."""
        if address in self._endpoints:
            raise ValueError(f"stream address {address} is in use")
        endpoint = MemoryStreamTransport(self, address)
        self._endpoints[address] = endpoint
        return endpoint

    def allows(self, source: Address, destination: Address) -> bool:
        for route in (self.route, self._datagrams.route if self._datagrams else None):
            if route is not None and not route(source, destination, b""):
                return False
        return True

    def listener(self, address: Address) -> MemoryStreamTransport | None:
        return self._endpoints.get(address)

    def _closed(self, endpoint: MemoryStreamTransport) -> None:
        if self._endpoints.get(endpoint.local_address) is endpoint:
            del self._endpoints[endpoint.local_address]


@final
class MemoryStreamTransport:
    """An endpoint of a ``MemoryStreamNetwork``; build with ``MemoryStreamNetwork.open``."""

    def __init__(self, network: MemoryStreamNetwork, address: Address) -> None:
        self._network = network
        self._address = address
        self._serving = False
        self._incoming_send, self._incoming = trio.open_memory_channel[trio.abc.Stream](
            network.backlog
        )

    @property
    def local_address(self) -> Address:
        return self._address

    async def connect(self, address: Address) -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        network = self._network
        listener = network.listener(address)
        if (
            listener is None
            or not listener._serving
            or not network.allows(self._address, address)
            or not listener._offer()
        ):
            network.refused += 1
            raise ConnectionRefusedError(errno.ECONNREFUSED, f"nobody accepts at {address}")
        client, server = trio.testing.memory_stream_pair()
        listener._incoming_send.send_nowait(server)
        network.connected += 1
        return client

    def _offer(self) -> bool:
        """Whether the backlog has room for one more connection."""
        return self._incoming_send.statistics().current_buffer_used < self._network.backlog

    async def serve(
        self,
        handler: StreamHandler,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with trio.open_nursery() as nursery:
            self._serving = True
            task_status.started()
            try:
                async for stream in self._incoming:
                    nursery.start_soon(handler, stream)
            finally:
                self._serving = False

    def close(self) -> None:
        self._serving = False
        self._network._closed(self)
        self._incoming_send.close()
        self._incoming.close()


@final
class MemorySwimNetwork:
    """A datagram ``MemoryNetwork`` and a ``MemoryStreamNetwork`` that share one ``route``
    hook: what a test cuts, it cuts for UDP and TCP alike."""

    def __init__(self, *, buffer_datagrams: int = 1024, backlog: int = 64) -> None:
        self.datagrams = MemoryNetwork(buffer_datagrams=buffer_datagrams)
        self.streams = MemoryStreamNetwork(datagrams=self.datagrams, backlog=backlog)

    @property
    def route(self) -> Route | None:
        return self.datagrams.route

    @route.setter
    def route(self, route: Route | None) -> None:
        self.datagrams.route = route

    def open(self, address: Address) -> tuple[MemoryTransport, MemoryStreamTransport]:
        """Both endpoints of a member at ``address``."""
        datagram = self.datagrams.open(address)
        try:
            stream = self.streams.open(address)
        except ValueError:
            datagram.close()
            raise
        return datagram, stream
