"""Leases on the real Redis: one holder at a time, for as long as it runs."""

import asyncio
import contextlib

import pytest

from app.lib import leases


async def test_a_holder_keeps_its_lease_past_the_lease_time_while_it_runs(clients):
    redis = clients.redis
    async with leases.lease(redis, "lease:test", 300) as held:
        assert held
        await asyncio.sleep(1.0)  # over three lease times
        async with leases.lease(redis, "lease:test", 300) as second:
            assert not second
    async with leases.lease(redis, "lease:test", 300) as after:
        assert after  # released at the end


async def test_a_lease_whose_holder_stopped_lapses_within_its_time(clients):
    redis = clients.redis
    await redis.set("lease:stopped", "a holder that died", px=300)
    async with leases.lease(redis, "lease:stopped", 300) as held:
        assert not held
    await asyncio.sleep(0.4)
    async with leases.lease(redis, "lease:stopped", 300) as held:
        assert held


class _Renewals:
    """The real Redis, with its lease renewals made to fail or hang on demand."""

    def __init__(self, redis, fail: int = 0, hang: bool = False) -> None:
        self.redis, self.fail, self.hang, self.tried = redis, fail, hang, 0

    async def set(self, *args, **kwargs):
        return await self.redis.set(*args, **kwargs)

    async def eval(self, script, *args):
        if script == leases.RENEW:
            self.tried += 1
            if self.hang:
                await asyncio.sleep(3600)  # Redis stalled: no answer, no error
            if self.tried <= self.fail:
                raise ConnectionError("Redis went away")
        return await self.redis.eval(script, *args)


async def test_a_holder_whose_lease_was_taken_is_stopped(clients):
    redis, reached = clients.redis, []
    with pytest.raises(leases.LeaseLost):
        async with leases.lease(redis, "lease:taken-over", 300):
            await redis.set("lease:taken-over", "the next holder", px=5000)  # as after a lapse
            await asyncio.sleep(2)
            reached.append("the end of the body")
    assert reached == []
    # neither renewed nor released by the first holder
    assert await redis.get("lease:taken-over") == b"the next holder"
    assert 300 < await redis.pttl("lease:taken-over") <= 5000


async def test_a_holder_that_cannot_renew_in_time_is_stopped(clients):
    stalled = _Renewals(clients.redis, hang=True)
    started = asyncio.get_running_loop().time()
    with pytest.raises(leases.LeaseLost):
        async with leases.lease(stalled, "lease:stalled", 300):
            await asyncio.sleep(2)
    assert asyncio.get_running_loop().time() - started < 0.6  # stopped as the lease lapsed, not later


async def test_renewals_that_fail_for_a_moment_keep_the_lease(clients):
    flaky = _Renewals(clients.redis, fail=2)
    async with leases.lease(flaky, "lease:flaky", 600) as held:
        assert held
        await asyncio.sleep(1.5)
        assert await clients.redis.pttl("lease:flaky") > 0
    assert flaky.tried > 2


async def test_a_holder_cancelled_from_outside_is_cancelled_and_lets_go(clients):
    async def hold():
        async with leases.lease(clients.redis, "lease:cancelled", 5000):
            await asyncio.sleep(10)

    task = asyncio.create_task(hold())
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await clients.redis.get("lease:cancelled") is None


async def test_a_holder_stuck_past_its_longest_hold_is_stopped_and_lets_go(clients):
    """A body stuck on a call that never answers must not keep the lease, and all who wait on it, for ever."""
    started = asyncio.get_running_loop().time()
    with pytest.raises(leases.LeaseLost):
        async with asyncio.timeout(5), leases.lease(clients.redis, "lease:stuck", 200, max_hold_ms=600):
            await asyncio.Event().wait()  # never set
    assert 0.5 < asyncio.get_running_loop().time() - started < 1.5
    async with leases.lease(clients.redis, "lease:stuck", 200) as held:
        assert held


async def test_a_body_that_swallows_the_stop_is_still_told_it_lost_the_lease(clients):
    redis = clients.redis
    with pytest.raises(leases.LeaseLost):
        async with leases.lease(redis, "lease:swallowed", 300):
            await redis.set("lease:swallowed", "the next holder", px=5000)
            with contextlib.suppress(asyncio.CancelledError):  # and goes on as if it still held it
                await asyncio.sleep(2)
    assert asyncio.current_task().cancelling() == 0  # the stop was the lease's, and is spent


async def test_a_body_that_fails_its_own_way_once_stopped_says_it_lost_the_lease(clients):
    redis = clients.redis
    with pytest.raises(leases.LeaseLost) as lost:
        async with leases.lease(redis, "lease:failed", 300):
            await redis.set("lease:failed", "the next holder", px=5000)
            try:
                await asyncio.sleep(2)
            except asyncio.CancelledError:
                raise ValueError("cleaning up failed") from None
    assert isinstance(lost.value.__cause__, ValueError)
