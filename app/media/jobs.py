"""Worker jobs of the media domain: processing an asset's uploads, avatars, and the lifecycle sweep."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import structlog
from arq import Retry
from redis.exceptions import LockError

from app.lib.bucket import is_transient
from app.media import service

log = structlog.get_logger(__name__)

LOCK_TIMEOUT_S = 600  # longer than a run; a crashed holder's lock expires on its own


def _lock_name(token_id: int) -> str:
    return f"media:lock:{token_id}"


async def process_media(ctx: dict[str, Any], token_id: int) -> dict[str, Any]:
    """Promote, check and render one asset's media; one run per asset at a time (a Redis lock)."""
    clients = ctx["clients"]
    lock = clients.redis.lock(_lock_name(token_id), timeout=LOCK_TIMEOUT_S, blocking=False)
    if not await lock.acquire():
        raise Retry(defer=2)  # another run holds this asset: go after it, on the state it leaves
    try:
        result = await service.process_asset_media(clients.storage, token_id, budget=ctx.get("pixel_budget"))
        try:
            await service.announce_processed(clients, ctx["settings"], result)
        except Exception as exc:  # the media are done: the run again finds nothing to do, and announces
            log.warning("media.announce.retry", token_id=token_id, error=str(exc)[:200])
            raise Retry(defer=min(60, 2 ** ctx.get("job_try", 1))) from exc
        return result
    except Exception as exc:
        if is_transient(exc):
            try_number = ctx.get("job_try", 1)
            log.warning("media.process.retry", token_id=token_id, error=str(exc)[:200], job_try=try_number)
            raise Retry(defer=min(60, 2**try_number)) from exc
        raise
    finally:
        try:
            await lock.release()
        except LockError:
            log.warning("media.process.lock_lost", token_id=token_id)


async def promote_avatar(
    ctx: dict[str, Any], wallet: str, key: str, kind: str = "user", api_key_id: str | None = None
) -> dict[str, Any]:
    """Check a staged avatar upload and make its re-encoded JPEG the user's avatar (or reject it)."""
    try:
        return await service.promote_avatar(
            ctx["clients"].storage,
            wallet,
            key,
            kind=kind,
            api_key_id=api_key_id,
            budget=ctx.get("pixel_budget"),
        )
    except Exception as exc:
        if is_transient(exc):
            try_number = ctx.get("job_try", 1)
            log.warning("media.avatar.retry", wallet=wallet, error=str(exc)[:200], job_try=try_number)
            raise Retry(defer=min(60, 2**try_number)) from exc
        raise


async def sweep(ctx: dict[str, Any], now: datetime | None = None) -> dict[str, int]:
    """Delete expired temp uploads and cache; queue processing for assets with guessable high-res keys."""
    return await service.sweep(ctx["clients"], now=now)
