"""Predictions and rounds: operators' submissions, the lists and details of predictions and rounds, the
operators' figures, and the crons that close rounds and publish their answers.

It composes `submissions` (checks, idempotency, who sees what), `rounds` (joining, closing, gates,
decisions), `publication` (the pushes to the PriceOracle) and `operators` (accountability).
"""

from __future__ import annotations

from typing import Any

import msgspec
from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from app.assets import service as assets_service
from app.config import Settings
from app.events import service as events_service
from app.lib import leases
from app.lib.errors import NotFound, require_one_of
from app.lib.params import parse_limit, signed_page
from app.lib.security import Principal
from app.lib.timeutil import utcnow
from app.oracle import (
    joining,
    model_repository,
    model_schemas,
    model_views,
    operators,
    publication,
    round_repository,
    round_schemas,
    round_views,
    rounds,
    submissions,
)
from app.oracle.round_documents import ROUND_STATUSES


async def submit_prediction(
    redis,
    settings: Settings,
    data: round_schemas.PredictionSubmit,
    principal: Principal,
    idempotency_key: str | None,
) -> tuple[round_schemas.PredictionCreated, bool]:
    """Store an operator's prediction and join it to its token's round; (answer, created). A retry with
    the same Idempotency-Key answers the stored one (created False)."""
    key = submissions.idempotency_key(idempotency_key)
    fingerprint = submissions.request_hash(data)
    operator = principal.wallet_address
    if key is not None:
        existing = await round_repository.find_by_idempotency_key(operator, key)
        if existing is not None:
            return submissions.replayed(
                existing, fingerprint, await submissions.round_ref(existing["round"])
            ), False
    submissions.amounts(data)  # 400s before the asset is looked up
    asset = await assets_service.get_raw(data.tokenId, {"tokenId": 1, "assetType": 1})
    now = utcnow()
    await joining.check_submission_quota(redis, settings, operator, data.tokenId, now)
    document = submissions.new_document(data, asset, principal, key, fingerprint, now)
    try:
        await round_repository.insert_prediction(document)
    except DuplicateKeyError:  # the same key raced in: the first one stands
        existing = await round_repository.find_by_idempotency_key(operator, key or "")
        if existing is None:
            raise
        return submissions.replayed(
            existing, fingerprint, await submissions.round_ref(existing["round"])
        ), False
    # stored first, then joined: a crash before it names its round leaves it to joining.rejoin_orphans,
    # one after (named, not joined) to round_verdicts.settle_stragglers, which rejects it as late
    joined = await joining.join_submission(settings, document["_id"], asset, now)
    document["round"] = joined["id"]
    return submissions.created(document, joined), True


async def get_prediction(prediction_id: str, viewer: Principal | None) -> model_schemas.PredictionOut:
    """One prediction; its inputs as `submissions.shows_inputs` allows."""
    if not ObjectId.is_valid(prediction_id) or len(prediction_id) != 24:
        raise NotFound(f"no prediction {prediction_id}", code="prediction_not_found")
    doc = await model_repository.find_prediction(ObjectId(prediction_id))
    if doc is None or submissions.sealed(doc, viewer):
        raise NotFound(f"no prediction {prediction_id}", code="prediction_not_found")
    return model_views.prediction_out(doc, show_inputs=submissions.shows_inputs(doc, viewer))


async def list_predictions(
    settings: Settings,
    viewer: Principal | None,
    *,
    token_id: int | None,
    operator: str | None,
    status: str | None,
    limit: int | None,
    cursor: str | None,
) -> model_schemas.PredictionPage:
    """Predictions newest first (the platform's appraisals and operators' submissions), keyset pages."""
    query = submissions.list_query(token_id, operator, status, viewer)
    size = parse_limit(limit)

    async def fetch(after):
        return await round_repository.prediction_page(
            query, limit=size, after=after, max_time_ms=settings.mongodb.max_time_ms
        )

    secret = settings.auth.jwt_secret.get_secret_value()
    docs, next_cursor = await signed_page(secret, "aiOracleData", cursor, fetch)
    items = [model_views.prediction_out(d, show_inputs=submissions.shows_inputs(d, viewer)) for d in docs]
    return model_schemas.PredictionPage(items=items, nextCursor=next_cursor, limit=size)


async def get_round(round_id: str) -> round_schemas.RoundOut:
    doc = await round_repository.find_round(round_id)
    if doc is None:
        raise NotFound(f"no round {round_id}", code="round_not_found")
    return round_views.round_out(doc)


async def list_rounds(
    settings: Settings, *, token_id: int | None, status: str | None, limit: int | None, cursor: str | None
) -> round_schemas.RoundPage:
    """Rounds, latest window first, keyset pages."""
    query = submissions.token_filter(token_id)
    if status is not None:
        require_one_of(status, ROUND_STATUSES, field="status", code="invalid_status")
        query["status"] = status
    size = parse_limit(limit)

    async def fetch(after):
        return await round_repository.round_page(
            query, limit=size, after=after, max_time_ms=settings.mongodb.max_time_ms
        )

    secret = settings.auth.jwt_secret.get_secret_value()
    docs, next_cursor = await signed_page(secret, "oracleRounds", cursor, fetch)
    return round_schemas.RoundPage(
        items=[round_views.round_out(d) for d in docs], nextCursor=next_cursor, limit=size
    )


async def list_operators(redis, settings: Settings) -> round_schemas.OperatorsOut:
    found = await operators.figures(redis, settings)
    return round_schemas.OperatorsOut(
        items=msgspec.convert(found, list[model_schemas.OperatorOut], strict=False)
    )


PUBLISH_LOCK = "oracle:publish:lock"


async def publish(clients, settings: Settings) -> dict[str, Any]:
    """The oracle.publish cron: join the platform's new appraisals to rounds, close the rounds due, push
    the answers decided `published`, and settle the pushes that are final. One pass at a time (a Redis
    lease as long as the job may run): overlapping passes would take each other's rounds."""
    async with leases.lease(clients.redis, PUBLISH_LOCK, settings.worker.job_timeout_s * 1000) as held:
        if not held:
            return {"skipped": "another pass is running"}
        joined = await joining.assign_appraisals(settings, utcnow())
        closed = await rounds.close_due(settings, utcnow())
        pushed = await publication.push_due(clients, settings, utcnow())
        settled = await publication.confirm(clients, settings)
    await events_service.dispatch_soon(clients, settings)  # the rounds it closed
    return {**joined, **closed, **pushed, **settled}


async def refresh_metrics(clients) -> None:
    """The oracle's gauges, before a scrape of /metrics."""
    await rounds.refresh_metrics(utcnow())


reconcile_prices = publication.reconcile  # the oracle.reconcile_prices cron: the PriceOracle against MongoDB
