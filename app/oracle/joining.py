"""Joining rounds: a submission joins its token's open round (the window it arrived in) at once, the
platform's new appraisals join theirs on the `oracle.publish` cron, and a submission a crash left out of
every round joins the open one. Joining is one atomic update that succeeds only while the round is open,
so a round's members are fixed the moment it closes; one that missed it joins the next window.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId

from app.config import Settings
from app.lib.errors import AppError
from app.oracle import round_repository

ASSIGN_PER_PASS = 5000
QUOTA_PREFIX = "oracle:quota:"
ORPHANED_AFTER = timedelta(seconds=60)  # a submission's request has long finished joining by then


def window(token_id: int, at: datetime, window_s: int, ahead: int = 0) -> tuple[str, datetime, datetime]:
    """The round of a token that `at` falls in (or `ahead` windows later): key, opening and close."""
    number = int(at.timestamp()) // window_s + ahead
    return (
        f"{token_id}-{number}",
        datetime.fromtimestamp(number * window_s, UTC),
        datetime.fromtimestamp((number + 1) * window_s, UTC),
    )


def round_view(key: str, closes_at: datetime) -> dict[str, Any]:
    return {"id": key, "closesAt": closes_at, "status": "open"}


async def join_submission(
    settings: Settings, prediction_id: ObjectId, asset: dict[str, Any], now: datetime
) -> dict[str, Any]:
    """Join a submission to its token's open round (the next window's, if this one closed meanwhile)."""
    token = asset["tokenId"]
    for ahead in range(3):
        key, opens, closes = window(token, now, settings.oracle.round_window_s, ahead)
        entry = (key, token, asset, max(opens, now) if ahead else opens, closes, prediction_id)
        await round_repository.place(prediction_id, key)
        if await round_repository.join(entry, now, submission=True):
            return round_view(key, closes)
    raise RuntimeError(f"token {token}: no open round in three windows")


async def check_submission_quota(
    redis, settings: Settings, operator: str, token_id: int, now: datetime
) -> None:
    """429 `too_many_submissions` past ORACLE_MAX_SUBMISSIONS_PER_ROUND of one operator for one token in
    one window (only its latest counts anyway): a round stays small, whatever one key sends. The count
    is one atomic Redis increment per submission, so requests sent together cannot all pass it."""
    key, _opens, closes = window(token_id, now, settings.oracle.round_window_s)
    limit = settings.oracle.max_submissions_per_round
    counter = f"{QUOTA_PREFIX}{operator}:{key}"
    async with redis.pipeline(transaction=True) as pipe:
        pipe.incr(counter)
        pipe.expire(counter, settings.oracle.round_window_s + 60)
        count, _ = await pipe.execute()
    if count > limit:
        retry = max(1, int((closes - now).total_seconds()) + 1)
        raise AppError(
            f"at most {limit} submissions per token and round; the next round opens in {retry} s",
            status_code=429,
            code="too_many_submissions",
            details={"limit": limit, "retryAfter": retry},
            headers={"Retry-After": str(retry)},
        )


async def rejoin_orphans(settings: Settings, now: datetime) -> int:
    """Submissions stored but never joined to a round (a crash came between): they join the open one."""
    found = await round_repository.orphans(now - ORPHANED_AFTER, ASSIGN_PER_PASS)
    for doc in found:
        await join_submission(settings, doc["_id"], _asset_of(doc), now)
    return len(found)


def _asset_of(prediction: dict[str, Any]) -> dict[str, Any]:
    """The asset a prediction is of, as a round records it."""
    return {
        "_id": prediction.get("assetId"),
        "tokenId": prediction["tokenId"],
        "assetType": prediction.get("assetType"),
    }


async def assign_appraisals(settings: Settings, now: datetime) -> dict[str, int]:
    """Join the platform's new appraisals to their tokens' open rounds: a token's latest joins, the earlier
    ones are `rejected` as superseded."""
    found = await round_repository.unassigned_appraisals(ASSIGN_PER_PASS)
    latest: dict[int, dict[str, Any]] = {}
    for doc in found:  # oldest first
        latest[doc["tokenId"]] = doc
    superseded = [
        (doc["_id"], "rejected", "superseded: a later appraisal of the token", None)
        for doc in found
        if latest[doc["tokenId"]] is not doc
    ]
    await round_repository.set_verdicts(superseded)
    entries = []
    for token, doc in latest.items():
        key, opens, closes = window(token, now, settings.oracle.round_window_s)
        entries.append((key, token, _asset_of(doc), opens, closes, doc["_id"]))
    joined = await round_repository.join_many(entries, now)
    await round_repository.set_rounds({e[5]: e[0] for e in entries if e[5] in joined})
    orphans = await rejoin_orphans(settings, now)
    return {"joined": len(joined), "superseded": len(superseded), "rejoined": orphans}
