"""Worker jobs of the system domain."""

from __future__ import annotations

from typing import Any

from app.system import service


async def ping(ctx: dict[str, Any]) -> dict[str, Any]:
    """Prove the queue works end to end."""
    return service.pong(ctx.get("job_try"))
