"""The audit trail: who changed what, from where (seed bitcoin-custody-backend: audit_logs)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pymongo
from beanie import Document
from pydantic import Field
from pymongo import IndexModel

from app.lib.timeutil import utcnow


class AuditLog(Document):
    action: str  # dotted, e.g. "auth.sign_in", "asset.metadata.update"
    actor: str | None = None  # wallet address, api key id or "system"
    actorType: str = "user"  # user, api_key, system
    entityType: str | None = None
    entityId: str | None = None
    oldValue: dict[str, Any] | None = None
    newValue: dict[str, Any] | None = None
    success: bool = True
    reason: str | None = None
    ipAddress: str | None = None
    userAgent: str | None = None
    requestId: str | None = None
    timestamp: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "auditLogs"
        # Entries leave only through the archive (app/audit/retention.py), which reads a day at a time in
        # this order. No TTL index: a TTL cannot know what was archived, so it would delete entries the
        # moment archiving fell behind it. The TTL index of old ("timestamp") is dropped at start-up.
        indexes = [
            IndexModel([("timestamp", pymongo.ASCENDING), ("_id", pymongo.ASCENDING)], name="timestamp_id"),
            IndexModel(
                [("actor", pymongo.ASCENDING), ("timestamp", pymongo.DESCENDING)], name="actor_timestamp"
            ),
            IndexModel(
                [
                    ("entityType", pymongo.ASCENDING),
                    ("entityId", pymongo.ASCENDING),
                    ("timestamp", pymongo.DESCENDING),
                ],
                name="entity_timestamp",
            ),
            IndexModel(
                [("action", pymongo.ASCENDING), ("timestamp", pymongo.DESCENDING)], name="action_timestamp"
            ),
        ]
        retired_indexes = ["timestamp"]
