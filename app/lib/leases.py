"""Redis leases: one holder at a time for a pass that must not overlap itself (across processes).

A lease is renewed while its holder runs, so a pass longer than the lease's time (a dense range over a
slow node) still keeps it; only a holder that stopped (a killed worker) lets it lapse, within that time.
A holder that cannot renew in time (Redis away or stalled, or its own event loop held up past the
lease) may no longer be alone: its body is cancelled and the lease raises `LeaseLost`, rather than
letting it run on beside the next holder.
"""

from __future__ import annotations

import asyncio
import secrets
import time
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
RENEWALS = 3  # renewals per lease time; a failed one is tried again until the lease would have lapsed
RETRY_S = 0.05  # the least wait before trying a failed renewal again


class LeaseLost(RuntimeError):
    """The lease lapsed or was taken while its holder ran: the holder was stopped."""

    def __init__(self, key: str) -> None:
        super().__init__(f"lease {key!r} lost while held")
        self.key = key


@asynccontextmanager
async def lease(redis, key: str, ttl_ms: int) -> AsyncIterator[bool]:
    """Hold `key` while the body runs (renewed every `ttl_ms / RENEWALS`, lapsing `ttl_ms` after its
    holder stops): yields whether this caller got it (False: another holds it). Raises `LeaseLost`,
    having cancelled the body, when it could not be kept."""
    token = secrets.token_hex(8)
    sent = time.monotonic()
    held = bool(await redis.set(key, token, nx=True, px=ttl_ms))
    if not held:
        yield False
        return
    keeper = _Keeper(redis, key, token, ttl_ms, deadline=sent + ttl_ms / 1000)
    try:
        yield True
    except asyncio.CancelledError:
        keeper.body_done()
        if keeper.lost and keeper.holder.uncancel() == 0:
            raise LeaseLost(key) from None
        raise
    finally:
        keeper.body_done()
        await keeper.stop()
        await redis.eval(RELEASE, 1, key, token)


class _Keeper:
    """Renews a lease in the background; cancels its holder's body if it could not."""

    def __init__(self, redis, key: str, token: str, ttl_ms: int, *, deadline: float) -> None:
        self.redis, self.key, self.token, self.ttl_ms = redis, key, token, ttl_ms
        self.deadline = deadline  # when Redis lets the lease lapse unless renewed (by our clock)
        self.holder = asyncio.current_task()
        self.lost = False
        self._inside = True
        self._task = asyncio.create_task(self._run())

    def body_done(self) -> None:
        self._inside = False  # no await since the body ended: the keeper cannot have run in between

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        period = self.ttl_ms / 1000 / RENEWALS
        wait = period
        while True:
            await asyncio.sleep(wait)
            sent = time.monotonic()
            left = self.deadline - sent
            if left <= 0:
                return self._lose("lapsed before it could be renewed")
            try:
                async with asyncio.timeout(left):
                    renewed = await self.redis.eval(RENEW, 1, self.key, self.token, self.ttl_ms)
            except (RedisError, OSError, TimeoutError) as exc:
                if time.monotonic() >= self.deadline:
                    return self._lose(f"not renewed in time: {exc!r}")
                log.warning("lease.renewal_failed", key=self.key, error=repr(exc))
                wait = max(RETRY_S, min(period, (self.deadline - time.monotonic()) / 2))
                continue
            if not renewed:
                return self._lose("lapsed or taken by another holder")
            self.deadline, wait = sent + self.ttl_ms / 1000, period

    def _lose(self, why: str) -> None:
        log.error("lease.lost", key=self.key, why=why)
        self.lost = True
        if self._inside and self.holder is not None:
            self.holder.cancel()
