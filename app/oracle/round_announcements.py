"""The `oracle_round_closed` event of each closed round, put into the events outbox once (app/events)."""

from __future__ import annotations

from typing import Any

from app.events import service as events_service
from app.lib.events import asset_topic
from app.oracle import round_repository

ANNOUNCED_ANSWER = ("price", "priceWei", "low", "lowWei", "high", "highWei", "confidence")
PER_BATCH = 1000


async def announce_closed() -> int:
    """Put the `oracle_round_closed` of each closed round not announced yet into the events outbox (the
    close marks it `announced: false` in the same write); how many."""
    count = 0
    while batch := await round_repository.not_announced(PER_BATCH):
        await events_service.announce([_announcement(doc) for doc in batch])
        await round_repository.mark_announced([doc["key"] for doc in batch])
        count += len(batch)
    return count


def _announcement(closed: dict[str, Any]) -> dict[str, Any]:
    """`oracle_round_closed`: the round (its REST id), its token, how it ended and what it answered."""
    answer, decision = closed.get("answer") or {}, closed.get("decision") or {}
    payload = {
        "roundId": closed["key"],
        "tokenId": closed["tokenId"],
        "status": closed["status"],
        "rejectedBy": closed.get("rejectedBy"),
        "decision": decision.get("decision"),
        **{k: str(answer[k]) if k.endswith("Wei") else answer[k] for k in ANNOUNCED_ANSWER if k in answer},
    }
    topics = ["oracle", asset_topic(closed["tokenId"])]
    return events_service.event(f"round:{closed['key']}", "oracle_round_closed", topics, payload)
