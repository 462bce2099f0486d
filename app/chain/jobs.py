"""Worker jobs of the chain domain."""

from __future__ import annotations

from typing import Any

from app.chain import service


async def process_outbox(ctx: dict[str, Any]) -> dict[str, int]:
    """One pass of the outbox (cron, every few seconds): sign, send, follow, confirm."""
    return await service.process_outbox(ctx["clients"], ctx["settings"])
