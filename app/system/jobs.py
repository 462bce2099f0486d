"""Worker jobs of the system domain."""

from __future__ import annotations

from typing import Any

import structlog
from arq import Retry
from pymongo.errors import ConnectionFailure

from app.lib.bucket import is_transient
from app.system import service

log = structlog.get_logger(__name__)


async def ping(ctx: dict[str, Any]) -> dict[str, Any]:
    """Prove the queue works end to end."""
    return service.pong(ctx.get("job_try"))


async def backup(ctx: dict[str, Any]) -> dict[str, Any]:
    """The daily backup of every collection to S3, then the older backups pruned."""
    clients, settings = ctx["clients"], ctx["settings"]
    try:
        done = await service.back_up(
            clients.mongo[settings.mongodb.database], clients.storage, settings.backup
        )
    except TimeoutError:
        raise  # it ran past BACKUP_TIMEOUT_S: tomorrow's run tries again, not a longer one now
    except Exception as exc:
        if is_transient(exc) or isinstance(exc, ConnectionFailure):
            try_number = ctx.get("job_try", 1)
            log.warning("system.backup.retry", error=str(exc)[:200], job_try=try_number)
            raise Retry(defer=60 * try_number) from exc  # a new backup; the failed one deleted its files
        raise
    # The result is readable by anyone holding the job id: the backup's name and shape only.
    return {
        "backup": done.manifest.name,
        "collections": len(done.manifest.collections),
        "pruned": done.pruned,
    }
