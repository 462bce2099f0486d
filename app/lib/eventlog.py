"""Events in Redis: one ordered log, which every api process reads live and clients resume from.

Publishing an event is one Lua script, so it is atomic and happens at most once per event key:
- it appends the event to the log (`dv:events`, a Redis stream capped at STREAM_HISTORY entries), whose
  entry id becomes the event's id; every api process follows the log (app/lib/channels.py) and hands
  each event to its subscribers of the event's topics;
- it remembers the key for a week, so publishing the same event again (a dispatcher that crashed
  before recording the id) answers the first id instead of announcing it twice;
- it records the id of the newest entry the cap trimmed away: the floor. A reader (a client resuming,
  or an api process that fell behind) whose last id is below the floor has lost events, and knows
  it; at or above it, it has lost none.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from app.lib.events import event_id_key, first_match, message

LOG_KEY = "dv:events"
FLOOR_KEY = "dv:events:floor"
PUBLISHED_KEY = "dv:events:published:"
PUBLISHED_TTL_S = 7 * 86400
REPLAY_PAGE = 1000

# KEYS: log, floor, published marker. ARGV: the log entry, the history, the marker's ttl (s), its time.
# Answers "<id> <time>": of this publication, or of the first one of the key.
_PUBLISH = """
local done = redis.call('GET', KEYS[3])
if done then return done end
local history = tonumber(ARGV[2])
local over = redis.call('XLEN', KEYS[1]) + 1 - history
if over > 0 then
  local trimmed = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', over)
  redis.call('SET', KEYS[2], trimmed[#trimmed][1])
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', history, '*', 'data', ARGV[1])
local published = id .. ' ' .. ARGV[4]
redis.call('SET', KEYS[3], published, 'EX', ARGV[3])
return published
"""


def _json(value: Any) -> str:
    # `default=str`: a value JSON has no type for (a date, a Decimal128) is sent as its text rather than
    # stopping the dispatcher on one event forever
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


class Published(NamedTuple):
    id: str
    sent_at: datetime  # to the millisecond, as MongoDB keeps it, so every copy of the message agrees


async def publish(
    redis,
    *,
    key: str,
    event: str,
    topics: list[str],
    payload: dict[str, Any],
    sent_at: datetime,
    history: int,
) -> Published:
    """Publish one event, once per `key`: its id and time (those of the first publication of the key)."""
    sent_at = sent_at.replace(microsecond=sent_at.microsecond // 1000 * 1000)
    stamp = sent_at.isoformat()
    entry = _json({"event": event, "topics": topics, "payload": payload, "sentAt": stamp})
    found = await redis.eval(
        _PUBLISH, 3, LOG_KEY, FLOOR_KEY, PUBLISHED_KEY + key, entry, history, PUBLISHED_TTL_S, stamp
    )
    event_id, _, first = text(found).partition(" ")
    return Published(event_id, datetime.fromisoformat(first) if first else sent_at)


def entry_messages(event_id: str, data: bytes | str, topics: set[str] | list[str]) -> list[tuple[str, bytes]]:
    """A log entry as the message each of `topics` it was published to sends: (topic, JSON)."""
    entry = json.loads(data)
    sent_at = datetime.fromisoformat(entry["sentAt"])
    return [
        (topic, _json(message(event_id, entry["event"], topic, entry["payload"], sent_at)).encode())
        for topic in entry["topics"]
        if topic in topics
    ]


async def floor(redis) -> str | None:
    """The newest event the log's cap trimmed away, if any was."""
    found = await redis.get(FLOOR_KEY)
    return None if found is None else text(found)


async def gap(redis, since: str) -> str | None:
    """When events after `since` may be lost (trimmed by the cap, or the log itself lost, as when Redis
    lost its data): the oldest event kept (or `since` itself when nothing is kept). None when none was."""
    trimmed = await floor(redis)
    first = await redis.xrange(LOG_KEY, min="-", max="+", count=1)
    oldest = text(first[0][0]) if first else None
    if trimmed is not None:  # exact: everything up to the floor was trimmed, everything after it kept
        return (oldest or trimmed) if event_id_key(since) < event_id_key(trimmed) else None
    if oldest is None or event_id_key(since) < event_id_key(oldest):
        # never trimmed, yet the log starts after `since` or is empty: the log was lost
        return oldest or since
    return None


@dataclass
class Page:
    messages: list[dict[str, Any]]  # of the topics asked for, oldest first
    through: str  # the last event read (of any topic): the next page starts after it
    more: bool  # the log may hold more after `through`


async def replay_page(redis, since: str, topics: list[str], count: int = REPLAY_PAGE) -> Page:
    """The messages of `topics` among the next `count` events of the log after the event `since`."""
    entries = await redis.xrange(LOG_KEY, min=f"({since}", max="+", count=count)  # exclusive (Redis 6.2)
    found: list[dict[str, Any]] = []
    through = since
    for raw_id, fields in entries:
        through = text(raw_id)
        entry = json.loads(fields[b"data"] if b"data" in fields else fields["data"])
        topic = first_match(entry["topics"], topics)
        if topic is not None:
            sent_at = datetime.fromisoformat(entry["sentAt"])
            found.append(message(through, entry["event"], topic, entry["payload"], sent_at))
    return Page(messages=found, through=through, more=len(entries) == count)


async def last_id(redis) -> str | None:
    """The newest event's id, if any is kept."""
    entries = await redis.xrevrange(LOG_KEY, max="+", min="-", count=1)
    if not entries:
        return None
    return text(entries[0][0])


def text(value: bytes | str) -> str:
    """A Redis reply as text (clients answer bytes unless told to decode)."""
    return value.decode() if isinstance(value, bytes) else value
