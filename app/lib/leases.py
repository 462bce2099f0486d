"""Redis leases: one holder at a time for a pass that must not overlap itself (across processes).

A lease is renewed while its holder runs, so a pass longer than the lease's time (a dense range over a
slow node) still keeps it; only a holder that stopped (a killed worker) lets it lapse, within that time.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from redis.exceptions import RedisError

log = structlog.get_logger("leases")

# Deletes the lease only if it is still this holder's (one that outlived its lease leaves the next alone).
RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
# Extends the lease only if it is still this holder's.
RENEW = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end "
    "return 0"
)
RENEWALS = 3  # renewed this many times per `ttl_ms`: two renewals may fail before it lapses


@asynccontextmanager
async def lease(redis, key: str, ttl_ms: int) -> AsyncIterator[bool]:
    """Hold `key` while the body runs (renewed every `ttl_ms / RENEWALS`, lapsing `ttl_ms` after its
    holder stops): yields whether this caller got it (False: another holds it)."""
    token = secrets.token_hex(8)
    held = bool(await redis.set(key, token, nx=True, px=ttl_ms))
    keeper = asyncio.create_task(_renew(redis, key, token, ttl_ms)) if held else None
    try:
        yield held
    finally:
        if keeper is not None:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
        if held:
            await redis.eval(RELEASE, 1, key, token)


async def _renew(redis, key: str, token: str, ttl_ms: int) -> None:
    while True:
        await asyncio.sleep(ttl_ms / RENEWALS / 1000)
        try:
            renewed = await redis.eval(RENEW, 1, key, token, ttl_ms)
        except RedisError as exc:  # the next renewal may still come in time
            log.warning("lease.renewal_failed", key=key, error=str(exc))
            continue
        if not renewed:  # lapsed (the loop was held up past its time) and perhaps taken: said loudly
            log.error("lease.lost", key=key)
            return
