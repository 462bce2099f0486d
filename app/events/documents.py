"""The outbox of announcements: every event the platform will publish, written beside what it announces.

A producer (the indexer, the media worker, a metadata change, a closing round) writes its event here
in the same pass as its own writes, keyed by what it announces, so writing it again adds nothing. The
dispatcher (app/events/service.py) publishes each to the stream, then hands it to the webhooks; a
crash at any step leaves the event to the next pass, and neither step happens twice.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pymongo
from beanie import Document
from pydantic import Field
from pymongo import IndexModel

from app.lib.timeutil import utcnow

DONE_TTL_S = 7 * 86400  # an event published and handed to the webhooks is kept a week, then expires


class EventRecord(Document):
    id: str  # the producer's key: what the event announces, e.g. "chain:<chain event id>:0"
    event: str
    topics: list[str]
    payload: dict[str, Any]
    createdAt: datetime = Field(default_factory=utcnow)
    eventId: str | None = None  # the stream's id, once published
    publishedAt: datetime | None = None
    doneAt: datetime | None = None  # handed to the webhooks too
    order: int = 0  # its place among the events recorded with it
    publishAttempts: int = 0  # failed publications (an error other than Redis being away)
    lastError: str | None = None
    failedAt: datetime | None = None  # set aside after too many: never published (metric, alert)

    class Settings:
        name = "events"
        indexes = [
            IndexModel(
                [("eventId", pymongo.ASCENDING), ("createdAt", pymongo.ASCENDING)], name="eventId_createdAt"
            ),
            IndexModel(
                [("doneAt", pymongo.ASCENDING), ("createdAt", pymongo.ASCENDING)], name="doneAt_createdAt"
            ),
            IndexModel([("doneAt", pymongo.ASCENDING)], name="done_ttl", expireAfterSeconds=DONE_TTL_S),
        ]
