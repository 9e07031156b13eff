"""The Redis broker (seed 000): one stream per queue and priority band, read through a
consumer group, so a hint taken by a worker that dies stays pending and is claimed by
another worker (docs/adr/0004-redis-streams.md).

Hints are acked once the worker's claim commits (or shows the job is no longer
queued): the database lease, not Redis, guarantees at-least-once execution. The acks
travel with the worker's next read, in one script: a worker's round of read, claim and
ack costs one Redis round trip, not five.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from taskmill.brokers.base import Delivery, Message, hinted_job_id
from taskmill.core.errors import BrokerError

log = logging.getLogger(__name__)

GROUP = "taskmill"
# How long acks wait for the worker's next read before going on their own.
ACK_DELAY_SECONDS = 0.05
BANDS = ("high", "normal", "low")  # read in this order
T = TypeVar("T")


# Acks the hints in ARGV (the first #acks KEYS are their streams), then reads without
# blocking up to ARGV[3] new hints, band by band: the next ARGV[5] KEYS are one band's
# streams, highest band first. Returns {stream, id, {field, value, ...}} per hint.
_ACK_AND_READ = """
local group, consumer = ARGV[1], ARGV[2]
local want, acks, per_band = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
for i = 1, acks do
  redis.call('XACK', KEYS[i], group, ARGV[5 + i])
  redis.call('XDEL', KEYS[i], ARGV[5 + i])
end
local found = {}
local first = acks + 1
while first <= #KEYS and want > 0 do
  local args = {'XREADGROUP', 'GROUP', group, consumer, 'COUNT', want, 'STREAMS'}
  for k = first, first + per_band - 1 do table.insert(args, KEYS[k]) end
  for k = 1, per_band do table.insert(args, '>') end
  local reply = redis.call(unpack(args))
  if reply then
    for _, stream in ipairs(reply) do
      for _, entry in ipairs(stream[2]) do
        table.insert(found, {stream[1], entry[1], entry[2]})
        want = want - 1
      end
    end
  end
  first = first + per_band
end
return found
"""

# XADDs one hint per key: KEYS[i] is hint i's stream, ARGV[i] its job id. One command
# and one reply for a batch: a 200-hint MULTI/EXEC pipeline cost the client ~19 ms of
# CPU (a reply parsed per XADD). Atomic as MULTI/EXEC was: Redis serves a blocked
# XREADGROUP after the whole script, so a waiting worker gets the batch in one read.
_PUBLISH = """
for i = 1, #KEYS do
  redis.call('XADD', KEYS[i], '*', 'job_id', ARGV[i])
