"""Worker jobs of the webhooks domain: one delivery attempt per job, and the sweeper of lost attempts."""

from __future__ import annotations

from typing import Any

from app.webhooks import service

# Past the attempt's own deadline (WEBHOOK_TIMEOUT_S): the database writes around it.
JOB_MARGIN_S = 30


async def deliver(ctx: dict[str, Any], delivery_id: str) -> dict[str, Any]:
    """One attempt of one delivery (`webhooks.deliver`); the next is queued by it, deferred."""
    return await service.deliver(ctx["clients"], ctx["settings"], delivery_id)


async def sweep(ctx: dict[str, Any]) -> dict[str, int]:
    """Queue again the attempts whose job was lost (`webhooks.sweep`, cron every minute)."""
    return await service.sweep(ctx["clients"], ctx["settings"])
