"""Worker jobs of the system domain."""

from __future__ import annotations

import os
import socket
from typing import Any

from app.lib.timeutil import utcnow


async def ping(ctx: dict[str, Any]) -> dict[str, Any]:
    """Prove the queue works end to end: report which worker ran the job, and when."""
    return {
        "pong": True,
        "worker": f"{socket.gethostname()}:{os.getpid()}",
        "at": utcnow().isoformat(),
        "try": ctx.get("job_try"),
    }
