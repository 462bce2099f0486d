"""Webhook subscriptions (`webhooks`) and the deliveries of events to them (`webhookDeliveries`).

A delivery is one event for one subscription, unique on (webhookId, eventId), holding the exact body
every attempt sends. Deliveries expire through a TTL index 30 days after they were created, whatever
their status; a subscription stays until its owner deletes it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import pymongo
from beanie import Document, PydanticObjectId
from pydantic import Field
from pymongo import IndexModel

from app.lib.timeutil import utcnow

WEBHOOK_STATUSES = ("active", "disabled")
DISABLED_REASONS = ("gone", "consecutive_failures")
DELIVERY_STATUSES = ("pending", "sending", "delivered", "failed", "skipped")
DELIVERY_RETENTION_S = 30 * 86400


class WebhookSubscription(Document):
    owner: str  # the wallet that made it (an API key acts for its owner's wallet)
    url: str
    topics: list[str]
    description: str = ""
    secret: str  # `whsec_...`, sealed with the platform's secrets key (app/lib/crypto.py)
    status: Literal["active", "disabled"] = "active"
    disabledReason: Literal["gone", "consecutive_failures"] | None = None
    disabledAt: datetime | None = None
    consecutiveFailures: int = 0  # failed attempts since its last success, over all its deliveries
    lastStatusCode: int | None = None
    lastError: str | None = None
    lastDeliveryAt: datetime | None = None  # its last attempt, whatever the outcome
    lastSuccessAt: datetime | None = None
    createdAt: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "webhooks"
        indexes = [
            IndexModel(
                [
                    ("owner", pymongo.ASCENDING),
                    ("createdAt", pymongo.DESCENDING),
                    ("_id", pymongo.DESCENDING),
                ],
                name="owner_createdAt_id",
            ),
            IndexModel([("createdAt", pymongo.DESCENDING), ("_id", pymongo.DESCENDING)], name="createdAt_id"),
            # The fan-out: active subscriptions to any of a batch's topics (a multikey index).
            IndexModel([("status", pymongo.ASCENDING), ("topics", pymongo.ASCENDING)], name="status_topics"),
        ]


class WebhookDelivery(Document):
    webhookId: PydanticObjectId
    eventId: str  # the stream's id: the `webhook-id` header, the same on every attempt
    eventKey: str
    event: str
    topic: str  # the subscribed topic the event came through
    body: bytes  # the JSON every attempt sends, byte for byte
    status: Literal["pending", "sending", "delivered", "failed", "skipped"] = "pending"
    attempts: int = 0
    nextAttemptAt: datetime | None = None
    leaseUntil: datetime | None = None  # while `sending`: after it, the attempt is taken as lost
    claim: str | None = None  # the token of the attempt in flight (compare-and-set)
    lastStatusCode: int | None = None
    lastError: str | None = None
    lastAttemptAt: datetime | None = None
    deliveredAt: datetime | None = None
    createdAt: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "webhookDeliveries"
        indexes = [
            IndexModel(
                [("webhookId", pymongo.ASCENDING), ("eventId", pymongo.ASCENDING)],
                unique=True,
                name="webhook_event_unique",
            ),
            IndexModel(
                [
                    ("webhookId", pymongo.ASCENDING),
                    ("createdAt", pymongo.DESCENDING),
                    ("_id", pymongo.DESCENDING),
                ],
                name="webhook_createdAt_id",
            ),
            # The sweeper: pending ones overdue, sending ones past their lease.
            IndexModel([("status", pymongo.ASCENDING), ("nextAttemptAt", pymongo.ASCENDING)], name="due"),
            IndexModel([("status", pymongo.ASCENDING), ("leaseUntil", pymongo.ASCENDING)], name="leased"),
            IndexModel(
                [("createdAt", pymongo.ASCENDING)],
                name="created_ttl",
                expireAfterSeconds=DELIVERY_RETENTION_S,
            ),
        ]
