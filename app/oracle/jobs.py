"""Worker jobs of the oracle domain: refreshing data sources, training, appraising, scoring the ledger
(thin: arguments in, the service does the work)."""

from __future__ import annotations

from typing import Any

import structlog
from arq import Retry
from pymongo.errors import ConnectionFailure, ExecutionTimeout
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.oracle import prediction_service, service

log = structlog.get_logger(__name__)
TRANSIENT = (ConnectionFailure, ExecutionTimeout, RedisConnectionError, RedisTimeoutError)


def _retry(name: str, ctx: dict[str, Any], exc: Exception) -> Retry:
    try_number = ctx.get("job_try", 1)
    log.warning(f"{name}.retry", error=type(exc).__name__, job_try=try_number)
    return Retry(defer=min(60, 2**try_number))


async def refresh_source(ctx: dict[str, Any], source_id: str) -> dict[str, Any]:
    """Fetch one source and upsert its rows; a failed fetch is recorded on the source, and the job's
    result shows its code (address_refused, body_too_large, ...), never the exception's text."""
    try:
        return await service.refresh_source(
            ctx["clients"], ctx["settings"], source_id, job_id=ctx.get("job_id")
        )
    except TRANSIENT as exc:  # the platform's own stores, not the source: try again shortly
        raise _retry("oracle.refresh_source", ctx, exc) from exc


async def refresh_due(ctx: dict[str, Any]) -> dict[str, int]:
    """Queue a refresh of every enabled source whose next fetch is due."""
    try:
        result = await service.enqueue_due(ctx["clients"], ctx["settings"])
    except TRANSIENT as exc:
        raise _retry("oracle.refresh_due", ctx, exc) from exc
    if result["queued"]:
        log.info("oracle.refresh_due", **result)
    return result


async def train(
    ctx: dict[str, Any], data_until: str | None = None, requested_by: str | None = None
) -> dict[str, Any]:
    """Train a new model version; the result names it, with its status per asset type."""
    try:
        return await service.train(ctx["clients"], ctx["settings"], data_until, requested_by, ctx["job_id"])
    except TRANSIENT as exc:
        raise _retry("oracle.train", ctx, exc) from exc


async def train_daily(ctx: dict[str, Any]) -> dict[str, Any]:
    try:
        return await service.train_daily(ctx["clients"], ctx["settings"])
    except TRANSIENT as exc:
        raise _retry("oracle.train_daily", ctx, exc) from exc


async def appraise(
    ctx: dict[str, Any],
    token_ids: list[int] | None = None,
    as_of: str | None = None,
    version: str | None = None,
    requested_at: str | None = None,
) -> dict[str, Any]:
    """Appraise assets; the result counts them, and the ones skipped by reason."""
    try:
        return await service.appraise(
            ctx["clients"], ctx["settings"], token_ids, as_of, version, ctx["job_id"], requested_at
        )
    except TRANSIENT as exc:
        raise _retry("oracle.appraise", ctx, exc) from exc


async def score_ledger(ctx: dict[str, Any]) -> dict[str, int]:
    """Score the appraisals of assets sold since the last run against those sales."""
    try:
        result = await service.score_ledger(ctx["clients"].redis)
    except TRANSIENT as exc:
        raise _retry("oracle.score_ledger", ctx, exc) from exc
    if result["scored"]:
        log.info("oracle.score_ledger", **result)
    return result


async def publish(ctx: dict[str, Any]) -> dict[str, Any]:
    """Join new appraisals to rounds, close the rounds due, push their published answers to the PriceOracle,
    and settle the final pushes."""
    try:
        return await prediction_service.publish(ctx["clients"], ctx["settings"])
    except TRANSIENT as exc:
        raise _retry("oracle.publish", ctx, exc) from exc


async def reconcile_prices(ctx: dict[str, Any]) -> dict[str, Any]:
    """A sample of tokens' last accepted pushes compared with the PriceOracle: drift into the chain status."""
    return await prediction_service.reconcile_prices(ctx["clients"], ctx["settings"])
