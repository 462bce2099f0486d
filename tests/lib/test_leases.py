"""Leases on the real Redis: one holder at a time, for as long as it runs."""

import asyncio

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


async def test_a_holder_does_not_renew_a_lease_another_has_taken(clients):
    redis = clients.redis
    async with leases.lease(redis, "lease:taken", 300) as held:
        assert held
        await redis.set("lease:taken", "the next holder", px=5000)  # as after a lapse
        await asyncio.sleep(0.25)  # past a renewal
        assert 300 < await redis.pttl("lease:taken") <= 5000
    assert await redis.get("lease:taken") == b"the next holder"  # and not released by the first
