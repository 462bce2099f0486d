"""The webhooks domain: subscriptions to topics, and the fan-out of published events into deliveries.

A subscription belongs to the wallet that made it (signed in, or an API key with `webhooks:write`):
its owner sees and deletes it, an admin any; to anyone else it does not exist (404). Its URL is checked
against the outbound rules when it is made, and again at every delivery; its secret is shown once and
kept sealed. The events dispatcher (app/events) hands published events to `fan_out`, which makes one
delivery per active subscription and event (idempotently) and queues its first attempt; `delivery`
makes the attempts, retries and sweeps.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections import defaultdict
from datetime import datetime
from typing import Any

import msgspec
from bson import ObjectId

from app.audit import service as audit_service
from app.config import Settings
from app.lib.context import SYSTEM, RequestContext
from app.lib.crypto import secret_box
from app.lib.errors import AppError, Conflict, NotFound, require_one_of
from app.lib.events import KNOWN, InvalidTopics, first_match, parse_topics, topic_valid
from app.lib.leases import lease
from app.lib.params import parse_limit, signed_page
from app.lib.security import Principal
from app.lib.timeutil import utcnow
from app.webhooks import delivery, repository, schemas
from app.webhooks.documents import DELIVERY_STATUSES

PERMISSION = "webhooks:write"
WEBHOOK_ID_PATTERN = r"^[0-9a-fA-F]{24}$"
SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32  # Standard Webhooks: 24 to 64 random bytes
CREATE_LOCK, CREATE_LOCK_MS = "dv:webhooks:create:", 30_000
CREATE_WAITS, CREATE_WAIT_S = 40, 0.05  # how long a creation waits for another of the owner's
DELIVER_JOB = delivery.DELIVER_JOB


def _missing(webhook_id: str) -> NotFound:
    return NotFound(f"no webhook {webhook_id[:64]}", code="webhook_not_found")


def _object_id(webhook_id: str) -> ObjectId:
    """The id a route names; 404 for anything that cannot be one (no subscription has such an id)."""
    if not isinstance(webhook_id, str) or len(webhook_id) != 24 or not ObjectId.is_valid(webhook_id):
        raise _missing(str(webhook_id))
    return ObjectId(webhook_id)


def _now() -> datetime:
    """Now, to MongoDB's millisecond, so what a write answers is what a read of it answers."""
    now = utcnow()
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _owns(principal: Principal, doc: dict[str, Any]) -> bool:
    return principal.is_admin or principal.wallet_address.lower() == str(doc.get("owner", "")).lower()


async def _visible(webhook_id: str, principal: Principal) -> dict[str, Any]:
    """The subscription, when it exists and the caller owns it (or is an admin); else 404, never 403."""
    doc = await repository.find_webhook(_object_id(webhook_id))
    if doc is None or not _owns(principal, doc):
        raise _missing(webhook_id)
    return doc


def new_secret() -> str:
    """`whsec_` and the base64 of 32 random bytes: the form Standard Webhooks libraries take."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def view(doc: dict[str, Any]) -> schemas.WebhookOut:
    return schemas.WebhookOut(
        id=str(doc["_id"]),
        url=doc["url"],
        topics=list(doc["topics"]),
        description=doc.get("description", ""),
        owner=doc["owner"],
        status=doc["status"],
        disabledReason=doc.get("disabledReason"),
        disabledAt=doc.get("disabledAt"),
        consecutiveFailures=doc.get("consecutiveFailures", 0),
        lastStatusCode=doc.get("lastStatusCode"),
        lastError=doc.get("lastError"),
        lastDeliveryAt=doc.get("lastDeliveryAt"),
        lastSuccessAt=doc.get("lastSuccessAt"),
        createdAt=doc["createdAt"],
    )


def delivery_view(doc: dict[str, Any]) -> schemas.DeliveryOut:
    return schemas.DeliveryOut(
        id=str(doc["_id"]),
        webhookId=str(doc["webhookId"]),
        eventId=doc["eventId"],
        event=doc["event"],
        topic=doc["topic"],
        status=doc["status"],
        attempts=doc.get("attempts", 0),
        nextAttemptAt=doc.get("nextAttemptAt"),
        lastStatusCode=doc.get("lastStatusCode"),
        lastError=doc.get("lastError"),
        lastAttemptAt=doc.get("lastAttemptAt"),
        deliveredAt=doc.get("deliveredAt"),
        createdAt=doc["createdAt"],
    )


def _topics(settings: Settings, topics: list[str]) -> list[str]:
    """The distinct topics, each written exactly as the catalog names it; 400 `invalid_topics`."""
    unknown = next((topic for topic in topics if not topic_valid(topic)), None)
    if unknown is not None:
        raise InvalidTopics(f"unknown topic {unknown[:64]!r}", details={"topics": KNOWN})
    return parse_topics(topics, settings.stream.max_topics)


# ---------------------------------------------------------------- subscriptions


async def create_webhook(
    redis,
    settings: Settings,
    data: schemas.WebhookCreate,
    principal: Principal,
    context: RequestContext = SYSTEM,
) -> schemas.WebhookCreated:
    """Subscribe `url` to topics; the answer holds the signing secret, which is never shown again."""
    topics = _topics(settings, data.topics)
    await delivery.check_url(settings, data.url)
    # One creation per owner at a time, so concurrent ones cannot all pass the count; the others wait.
    key = f"{CREATE_LOCK}{principal.wallet_address}"
    for _ in range(CREATE_WAITS):
        async with lease(redis, key, CREATE_LOCK_MS) as held:
            if held:
                document = await _insert_within_limit(settings, data, topics, principal)
                break
        await asyncio.sleep(CREATE_WAIT_S)
    else:
        raise AppError(
            "another webhook of yours is being created; try again",
            code="webhook_creation_busy",
            status_code=503,
            headers={"Retry-After": "1"},
        )
    secret = document.pop("_secret")
    await audit_service.record_change(
        "webhook.create",
        "webhook",
        document,
        _audited,
        principal=principal,
        context=context,
        old=None,
        new=document,
    )
    return schemas.WebhookCreated(**msgspec.structs.asdict(view(document)), secret=secret)


async def _insert_within_limit(
    settings: Settings, data: schemas.WebhookCreate, topics: list[str], principal: Principal
) -> dict[str, Any]:
    limit = settings.webhook.max_per_owner
    if await repository.count_owned(principal.wallet_address) >= limit:
        raise Conflict(f"at most {limit} webhooks per owner", code="too_many_webhooks")
    secret = new_secret()
    document = {
        "owner": principal.wallet_address,
        "url": data.url,
        "topics": topics,
        "description": data.description,
        "secret": secret_box(settings).seal(secret),
        "status": "active",
        "disabledReason": None,
        "disabledAt": None,
        "consecutiveFailures": 0,
        "lastStatusCode": None,
        "lastError": None,
        "lastDeliveryAt": None,
        "lastSuccessAt": None,
        "createdAt": _now(),
    }
    document["_id"] = await repository.insert_webhook(document)
    return {**document, "_secret": secret}


async def list_webhooks(
    settings: Settings, principal: Principal, *, limit: int | None = None, cursor: str | None = None
) -> schemas.WebhookPage:
    """The caller's subscriptions (an admin's: everyone's), newest first, in keyset pages."""
    size = parse_limit(limit)
    query = repository.webhook_query(None if principal.is_admin else principal.wallet_address)

    async def fetch(after):
        return await repository.webhook_page(
            query, limit=size, after=after, max_time_ms=settings.mongodb.max_time_ms
        )

    secret = settings.auth.jwt_secret.get_secret_value()
    docs, next_cursor = await signed_page(secret, "webhooks", cursor, fetch)
    return schemas.WebhookPage(items=[view(d) for d in docs], nextCursor=next_cursor, limit=size)


