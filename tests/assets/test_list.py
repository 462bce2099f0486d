from datetime import timedelta

import pytest

from app.assets.documents import Asset
from app.lib import params
from tests import factories
from tests.factories import ALICE, BOB, T0


async def ids(client, **params) -> list[int]:
    response = await client.get("/api/assets", params=params)
    assert response.status_code == 200, response.text
    return [item["tokenId"] for item in response.json()["items"]]


async def walk(client, path="/api/assets", **params) -> list[int]:
    """Every page of a list, following nextCursor."""
    seen, cursor = [], None
    while True:
        response = await client.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.text
        body = response.json()
        seen += [item["tokenId"] for item in body["items"]]
        cursor = body["nextCursor"]
        if cursor is None:
            return seen


async def test_list_items_are_compact_with_exact_wei(client):
    await factories.asset(1, price="1.000000000000000001", listed_at="2.5", verified=True)
    body = (await client.get("/api/assets")).json()
    item = body["items"][0]
    assert item["currentPrice"]["valueWei"] == "1000000000000000001"
    assert item["currentPrice"]["value"] == pytest.approx(1.0)
    assert item["marketStatus"] == {
        "isListed": True,
        "listingPrice": 2.5,
        "listingPriceWei": "2500000000000000000",
        "listedAt": "2025-01-01T01:00:00Z",
        "listedBy": ALICE,
    }
    assert item["owner"] == ALICE and item["isVerified"] is True
    assert "metadata" not in item and "description" not in item
    assert body["nextCursor"] is None and body["limit"] == 20


async def test_filters_combine(client):
    await factories.asset(1, asset_type="Art", owner=ALICE, price="1", listed_at="1.2", verified=True)
    await factories.asset(2, asset_type="Art", owner=BOB, price="5")
    await factories.asset(3, asset_type="Real Estate", owner=ALICE, price="300", listed_at="310")
    await factories.asset(4, asset_type="Collectible", owner=BOB, price=None)
    assert sorted(await ids(client, assetType="Art")) == [1, 2]
    assert sorted(await ids(client, owner=ALICE)) == [1, 3]
    assert sorted(await ids(client, owner=ALICE.lower())) == [1, 3]  # any case, stored checksummed
    assert sorted(await ids(client, isListed="true")) == [1, 3]
    assert sorted(await ids(client, isListed="false")) == [2, 4]
    assert await ids(client, isVerified="true") == [1]
    assert sorted(await ids(client, minPrice=2)) == [2, 3]
    assert sorted(await ids(client, minPrice=1, maxPrice=5)) == [1, 2]
    assert await ids(client, assetType="Art", isListed="true", owner=ALICE) == [1]


async def test_q_is_a_literal_case_insensitive_name_prefix(client):
    await factories.asset(1, name="Mona Lisa (study)")
    await factories.asset(2, name="Monet Water Lilies")
    await factories.asset(3, name="A.*")
    await factories.asset(4, name="Still life with Mona")
    assert sorted(await ids(client, q="mon")) == [1, 2]
    assert await ids(client, q="Mona Lisa (") == [1]
    assert await ids(client, q="A.*") == [3]  # regex syntax is literal
    assert await ids(client, q=".*") == []
    assert await ids(client, q="^(a+)+$") == []


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("-createdAt", [3, 2, 1, 4]),
        ("createdAt", [4, 1, 2, 3]),
        ("price", [4, 1, 2, 3]),  # no price sorts first ascending
        ("-price", [3, 2, 1, 4]),
        ("-viewCount", [2, 3, 1, 4]),
        ("viewCount", [4, 1, 3, 2]),
        ("-updatedAt", [3, 2, 1, 4]),
    ],
)
async def test_sorts(client, sort, expected):
    await factories.asset(1, price="1", views=5, created=T0 + timedelta(days=1))
    await factories.asset(2, price="2", views=50, created=T0 + timedelta(days=2))
    await factories.asset(3, price="3", views=10, created=T0 + timedelta(days=3))
    await factories.asset(4, price=None, views=0, created=T0)
    assert await ids(client, sort=sort) == expected
    # every page size gives the same order
    assert await walk(client, sort=sort, limit=1) == expected


