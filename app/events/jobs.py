"""Worker jobs of the events domain."""

from __future__ import annotations

from typing import Any

from app.events import service


async def dispatch(ctx: dict[str, Any]) -> dict[str, int]:
    """Publish the outbox's unpublished events and hand them to the webhooks (cron, every few seconds:
    producers dispatch at once themselves, so this finishes only what a failure left)."""
    return await service.dispatch(ctx["clients"], ctx["settings"])
