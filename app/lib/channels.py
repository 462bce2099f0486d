"""The live fan-out between api processes: Litestar's channels, on the Redis stream of the event log.

Each api process runs one Litestar `ChannelsPlugin` whose backend is a `RedisChannelsStreamBackend`
reading, instead of a stream per channel, the one log every event is published to
(app/lib/eventlog.py): a topic is a channel, and an event reaches the subscribers of each of its
topics. One log, read in order, means:
- a process reads one stream whatever its clients subscribe to, from the entry that was last when its
  first client subscribed (Litestar's own backend reads a new channel from its first entry, which
  would send the first subscriber the whole history as if it were new);
- a process that falls behind the log's cap knows it (the log's floor passes its cursor) and tells its
  subscribers their events were dropped, instead of skipping them silently;
- a read blocks up to `block_ms` (Litestar's polls every 1 ms, a busy loop when idle).

Each connection's subscriber holds at most STREAM_BACKLOG unsent messages, drops its oldest first and
counts what it dropped (`CountingSubscriber`), so the client can be told.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterable
from typing import Any

import structlog
from litestar.channels import ChannelsPlugin, Subscriber
from litestar.channels.backends.redis import RedisChannelsStreamBackend
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.config import Settings
from app.lib import eventlog
from app.lib.events import event_id_key

log = structlog.get_logger(__name__)

READ_COUNT = 500  # log entries per read
RETRY_MAX_S = 5.0  # the longest wait between reads while Redis fails
# The floor and the entries after the cursor (an exclusive range: Redis 6.2 on), in one step.
# KEYS: log, floor. ARGV: cursor, count.
_READ = """
return {redis.call('GET', KEYS[2]), redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', ARGV[2])}
"""
# What a subscriber is handed when its process fell behind the log: the connection says so.
FELL_BEHIND = b'{"id":null,"event":"events_dropped","fellBehind":true}'


class StreamBackend(RedisChannelsStreamBackend):
    def __init__(self, *, redis, history: int, block_ms: int = 500) -> None:
        super().__init__(history=history, redis=redis, stream_sleep_no_subscriptions=block_ms)
        self._cursor: str | None = None  # the last log entry handed out; None while nobody listens
        self._read = self._redis.register_script(_READ)

    async def on_shutdown(self) -> None:
        await self._redis.aclose()

    async def publish(self, data: bytes, channels: Iterable[str]) -> None:
        raise NotImplementedError("events are published to the log: app/lib/eventlog.py publish()")

    async def get_history(self, channel: str, limit: int | None = None) -> list[bytes]:
        raise NotImplementedError("history is read from the log: app/lib/eventlog.py replay_page()")

    async def subscribe(self, channels: Iterable[str]) -> None:
        if self._cursor is None:  # the first subscriber since none was: from the present on
            last = await eventlog.last_id(self._redis) or "0-0"
            if self._cursor is None:  # no other first subscriber set it meanwhile
                self._cursor = last
        await super().subscribe(channels)

    async def unsubscribe(self, channels: Iterable[str]) -> None:
        await super().unsubscribe(channels)
        if not self._subscribed_channels:
            self._cursor = None

    async def stream_events(self) -> AsyncGenerator[tuple[str, Any], None]:
        failures = 0
        while True:
            await self._get_subscribed_channels()
            cursor = self._cursor or "0-0"
            try:
                trimmed, entries = await self._next_entries(cursor)
            except (RedisError, OSError) as exc:  # Redis away for a while: wait, and read on from the cursor
                failures += 1
                log.warning("stream.read_failed", error=str(exc)[:200], failures=failures)
                await asyncio.sleep(min(RETRY_MAX_S, 0.1 * 2**failures))
                continue
            failures = 0
            if trimmed is not None and event_id_key(cursor) < event_id_key(trimmed):
                # entries after the cursor were trimmed away unread: say so, and go on from what is kept
                for channel in list(self._subscribed_channels):
                    yield channel, FELL_BEHIND
                if self._cursor is not None:
                    self._cursor = max(self._cursor, trimmed, key=event_id_key)
            for event_id, data in entries:
                if self._cursor is None or event_id_key(event_id) <= event_id_key(self._cursor):
                    continue  # everyone left meanwhile, or a new first subscriber moved the cursor on
                self._cursor = event_id
                for channel, body in eventlog.entry_messages(event_id, data, self._subscribed_channels):
                    yield channel, body

    async def _next_entries(self, cursor: str) -> tuple[str | None, list[tuple[str, bytes]]]:
        """The log's floor and its entries after `cursor`, read together (one script, so no trimming can
        fall between them); when there are none, first wait up to `block_ms` for one."""
        trimmed, entries = await self._read_after(cursor)
        if entries or (trimmed is not None and event_id_key(cursor) < event_id_key(trimmed)):
            return trimmed, entries
        await self._redis.xread(
            {eventlog.LOG_KEY: cursor}, count=1, block=self._stream_sleep_no_subscriptions
        )
        return await self._read_after(cursor)

    async def _read_after(self, cursor: str) -> tuple[str | None, list[tuple[str, bytes]]]:
        found = await self._read(keys=[eventlog.LOG_KEY, eventlog.FLOOR_KEY], args=[cursor, READ_COUNT])
        trimmed = eventlog.text(found[0]) if found[0] else None
        entries = [(eventlog.text(entry_id), _field(fields, b"data")) for entry_id, fields in found[1]]
        return trimmed, entries


def _field(fields: list, name: bytes) -> bytes:
    """A field of a stream entry as Lua returns it: a flat [name, value, ...] list."""
    for at in range(0, len(fields) - 1, 2):
        if fields[at] in (name, name.decode()):
            return fields[at + 1]
    return b""


class CountingSubscriber(Subscriber):
    """A subscriber whose full backlog drops its oldest message, and counts what it dropped."""

    def __init__(self, plugin, max_backlog: int | None = None, backlog_strategy: Any = "dropleft") -> None:
        super().__init__(plugin, max_backlog=max_backlog, backlog_strategy="dropleft")
        self._limit = max_backlog
        self.dropped = 0

    def put_nowait(self, item: bytes | None) -> bool:
        if self._limit and item is not None and self._queue.qsize() >= self._limit:
            self.dropped += 1
        return super().put_nowait(item)

    async def next(self, within: float) -> bytes | None:
        """The next message (None once unsubscribed); TimeoutError when none came `within` seconds."""
        if self._queue.empty():
            item = await asyncio.wait_for(self._queue.get(), within)
        else:
            item = self._queue.get_nowait()
        self._queue.task_done()
        return item

    def take_dropped(self) -> int:
        dropped, self.dropped = self.dropped, 0
        return dropped


def fell_behind(item: bytes) -> bool:
    return item == FELL_BEHIND


def channels_plugin(settings: Settings) -> ChannelsPlugin:
    """The api's channels: topics read live from the event log, each connection holding at most
    STREAM_BACKLOG unsent messages, its oldest dropped first."""
    backend = StreamBackend(redis=Redis.from_url(settings.redis.url or ""), history=settings.stream.history)
    return ChannelsPlugin(
        backend=backend,
        arbitrary_channels_allowed=True,
        create_ws_route_handlers=False,
        subscriber_max_backlog=settings.stream.backlog,
        subscriber_backlog_strategy="dropleft",
        subscriber_class=CountingSubscriber,
    )
