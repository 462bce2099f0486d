"""The verdicts rounds give their members' predictions (app/oracle/rounds.py): `accepted` or `rejected`
with a reason, `submitted` while an accepted one's round answer is on its way to the chain; and those a
crash or a late join left `pending`, settled by a later pass."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId

from app.config import Settings
from app.oracle import round_repository

Verdict = tuple[ObjectId, str, str | None, str]  # a prediction's: its id, status, reason and round


def on_chain(settings: Settings, closed: dict[str, Any], verdicts: list[Verdict]) -> list[Verdict]:
    """The verdicts of a round decided `published`, while the chain is on: an accepted prediction is
    `submitted` until the round's push settles (publication_repository.settle_predictions); one the
    chain was switched off under waits for it to return."""
    if not settings.chain.rpc_url or (closed.get("decision") or {}).get("decision") != "published":
        return verdicts
    return [(pid, "submitted" if s == "accepted" else s, reason, key) for pid, s, reason, key in verdicts]


async def settle_stragglers(settings: Settings, now: datetime) -> int:
    """Give the pending predictions of closed rounds their verdict: the round's, when it counted them (a
    crash came between the close and the verdicts), else `rejected` as late (they joined as it closed)."""
    found = await round_repository.stragglers(now - timedelta(seconds=settings.oracle.round_window_s), 1000)
    final = await round_repository.final_rounds(sorted({doc["round"] for doc in found}))
    verdicts = []
    for doc in found:
        closed = final.get(doc["round"])
        if closed is None:
            continue
        counted = {p["predictionId"]: p for p in closed.get("participants") or () if not p.get("carried")}
        participant = counted.get(doc["_id"])
        if participant is not None:
            verdict = (doc["_id"], participant["status"], participant.get("rejectionReason"), doc["round"])
        else:
            verdict = (doc["_id"], "rejected", "late: its round closed before it was counted", doc["round"])
        verdicts.extend(on_chain(settings, closed, [verdict]))
    # One whose round's push has settled already is `submitted` until publication.confirm settles it.
    await round_repository.set_verdicts(verdicts)
    return len(verdicts)