@pytest.mark.parametrize("sort", ["-createdAt", "price", "-price", "viewCount", "-viewCount"])
async def test_pages_cover_everything_once_with_ties_and_nulls(client, sort):
    # many equal sort values (ties broken by _id) and several missing prices
    for token in range(1, 24):
        price = None if token % 5 == 0 else str(token % 3)
        await factories.asset(token, price=price, views=token % 2, created=T0 + timedelta(hours=token // 4))
    expected = await ids(client, sort=sort, limit=100)
    assert sorted(expected) == list(range(1, 24))
    assert await walk(client, sort=sort, limit=4) == expected


async def test_cursor_is_stable_under_concurrent_inserts_and_updates(client):
    for token in range(1, 11):
        await factories.asset(token, created=T0 + timedelta(hours=token))
    first = (await client.get("/api/assets", params={"limit": 4})).json()
    assert [i["tokenId"] for i in first["items"]] == [10, 9, 8, 7]
    # between pages: a newer asset (sorts before the cursor), an older one (after it),
    # and updates to assets on both sides that do not move them
    await factories.asset(11, created=T0 + timedelta(hours=20))
    await factories.asset(12, created=T0 + timedelta(minutes=30))
    collection = Asset.get_pymongo_collection()
    await collection.update_many(
        {"tokenId": {"$in": [9, 3]}}, {"$set": {"name": "renamed"}, "$inc": {"version": 1}}
    )
    await collection.update_one({"tokenId": 2}, {"$inc": {"stats.viewCount": 7}})
    rest, cursor = [], first["nextCursor"]
    while cursor:
        page = (await client.get("/api/assets", params={"limit": 4, "cursor": cursor})).json()
        rest += [i["tokenId"] for i in page["items"]]
        cursor = page["nextCursor"]
    seen = [10, 9, 8, 7, *rest]
    assert rest == [6, 5, 4, 3, 2, 1, 12]  # no duplicate, no skip; the older insert shows up in order
    assert len(seen) == len(set(seen))


async def test_users_assets_lists_a_wallets_assets(client):
    await factories.asset(1, owner=ALICE)
    await factories.asset(2, owner=BOB)
    await factories.asset(3, owner=ALICE, asset_type="Wine")
    response = await client.get(f"/api/users/{ALICE.lower()}/assets")
    assert response.status_code == 200
    assert sorted(i["tokenId"] for i in response.json()["items"]) == [1, 3]
    wines = await client.get(f"/api/users/{ALICE}/assets", params={"assetType": "Wine"})
    assert [i["tokenId"] for i in wines.json()["items"]] == [3]
    bad = await client.get("/api/users/not-an-address/assets")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_address"


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"sort": "name"}, "invalid_sort"),
        ({"sort": "-$where"}, "invalid_sort"),
        ({"limit": 0}, "invalid_limit"),
        ({"limit": 101}, "invalid_limit"),
        ({"limit": "ten"}, "validation_error"),
        ({"cursor": "abc"}, "invalid_cursor"),
        ({"cursor": "eyJrIjoiYXNzZXRzIn0.AAAA"}, "invalid_cursor"),
        ({"owner": "0x123"}, "invalid_address"),
        ({"owner": '{"$ne": null}'}, "invalid_address"),
        ({"assetType": '{"$gt": ""}'}, "invalid_asset_type"),
        ({"minPrice": "-1"}, "invalid_price"),
        ({"minPrice": "5", "maxPrice": "1"}, "invalid_price"),
        ({"minPrice": "nan"}, "invalid_price"),
        ({"q": "x" * 101}, "invalid_query"),
        ({"isListed": "maybe"}, "validation_error"),
    ],
)
async def test_bad_input_is_400_with_a_code(client, params, code):
    response = await client.get("/api/assets", params=params)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == code


