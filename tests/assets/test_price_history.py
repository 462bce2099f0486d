from datetime import timedelta

from tests import factories
from tests.factories import T0


async def history(client, token=1, **params):
    return await client.get(f"/api/assets/{token}/price-history", params=params)


async def seed_prices():
    await factories.asset(1)
    # two days of hourly oracle points 1.00, 1.01, ... and two sales
    for hour in range(48):
        await factories.price_point(1, T0 + timedelta(hours=hour), f"{1 + hour / 100:.2f}")
    await factories.price_point(1, T0 + timedelta(hours=5, minutes=30), "3", source="sale", confidence=None)
    await factories.price_point(
        1, T0 + timedelta(hours=30, minutes=30), "0.5", source="sale", confidence=None
    )


async def test_raw_points_page_oldest_first_with_a_cursor(client):
    await seed_prices()
    first = (await history(client, limit=20)).json()
    assert first["interval"] == "raw" and len(first["points"]) == 20
    assert first["points"][0]["priceWei"] == "1000000000000000000"
    seen, cursor = [p["timestamp"] for p in first["points"]], first["nextCursor"]
    while cursor:
        page = (await history(client, limit=20, cursor=cursor)).json()
        seen += [p["timestamp"] for p in page["points"]]
        cursor = page["nextCursor"]
    assert len(seen) == 50 and seen == sorted(seen)


async def test_source_and_time_filters(client):
    await seed_prices()
    sales = (await history(client, source="sale")).json()["points"]
    assert [p["price"] for p in sales] == [3.0, 0.5]
    window = (await history(client, **{"from": "2025-01-01T10:00:00Z", "to": "2025-01-01T12:00:00Z"})).json()
    assert [p["price"] for p in window["points"]] == [1.10, 1.11]


async def test_buckets_give_ohlc_from_an_aggregation(client):
    await seed_prices()
    params = {"interval": "1d", "from": "2025-01-01T00:00:00Z", "to": "2025-01-03T00:00:00Z"}
    buckets = (await history(client, **params)).json()["buckets"]
    assert [b["bucket"] for b in buckets] == ["2025-01-01T00:00:00Z", "2025-01-02T00:00:00Z"]
    day1, day2 = buckets
    assert (day1["open"], day1["high"], day1["low"], day1["close"], day1["count"]) == (
        1.0,
        3.0,
        1.0,
        1.23,
        25,
    )
    assert (day2["open"], day2["low"], day2["close"], day2["count"]) == (1.24, 0.5, 1.47, 25)
    hourly = (
        await history(
            client, interval="1h", source="ai-oracle", **{"from": params["from"], "to": params["to"]}
        )
    ).json()
    assert len(hourly["buckets"]) == 48 and all(b["count"] == 1 for b in hourly["buckets"])
    weekly = (
        await history(client, interval="1w", **{"from": "2024-12-01T00:00:00Z", "to": params["to"]})
    ).json()
    assert [b["bucket"] for b in weekly["buckets"]] == ["2024-12-30T00:00:00Z"]  # weeks start on Monday
    assert weekly["buckets"][0]["count"] == 50
    assert abs(weekly["buckets"][0]["mean"] - (sum(1 + h / 100 for h in range(48)) + 3.5) / 50) < 1e-9


async def test_csv_for_analysts(client):
    await seed_prices()
    raw = await history(client, format="csv", limit=10)
    assert raw.headers["content-type"].startswith("text/csv")
    lines = raw.text.strip().splitlines()
    assert lines[0].startswith("timestamp,price,priceWei") and len(lines) == 11
    assert raw.headers["x-next-cursor"]
    bucketed = await history(
        client, format="csv", interval="1d", **{"from": "2025-01-01T00:00:00Z", "to": "2025-01-03T00:00:00Z"}
    )
    assert bucketed.text.splitlines()[0] == "bucket,open,high,low,close,mean,count,meanConfidence"
    assert len(bucketed.text.strip().splitlines()) == 3


async def test_unknown_token_and_bad_parameters(client):
    await factories.asset(1)
    unknown = await history(client, token=2)
    assert unknown.status_code == 404, unknown.text
    assert unknown.json()["error"]["code"] == "asset_not_found"
    cases = [
        ({"interval": "5m"}, "invalid_interval"),
        ({"source": "$where"}, "invalid_source"),
        ({"from": "2025-02-01T00:00:00Z", "to": "2025-01-01T00:00:00Z"}, "invalid_range"),
        ({"interval": "1h", "from": "2000-01-01T00:00:00Z", "to": "2025-01-01T00:00:00Z"}, "range_too_large"),
        ({"limit": 5000}, "invalid_limit"),
        ({"cursor": "nope"}, "invalid_cursor"),
        ({"format": "xml"}, "invalid_format"),
        ({"from": "yesterday"}, "validation_error"),
    ]
    for params, code in cases:
        response = await history(client, **params)
        assert response.status_code == 400, (params, response.text)
        assert response.json()["error"]["code"] == code, params
