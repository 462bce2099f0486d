"""GET /api/market/stats stays cached under writes that do not change it, and recomputes once at a time."""

import asyncio

import pytest

from app.assets import service as assets_service
from app.lib.cache import CACHE_MISSES
from app.lib.timeutil import utcnow
from app.market import service
from app.market import stats as stats_cache
from tests import factories


@pytest.fixture
def aggregations(monkeypatch):
    """Counts the runs of the assets aggregation, each slowed down so that concurrent reads overlap it."""
    runs = []
    aggregate = assets_service.catalog_figures

    async def counted(max_time_ms):
        runs.append(1)
        await asyncio.sleep(0.2)
        return await aggregate(max_time_ms)

    monkeypatch.setattr(assets_service, "catalog_figures", counted)
    return runs


def misses() -> float:
    return CACHE_MISSES.labels("market_stats")._value.get()


async def stats(client) -> dict:
    response = await client.get("/api/market/stats")
    assert response.status_code == 200, response.text
    return response.json()


async def test_an_owner_patching_metadata_in_a_loop_does_not_uncache_the_stats(
    client, settings, aggregations
):
    owner = await factories.login(settings)
    await factories.asset(1, owner=owner.wallet, price="1")
    before = misses()
    assert (await stats(client))["totalAssets"] == 1
    for version in range(20):
        patched = await client.patch(
            "/api/assets/1/metadata",
            json={"version": version, "customAttributes": {"n": version}},
            headers=owner.headers,
        )
        assert patched.status_code == 200, patched.text
        assert (await stats(client))["totalAssets"] == 1
    assert len(aggregations) == 1 and misses() == before + 1


async def test_verifying_an_asset_does_not_uncache_the_stats(client, settings, aggregations):
    await factories.asset(1, price="1")
    admin = await factories.login(settings, roles=("admin",))
    await stats(client)
    assert (await client.post("/api/assets/1/verify", headers=admin.headers)).status_code == 200
    await stats(client)
    assert len(aggregations) == 1


async def test_a_new_asset_or_sale_does_recompute_the_stats(client, settings, clients, aggregations):
    admin = await factories.login(settings, roles=("admin",))
    await factories.asset(1, price="1")
    assert (await stats(client))["totalAssets"] == 1
    created = await client.post(
        "/api/assets",
        json={"tokenId": 2, "contractAddress": factories.CONTRACT, "name": "New", "assetType": "Wine"},
        headers=admin.headers,
    )
    assert created.status_code == 201, created.text
    assert (await stats(client))["totalAssets"] == 2
    await service.record_transaction(clients.redis, factories.transaction(1, price="2", at=utcnow()))
    assert (await stats(client))["volume"]["24h"]["salesCount"] == 1
    assert len(aggregations) == 3


async def test_concurrent_reads_after_an_invalidation_aggregate_once(client, clients, aggregations):
    await factories.asset(1, price="1")
    await stats(client)
    await service.record_transaction(clients.redis, factories.transaction(1, price="2", at=utcnow()))
    bodies = await asyncio.gather(*(stats(client) for _ in range(20)))
    assert len(aggregations) == 2  # the first read, then one recomputation for all twenty
    # the one that recomputed has the sale; the others were answered with the previous figures at once,
    # or with the new ones when they came in after it had stored them
    counts = [body["volume"]["24h"]["salesCount"] for body in bodies]
    assert set(counts) == {0, 1} and counts.count(0) >= 10
    assert (await stats(client))["volume"]["24h"]["salesCount"] == 1 and len(aggregations) == 2


async def test_concurrent_reads_on_a_cold_cache_aggregate_once(client, aggregations):
    await factories.asset(1, price="1")
    bodies = await asyncio.gather(*(stats(client) for _ in range(20)))
    assert len(aggregations) == 1
    assert all(body == bodies[0] for body in bodies)


async def test_the_figures_are_recomputed_once_they_age_out(client, monkeypatch, aggregations):
    await factories.asset(1, price="1")
    await stats(client)
    monkeypatch.setattr(stats_cache, "STATS_FRESH_S", 0)
    await stats(client)
    assert len(aggregations) == 2


async def test_a_lock_left_by_a_crashed_reader_only_delays_a_cold_read(client, clients, aggregations):
    await factories.asset(1, price="1")
    await clients.redis.set(stats_cache.STATS_LOCK_KEY, "gone", px=300)
    assert (await stats(client))["totalAssets"] == 1
    assert len(aggregations) == 1


async def test_a_reader_that_gets_the_lock_just_after_a_recomputation_reuses_it(
    client, clients, settings, monkeypatch, aggregations
):
    await factories.asset(1, price="1")
    read = stats_cache._read_stats

    async def read_then_fall_behind(redis):
        seen = await read(redis)  # a cold cache
        monkeypatch.setattr(stats_cache, "_read_stats", read)
        await service.market_stats(clients, settings)  # meanwhile another request recomputes and unlocks
        return seen

    monkeypatch.setattr(stats_cache, "_read_stats", read_then_fall_behind)
    assert (await stats(client))["totalAssets"] == 1
    assert len(aggregations) == 1