@pytest.mark.parametrize(
    "query", ["owner[$ne]=x", "price[$gt]=0", "$where=1", "marketStatus.isListed=true", "sort[$regex]=a"]
)
async def test_operator_shaped_parameters_are_refused(client, query):
    await factories.asset(1)
    response = await client.get(f"/api/assets?{query}")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "operator_not_allowed"


@pytest.mark.parametrize(
    "path",
    [
        "/api/assets",
        "/api/transactions",
        "/api/market/listings",
        "/api/assets/1/price-history",
        "/api/auth/nonce",
    ],
)
async def test_a_parameter_sent_twice_is_refused_on_every_route(client, path):
    """`limit=1&limit=500` reads as either value depending on the layer: neither is guessed."""
    response = await client.get(f"{path}?limit=1&limit=500")
    assert response.status_code == 400, response.text
    assert response.json()["error"] == {
        "code": "repeated_parameter",
        "message": "query parameter 'limit' is sent more than once",
        "details": {"name": "limit"},
    }


async def test_an_empty_sort_is_refused_not_taken_for_the_default(client):
    response = await client.get("/api/assets?sort=")
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_sort"


async def test_a_cursor_cannot_be_forged_or_moved_to_another_sort(client):
    for token in range(1, 5):
        await factories.asset(token, price=str(token))
    cursor = (await client.get("/api/assets", params={"limit": 2})).json()["nextCursor"]
    body, signature = cursor.split(".")
    tampered = body[:-2] + ("AA" if body[-2:] != "AA" else "BB") + "." + signature
    for bad in (tampered, cursor + "x", cursor.replace(".", "")):
        response = await client.get("/api/assets", params={"limit": 2, "cursor": bad})
        assert response.json()["error"]["code"] == "invalid_cursor"
    other_sort = await client.get("/api/assets", params={"limit": 2, "cursor": cursor, "sort": "price"})
    assert other_sort.status_code == 400
    listings = await client.get("/api/market/listings", params={"cursor": cursor})
    assert listings.status_code == 400


def _stages(plan: dict) -> list[str]:
    stages, node = [], plan["queryPlanner"]["winningPlan"]
    while node:
        stages.append(node["stage"])
        node = node.get("inputStage")
    return stages


# What SecantusDB (0.7) can and cannot do here, read from its planner (secantus/storage.py,
# `_explain_plan_uncached`, `find_matching`): a sort is served by an index walk only when the filter is
# empty (a compound index exactly matching the (field, _id) sort) or when the one filter field is the one
# sort field. With any other filter it picks an index for the filter (the single-field one, or a compound
# one only as equality prefix + ONE range field) and then sorts in memory: SORT -> FETCH -> IXSCAN, whatever
# the compound indexes' key order. A hint does not help: it walks the whole hinted index without bounds,
# then still sorts unless the sort is a single field equal to the index's leading one. So for filtered
# sorts the test asserts only an index scan, not the absence of SORT; the (filter, sort, _id) indexes are
# for MongoDB, whose planner serves those orders from them. The first page of an unfiltered sort is the
# case SecantusDB serves in index order, and that is asserted.
@pytest.mark.parametrize(
    ("query", "sort", "listings"),
    [
        ({}, "-createdAt", False),
        ({}, "createdAt", False),
        ({}, "-price", False),
        ({}, "price", False),
        ({}, "-updatedAt", False),
        ({}, "-viewCount", False),
        ({"assetType": "Art"}, "-createdAt", False),
        ({"assetType": "Art"}, "-price", False),
        ({"marketStatus.isListed": True}, "-createdAt", False),
        ({"marketStatus.isListed": True}, "price", True),
        ({"ownership.currentOwner": ALICE}, "-createdAt", False),
        ({"ownership.currentOwner": ALICE}, "-price", False),
    ],
)
async def test_main_list_queries_and_their_next_pages_use_an_index(client, query, sort, listings):
    from app.assets import repository
    from app.lib import params
    from app.lib.pagination import Position, keyset_queries, value_at

    for token in range(1, 6):
        await factories.asset(token, price=str(token), listed_at=str(token))
    _, order = params.parse_sort(sort, repository.LISTING_SORTS if listings else repository.ASSET_SORTS)
    doc = await Asset.get_pymongo_collection().find_one({"tokenId": 3})
    after = Position(value_at(doc, order.path), doc["_id"])
    collection = Asset.get_pymongo_collection()
    for filter_, spec in [*keyset_queries(query, order, None), *keyset_queries(query, order, after)]:
        plan = await collection.find(filter_, sort=spec, limit=20).explain()
        stages = _stages(plan)
        assert "IXSCAN" in stages and "COLLSCAN" not in stages, (filter_, spec, stages)
        if not filter_:
            assert "SORT" not in stages, (spec, stages)  # walked in order on the (field, _id) index


