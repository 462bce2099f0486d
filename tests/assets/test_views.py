"""View counting: buffered in Redis on each view, moved into MongoDB exactly once by assets.flush_views."""

import asyncio
import socket
from types import SimpleNamespace

from redis.asyncio import Redis

from app.assets import service, views
from app.assets.documents import Asset
from tests import factories
from tests.conftest import drain_jobs
from workers.settings import WorkerSettings


async def stored(token_id: int) -> dict:
    doc = await Asset.get_pymongo_collection().find_one({"tokenId": token_id}, {"stats": 1})
    return doc["stats"]


async def view(client, token_id: int) -> int:
    response = await client.get(f"/api/assets/{token_id}")
    assert response.status_code == 200, response.text
    return response.json()["stats"]["viewCount"]


async def nothing_buffered(redis, *token_ids: int) -> bool:
    keys = [k(t) for t in token_ids for k in (views._pending_key, views._inflight_key)]
    return await redis.exists(*keys) == 0 and await redis.scard(views.VIEWS_DIRTY) == 0


async def test_a_view_writes_nothing_to_mongodb_and_shows_at_once(client, clients):
    await factories.asset(1, views=5)
    assert await view(client, 1) == 6
    assert await view(client, 1) == 7
    assert (await stored(1))["viewCount"] == 5
    assert int(await clients.redis.get(views._pending_key(1))) == 2
    assert await clients.redis.smembers(views.VIEWS_DIRTY) == {b"1"}


async def test_concurrent_views_each_count_once(client, clients):
    await factories.asset(1, views=100)
    counts = await asyncio.gather(*(view(client, 1) for _ in range(40)))
    assert sorted(counts) == list(range(101, 141))  # each caller sees its own view
    await service.flush_views(clients.redis)
    assert (await stored(1))["viewCount"] == 140


async def test_flush_moves_exactly_the_pending_count(client, clients):
    await factories.asset(1, views=10)
    await factories.asset(2)
    await factories.asset(3, views=7)
    for token_id, times in ((1, 3), (2, 2)):
        for _ in range(times):
            await view(client, token_id)
    result = await service.flush_views(clients.redis)
    assert result == {"tokens": 2, "applied": 2}
    assert [(await stored(t))["viewCount"] for t in (1, 2, 3)] == [13, 2, 7]
    assert await nothing_buffered(clients.redis, 1, 2, 3)
    assert await service.flush_views(clients.redis) == {"tokens": 0, "applied": 0}
    assert [(await stored(t))["viewCount"] for t in (1, 2, 3)] == [13, 2, 7]
    assert await view(client, 1) == 14  # stored + pending, nothing counted twice


async def test_flush_runs_as_an_arq_job_and_on_a_cron(client, clients, settings):
    names = {f.name for f in WorkerSettings.functions} | {c.name for c in WorkerSettings.cron_jobs}
    assert {"assets.flush_views", "assets.flush_views.cron"} <= names
    await factories.asset(1)
    for _ in range(4):
        await view(client, 1)
    await clients.redis.enqueue_job("assets.flush_views")
    await drain_jobs(clients, settings)
    assert (await stored(1))["viewCount"] == 4
    assert await nothing_buffered(clients.redis, 1)


async def test_a_flush_that_crashed_before_the_mongodb_update_counts_once(client, clients):
    await factories.asset(1, views=10)
    for _ in range(3):
        await view(client, 1)
    crashed = await views.move_views(clients.redis, [1])  # moved to in flight, then the worker died
    assert crashed == {1: {1: 3}}
    assert await view(client, 1) == 14  # in-flight views still show
    await service.flush_views(clients.redis)  # the next run re-applies the leftover entry
    assert (await stored(1))["viewCount"] == 14
    await views.apply_views(crashed)  # the crashed worker comes back and finishes: no effect
    await views.apply_views(crashed)
    assert (await stored(1))["viewCount"] == 14
    assert await view(client, 1) == 15
    await service.flush_views(clients.redis)
    assert (await stored(1))["viewCount"] == 15
    assert await nothing_buffered(clients.redis, 1)


async def test_a_flush_that_crashed_after_the_mongodb_update_counts_once(client, clients):
    await factories.asset(1, views=10)
    for _ in range(3):
        await view(client, 1)
    entries = await views.move_views(clients.redis, [1])
    await views.apply_views(entries)  # applied, but the in-flight entry was never deleted
    assert (await stored(1))["viewCount"] == 13
    assert await view(client, 1) == 14  # the applied entry is not added a second time
    await views.apply_views(entries)  # applied again: no effect
    await service.flush_views(clients.redis)  # re-applies the leftover (no effect) and the new view
    assert (await stored(1))["viewCount"] == 14
    assert await nothing_buffered(clients.redis, 1)


