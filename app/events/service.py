"""The events domain: what producers call to announce, and the dispatcher that publishes and hands over.

Producers (market indexing, media, assets, the oracle's rounds) call `announce` with events keyed by
what they announce, in the same pass as their own writes, then `dispatch` (best effort: the
`events.dispatch` cron runs it every few seconds for whatever a failure left). The dispatcher, one at
a time across processes (a Redis lease, so ids follow the order events were recorded in):
1. publishes each unpublished event to Redis (app/lib/eventlog.py): at most once per key, whatever
   crashes in between, and records the id it got;
2. hands the published ones to the webhooks (app/webhooks), which make one delivery per subscription
   and event, idempotently, and then marks them done.
"""

from __future__ import annotations

from typing import Any

import structlog
from prometheus_client import Gauge
from redis.exceptions import RedisError

from app.config import Settings
from app.events import repository
from app.lib import eventlog
from app.lib.events import EVENTS, REMOVABLE, REMOVED_SUFFIX
from app.lib.leases import lease
from app.lib.timeutil import utcnow
from app.webhooks import service as webhooks_service

log = structlog.get_logger(__name__)

WAITING = Gauge(
    "dynamicvault_events_waiting",
    "Announced events not yet published (unpublished), not yet handed to the webhooks (unhanded), or set "
    "aside after failing to publish (failed)",
    ["stage"],
)
DISPATCH_LEASE = "dv:events:dispatch"
DISPATCH_LEASE_MS = 60_000
BATCH = 500
MAX_BATCHES = 10  # a pass's bound, well inside its lease
MAX_PUBLISH_ATTEMPTS = 5  # an event that failed to publish this often is set aside (`failedAt`)


def event(key: str, name: str, topics: list[str], payload: dict[str, Any]) -> dict[str, Any]:
    """One announcement for `announce`; `key` names what it announces, so announcing again adds nothing."""
    base = name.removesuffix(REMOVED_SUFFIX)
    if base not in EVENTS or (base != name and base not in REMOVABLE):
        raise ValueError(f"unknown event {name!r}")
    return {"_id": key, "event": name, "topics": list(dict.fromkeys(topics)), "payload": payload}


async def announce(events: list[dict[str, Any]]) -> int:
    """Record events to publish; how many were new."""
    return await repository.record(events)


async def recorded(keys: list[str]) -> dict[str, str]:
    """Which of these announcements are already recorded: key -> event name."""
    return await repository.recorded(keys) if keys else {}


async def dispatch(clients, settings: Settings, keys: list[str] | None = None) -> dict[str, int]:
    """Publish what is unpublished and hand what is published to the webhooks: everything waiting, at most
    MAX_BATCHES batches a pass (the cron comes back for the rest), or only the events `keys`."""
    published = handed = 0
    # A pass is a few batches: one that runs past its lease time is stuck (on a call that never answers),
    # and must not hold publication up for everyone beyond it.
    async with lease(clients.redis, DISPATCH_LEASE, DISPATCH_LEASE_MS, max_hold_ms=DISPATCH_LEASE_MS) as held:
        if not held:
            return {"published": 0, "handed": 0, "busy": 1}
        if keys is not None and await repository.waiting_before(keys):
            keys = None  # older events wait (an outage, a busy pass): all go, in order
        for _ in range(MAX_BATCHES):
            batch = await repository.unpublished(BATCH, keys)
            failed = await _publish(clients.redis, settings, batch) if batch else 0
            published += len(batch) - failed
            if len(batch) < BATCH or failed:
                break  # a failure counts once a pass: the next pass (the cron's) tries again
        for _ in range(MAX_BATCHES):
            batch = await repository.not_handed_over(BATCH, keys)
            if batch:
                await webhooks_service.fan_out(clients, settings, [_as_published(e) for e in batch])
                await repository.mark_done([e["_id"] for e in batch], utcnow())
                handed += len(batch)
            if len(batch) < BATCH:
                break
    return {"published": published, "handed": handed}


async def dispatch_soon(clients, settings: Settings, keys: list[str] | None = None) -> None:
    """`dispatch` for a producer that has just announced (`keys`, or all that waits): a failure, or another
    dispatcher at work, leaves them to the `events.dispatch` cron, within seconds."""
    try:
        await dispatch(clients, settings, keys)
    except Exception as exc:  # the producer's own work is done; the cron publishes what is left
        log.warning("events.dispatch_failed", error=str(exc)[:300])


async def _publish(redis, settings: Settings, batch: list[dict[str, Any]]) -> int:
    """Publish each event of the batch; how many failed. What was published is recorded even when one
    fails; Redis failing (whatever the error) stops the pass, and an event that fails on its own, with
    Redis answering, MAX_PUBLISH_ATTEMPTS passes running is set aside (logged as an alert)."""
    done, failed = [], 0
    try:
        for record in batch:
            try:
                published = await eventlog.publish(
                    redis,
                    key=record["_id"],
                    event=record["event"],
                    topics=record["topics"],
                    payload=record["payload"],
                    sent_at=utcnow(),
                    history=settings.stream.history,
                )
            except (RedisError, OSError):
                raise  # Redis is away, full or read-only: the next pass publishes from here
            except Exception as exc:
                failed += 1
                set_aside = await repository.publish_failed(
                    record["_id"], str(exc)[:300], MAX_PUBLISH_ATTEMPTS
                )
                log.error("events.publish_failed", key=record["_id"], error=str(exc)[:300], alert=set_aside)
                continue
            done.append((record["_id"], published.id, published.sent_at))
    finally:
        await repository.mark_published(done)
    return failed


def _as_published(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": record["eventId"],
        "key": record["_id"],
        "event": record["event"],
        "topics": record["topics"],
        "payload": record["payload"],
        "sentAt": record["publishedAt"],
    }


async def refresh_metrics(clients) -> None:
    """The outbox's backlog, before a scrape of /metrics: a growing one means the dispatcher is stuck."""
    for stage, count in (await repository.backlog()).items():
        WAITING.labels(stage).set(count)
