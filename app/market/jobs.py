"""Worker jobs of the market domain."""

from __future__ import annotations

from typing import Any

import structlog

from app.assets import service as assets_service
from app.market import service

log = structlog.get_logger(__name__)


async def backfill_search_fields(ctx: dict[str, Any]) -> dict[str, int]:
    """One-off migration for data written before `nameLower` and `parties`: run it once after deploying.

    Queued as `assets.backfill_search_fields` (its documented name: `make enqueue`, README), or
    `await backfill_search_fields({})` from a shell with Beanie initialised. It lives here because it
    spans both domains and market depends on assets, never the reverse. Idempotent, and only touches
    documents that lack the fields: until it has run, such assets miss the `q` search and such
    transactions miss the `wallet` filter.
    """
    result = {
        "assets": await assets_service.backfill_name_lower(),
        "transactions": await service.backfill_parties(),
    }
    log.info("assets.backfill_search_fields", **result)
    return result


ANNOUNCE = "market.announce_chain"


async def index_chain(ctx: dict[str, Any]) -> dict[str, Any]:
    """The chain indexer's pass (cron, every few seconds): events into transactions, owners, listings.
    A pass that read events, or a reorg, queues the announcer at once rather than at its next cron."""
    result = await service.index_chain(ctx["clients"], ctx["settings"])
    if result.get("events") or result.get("reorg"):
        try:  # the pass is done either way; the announcer's cron comes within seconds
            await ctx["redis"].enqueue_job(ANNOUNCE, _job_id=f"{ANNOUNCE}:{result['to']}:{result['head']}")
        except Exception as exc:
            log.warning("market.announce_not_queued", error=str(exc)[:300])
    return result


async def announce_chain(ctx: dict[str, Any]) -> dict[str, Any]:
    """What the indexed events changed, to the stream and the webhooks (after each pass that read
    some, and by cron, for what a failure left)."""
    return await service.announce_chain(ctx["clients"], ctx["settings"])


async def reconcile_chain(ctx: dict[str, Any]) -> dict[str, Any]:
    """A sample of tokens compared with the chain (cron): drift into the chain status and metrics."""
    return await service.reconcile_chain(ctx["clients"], ctx["settings"])
