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

from litestar.channels import ChannelsPlugin, Subscriber
from litestar.channels.backends.redis import RedisChannelsStreamBackend
from redis.asyncio import Redis

from app.config import Settings
from app.lib import eventlog
from app.lib.events import event_id_key

READ_COUNT = 500  # log entries per read
# What a subscriber is handed when its process fell behind the log: the connection says so.
FELL_BEHIND = b'{"id":null,"event":"events_dropped","fellBehind":true}'


class StreamBackend(RedisChannelsStreamBackend):
    def __init__(self, *, redis, history: int, block_ms: int = 500) -> None:
        super().__init__(history=history, redis=redis, stream_sleep_no_subscriptions=block_ms)
        self._cursor: str | None = None  # the last log entry handed out; None while nobody listens

    async def on_shutdown(self) -> None:
        await self._redis.aclose()

    async def subscribe(self, channels: Iterable[str]) -> None:
        if self._cursor is None:  # the first subscriber since none was: from the present on
            self._cursor = await eventlog.last_id(self._redis) or "0-0"
        await super().subscribe(channels)

    async def unsubscribe(self, channels: Iterable[str]) -> None:
        await super().unsubscribe(channels)
        if not self._subscribed_channels:
            self._cursor = None

    async def stream_events(self) -> AsyncGenerator[tuple[str, Any], None]:
        while True:
            await self._get_subscribed_channels()
            cursor = self._cursor or "0-0"
            trimmed = await eventlog.floor(self._redis)
            if trimmed is not None and event_id_key(cursor) < event_id_key(trimmed):
                for channel in list(self._subscribed_channels):
                    yield channel, FELL_BEHIND
                cursor = self._cursor = trimmed
            data = await self._redis.xread(
                {eventlog.LOG_KEY: cursor}, count=READ_COUNT, block=self._stream_sleep_no_subscriptions
            )
            for _, entries in data or []:
                for raw_id, fields in entries:
                    event_id = raw_id.decode() if isinstance(raw_id, bytes) else raw_id
                    if self._cursor is None or event_id_key(event_id) <= event_id_key(self._cursor):
                        continue  # everyone left meanwhile, or a new first subscriber moved the cursor on
                    self._cursor = event_id
                    for channel, body in eventlog.entry_messages(
                        event_id, fields[b"data"], self._subscribed_channels
                    ):
                        yield channel, body


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
