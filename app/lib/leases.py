"""Redis leases: one holder at a time for a pass that must not overlap itself (across processes)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

# Deletes the lease only if it is still this holder's (one that outlived its lease leaves the next alone).
RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


@asynccontextmanager
async def lease(redis, key: str, ttl_ms: int) -> AsyncIterator[bool]:
    """Hold `key` for at most `ttl_ms`: yields whether this caller got it (False: another holds it)."""
    token = secrets.token_hex(8)
    held = bool(await redis.set(key, token, nx=True, px=ttl_ms))
    try:
        yield held
    finally:
        if held:
            await redis.eval(RELEASE, 1, key, token)
