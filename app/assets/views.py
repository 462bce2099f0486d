"""Asset views, counted in Redis and flushed into MongoDB exactly once.

A view writes nothing to MongoDB. It increments a pending counter in Redis (and marks the token dirty)
in the same MULTI as the detail's cache read; the `assets.flush_views` job (every 15 s) moves pending
counts into `stats.viewCount`. A reader sees stored + pending + in flight, so every view shows at
once. List items and the viewCount sort use the stored value: they lag by at most one flush interval.

Exactly once: a flush moves a token's pending count, in one Lua step, into an in-flight hash entry
under a new per-token sequence number; MongoDB applies an entry only if `stats.viewFlushSeq` is below
its number (and records it), entries are applied in ascending order, and an entry is deleted only
after that. A flush that crashes leaves its entries for the next one, which re-applies them harmlessly;
two flushes at once apply each entry once. Readers add only the in-flight entries MongoDB has not
applied (number above `viewFlushSeq`), so the visible count neither dips nor counts twice.
"""

from __future__ import annotations

from typing import Any

import msgspec
import structlog
from redis.exceptions import RedisError

from app.assets import repository

log = structlog.get_logger(__name__)

VIEWS_DIRTY = "views:dirty"
FLUSH_BATCH = 500

# KEYS: pending, in-flight hash, sequence; ARGV: the token's viewFlushSeq in MongoDB. Returns the
# in-flight entries (seq, count, ...), including the one just made, if any.
MOVE_VIEWS_LUA = """
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n > 0 then
  local top = math.max(tonumber(redis.call('GET', KEYS[3]) or '0'), tonumber(ARGV[1]))
  for _, seq in ipairs(redis.call('HKEYS', KEYS[2])) do
    top = math.max(top, tonumber(seq))
  end
  top = top + 1
  redis.call('SET', KEYS[3], top)
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], top, n)
end
return redis.call('HGETALL', KEYS[2])
"""
# KEYS: pending, in-flight hash, dirty set; ARGV: token, how many views to take back, applied seqs...
# Deletes the applied entries, and the token from the dirty set once nothing is left to flush.
SETTLE_VIEWS_LUA = """
local left = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[2]) > 0 then
  left = redis.call('DECRBY', KEYS[1], ARGV[2])
end
for i = 3, #ARGV do
  redis.call('HDEL', KEYS[2], ARGV[i])
end
if left <= 0 then
  redis.call('DEL', KEYS[1])
  if redis.call('HLEN', KEYS[2]) == 0 then
    redis.call('SREM', KEYS[3], ARGV[1])
    return 1
  end
end
return 0
"""


def _pending_key(token_id: int) -> str:
    return f"views:pending:{token_id}"


def _inflight_key(token_id: int) -> str:
    return f"views:inflight:{token_id}"


def _seq_key(token_id: int) -> str:
    return f"views:seq:{token_id}"


class ViewCounters(msgspec.Struct, frozen=True):
    """A token's views not yet in MongoDB, read in one Redis transaction."""

    pending: int = 0
    inflight: dict[int, int] = {}  # flush seq -> views
    top: int = 0  # the last flush seq handed out


def queue_views(pipe, token_id: int, *, count: bool) -> None:
    """Queue the read of a token's counters in a pipeline (or MULTI), counting one view first if `count`."""
    if count:
        pipe.incr(_pending_key(token_id))
        pipe.sadd(VIEWS_DIRTY, token_id)
    else:
        pipe.get(_pending_key(token_id))
    pipe.hgetall(_inflight_key(token_id))
    pipe.get(_seq_key(token_id))


def counters(replies: list[Any], *, counted: bool) -> ViewCounters:
    """The counters from the replies of what `queue_views` queued."""
    pending, *rest = replies
    inflight, top = rest[1:] if counted else rest
    return ViewCounters(
        pending=max(int(pending or 0), 0),
        inflight={int(seq): int(n) for seq, n in (inflight or {}).items()},
        top=int(top or 0),
    )


