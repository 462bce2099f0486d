from datetime import timedelta

import pytest

from app.lib.cache import CACHE_HITS, CACHE_MISSES
from app.lib.timeutil import utcnow
from app.market import service
from tests import factories
from tests.factories import ALICE, BOB, CAROL


async def stats(client):
    response = await client.get("/api/market/stats")
    assert response.status_code == 200, response.text
    return response.json()


async def test_stats_are_computed_from_the_data(client, clients):
    await factories.asset(1, asset_type="Art", owner=ALICE, price="1", listed_at="2")
    await factories.asset(2, asset_type="Art", owner=BOB, price="3", listed_at="1.5")
    await factories.asset(3, asset_type="Art", owner=BOB, price="8")
    await factories.asset(4, asset_type="Wine", owner=CAROL, price=None)
    now = utcnow()
    sales = [
        factories.transaction(1, price="1", at=now - timedelta(hours=2)),  # 24h
        factories.transaction(2, price="2", at=now - timedelta(hours=30), kind="sell"),  # prev 24h, in 7d
        factories.transaction(3, price="4", at=now - timedelta(days=10)),  # prev 7d, in 30d
        factories.transaction(4, price="8", at=now - timedelta(days=40)),  # prev 30d
        factories.transaction(5, price="100", at=now - timedelta(hours=1), status="failed"),  # not a sale
        factories.transaction(6, price="50", at=now - timedelta(hours=1), kind="list"),  # not a sale
    ]
    for tx in sales:
        await service.record_transaction(clients.redis, tx)
    body = await stats(client)
    assert body["totalAssets"] == 4 and body["listedCount"] == 2 and body["uniqueOwners"] == 3
    assert body["assetsByType"] == {"Art": 3, "Wine": 1}
    art = next(row for row in body["priceByType"] if row["assetType"] == "Art")
    assert art["floorPrice"] == 1.5 and art["floorPriceWei"] == "1500000000000000000"
    assert art["meanPrice"] == pytest.approx(4.0) and art["medianPrice"] == 3.0
    volume = body["volume"]
    assert (volume["24h"]["volume"], volume["24h"]["salesCount"], volume["24h"]["previousVolume"]) == (
        1.0,
        1,
        2.0,
    )
    assert volume["24h"]["volumeWei"] == "1000000000000000000"
    assert volume["24h"]["volumeChangePct"] == -50.0
    assert (volume["7d"]["volume"], volume["7d"]["previousVolume"], volume["7d"]["volumeChangePct"]) == (
        3.0,
        4.0,
        -25.0,
    )
    assert (volume["30d"]["volume"], volume["30d"]["previousVolume"], volume["30d"]["salesCount"]) == (
        7.0,
        8.0,
        3,
    )


async def test_stats_are_cached_until_a_write(client, clients):
    await factories.asset(1, price="1")
    hits = CACHE_HITS.labels("market_stats")._value.get()
    misses = CACHE_MISSES.labels("market_stats")._value.get()
    assert (await stats(client))["totalAssets"] == 1
    assert (await stats(client))["totalAssets"] == 1
    assert CACHE_MISSES.labels("market_stats")._value.get() == misses + 1
    assert CACHE_HITS.labels("market_stats")._value.get() == hits + 1
    await service.record_transaction(clients.redis, factories.transaction(1, price="2", at=utcnow()))
    assert (await stats(client))["volume"]["24h"]["salesCount"] == 1  # invalidated by the write


async def test_listings_are_filtered_and_sorted_by_asking_price(client):
    await factories.asset(1, asset_type="Art", price="9", listed_at="3")
    await factories.asset(2, asset_type="Art", price="1", listed_at="5")
    await factories.asset(3, asset_type="Wine", price="2", listed_at="1")
    await factories.asset(4, asset_type="Art", price="4")
    response = await client.get("/api/market/listings", params={"sort": "price"})
    assert [i["tokenId"] for i in response.json()["items"]] == [3, 1, 2]
    art = await client.get("/api/market/listings", params={"assetType": "Art", "sort": "-price", "limit": 1})
    page = art.json()
    assert [i["tokenId"] for i in page["items"]] == [2]
    rest = await client.get(
        "/api/market/listings", params={"assetType": "Art", "sort": "-price", "cursor": page["nextCursor"]}
    )
    assert [i["tokenId"] for i in rest.json()["items"]] == [1]
    cheap = await client.get("/api/market/listings", params={"maxPrice": "3"})
    assert sorted(i["tokenId"] for i in cheap.json()["items"]) == [1, 3]
    assert (await client.get("/api/market/listings", params={"sort": "nope"})).status_code == 400
