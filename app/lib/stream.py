"""One stream connection: its slot among the client's connections, its resumption, and its messages.

Both transports (WebSocket and SSE, app/events/controllers.py) run the same sequence:
1. take a slot among the connections of the client's address, over every api process (a sorted set
   in Redis, each connection refreshing its entry while it lives, so a crashed process's slots lapse);
2. subscribe to the topics' channels, so what is published from then on waits in the connection's
   bounded backlog, and say `subscribed`;
3. when resuming (`since`, `Last-Event-ID`), send what the log kept after that id, and a `stream_gap`
   notice first when the log no longer reaches back to it (the client should re-read over REST);
4. send the live messages, skipping any already sent (an event of two subscribed topics, or one
   that arrived live while the log was being read), with an `events_dropped` notice whenever the
   backlog overflowed, and a heartbeat when nothing was sent for a while.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Any, NamedTuple, cast

import anyio
import structlog
from litestar.channels import ChannelsPlugin
from prometheus_client import Gauge
from redis.exceptions import RedisError

from app.config import Settings
from app.lib import eventlog
from app.lib.channels import CountingSubscriber, fell_behind
from app.lib.errors import AppError
from app.lib.events import EVENT_ID, NOTICES, event_id_key
from app.lib.timeutil import utcnow

log = structlog.get_logger(__name__)

SLOTS_PREFIX = "dv:stream:slots:"
MAX_ID_PART = 2**64 - 1
_SEEN = 4096  # ids remembered per connection, to send each event once

# KEYS[1] the address's slots; ARGV: now, expiry of this slot, its id, the limit, the key's ttl (s).
_ADMIT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


OPEN = Gauge("dynamicvault_stream_connections", "Stream connections (WebSocket and SSE) open in this process")


class TooManyConnections(AppError):
    status_code, code = 429, "too_many_connections"


class InvalidEventId(AppError):
    status_code, code = 400, "invalid_event_id"


def resume_point(*candidates: str | None) -> str | None:
    """The first resume point given, checked: an event id (such as 1733380000000-0) Redis can hold."""
    for value in candidates:
        if value is None or value == "":
            continue
        if not EVENT_ID.fullmatch(value) or not _holdable(value):
            raise InvalidEventId("a resume point is an event id such as 1733380000000-0")
        return value
    return None


def _holdable(event_id: str) -> bool:
    ms, seq = event_id_key(event_id)
    return ms <= MAX_ID_PART and seq < MAX_ID_PART  # the next id after it exists too


async def check_not_ahead(redis, since: str | None) -> None:
    """Refuse a resume point after the newest event: the stream would hide every event until then."""
    if since is None:
        return
    newest = await eventlog.last_id(redis)
    if newest is not None and event_id_key(since) > event_id_key(newest):
        raise InvalidEventId("the resume point is after the newest event: resume from an id received")


class Slot:
    """A connection's place among its address's connections."""

    def __init__(self, redis, address: str, settings: Settings) -> None:
        self._redis, self._key = redis, SLOTS_PREFIX + address
        self._id = secrets.token_hex(8)
        self._ttl = settings.stream.heartbeat_s * 3
        self._limit = settings.stream.max_connections_per_ip
        self._held = False

    async def take(self) -> None:
        now = time.time()
        taken = await self._redis.eval(
            _ADMIT, 1, self._key, now, now + self._ttl, self._id, self._limit, int(self._ttl) + 1
        )
        if not taken:
            raise TooManyConnections(
                f"at most {self._limit} stream connections per address",
                headers={"Retry-After": str(int(self._ttl))},
            )
        self._held = True
        OPEN.inc()

    async def refresh(self) -> None:
        await self._redis.zadd(self._key, {self._id: time.time() + self._ttl})
        await self._redis.expire(self._key, int(self._ttl) + 1)

    async def keep(self, every: float, stalled: Callable[[], bool], on_stall: Callable[[], object]) -> None:
        """Refresh the slot every `every` seconds while the connection lives and sends (a task of its
        own); a connection whose send has stalled (its client stopped reading) is ended instead."""
        while True:
            await asyncio.sleep(every)
            if stalled():
                log.info("stream.client_stalled", slot=self._id)
                on_stall()
                return
            try:
                await self.refresh()
            except (RedisError, OSError) as exc:
                log.warning("stream.slot_refresh_failed", error=str(exc)[:200])

    async def release(self) -> None:
        if self._held:
            self._held = False
            OPEN.dec()
            await self._redis.zrem(self._key, self._id)


class Outgoing(NamedTuple):
    """One message as a transport sends it: its id (None for a notice), event name, and JSON text."""

    id: str | None
    event: str
    text: str


HEARTBEAT = Outgoing(None, "heartbeat", "")  # each transport sends its own keep-alive
# The head of every event's message, as app/lib/eventlog.py writes it: its id and event name.
_HEAD = re.compile(rb'\{"id":"([0-9]+-[0-9]+)","event":"([a-z_]+)"')


def notice(name: str, payload: dict[str, Any]) -> Outgoing:
    """A message of the stream itself (app/lib/events.py NOTICES): no id, no topic."""
    if name not in NOTICES:
        raise ValueError(f"unknown notice {name!r}")
    body = {"id": None, "event": name, "topic": None, "payload": payload, "sentAt": _now()}
    return Outgoing(None, name, _text(body))


def _text(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


def _now() -> str:
    return utcnow().isoformat().replace("+00:00", "Z")


async def messages(
    channels: ChannelsPlugin, redis, settings: Settings, topics: list[str], since: str | None, slot: Slot
) -> AsyncIterator[Outgoing]:
    """The connection's messages, notices and heartbeats, until the caller stops iterating. A caller that
    holds one for STREAM_SEND_DEADLINE_S is stuck sending to a client that stopped reading: its task
    is cancelled."""
    owner = asyncio.current_task()
    beat, deadline = (
        settings.stream.heartbeat_s,
        max(settings.stream.send_deadline_s, 2 * settings.stream.heartbeat_s),
    )
    # When the caller was handed the message it holds; None while the stream itself works (a replay page,
    # a Redis read): only a caller that holds a message too long has stalled, never a slow server.
    handed: list[float | None] = [None]

    def stalled() -> bool:
        return handed[0] is not None and time.monotonic() - handed[0] > deadline

    keeper = asyncio.create_task(
        slot.keep(min(beat, deadline / 3), stalled, owner.cancel if owner else lambda: None)
    )
    produced = _messages(channels, redis, settings, topics, since)
    try:
        async for message in produced:
            handed[0] = time.monotonic()
            yield message
            handed[0] = None
    finally:
        keeper.cancel()
        with anyio.CancelScope(shield=True):
            await produced.aclose()


async def _messages(
    channels: ChannelsPlugin, redis, settings: Settings, topics: list[str], since: str | None
) -> AsyncIterator[Outgoing]:
    subscriber = cast(CountingSubscriber, await channels.subscribe(topics))  # the plugin's subscriber_class
    beat = settings.stream.heartbeat_s
    seen: OrderedDict[str, None] = OrderedDict()

    def first_time(event_id: str) -> bool:
        if event_id in seen:
            return False
        seen[event_id] = None
        if len(seen) > _SEEN:
            seen.popitem(last=False)
        return True

    try:
        yield notice("subscribed", {"topics": topics, "since": since})
        through = None
        if since is not None:
            through, more = since, True
            while more:
                # The cap may trim what a long replay has not read yet: each page is checked first.
                oldest = await eventlog.gap(redis, through)
                if oldest is not None:
                    yield notice("stream_gap", {"since": through, "oldestKept": oldest})
                # What the backlog drops while a page is read is in that page or a later one; only
                # what it drops after the last read is lost, and counted.
                subscriber.take_dropped()
                page = await eventlog.replay_page(redis, through, topics)
                through, more = page.through, page.more
                for message in page.messages:
                    yield Outgoing(message["id"], message["event"], _text(message))
        told_behind = False
        while True:
            try:
                raw = await subscriber.next(within=beat)
            except TimeoutError:
                yield HEARTBEAT
                continue
            if raw is None:  # unsubscribed
                return
            dropped = subscriber.take_dropped()
            if dropped:
                yield notice("events_dropped", {"count": dropped})
            if fell_behind(raw):  # once per topic of the connection: said once
                if not told_behind:
                    told_behind = True
                    yield notice(
                        "events_dropped", {"count": None, "reason": "the server fell behind the log"}
                    )
                continue
            told_behind = False
            head = _HEAD.match(raw)
            if head is None:
                continue
            event_id, event = head.group(1).decode(), head.group(2).decode()
            if through is not None and event_id_key(event_id) <= event_id_key(through):
                continue  # the replay sent it
            if first_time(event_id):  # not already sent through another of the topics
                yield Outgoing(event_id, event, raw.decode())
    finally:
        with anyio.CancelScope(shield=True):  # a client that left cancels the generator
            await channels.unsubscribe(subscriber, topics)
