"""Membership events for the rest of the node: in order, bounded, never blocking SWIM.

Theory of operation. ``Subscribers.publish`` is called by the driver with each ``Ready``'s
events, synchronously, right after the core produced them; it must never wait, or a slow
consumer would stall probing and turn itself into a false death elsewhere. Each
``Subscription`` therefore has a bounded buffer (a trio memory channel) and publishing
uses ``send_nowait``.

A subscriber whose buffer is full when an event arrives has fallen behind. Skipping that
one event would hand it a membership view with a hole in it (it might never see a member
die), so the driver cuts it off instead, as etcd cancels a watch whose revision was
compacted: the subscription stops taking events, its consumer still reads every event that
was buffered before the cut, in order, and then gets ``SubscriptionOverflow``. The consumer
recovers by reading ``SwimDriver.members()`` (the current view) and subscribing again; with
no ``await`` between the two calls, nothing falls between them.

When the driver stops, every subscription ends: iteration finishes normally after the
buffered events.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import final

import trio

from prism.errors import PrismError
from prism.swim.ready import MemberEvent


class SubscriptionOverflow(PrismError):
    """The subscriber fell more than its buffer behind and was cut off; every event before
    the cut was delivered. Read the current view with ``members()`` and subscribe again."""


@final
class Subscription:
    """An async iterator of ``MemberEvent``, in the order the core produced them.

    Use it as a context manager (``with driver.subscribe() as events: async for ...``) so it
    is closed, and stops taking buffer space, when the consumer is done.
    """

    def __init__(self, hub: Subscribers, buffer: int) -> None:
        self._hub = hub
        self._send, self._receive = trio.open_memory_channel[MemberEvent](buffer)
        self.buffer = buffer
        self.delivered = 0  # events put in the buffer
        self.overflowed = False

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> MemberEvent:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            if self.overflowed:
                raise SubscriptionOverflow(
                    f"the subscriber fell more than {self.buffer} events behind and was cut "
                    f"off after {self.delivered}; read members() and subscribe again"
                ) from None
            raise StopAsyncIteration from None
        except trio.ClosedResourceError:
            raise StopAsyncIteration from None  # closed by its own consumer

    def receive_nowait(self) -> MemberEvent | None:
        """The next buffered event, or None if none is buffered yet (or the subscription
        ended without overflow). Raises ``SubscriptionOverflow`` like iteration does."""
        try:
            return self._receive.receive_nowait()
        except (trio.WouldBlock, trio.ClosedResourceError):
            return None
        except trio.EndOfChannel:
            if self.overflowed:
                raise SubscriptionOverflow(
                    f"the subscriber fell more than {self.buffer} events behind"
                ) from None
            return None

    def close(self) -> None:
        """Stop taking events; idempotent."""
        self._hub._remove(self)
        self._send.close()
        self._receive.close()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _offer(self, event: MemberEvent) -> bool:
        """Buffer ``event``; False if this subscription is now finished (cut off or closed)."""
        try:
            self._send.send_nowait(event)
        except trio.WouldBlock:
            self.overflowed = True
            self._send.close()  # the consumer drains what is buffered, then sees the overflow
            return False
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        self.delivered += 1
        return True

    def _end(self) -> None:
        self._send.close()


@final
class Subscribers:
    """The driver's set of subscriptions (a list: delivery order is subscription order)."""

    def __init__(self, *, default_buffer: int) -> None:
        if default_buffer < 1:
            raise ValueError("default_buffer must be at least 1")
        self.default_buffer = default_buffer
        self.overflows = 0  # subscriptions cut off, ever
        self.published = 0  # events published, ever
        self._subscriptions: list[Subscription] = []
        self._closed = False

    def __len__(self) -> int:
        return len(self._subscriptions)

    def subscribe(self, buffer: int | None = None) -> Subscription:
        """A new subscription, buffering at most ``buffer`` events (the default if None)."""
        size = self.default_buffer if buffer is None else buffer
        if size < 1:
            raise ValueError("a subscription buffers at least one event")
        subscription = Subscription(self, size)
        if self._closed:
            subscription._end()
        else:
            self._subscriptions.append(subscription)
        return subscription

    def publish(self, events: Iterable[MemberEvent]) -> None:
        """Hand ``events`` to every subscription, in order. Never waits."""
        for event in events:
            self.published += 1
            finished: list[Subscription] = []
            for subscription in self._subscriptions:
                if not subscription._offer(event):
                    finished.append(subscription)
                    if subscription.overflowed:
                        self.overflows += 1
            for subscription in finished:
                self._remove(subscription)

    def close(self) -> None:
        """End every subscription (the driver stopped); later ones start ended."""
        self._closed = True
        for subscription in self._subscriptions:
            subscription._end()
        self._subscriptions.clear()

    def _remove(self, subscription: Subscription) -> None:
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)
