"""Worker jobs of the oracle domain: refreshing data sources (thin: ids in, the service does the work)."""

from __future__ import annotations

from typing import Any

import structlog
from arq import Retry
from pymongo.errors import ConnectionFailure, ExecutionTimeout
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.oracle import service

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