async def test_two_concurrent_flushes_count_once(client, clients):
    for token_id in range(1, 6):
        await factories.asset(token_id)
    for token_id in range(1, 6):
        for _ in range(token_id):
            await view(client, token_id)
    await asyncio.gather(*(service.flush_views(clients.redis) for _ in range(3)))
    assert [(await stored(t))["viewCount"] for t in range(1, 6)] == [1, 2, 3, 4, 5]
    # interleaved by hand: A moves, more views, B moves and applies everything, then A applies its part
    await view(client, 1)
    first = await views.move_views(clients.redis, [1])
    await view(client, 1)
    await view(client, 1)
    second = await views.move_views(clients.redis, [1])
    assert len(second[1]) == 2  # B also sees A's entry, and applies it first
    await views.apply_views(second)
    await views.apply_views(first)
    await views.settle_views(clients.redis, second)
    await views.settle_views(clients.redis, first)
    assert (await stored(1))["viewCount"] == 4
    assert await nothing_buffered(clients.redis, 1, 2, 3, 4, 5)


async def test_the_visible_count_never_dips_while_flushes_run(client, clients):
    await factories.asset(1, views=50)
    stop = asyncio.Event()

    async def flush_loop() -> None:
        while not stop.is_set():
            await service.flush_views(clients.redis)
            await asyncio.sleep(0)

    flushers = [asyncio.create_task(flush_loop()) for _ in range(2)]
    try:
        counts = [await view(client, 1) for _ in range(60)]
    finally:
        stop.set()
        await asyncio.gather(*flushers)
    assert counts == list(range(51, 111))
    await service.flush_views(clients.redis)
    assert (await stored(1))["viewCount"] == 110


async def test_sorting_by_views_uses_the_flushed_count(client, clients):
    # The list sorts on the stored count, so it lags the detail by at most one flush interval.
    for token_id in (1, 2, 3):
        await factories.asset(token_id, views=10)
    for token_id, times in ((3, 3), (2, 1)):
        for _ in range(times):
            await view(client, token_id)
    await service.flush_views(clients.redis)
    items = (await client.get("/api/assets", params={"sort": "-viewCount"})).json()["items"]
    assert [(item["tokenId"], item["viewCount"]) for item in items] == [(3, 13), (2, 11), (1, 10)]
    ascending = (await client.get("/api/assets", params={"sort": "viewCount"})).json()["items"]
    assert [item["tokenId"] for item in ascending] == [1, 2, 3]


async def test_a_view_of_an_unknown_token_leaves_nothing_to_flush(client, clients):
    assert (await client.get("/api/assets/999")).status_code == 404
    assert await nothing_buffered(clients.redis, 999)


async def test_write_responses_include_views_not_yet_flushed(client, settings):
    owner = await factories.login(settings)
    await factories.asset(1, owner=owner.wallet, views=3)
    await view(client, 1)
    body = (await client.get("/api/assets/1")).json()
    patched = await client.patch(
        "/api/assets/1/metadata",
        json={"version": body["version"], "metadata": {"condition": "Mint"}},
        headers=owner.headers,
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["stats"]["viewCount"] == 5


async def test_a_flush_still_applies_after_redis_lost_its_sequence(client, clients):
    await factories.asset(1, views=10)
    await Asset.get_pymongo_collection().update_one({"tokenId": 1}, {"$set": {"stats.viewFlushSeq": 9}})
    assert await view(client, 1) == 11
    await service.flush_views(clients.redis)  # Redis's sequence starts again above MongoDB's
    stats = await stored(1)
    assert (stats["viewCount"], stats["viewFlushSeq"]) == (11, 10)
    assert await view(client, 1) == 12


async def test_without_redis_views_are_counted_in_mongodb(client, clients, settings):
    await factories.asset(1, views=5)
    with socket.socket() as probe:  # a port nothing listens on: a real client whose server is down
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    down = Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)
    try:
        no_redis = SimpleNamespace(redis=down, storage=clients.storage, mongo=clients.mongo)
        body = await service.asset_detail(no_redis, settings, 1, None)
        assert body["stats"]["viewCount"] == 6
        assert (await stored(1))["viewCount"] == 6
        assert (await service.detail_after_write(no_redis, settings, 1, None))["stats"]["viewCount"] == 6
    finally:
        await down.aclose()


async def test_a_flush_between_a_readers_two_reads_is_detected(client, clients):
    # The detail reads Redis, then MongoDB. Counters taken before a flush and stats read after it would
    # count the flushed views twice; the flush's seq being above the counters' tells the reader to re-read.
    await factories.asset(1, views=10)
    for _ in range(3):
        await view(client, 1)
    before = await views.snapshot(clients.redis, 1)
    assert views.visible_views(await stored(1), before) == 13
    await service.flush_views(clients.redis)
    after_flush = await stored(1)
    assert views.applied_seq({"stats": after_flush}) > before.top
    again = await views.snapshot(clients.redis, 1)
    assert views.visible_views(after_flush, again) == 13
    # and an entry that is in flight but already applied is not added again
    await view(client, 1)
    entries = await views.move_views(clients.redis, [1])
    await views.apply_views(entries)
    assert views.visible_views(await stored(1), await views.snapshot(clients.redis, 1)) == 14