async def snapshot(redis, token_id: int) -> ViewCounters:
    pipe = redis.pipeline(transaction=True)
    queue_views(pipe, token_id, count=False)
    return counters(await pipe.execute(), counted=False)


async def snapshot_or_none(redis, token_id: int) -> ViewCounters | None:
    """The counters, or None when Redis cannot say (the stored count is then all a reader sees)."""
    try:
        return await snapshot(redis, token_id)
    except (RedisError, OSError) as exc:
        log.warning("assets.views.read_failed", token_id=token_id, error=str(exc))
        return None


def applied_seq(doc: dict[str, Any]) -> int:
    """The last flush MongoDB applied to this (raw) asset."""
    return int((doc.get("stats") or {}).get("viewFlushSeq") or 0)


def visible_views(stats: dict[str, Any], views: ViewCounters | None) -> int:
    """Stored views plus those not yet in MongoDB (the in-flight entries it has not applied)."""
    stored = int(stats.get("viewCount") or 0)
    if views is None:
        return stored
    applied = int(stats.get("viewFlushSeq") or 0)
    return stored + views.pending + sum(n for seq, n in views.inflight.items() if seq > applied)


async def unview(redis, token_id: int) -> None:
    """Take back one view of a token (raises RedisError when Redis cannot)."""
    script = redis.register_script(SETTLE_VIEWS_LUA)
    await script(keys=[_pending_key(token_id), _inflight_key(token_id), VIEWS_DIRTY], args=[token_id, 1])


def _pairs(flat: list[Any]) -> dict[int, int]:
    return {int(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}


async def move_views(redis, token_ids: list[int]) -> dict[int, dict[int, int]]:
    """Flush step 1: each token's pending views become a numbered in-flight entry; returns all entries
    per token (an empty dict for a token with nothing to apply, so step 3 still settles it)."""
    if not token_ids:
        return {}
    # MongoDB's last applied seq is a floor for the next one, should Redis have lost the counters.
    floors = await repository.applied_view_seqs(token_ids)
    script = redis.register_script(MOVE_VIEWS_LUA)
    pipe = redis.pipeline(transaction=False)
    for token_id in token_ids:
        await script(
            keys=[_pending_key(token_id), _inflight_key(token_id), _seq_key(token_id)],
            args=[floors.get(token_id, 0)],
            client=pipe,
        )
    replies = await pipe.execute()
    return {token_id: _pairs(reply) for token_id, reply in zip(token_ids, replies, strict=True)}


async def apply_views(entries: dict[int, dict[int, int]]) -> int:
    """Flush step 2: add each in-flight entry to `stats.viewCount` unless MongoDB has it already."""
    return await repository.add_views(entries)


async def settle_views(redis, entries: dict[int, dict[int, int]]) -> None:
    """Flush step 3: forget the applied entries, and the tokens with nothing left to flush."""
    script = redis.register_script(SETTLE_VIEWS_LUA)
    pipe = redis.pipeline(transaction=False)
    for token_id, by_seq in entries.items():
        await script(
            keys=[_pending_key(token_id), _inflight_key(token_id), VIEWS_DIRTY],
            args=[token_id, 0, *by_seq],
            client=pipe,
        )
    if entries:
        await pipe.execute()


async def flush_views(redis, *, batch_size: int = FLUSH_BATCH) -> dict[str, int]:
    """Move every pending view count into MongoDB, exactly once (safe to crash, retry or run twice)."""
    tokens = [int(member) async for member in redis.sscan_iter(VIEWS_DIRTY, count=batch_size)]
    applied = 0
    for start in range(0, len(tokens), batch_size):
        batch = tokens[start : start + batch_size]
        entries = await move_views(redis, batch)
        applied += await apply_views(entries)
        await settle_views(redis, entries)
    return {"tokens": len(tokens), "applied": applied}


def pending_keys(token_ids: list[int]) -> list[str]:
    """The Redis keys of these tokens' pending views (for benchmarks and checks)."""
    return [_pending_key(token_id) for token_id in token_ids]
