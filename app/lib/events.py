"""What the platform announces: topics, event names and the one message shape, for the stream and webhooks.

A client subscribes to topics: `sales`, `listings`, `transfers`, `prices`, `oracle`, `media`, or
`asset:{tokenId}` for everything about one token. Event names follow OpenSea's Stream API where it
has one (`item_listed`, `item_sold`, `item_transferred`, `item_cancelled`, `item_metadata_updated`);
what a chain reorganisation takes back is announced again as `{event}_removed`.

Every message, on the WebSocket, as an SSE `data` and as a webhook body, is
`{"id", "event", "topic", "payload", "sentAt"}`: `id` is the event's id (ordered: a later event has a
greater id; the resume point of the stream, the `webhook-id` of a delivery), `topic` the subscribed
topic it came through (`first_match`), `payload` the ids of the REST resources it concerns, with the
figures that changed.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from app.lib.errors import AppError

TOPICS = ("sales", "listings", "transfers", "prices", "oracle", "media")
ASSET_PREFIX = "asset:"
MAX_TOKEN_ID = 2**63 - 1  # MongoDB's 8-byte integer: a larger id names no asset
_ASSET_TOPIC = re.compile(r"asset:(0|[1-9][0-9]{0,18})")
# An event id: a Redis stream id, milliseconds and a sequence.
EVENT_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
EVENT_ID_PATTERN = r"^[0-9]{1,20}-[0-9]{1,20}$"
TOPIC_PATTERN = r"^(sales|listings|transfers|prices|oracle|media|asset:(0|[1-9][0-9]{0,18}))$"
TOPICS_PATTERN = (
    r"^(sales|listings|transfers|prices|oracle|media|asset:(0|[1-9][0-9]{0,18}))"
    r"(,(sales|listings|transfers|prices|oracle|media|asset:(0|[1-9][0-9]{0,18})))*$"
)

# Event name -> what it says. The chain's events have a `_removed` twin for what a reorg took back.
EVENTS = {
    "item_listed": "a token was listed on the marketplace (listings, asset)",
    "item_cancelled": "a listing was withdrawn (listings, asset)",
    "item_sold": "a token was bought through the marketplace (sales, asset)",
    "item_transferred": "a token changed hands, minted included (transfers, asset)",
    "item_metadata_updated": "an asset's metadata changed (asset)",
    "price_updated": "the oracle's price of a token was confirmed on-chain (prices, asset)",
    "oracle_round_closed": "a round of the oracle's operators closed, with its answer (oracle, asset)",
    "media_processed": "an asset's media finished processing (media, asset)",
}
KNOWN = [*TOPICS, "asset:{tokenId}"]  # as a refusal lists them
REMOVABLE = ("item_listed", "item_cancelled", "item_sold", "item_transferred", "price_updated")
REMOVED_SUFFIX = "_removed"
# What the stream itself says, outside any topic.
NOTICES = {
    "subscribed": "the topics are live: what is published from now on is sent",
    "stream_gap": "the resume point is older than the kept history: events after it were lost",
    "events_dropped": "the connection fell behind and its oldest unsent events were dropped",
    "error": "the request was refused; the connection closes",
}


class InvalidTopics(AppError):
    status_code, code = 400, "invalid_topics"


def asset_topic(token_id: int) -> str:
    return f"{ASSET_PREFIX}{token_id}"


def topic_valid(topic: str) -> bool:
    if topic in TOPICS:
        return True
    return bool(_ASSET_TOPIC.fullmatch(topic)) and int(topic[len(ASSET_PREFIX) :]) <= MAX_TOKEN_ID


def parse_topics(raw: str | list[str] | None, limit: int) -> list[str]:
    """The distinct topics of `sales,asset:42` (or a list of them), in the order given; refused when empty,
    unknown, or more than `limit`."""
    items = raw.split(",") if isinstance(raw, str) else list(raw or [])
    topics = list(dict.fromkeys(item.strip() for item in items if item.strip()))
    if not topics:
        raise InvalidTopics("name at least one topic", details={"topics": KNOWN})
    unknown = [topic for topic in topics if not topic_valid(topic)]
    if unknown:
        raise InvalidTopics(f"unknown topic {unknown[0][:64]!r}", details={"topics": KNOWN})
    if len(topics) > limit:
        raise InvalidTopics(f"at most {limit} topics")
    return topics


def first_match(event_topics: list[str], subscribed: list[str] | set[str]) -> str | None:
    """The topic an event reaches a subscriber through: the first of the event's own topics (its general
    one, then `asset:{tokenId}`) that the subscriber subscribed to. One rule for the live stream, the
    replay and the webhooks, so an event names the same topic however it arrives."""
    chosen = set(subscribed)
    return next((topic for topic in event_topics if topic in chosen), None)


def message(event_id: str, event: str, topic: str, payload: dict[str, Any], sent_at: datetime) -> dict:
    return {
        "id": event_id,
        "event": event,
        "topic": topic,
        "payload": payload,
        "sentAt": sent_at.isoformat().replace("+00:00", "Z"),
    }


def event_id_key(event_id: str) -> tuple[int, int]:
    """An event id as a sortable pair."""
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq)
