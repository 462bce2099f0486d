"""Worker jobs of the audit domain: the daily archive of entries past their retention."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import structlog
from arq import Retry

from app.audit import service
from app.lib.bucket import is_transient

log = structlog.get_logger(__name__)

# The first run on a long-kept trail may have months of entries to archive; a run cut short anywhere
# loses nothing (app/audit/retention.py), and the next one goes on from there.
ARCHIVE_TIMEOUT_S = 3600


async def archive(ctx: dict[str, Any], now: datetime | None = None) -> dict[str, int]:
    """Archive the audit entries past AUDIT_RETENTION_DAYS to S3 (gzip JSON Lines), then delete them."""
    try:
        return await service.archive_expired(
            ctx["clients"].storage, ctx["settings"].audit_retention_days, now=now
        )
    except Exception as exc:
        if is_transient(exc):
            try_number = ctx.get("job_try", 1)
            log.warning("audit.archive.retry", error=str(exc)[:200], job_try=try_number)
            raise Retry(defer=min(600, 30 * 2**try_number)) from exc
        raise
