"""Worker jobs of the assets domain: moving buffered view counts into MongoDB.

The search-field migration (`assets.backfill_search_fields`) spans assets and market: app/market/jobs.py.
"""

from __future__ import annotations

from typing import Any

import structlog
from arq import Retry
from pymongo.errors import ConnectionFailure, ExecutionTimeout
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.assets import service

log = structlog.get_logger(__name__)


async def flush_views(ctx: dict[str, Any]) -> dict[str, int]:
    """Add the views counted in Redis to `stats.viewCount`, exactly once (see app/assets/views.py)."""
    try:
        result = await service.flush_views(ctx["clients"].redis)
    except (ConnectionFailure, ExecutionTimeout, RedisConnectionError, RedisTimeoutError, OSError) as exc:
        # What was moved stays in flight and is re-applied by the retry (or the next run), once.
        try_number = ctx.get("job_try", 1)
        log.warning("assets.flush_views.retry", error=str(exc)[:200], job_try=try_number)
        raise Retry(defer=min(30, 2**try_number)) from exc
    if result["tokens"]:
        log.info("assets.flush_views", **result)
    return result


async def request_mints(ctx: dict[str, Any]) -> dict[str, int]:
    """Ask again for the mints of assets still pending (cron): the outbox mints each once."""
    return {"asked": await service.request_pending_mints(ctx["clients"], ctx["settings"])}


async def announce_pending(ctx: dict[str, Any]) -> dict[str, int]:
    """Move to the events outbox the announcements a crash left in assets (cron, every minute)."""
    return {"moved": await service.announce_pending(ctx["clients"], ctx["settings"])}