async def test_name_prefix_search_uses_the_name_index(client):
    from app.assets import catalog, repository, schemas

    for token, name in enumerate(["Mona Lisa", "MONET", "Still life"], start=1):
        await factories.asset(token, name=name)
    query = catalog.asset_filter(schemas.AssetQuery(q="mon"))
    assert query == {"nameLower": {"$gte": "mon", "$lt": "moo"}}
    _, order = params.parse_sort(None, repository.ASSET_SORTS)
    plan = await Asset.get_pymongo_collection().find(query, sort=[(order.path, -1), ("_id", -1)]).explain()
    stages = _stages(plan)
    assert "COLLSCAN" not in stages and "IXSCAN" in stages, stages
    assert plan["queryPlanner"]["winningPlan"]["inputStage"]["inputStage"]["indexName"] == "nameLower"


def test_prefix_range_bounds_every_string_with_the_prefix():
    from app.assets.repository import prefix_range

    assert prefix_range("ab") == {"$gte": "ab", "$lt": "ac"}
    assert prefix_range("a\ud7ff") == {"$gte": "a\ud7ff", "$lt": "a\ue000"}  # never a lone surrogate
    assert prefix_range("a\U0010ffff") == {"$gte": "a\U0010ffff", "$lt": "b"}
    assert prefix_range("\U0010ffff") == {"$gte": "\U0010ffff"}


async def test_q_matches_any_case_and_older_assets_after_the_backfill(client, clients):
    from app.market import jobs

    await factories.asset(1, name="Éclair Study")
    await factories.asset(2, name="Straße at Night")
    collection = Asset.get_pymongo_collection()
    # an asset written before `nameLower` existed
    await factories.asset(3, name="ÉCLAIR, second state")
    await collection.update_one({"tokenId": 3}, {"$unset": {"nameLower": ""}})
    assert await ids(client, q="éclair") == [1]
    assert await ids(client, q="STRASSE") == [2]  # case-folded, like a case-insensitive match
    result = await jobs.backfill_search_fields({})
    assert result["assets"] == 1
    assert await ids(client, q="Éclair") == [3, 1]
    assert (await jobs.backfill_search_fields({}))["assets"] == 0  # idempotent


async def test_cursor_is_stable_for_a_price_sort_under_concurrent_inserts(client):
    for token in range(1, 11):
        await factories.asset(token, price=str(token))
    first = (await client.get("/api/assets", params={"limit": 4, "sort": "-price"})).json()
    assert [i["tokenId"] for i in first["items"]] == [10, 9, 8, 7]
    # between pages: a dearer asset (before the cursor), a cheaper one (after it), one tied with the
    # cursor's price (ties go by _id, newest first: before the cursor), and one with no price (last)
    await factories.asset(11, price="20")
    await factories.asset(12, price="5.5")
    await factories.asset(13, price="7")
    await factories.asset(14)
    await Asset.get_pymongo_collection().update_one({"tokenId": 4}, {"$set": {"name": "renamed"}})
    rest, cursor = [], first["nextCursor"]
    while cursor:
        params = {"limit": 3, "sort": "-price", "cursor": cursor}
        page = (await client.get("/api/assets", params=params)).json()
        rest += [i["tokenId"] for i in page["items"]]
        cursor = page["nextCursor"]
    assert rest == [6, 12, 5, 4, 3, 2, 1, 14]  # no duplicate, no skip
