from app.assets import service
from app.assets.documents import Asset, AssetMedia, MediaFile
from app.lib.cache import CACHE_HITS, CACHE_MISSES
from tests import factories

ORIGINAL = "images/originals/7/7_primary_20250101.jpg"
THUMB = "images/thumbnails/7/7_thumb_md.jpg"


def media() -> AssetMedia:
    return AssetMedia(
        thumbnailUrl=THUMB,
        imageKeys=[ORIGINAL],
        files=[
            MediaFile(key=ORIGINAL, kind="image", label="primary", status="processed", access="admin"),
            MediaFile(
                key=THUMB,
                kind="thumbnail",
                label="md",
                status="stored",
                access="public",
                contentType="image/jpeg",
            ),
        ],
    )


def counter(metric, name: str) -> float:
    return metric.labels(name)._value.get()


async def test_detail_counts_views_atomically(client, clients):
    await factories.asset(1, views=41)
    bodies = [(await client.get("/api/assets/1")).json() for _ in range(3)]
    assert [b["stats"]["viewCount"] for b in bodies] == [42, 43, 44]
    await service.flush_views(clients.redis)  # views are buffered in Redis until the flush job runs
    stored = await Asset.get_pymongo_collection().find_one({"tokenId": 1})
    assert stored["stats"]["viewCount"] == 44


async def test_detail_has_the_full_asset(client):
    await factories.asset(1, price="1.25", listed_at="1.5")
    body = (await client.get("/api/assets/1")).json()
    assert body["tokenId"] == 1 and body["contractAddress"] == factories.CONTRACT
    assert body["currentPrice"]["valueWei"] == "1250000000000000000"
    assert body["marketStatus"]["listingPriceWei"] == "1500000000000000000"
    assert body["ownership"]["currentOwner"] == factories.ALICE
    assert set(body) >= {"metadata", "verification", "stats", "media", "version", "createdAt", "updatedAt"}


async def test_unknown_token_is_404(client):
    response = await client.get("/api/assets/999")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "asset_not_found"
    assert (await client.get("/api/assets/abc")).status_code in (400, 404)


async def test_anonymous_detail_never_shows_original_keys(client, settings):
    await factories.asset(7, media=media())
    anonymous = (await client.get("/api/assets/7")).text
    assert ORIGINAL not in anonymous
    assert THUMB in anonymous  # the public thumbnail URL
    admin = await factories.login(settings, roles=("admin",))
    as_admin = (await client.get("/api/assets/7", headers=admin.headers)).json()
    assert as_admin["media"]["images"][0]["originalKey"] == ORIGINAL
    # what the admin saw did not end up in the cache for anyone else
    assert ORIGINAL not in (await client.get("/api/assets/7")).text


async def test_second_read_is_a_cache_hit_and_counted_in_metrics(client):
    await factories.asset(1)
    hits, misses = counter(CACHE_HITS, "asset_detail"), counter(CACHE_MISSES, "asset_detail")
    await client.get("/api/assets/1")
    await client.get("/api/assets/1")
    assert counter(CACHE_MISSES, "asset_detail") == misses + 1
    assert counter(CACHE_HITS, "asset_detail") == hits + 1
    metrics = (await client.get("/metrics")).text
    assert 'dynamicvault_cache_hits_total{cache="asset_detail"}' in metrics
    assert 'dynamicvault_cache_misses_total{cache="asset_detail"}' in metrics


async def test_a_client_reads_its_own_metadata_write(client, settings):
    owner = await factories.login(settings)
    await factories.asset(1, owner=owner.wallet)
    before = (await client.get("/api/assets/1")).json()  # now cached
    patched = await client.patch(
        "/api/assets/1/metadata",
        json={"version": before["version"], "metadata": {"condition": "Restored"}},
        headers=owner.headers,
    )
    assert patched.status_code == 200, patched.text
    after = (await client.get("/api/assets/1")).json()
    assert after["metadata"]["condition"] == "Restored"
    assert after["version"] == before["version"] + 1


async def test_writes_by_other_components_are_never_served_stale(client):
    await factories.asset(1, price="1")
    await client.get("/api/assets/1")  # cached
    collection = Asset.get_pymongo_collection()
    # the oracle, the chain indexer and the media pipeline write without going through this API
    await collection.update_one(
        {"tokenId": 1},
        {
            "$set": {
                "currentPrice.value": 2.0,
                "ownership.currentOwner": factories.BOB,
                "media.thumbnailUrl": "x.jpg",
            }
        },
    )
    body = (await client.get("/api/assets/1")).json()
    assert body["currentPrice"]["value"] == 2.0
    assert body["ownership"]["currentOwner"] == factories.BOB
    # and a static field changed with a version bump is re-read
    await collection.update_one({"tokenId": 1}, {"$set": {"name": "Renamed"}, "$inc": {"version": 1}})
    assert (await client.get("/api/assets/1")).json()["name"] == "Renamed"


async def test_a_recreated_asset_does_not_get_the_old_cached_body(client):
    await factories.asset(1, name="First")
    await client.get("/api/assets/1")
    await Asset.get_pymongo_collection().delete_one({"tokenId": 1})
    await factories.asset(1, name="Second")
    assert (await client.get("/api/assets/1")).json()["name"] == "Second"


async def test_provenance_documentation_is_shown_to_admins_only(client, settings):
    owner = await factories.login(settings)
    await factories.asset(7, owner=owner.wallet, media=media())
    version = (await client.get("/api/assets/7")).json()["version"]
    # an owner can write any key into provenance, an admin-only original included
    provenance = [{"owner": "Gallery X", "period": "1990-2000", "documentation": ORIGINAL}]
    patched = await client.patch(
        "/api/assets/7/metadata",
        json={"version": version, "metadata": {"provenance": provenance}},
        headers=owner.headers,
    )
    assert patched.status_code == 200, patched.text
    assert ORIGINAL not in patched.text
    for headers in ({}, owner.headers):
        body = (await client.get("/api/assets/7", headers=headers)).json()
        assert body["metadata"]["provenance"] == [{"owner": "Gallery X", "period": "1990-2000"}]
        assert ORIGINAL not in str(body)
    admin = await factories.login(settings, roles=("admin",))
    as_admin = (await client.get("/api/assets/7", headers=admin.headers)).json()
    assert as_admin["metadata"]["provenance"][0]["documentation"] == ORIGINAL
    assert ORIGINAL not in (await client.get("/api/assets/7")).text  # nor cached for anyone else
