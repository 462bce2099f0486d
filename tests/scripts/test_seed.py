from datetime import UTC, datetime

from app.assets.documents import Asset, PriceHistory
from app.market.documents import Transaction
from scripts.seed import SEED_CONTRACT, seed_data

NOW = datetime(2026, 6, 1, tzinfo=UTC)


async def test_seed_makes_a_living_marketplace(client, clients):
    written = await seed_data(clients.redis, count=12, now=NOW)
    assert written["assets"] == 12 and written["priceHistory"] > 12 * 100 and written["transactions"] > 12

    assets = (await client.get("/api/assets", params={"limit": 100})).json()["items"]
    assert len(assets) == 12 and len({a["assetType"] for a in assets}) > 1
    assert all(a["currentPrice"]["valueWei"] for a in assets)
    detail = (await client.get(f"/api/assets/{assets[0]['tokenId']}")).json()
    assert detail["metadata"]["provenance"] and detail["metadata"]["certificates"]
    chart = (
        await client.get(
            f"/api/assets/{assets[0]['tokenId']}/price-history",
            params={"interval": "1w", "to": NOW.isoformat()},
        )
    ).json()
    assert len(chart["buckets"]) > 10
    stats = (await client.get("/api/market/stats")).json()
    assert stats["totalAssets"] == 12 and stats["uniqueOwners"] > 1
    assert (await client.get("/api/transactions")).json()["items"]


async def test_seeded_ownership_and_listings_follow_the_transactions(client, clients):
    await seed_data(clients.redis, count=15, now=NOW)
    async for asset in Asset.find(Asset.contractAddress == SEED_CONTRACT):
        trail = await Transaction.find(Transaction.tokenId == asset.tokenId).sort("+timestamp").to_list()
        assert trail[0].type == "mint" and trail[0].buyer
        owner = trail[0].buyer
        listed = None
        for tx in trail[1:]:
            assert tx.seller == owner, (asset.tokenId, tx.type)
            if tx.type == "list":
                listed = tx.priceWei
            elif tx.type == "delist":
                listed = None
            elif tx.type in ("buy", "sell"):
                if tx.type == "buy":
                    assert tx.priceWei == listed
                owner, listed = tx.buyer, None
        assert asset.ownership.currentOwner == owner
        assert asset.marketStatus.isListed == (listed is not None)
        if listed is not None:
            assert asset.marketStatus.listingPriceWei == listed
        sales = await PriceHistory.find(
            PriceHistory.tokenId == asset.tokenId, PriceHistory.source.type == "sale"
        ).count()
        assert sales == sum(1 for tx in trail if tx.type in ("buy", "sell"))


async def test_seed_is_deterministic_idempotent_and_resettable(client, clients):
    await seed_data(clients.redis, count=8, now=NOW)
    first = [a.model_dump(exclude={"id", "revision_id"}) async for a in Asset.find_all().sort("+tokenId")]
    counts = (await PriceHistory.count(), await Transaction.count())
    again = await seed_data(clients.redis, count=8, now=NOW)
    assert again["assets"] == 0 and again["skipped"] == 8
    assert (await PriceHistory.count(), await Transaction.count()) == counts
    reset = await seed_data(clients.redis, count=8, now=NOW, reset=True)
    assert reset["removed"] == 8 and reset["assets"] == 8
    assert (await PriceHistory.count(), await Transaction.count()) == counts
    second = [a.model_dump(exclude={"id", "revision_id"}) async for a in Asset.find_all().sort("+tokenId")]
    assert second == first
