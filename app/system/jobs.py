"""Worker jobs of the system domain."""

from __future__ import annotations

from typing import Any

from app.lib.timeutil import utcnow


async def ping(ctx: dict[str, Any]) -> dict[str, Any]:
    """Prove the queue works end to end; the result is public, so it names no host or process."""
    return {"pong": True, "at": utcnow().isoformat(), "try": ctx.get("job_try")}