async def get_webhook(webhook_id: str, principal: Principal) -> schemas.WebhookOut:
    """One subscription and how its deliveries fare (never its secret)."""
    return view(await _visible(webhook_id, principal))


async def delete_webhook(webhook_id: str, principal: Principal, context: RequestContext = SYSTEM) -> None:
    """Delete a subscription: its deliveries not yet made are skipped."""
    doc = await _visible(webhook_id, principal)
    deleted = await repository.delete_webhook(doc["_id"])
    if deleted is None:
        raise _missing(webhook_id)
    await repository.skip_pending(deleted["_id"], delivery.DELETED)
    await audit_service.record_change(
        "webhook.delete",
        "webhook",
        deleted,
        _audited,
        principal=principal,
        context=context,
        old=deleted,
        new=None,
    )


async def list_deliveries(
    settings: Settings,
    webhook_id: str,
    principal: Principal,
    *,
    status: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> schemas.DeliveryPage:
    """A subscription's deliveries (the last 30 days'), newest first, in keyset pages."""
    doc = await _visible(webhook_id, principal)
    if status is not None:
        require_one_of(status, DELIVERY_STATUSES, field="status", code="invalid_status")
    size = parse_limit(limit)
    query = repository.delivery_query(doc["_id"], status)

    async def fetch(after):
        return await repository.delivery_page(
            query, limit=size, after=after, max_time_ms=settings.mongodb.max_time_ms
        )

    secret = settings.auth.jwt_secret.get_secret_value()
    docs, next_cursor = await signed_page(secret, f"webhookDeliveries:{status or ''}", cursor, fetch)
    return schemas.DeliveryPage(items=[delivery_view(d) for d in docs], nextCursor=next_cursor, limit=size)


def _audited(doc: dict[str, Any]) -> dict[str, Any]:
    """A webhook as the audit log keeps it: never the secret, sealed or not."""
    return {"owner": doc["owner"], "url": doc["url"], "topics": doc["topics"]}


# ---------------------------------------------------------------- fan-out and delivery


async def fan_out(clients, settings: Settings, events: list[dict]) -> int:
    """One delivery per active subscription and event whose topics meet (through the first of the
    subscription's topics the event was published to), each queued for its first attempt.

    Idempotent: a delivery is unique on (webhookId, eventId), so events handed over again create
    nothing. One query finds the subscriptions for the whole batch, one bulk write stores the deliveries.
    Answers how many deliveries were created.
    """
    if not events:
        return 0
    subscriptions = await repository.active_for_topics(sorted({t for e in events for t in e["topics"]}))
    by_topic: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for subscription in subscriptions:
        for topic in subscription["topics"]:
            by_topic[topic].append(subscription)
    now, documents = _now(), []
    for event in events:
        met = {s["_id"]: s for topic in event["topics"] for s in by_topic.get(topic, ())}
        for subscription in met.values():
            topic = first_match(event["topics"], subscription["topics"])
            if topic is not None:
                documents.append(delivery.new_delivery(subscription["_id"], event, topic, now))
    if not documents:
        return 0
    created = await repository.insert_deliveries(documents)
    await delivery.enqueue_first(clients.redis, created)
    return len(created)


async def deliver(clients, settings: Settings, delivery_id: str) -> dict[str, Any]:
    """One attempt of one delivery (the `webhooks.deliver` job)."""
    return await delivery.attempt(clients, settings, delivery_id)


async def sweep(clients, settings: Settings) -> dict[str, int]:
    """Queue again the attempts whose job was lost (the `webhooks.sweep` cron)."""
    return await delivery.sweep(clients, settings)
