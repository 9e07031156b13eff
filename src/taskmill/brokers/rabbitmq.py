"""The RabbitMQ broker (seed 004): one durable priority queue per taskmill queue, persistent
messages, publisher confirms, and a consumer that exists only while a worker waits for
hints, with a prefetch equal to the slots it has free (docs/adr/0005-rabbitmq-ack-after-claim.md).

Hints are acked as soon as the worker's claim commits (or shows the job is no longer
queued): the database lease, not RabbitMQ, guarantees at-least-once execution. So no
delivery stays unacked for the length of a job, and RabbitMQ's consumer timeout (30 min by
default), which closes the whole channel of a consumer that holds a delivery too long,
never fires however long a job runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import aio_pika
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustConnection,
    AbstractRobustQueue,
)
from aio_pika.exceptions import (
    CONNECTION_EXCEPTIONS,
    AMQPConnectionError,
    ChannelInvalidStateError,
    PublishError,
)

from taskmill.brokers.base import Delivery, Message, hinted_job_id
from taskmill.core.errors import BrokerError

T = TypeVar("T")

# taskmill priorities (any integer; the API allows -1000..1000) fold into nine AMQP levels
# by sign and order of magnitude: 0 -> 4; 1..9 -> 5, 10..99 -> 6, 100..999 -> 7, 1000+ -> 8;
# and the mirror image below 4 for negative priorities. RabbitMQ keeps one sub-queue per
# level, so few levels are cheap; FIFO within a level, and the database claim still orders
# by the exact priority within what a worker is handed.
NORMAL_PRIORITY = 4
MAX_PRIORITY = 8
QUEUE_ARGUMENTS = {"x-max-priority": MAX_PRIORITY}

# After the first hint, a receive takes the hints RabbitMQ pushes with it (a burst comes
# one frame each) for at most GATHER_SECONDS in all, and stops sooner at a pause of
# GATHER_GAP_SECONDS between two.
GATHER_SECONDS = 0.005
GATHER_GAP_SECONDS = 0.001
RECONNECT_SECONDS = 1.0  # aio-pika's default is 5 s; a URL's ?reconnect_interval= wins
RETRY_SECONDS = 0.1  # between attempts to publish a batch the connection lost


def amqp_priority(priority: int) -> int:
    """The AMQP priority (0..MAX_PRIORITY) of a taskmill priority (see the table above)."""
    if priority == 0:
        return NORMAL_PRIORITY
    magnitude = min(len(str(abs(priority))), MAX_PRIORITY - NORMAL_PRIORITY)
    return NORMAL_PRIORITY + magnitude if priority > 0 else NORMAL_PRIORITY - magnitude


class RabbitMQBroker:
    """Hints in durable queues ``{prefix}.{queue}`` on one robust connection: a channel with
    publisher confirms to publish, another to consume."""

    carries_ids = True
    # A persistent publish waits for RabbitMQ's confirm (its disk sync): one per job made
    # schedule() 2x slower and the start latency's p95 2.4 s; the populator batches them.
    producers_announce = False

    def __init__(self, url: str, *, prefix: str = "taskmill", timeout_seconds: float = 10.0):
        self.url = url
        self.prefix = prefix
        self.timeout_seconds = timeout_seconds
        self._connection: AbstractRobustConnection | None = None
        self._channels: dict[str, AbstractRobustChannel] = {}
        self._queues: dict[tuple[str, str], AbstractRobustQueue] = {}  # (channel, name) -> queue
        self._connecting = asyncio.Lock()
        self._inbox: list[tuple[str, AbstractIncomingMessage]] = []
        self._arrived = asyncio.Event()
        self._closed = asyncio.Event()

    def queue_name(self, queue: str) -> str:
        return f"{self.prefix}.{queue}"

    # -- connection -----------------------------------------------------------

    async def _call(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run ``operation`` within ``timeout_seconds``; while the robust connection is
        reconnecting, aio-pika waits, so the timeout is what turns an outage into
        ``BrokerError`` (as are connection and channel errors)."""
        if self._closed.is_set():
            raise BrokerError("rabbitmq: the broker is closed")
        try:
            async with asyncio.timeout(self.timeout_seconds):
                return await operation()
        except TimeoutError as exc:
            raise BrokerError(f"rabbitmq: no answer within {self.timeout_seconds}s") from exc
        except CONNECTION_EXCEPTIONS as exc:
            raise BrokerError(f"rabbitmq: {type(exc).__name__}: {exc}") from exc

    async def _connect(self) -> AbstractRobustConnection:
        options: dict[str, Any] = {}
        if "reconnect_interval=" not in self.url:
            options["reconnect_interval"] = RECONNECT_SECONDS
        connection: AbstractRobustConnection = await aio_pika.connect_robust(
            self.url, timeout=self.timeout_seconds, **options
        )
        return connection

    async def _channel(self, role: str) -> AbstractRobustChannel:
        """The ``publish`` or ``consume`` channel, connecting on first use. Both survive
        reconnections: aio-pika reopens them and restores their qos and queues."""
        async with self._connecting:
            if self._connection is None:
                self._connection = await self._connect()
            channel = self._channels.get(role)
            if channel is None:
                # Returned (unroutable) messages raise: the queue was deleted under us.
                channel = await self._connection.channel(
                    publisher_confirms=role == "publish", on_return_raises=role == "publish"
                )
                self._channels[role] = channel
            return channel

    async def _declare(self, role: str, queue: str) -> AbstractRobustQueue:
        """Declare the durable priority queue for ``queue`` once per channel."""
        name = self.queue_name(queue)
        declared = self._queues.get((role, name))
        if declared is None:
            channel = await self._channel(role)
            declared = await channel.declare_queue(name, durable=True, arguments=QUEUE_ARGUMENTS)
            self._queues[(role, name)] = declared
        return declared

    # -- publishing -----------------------------------------------------------

    async def publish(self, messages: Sequence[Message]) -> None:
        if messages:
            await self._call(lambda: self._publish_until_confirmed(messages))

    async def _publish_until_confirmed(self, messages: Sequence[Message]) -> None:
        """Resend the whole batch (duplicate hints are harmless) until RabbitMQ confirms
        it, bounded by ``timeout_seconds``: after the connection dropped under it (the fate
        of unconfirmed messages is unknown, and aio-pika never replays a publish) or a
        queue was deleted after we declared it. A nack (a queue refusing messages) raises."""
        while True:
            try:
                await self._publish(messages)
                return
            except PublishError:
                self._queues.clear()  # declare them again
            except (AMQPConnectionError, ChannelInvalidStateError):
                if self._connection is None:
                    raise  # never connected: RabbitMQ is down or the URL is wrong
                await asyncio.sleep(RETRY_SECONDS)  # the channel waits for the reconnection

    async def _publish(self, messages: Sequence[Message]) -> None:
        """Send every message, then wait for all their confirms: one pipelined batch."""
        channel = await self._channel("publish")
        await channel.ready()
        for queue in {m.queue for m in messages}:
            await self._declare("publish", queue)
        await asyncio.gather(
            *(
                channel.default_exchange.publish(
                    aio_pika.Message(
                        m.job_id.encode(),
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        priority=amqp_priority(m.priority),
                    ),
                    routing_key=self.queue_name(m.queue),
                    mandatory=True,
                )
                for m in messages
            )
        )

    # -- receiving ------------------------------------------------------------

    async def receive(
        self, queues: Sequence[str], max_count: int, timeout: float
    ) -> list[Delivery]:
        if max_count <= 0 or self._closed.is_set():
            return []
        if not self._buffered():
            await self._consume_until_arrival(queues, max_count, timeout)
        return self._take(max_count)

    async def _consume_until_arrival(
        self, queues: Sequence[str], max_count: int, timeout: float
    ) -> None:
        """Consume ``queues`` until a hint arrives, ``timeout`` passes or the broker closes.

        The consumers live only for this call, with a channel-wide (global) prefetch of
        ``max_count``: RabbitMQ never pushes more hints than the worker has free slots, and
        a busy worker holds none that an idle one could take. Starting and cancelling the
        consumers costs two round trips per queue, far less than a claim."""
        consumers = await self._call(lambda: self._start_consumers(queues, max_count))
        try:
            await _first_of(self._arrived.wait(), self._closed.wait(), timeout=timeout)
            await self._gather_burst(max_count)
        finally:
            await self._cancel_consumers(consumers)

    async def _gather_burst(self, max_count: int) -> None:
        """After the first hint, take the hints that come with it (RabbitMQ pushes them
        one frame at a time), so one receive returns a burst as a batch rather than one
        hint. Bounded from the first hint, not only per gap: hints of a steady flow less
        than a gap apart kept the first one waiting until the prefetch window filled."""
        if not self._inbox:
            return  # timed out or closed
        loop = asyncio.get_running_loop()
        deadline = loop.time() + GATHER_SECONDS
        while len(self._inbox) < max_count:
            wait = min(GATHER_GAP_SECONDS, deadline - loop.time())
            if wait <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), wait)
            except TimeoutError:
                return

    async def _start_consumers(
        self, queues: Sequence[str], max_count: int
    ) -> list[tuple[AbstractRobustQueue, str]]:
        channel = await self._channel("consume")
        await channel.set_qos(prefetch_count=max_count, global_=True)
        consumers = []
        for queue in queues:
            declared = await self._declare("consume", queue)
            # Not robust: after a reconnection the next receive starts its own consumers.
            tag = await declared.consume(functools.partial(self._on_message, queue), robust=False)
            consumers.append((declared, tag))
        return consumers

    async def _cancel_consumers(self, consumers: list[tuple[AbstractRobustQueue, str]]) -> None:
        """Stop the pushes. Hints that arrive before the cancel is confirmed stay in the
        inbox for the next receive (they are unacked, so a closed channel requeues them)."""
        for declared, tag in consumers:
            if self._closed.is_set() or declared.channel.is_closed:
                return  # a closed channel took its consumers with it
            with contextlib.suppress(TimeoutError, *CONNECTION_EXCEPTIONS):
                async with asyncio.timeout(self.timeout_seconds):
                    await declared.cancel(tag)

    async def _on_message(self, queue: str, message: AbstractIncomingMessage) -> None:
        self._inbox.append((queue, message))
        self._arrived.set()

    def _buffered(self) -> bool:
        """Whether live hints wait in the inbox; drops those of a channel that closed
        (RabbitMQ requeued them and will deliver them again)."""
        self._inbox = [(q, m) for q, m in self._inbox if _channel_open(m)]
        if not self._inbox:
            self._arrived.clear()
        return bool(self._inbox)

    def _take(self, max_count: int) -> list[Delivery]:
        """Up to ``max_count`` buffered hints, highest AMQP priority first."""
        if not self._buffered():
            return []
        self._inbox.sort(key=lambda item: -(item[1].priority or 0))  # stable: FIFO per level
        taken, self._inbox = self._inbox[:max_count], self._inbox[max_count:]
        if not self._inbox:
            self._arrived.clear()
        # A malformed body (not UTF-8, control characters, too long) gets job_id "" (never
        # None, which means "claim anything"): its claim matches no job and it is acked
        # away. Decoding it with replacement characters instead sent a NUL to PostgreSQL,
        # whose error failed the whole claim and left the batch unacked, filling the
        # prefetch window until the worker received nothing at all.
        return [Delivery(job_id=hinted_job_id(m.body, m.body), queue=q, token=m) for q, m in taken]

    # -- settling -------------------------------------------------------------

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        await self._settle(deliveries, lambda m: m.ack())

    async def nack(self, deliveries: Sequence[Delivery]) -> None:
        # requeue: back to the head of its queue, for whichever consumer asks next.
        await self._settle(deliveries, lambda m: m.nack(requeue=True))

    async def _settle(
        self,
        deliveries: Sequence[Delivery],
        settle: Callable[[AbstractIncomingMessage], Awaitable[None]],
    ) -> None:
        """Ack or nack by delivery tag on the channel that delivered it (basic.ack and
        basic.nack have no reply). Settling a delivery twice would close the channel
        (PRECONDITION_FAILED unknown delivery tag), so settled ones are skipped; so are
        those whose channel closed, which RabbitMQ has requeued already."""
        pending = [m for m in map(_message, deliveries) if not m.processed and _channel_open(m)]
        if pending:
            await self._call(lambda: _settle_all(pending, settle))

    async def close(self) -> None:
        self._closed.set()
        self._inbox.clear()
        connection, self._connection = self._connection, None
        self._channels.clear()
        self._queues.clear()
        if connection is not None:
            # Unacked hints go back to their queues when the connection closes.
            with contextlib.suppress(*CONNECTION_EXCEPTIONS):
                await connection.close()


async def _first_of(*waits: Awaitable[object], timeout: float) -> None:
    """Wait until the first of ``waits`` finishes or ``timeout`` passes; cancel the rest."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


async def _settle_all(
    messages: Sequence[AbstractIncomingMessage],
    settle: Callable[[AbstractIncomingMessage], Awaitable[None]],
) -> None:
    for message in messages:
        await settle(message)


def _channel_open(message: AbstractIncomingMessage) -> bool:
    try:
        return not message.channel.is_closed
    except ChannelInvalidStateError:  # aio-pika's way of saying "closed"
        return False


def _message(delivery: Delivery) -> AbstractIncomingMessage:
    token: AbstractIncomingMessage = delivery.token  # type: ignore[assignment]
    return token
