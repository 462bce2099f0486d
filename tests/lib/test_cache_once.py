"""A value computed by one caller at a time: the others wait for it (no cache stampede)."""

from __future__ import annotations

import asyncio

from app.lib import cache


async def test_callers_at_once_compute_an_expensive_value_once(client, clients):
    calls = 0

    async def compute() -> bytes:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.3)
        return b"figures"

    found = await asyncio.gather(
        *(cache.computed_once(clients.redis, "t", "t:key", 60, compute) for _ in range(10))
    )
    assert found == [b"figures"] * 10 and calls == 1
    assert await clients.redis.get(f"{cache.PREFIX}lock:t:key") is None  # released


async def test_a_lock_held_by_another_is_left_to_it(client, clients):
    await clients.redis.set(f"{cache.PREFIX}lock:t:other", "someone else", ex=60)

    async def compute() -> bytes:
        return b"v"

    assert await cache.computed_once(clients.redis, "t", "t:other", 60, compute, wait_s=0.2) == b"v"
    assert await clients.redis.get(f"{cache.PREFIX}lock:t:other") == b"someone else"