end
return #KEYS
"""


def band(priority: int) -> str:
    """Priorities fold into three bands; FIFO within a band."""
    if priority > 0:
        return "high"
    return "low" if priority < 0 else "normal"


class RedisBroker:
    """Hints in Redis streams ``{prefix}:q:{queue}:{band}``, consumer group ``taskmill``."""

    carries_ids = True
    producers_announce = True  # one XADD, ~0.15 ms

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "taskmill",
        consumer: str = "taskmill",
        reclaim_idle_seconds: float = 30.0,
    ) -> None:
        # Replies stay bytes: anyone who can write to the stream can put non-UTF-8 bytes
        # in a hint, and a client decoding replies would fail on every read of it.
        self._redis: aioredis.Redis = aioredis.Redis.from_url(
            url, decode_responses=False, health_check_interval=15
        )
        self.prefix = prefix
        self.consumer = consumer
        self.reclaim_idle_seconds = reclaim_idle_seconds
        self._groups: set[str] = set()
        self._last_reclaim = 0.0
        self._ack_and_read = self._redis.register_script(_ACK_AND_READ)
        self._publish = self._redis.register_script(_PUBLISH)
        # Acked hints not yet sent: they go with the next read, or after ACK_DELAY_SECONDS
        # if no read comes (every slot busy), or at close.
        self._unsent_acks: list[tuple[str, str]] = []
        self._ack_timer: asyncio.TimerHandle | None = None
        self._late_acks: set[asyncio.Task[None]] = set()

    def stream(self, queue: str, band_name: str) -> str:
        return f"{self.prefix}:q:{queue}:{band_name}"

    async def _call(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run ``operation``, recreating consumer groups once if Redis lost them (FLUSHALL,
        a restart without persistence); connection errors become ``BrokerError``."""
        try:
            try:
                return await operation()
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                self._groups.clear()
                return await operation()
        except RedisError as exc:
            self._groups.clear()
            raise BrokerError(f"redis: {exc}") from exc

    async def publish(self, messages: Sequence[Message]) -> None:
        if not messages:
            return

        async def send() -> None:
            if len(messages) == 1:  # a producer's schedule(): a script costs more CPU
                m = messages[0]
                await self._redis.xadd(self.stream(m.queue, band(m.priority)), {"job_id": m.job_id})
                return
            keys = [self.stream(m.queue, band(m.priority)) for m in messages]
            await self._publish(keys=keys, args=[m.job_id for m in messages])

        await self._call(send)

    async def _ensure_groups(self, streams: Sequence[str]) -> None:
        for name in streams:
            if name in self._groups:
                continue
            try:
                # From id 0: hints published before the group existed are delivered too.
                await self._redis.xgroup_create(name, GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            self._groups.add(name)

    async def receive(
        self, queues: Sequence[str], max_count: int, timeout: float
    ) -> list[Delivery]:
        if max_count <= 0:
            return []
        streams = [self.stream(q, b) for b in BANDS for q in queues]

        async def read() -> list[Delivery]:
            await self._ensure_groups(streams)
            found = await self._reclaim(streams, max_count)
            if len(found) < max_count:
                found += await self._send_acks_and_read(
                    streams, len(queues), max_count - len(found)
                )
            if found:
                return found
            return await self._read(dict.fromkeys(streams, ">"), max_count, timeout)

        return await self._call(read)

    async def _send_acks_and_read(
        self, streams: Sequence[str], per_band: int, count: int
    ) -> list[Delivery]:
        """The acks not yet sent, then a non-blocking read, highest band first: one
        round trip (``_ACK_AND_READ``)."""
        with self._taking_acks() as acks:
            keys = [name for name, _ in acks] + list(streams)
            args: list[str | int] = [GROUP, self.consumer, count, len(acks), per_band]
            args += [entry_id for _, entry_id in acks]
            reply = await self._ack_and_read(keys=keys, args=args)
        return [
            _delivery(name, entry_id, dict(zip(flat[::2], flat[1::2], strict=True)))
            for name, entry_id, flat in reply
        ]

    async def _read(
        self, streams: dict[str, str], count: int, block: float | None
    ) -> list[Delivery]:
        block_ms = None if block is None else max(1, int(block * 1000))
        wanted: dict[Any, Any] = dict(streams)
        reply = await self._redis.xreadgroup(
            GROUP, self.consumer, wanted, count=count, block=block_ms
        )
        return [
            _delivery(name, entry_id, fields)
            for name, entries in _stream_entries(reply)
            for entry_id, fields in entries
        ]

    async def _reclaim(self, streams: Sequence[str], max_count: int) -> list[Delivery]:
        """Take over hints left pending by a consumer that went quiet (it died before
        acking); checked at most twice per idle period."""
        now = time.monotonic()
        if now - self._last_reclaim < self.reclaim_idle_seconds / 2:
            return []
        self._last_reclaim = now
        await self._send_acks()  # else this worker's own acked hints look abandoned
        idle_ms = int(self.reclaim_idle_seconds * 1000)
        found: list[Delivery] = []
        for name in streams:
            if len(found) >= max_count:
                break
            reply = await self._redis.xautoclaim(
                name, GROUP, self.consumer, idle_ms, "0-0", count=max_count - len(found)
            )
            found += [_delivery(name, entry_id, fields) for entry_id, fields in reply[1]]
        return found

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Queue the acks: they are sent with the next ``receive``, or on their own after
        ``ACK_DELAY_SECONDS`` if none comes (a worker whose every slot is busy does not
        read), or at ``close``. An ack that never arrives (the worker died) only leaves
        a hint whose claim finds the job no longer queued."""
        self._unsent_acks.extend(_token(d) for d in deliveries)
        if self._unsent_acks and self._ack_timer is None:
            loop = asyncio.get_running_loop()
            self._ack_timer = loop.call_later(ACK_DELAY_SECONDS, self._send_late_acks)

    def _send_late_acks(self) -> None:
        self._ack_timer = None
        if self._unsent_acks:
            task = asyncio.ensure_future(self._send_acks_or_log())
            self._late_acks.add(task)
            task.add_done_callback(self._late_acks.discard)

    async def _send_acks_or_log(self) -> None:
        try:
            await self._send_acks()
        except BrokerError as exc:  # their hints are reclaimed later, and found stale
            log.warning("could not ack hints: %s", exc)

    @contextmanager
    def _taking_acks(self) -> Iterator[list[tuple[str, str]]]:
        """The acks to send now, taken off the list (so two senders never send or drop
        the same ones); if sending them fails, they go back in front for the next try."""
        acks, self._unsent_acks = self._unsent_acks, []
        try:
            yield acks
        except BaseException:
            self._unsent_acks[:0] = acks
            raise

    async def _send_acks(self) -> None:
        with self._taking_acks() as acks:
            if not acks:
                return

            async def forget() -> None:
                pipe = self._redis.pipeline(transaction=False)
                for name, entry_id in acks:
                    pipe.xack(name, GROUP, entry_id)
                    pipe.xdel(name, entry_id)
                await pipe.execute()

            await self._call(forget)

    async def nack(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return

        async def give_back() -> None:
            pipe = self._redis.pipeline(transaction=False)
            for d in deliveries:
                name, entry_id = _token(d)
                pipe.xadd(name, {"job_id": d.job_id or ""})
                pipe.xack(name, GROUP, entry_id)
                pipe.xdel(name, entry_id)
            await pipe.execute()

        await self._call(give_back)

    async def close(self) -> None:
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        try:
            await asyncio.gather(*self._late_acks)
            await self._send_acks_or_log()
        finally:
            await self._redis.aclose()


def _stream_entries(reply: Any) -> list[tuple[Any, list[tuple[Any, Any]]]]:
    """XREADGROUP's reply as (stream, entries)."""
    # RESP2 (the client's default): [[stream, [(id, fields), ...]], ...]
    return [(name, entries) for name, entries in reply or []]


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _job_id(fields: dict[Any, Any] | None) -> str:
    """The job id a hint names, or ``""`` when the entry is malformed."""
    return hinted_job_id((fields or {}).get(b"job_id"), fields)


def _delivery(
    stream: str | bytes, entry_id: str | bytes, fields: dict[Any, Any] | None
) -> Delivery:
    name = _text(stream)
    queue = name.split(":q:", 1)[1].rsplit(":", 1)[0]
    # A malformed entry gets job_id "" (never None, which means "claim anything"): its
    # claim matches no job and it is acked away.
    return Delivery(job_id=_job_id(fields), queue=queue, token=(name, _text(entry_id)))


def _token(delivery: Delivery) -> tuple[str, str]:
    token: tuple[str, str] = delivery.token  # type: ignore[assignment]
    return token
