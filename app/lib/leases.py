"""Redis leases: one holder at a time for a pass that must not overlap itself (across processes).

A lease is renewed while its holder runs, so a pass longer than the lease's time (a dense range over a
slow node) still keeps it; only a holder that stopped (a killed worker) lets it lapse, within that time.
A holder that cannot renew in time (Redis away or stalled, or its own event loop held up past the
lease) may no longer be alone: its body is cancelled and the lease raises `LeaseLost`, rather than
letting it run on beside the next holder. So is a holder still running after `max_hold_ms` (ten lease
times unless the caller says): a body stuck on a call that never returns must not keep the lease, and
everything waiting for it, for ever.
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
MAX_HOLD_LEASES = 10  # a holder runs at most this many lease times unless the caller sets `max_hold_ms`


class LeaseLost(RuntimeError):
    """The lease lapsed or was taken while its holder ran: the holder was stopped."""

    def __init__(self, key: str) -> None:
        super().__init__(f"lease {key!r} lost while held")
        self.key = key


@asynccontextmanager
async def lease(redis, key: str, ttl_ms: int, *, max_hold_ms: int | None = None) -> AsyncIterator[bool]:
    """Hold `key` while the body runs (renewed every `ttl_ms / RENEWALS`, lapsing `ttl_ms` after its
    holder stops, and for at most `max_hold_ms`): yields whether this caller got it (False: another
    holds it). Raises `LeaseLost`, having cancelled the body, when it could not be kept."""
    token = secrets.token_hex(8)
    sent = time.monotonic()
    held = bool(await redis.set(key, token, nx=True, px=ttl_ms))
    if not held:
        yield False
        return
    hold = (max_hold_ms if max_hold_ms is not None else MAX_HOLD_LEASES * ttl_ms) / 1000
    keeper = _Keeper(redis, key, token, ttl_ms, deadline=sent + ttl_ms / 1000, until=sent + hold)
    try:
        yield True
    except asyncio.CancelledError:
        if keeper.lost and keeper.holder.uncancel() == 0:
            raise LeaseLost(key) from None
        raise
    except BaseException as exc:
        if keeper.lost:  # the body ended its own way after the keeper stopped it: the cancel is spent
            keeper.holder.uncancel()
            raise LeaseLost(key) from exc
        raise
    finally:
        keeper.body_done()  # before any await: the keeper cannot stop a body that has ended
        await keeper.stop()
        await _release(redis, key, token, keeper.deadline)
    if keeper.lost:  # the body swallowed the cancel and went on: it was not alone all along
        keeper.holder.uncancel()
        raise LeaseLost(key)


async def _release(redis, key: str, token: str, deadline: float) -> None:
    """Let the lease go, waiting at most until it would lapse anyway (a stalled Redis holds no one up)."""
    try:
        async with asyncio.timeout(max(deadline - time.monotonic(), RETRY_S)):
            await redis.eval(RELEASE, 1, key, token)
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning("lease.release_failed", key=key, error=repr(exc))


class _Keeper:
    """Renews a lease in the background; cancels its holder's body if it could not."""

    def __init__(self, redis, key: str, token: str, ttl_ms: int, *, deadline: float, until: float) -> None:
        self.redis, self.key, self.token, self.ttl_ms = redis, key, token, ttl_ms
        self.deadline = deadline  # when Redis lets the lease lapse unless renewed (by our clock)
        self.until = until  # no renewal past this: the holder has run its longest
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
        try:
            await self._renew()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # whatever stops the renewals loses the lease, and says so
            self._lose(f"renewals stopped: {exc!r}")

    async def _renew(self) -> None:
        period = self.ttl_ms / 1000 / RENEWALS
        wait = period
        while True:
            await asyncio.sleep(wait)
            sent = time.monotonic()
            if sent >= self.until:
                return self._lose("held for its longest")
            left = self.deadline - sent
            if left <= 0:
                return self._lose("lapsed before it could be renewed")
            try:
                async with asyncio.timeout(left):
                    renewed = await self.redis.eval(RENEW, 1, self.key, self.token, self.ttl_ms)
            except (RedisError, OSError, TimeoutError) as exc:
                left = self.deadline - time.monotonic()
                if left <= RETRY_S:
                    return self._lose(f"not renewed in time: {exc!r}")
                log.warning("lease.renewal_failed", key=self.key, error=repr(exc))
                wait = min(period, left / 2)
                continue
            if not renewed:
                return self._lose("lapsed or taken by another holder")
            self.deadline, wait = sent + self.ttl_ms / 1000, period

    def _lose(self, why: str) -> None:
        log.error("lease.lost", key=self.key, why=why)
        self.lost = True
        if self._inside and self.holder is not None:
            self.holder.cancel()
