"""Refreshing sources through the API and the worker: rows in, sales and index points out, status recorded."""

import json
from datetime import UTC, datetime
from decimal import Decimal

from app.oracle import service
from app.oracle.documents import ComparableSale, DataSource, IndexPoint
from tests import factories
from tests.conftest import drain_jobs
from tests.oracle.conftest import Reply

ROUTES = "/api/oracle/data-sources"
RATES_CSV = b"timestamp,value\n2024-01-01T00:00:00Z,2000\n2024-01-03T00:00:00Z,3000\n"
SALES_CSV = (
    b"id,Sale_Price,sold_at,currency,Lot_Area,Neighborhood\n"
    b"1,300000,2024-01-02,USD,8450,NAmes\n"  # 2000 USD/ETH: 150 ETH
    b"2,1.5,2024-01-03T12:00:00Z,ETH,9600,CollgCr\n"  # already ETH
    b"3,1000,2024-01-05,USD,11250,NAmes\n"  # 3000 USD/ETH: a third of an ETH
    b"4,1000,2024-01-04,EUR,1,X\n"  # neither ETH nor USD
    b"5,100,2023-12-01,USD,5,Y\n"  # before the first rate
)
SALES = {"price": "Sale_Price", "soldAt": "sold_at", "externalId": "id"}


async def refresh(client, clients, settings, admin, source_id: str) -> dict:
    """Queue a refresh over the API, run the worker, and answer the job's status as the API reports it."""
    queued = await client.post(f"{ROUTES}/{source_id}/refresh", headers=admin.headers)
    assert queued.status_code == 202, queued.text
    await drain_jobs(clients, settings)
    return (await client.get(queued.json()["statusUrl"])).json()


async def source(client, admin, source_id: str) -> dict:
    return (await client.get(f"{ROUTES}/{source_id}", headers=admin.headers)).json()


async def rates_and_sales(settings, source_server) -> tuple[dict, dict]:
    source_server.routes["/rates.csv"] = Reply(body=RATES_CSV)
    source_server.routes["/sales.csv"] = Reply(body=SALES_CSV)
    rates = await factories.data_source(
        settings, name="ETH/USD", kind="index", url=source_server.url("/rates.csv")
    )
    sales = await factories.data_source(
        settings,
        name="ames",
        url=source_server.url("/sales.csv"),
        configuration={"mapping": SALES, "defaults": {"assetType": "Real Estate"}},
    )
    return rates, sales


async def test_usd_sales_are_priced_in_eth_at_their_sale_time_with_exact_wei(
    client, clients, local_settings, admin, source_server
):
    rates, sales = await rates_and_sales(local_settings, source_server)
    assert (await refresh(client, clients, local_settings, admin, rates["id"]))["result"]["rowsAccepted"] == 2
    job = await refresh(client, clients, local_settings, admin, sales["id"])
    assert job["success"] is True, job
    assert job["result"]["rowsAccepted"] == 3 and job["result"]["rowsRejected"] == 2

    stored = {s.externalId: s for s in await ComparableSale.find_all().to_list()}
    assert set(stored) == {"1", "2", "3"}
    assert stored["1"].priceWei == Decimal(150 * 10**18) and stored["1"].price == 150.0
    assert (stored["1"].priceUsd, stored["1"].usdPerEth, stored["1"].originalPrice) == (
        300000.0,
        "2000",
        "300000",
    )
    assert stored["2"].priceWei == Decimal(15 * 10**17) and stored["2"].priceUsd == 4500.0  # 1.5 ETH at 3000
    assert stored["3"].priceWei == Decimal(333333333333333333)  # 1000 / 3000 ETH, to the wei (half-even)
    assert stored["1"].attributes == {"Lot_Area": 8450, "Neighborhood": "NAmes"}  # numbers and categories
    assert stored["1"].assetType == "Real Estate" and stored["1"].soldAt == datetime(2024, 1, 2, tzinfo=UTC)

    last = (await source(client, admin, sales["id"]))["lastFetch"]
    assert last["rejectedByReason"] == {"no_usd_rate": 1, "unsupported_currency": 1}
    assert last["rejectedSamples"] == [
        {"row": 5, "reason": "unsupported_currency"},
        {"row": 6, "reason": "no_usd_rate"},
    ]
    points = await IndexPoint.find_all().to_list()
    assert {(p.series, p.value) for p in points} == {("ETH/USD", 2000.0), ("ETH/USD", 3000.0)}


async def test_a_refresh_run_twice_changes_nothing_the_second_time(
    client, clients, local_settings, admin, source_server
):
    rates, sales = await rates_and_sales(local_settings, source_server)
    await refresh(client, clients, local_settings, admin, rates["id"])
    first = (await refresh(client, clients, local_settings, admin, sales["id"]))["result"]
    before = await ComparableSale.get_pymongo_collection().find({}, {"_id": 0}).sort("externalId").to_list()
    second = (await refresh(client, clients, local_settings, admin, sales["id"]))["result"]
    after = await ComparableSale.get_pymongo_collection().find({}, {"_id": 0}).sort("externalId").to_list()
    assert (first["inserted"], first["updated"], first["unchanged"]) == (3, 0, 0)
    assert (second["inserted"], second["updated"], second["unchanged"]) == (0, 0, 3)
    assert before == after
    again = (await refresh(client, clients, local_settings, admin, rates["id"]))["result"]
    assert (again["inserted"], again["updated"], again["unchanged"]) == (0, 0, 2)
    metrics = (await source(client, admin, sales["id"]))["metrics"]
    assert (metrics["fetches"], metrics["rowsAccepted"], metrics["rowsRejected"]) == (2, 6, 4)


async def test_malformed_csv_rows_are_counted_and_skipped_not_the_batch(
    client, clients, local_settings, admin, source_server
):
    source_server.routes["/messy.csv"] = Reply(
        body=b'id,price,soldAt,currency\n1,1.0,2024-01-01,ETH\n2,"2.0"x,2024-01-01,ETH\n3,3.0\n'
        b"4,,2024-01-01,ETH\n5,5.0,yesterday,ETH\n6,6.0,2024-01-01,ETH,extra\n7,abc,2024-01-01,ETH\n"
        b"\xff\xfe,1,2024-01-01,ETH\n8,8.0,2024-01-02,ETH\n8,8.5,2024-01-02,ETH\n"
    )
    messy = await factories.data_source(
        local_settings,
        name="messy",
        url=source_server.url("/messy.csv"),
        configuration={"mapping": {"externalId": "id"}, "defaults": {"assetType": "Art"}},
    )
    job = await refresh(client, clients, local_settings, admin, messy["id"])
    assert job["success"] is True
    last = (await source(client, admin, messy["id"]))["lastFetch"]
    assert (last["rowsAccepted"], last["rowsRejected"], last["duplicates"]) == (2, 7, 1)
    assert last["rejectedByReason"] == {
        "invalid_encoding": 1,
        "invalid_price": 1,
        "invalid_sold_at": 1,
        "malformed_csv": 1,
        "missing_price": 1,
        "wrong_column_count": 2,
    }
    stored = {s.externalId: s.price for s in await ComparableSale.find_all().to_list()}
    assert stored == {"1": 1.0, "8": 8.5}  # a repeated id: the last row counts


async def test_a_source_that_fails_then_recovers(client, clients, local_settings, admin, source_server):
    source_server.routes["/flaky.csv"] = Reply(500, b"down")
    flaky = await factories.data_source(
        local_settings,
        name="flaky",
        url=source_server.url("/flaky.csv"),
        configuration={"refreshInterval": 3600},
    )
    failed = await refresh(client, clients, local_settings, admin, flaky["id"])
    assert (failed["success"], failed["error"]) == (False, "upstream_status")
    assert "HTTP 500" not in json.dumps(failed)  # a code, not the exception's text
    down = await source(client, admin, flaky["id"])
    assert down["status"]["errorCount"] == 1 and down["status"]["lastError"] == "upstream_status"
    assert down["status"]["lastFetchAt"] is None and down["metrics"]["reliability"] == 0
    retry_in = _seconds(down["status"]["nextFetchAt"]) - _seconds(down["status"]["lastAttemptAt"])
    assert retry_in == 60  # a failed source is tried again soon, not after its whole interval

    source_server.routes["/flaky.csv"] = Reply(
        body=b"externalId,price,soldAt,currency,assetType\nA,2,2024-01-01,ETH,Art\n"
    )
    recovered = await refresh(client, clients, local_settings, admin, flaky["id"])
    assert recovered["success"] is True and recovered["result"]["rowsAccepted"] == 1
    up = await source(client, admin, flaky["id"])
    assert up["status"]["errorCount"] == 0 and up["status"]["lastError"] is None
    assert up["status"]["lastFetchAt"] == up["status"]["lastAttemptAt"]
    assert _seconds(up["status"]["nextFetchAt"]) - _seconds(up["status"]["lastFetchAt"]) == 3600
    assert up["metrics"]["reliability"] == 50.0 and up["metrics"]["fetches"] == 2
    assert up["metrics"]["latency"] > 0 and up["lastFetch"]["ok"] is True


async def test_an_oversized_body_fails_the_fetch_and_is_recorded(
    client, clients, local_settings, admin, source_server
):
    capped = local_settings.model_copy(
        update={"outbound": local_settings.outbound.model_copy(update={"max_body_bytes": 1024})}
    )
    source_server.routes["/huge.csv"] = Reply(body=b"id,price\n" + b"1,1\n" * 1000)
    huge = await factories.data_source(capped, name="huge", url=source_server.url("/huge.csv"))
    job = await refresh(client, clients, capped, admin, huge["id"])
    assert job["error"] == "body_too_large"
    assert (await source(client, admin, huge["id"]))["status"]["lastError"] == "body_too_large"
    assert await ComparableSale.find_all().count() == 0


async def test_a_source_on_a_private_address_is_refused_by_the_worker(
    client, clients, settings, admin, source_server
):
    source_server.routes["/data.csv"] = Reply(body=b"id,price\n1,1\n")
    for name, url in (
        ("loopback", source_server.url("/data.csv")),
        ("metadata", "http://169.254.169.254/latest/"),
    ):
        created = await factories.data_source(settings, name=name, url=url)
        job = await refresh(client, clients, settings, admin, created["id"])  # OUTBOUND_ALLOW_PRIVATE off
        assert job["error"] == "address_refused"
        status = (await source(client, admin, created["id"]))["status"]
        assert status["lastError"] == "address_refused" and status["errorCount"] == 1
    assert source_server.seen == []


async def test_api_sources_follow_next_urls_and_page_numbers_with_credentials(
    client, clients, local_settings, admin, source_server
):
    def page(n: int, next_url: str | None) -> Reply:
        rows = [
            {"ref": f"p{n}-{i}", "amount": n + i / 10, "at": "2024-02-01", "kind": "Watch"} for i in range(2)
        ]
        return Reply(body=json.dumps({"data": {"items": rows}, "links": {"next": next_url}}).encode())

    source_server.routes["/v1/sales"] = lambda path: (
        page(2, None) if "cursor=2" in path else page(1, "/v1/sales?cursor=2")
    )
    source_server.routes["/v2/sales"] = lambda path: (
        page(int(path.split("page=")[1]), None)
        if "page=3" not in path
        else Reply(body=b'{"data": {"items": []}}')
    )
    mapping = {"externalId": "ref", "price": "amount", "soldAt": "at", "assetType": "kind"}
    common = {"type": "api", "format": "json", "kind": "sales"}
    config = {"mapping": mapping, "defaults": {"currency": "ETH"}, "rowsPath": "data.items"}
    auth = {"header": "Authorization", "value": "Bearer api-secret"}
    by_url = await factories.data_source(
        local_settings,
        name="by-url",
        url=source_server.url("/v1/sales"),
        configuration={**config, "nextUrlPath": "links.next", "authentication": auth},
        **common,
    )
    by_page = await factories.data_source(
        local_settings,
        name="by-page",
        url=source_server.url("/v2/sales"),
        configuration={**config, "pageParam": "page"},
        **common,
    )
    first = await refresh(client, clients, local_settings, admin, by_url["id"])
    second = await refresh(client, clients, local_settings, admin, by_page["id"])
    assert first["result"]["rowsAccepted"] == 4 and second["result"]["rowsAccepted"] == 4
    assert (await source(client, admin, by_page["id"]))["lastFetch"]["pages"] == 3
    v1 = [seen for seen in source_server.seen if seen.path.startswith("/v1")]
    assert [seen.headers.get("authorization") for seen in v1] == ["Bearer api-secret"] * 2
    assert await ComparableSale.find(ComparableSale.assetType == "Watch").count() == 8


async def test_json_lines_from_the_platforms_bucket(client, clients, local_settings, admin):
    lines = [
        {
            "externalId": i,
            "price": 0.1 * i,
            "soldAt": 1704067200 + i,
            "currency": "ETH",
            "assetType": "Wine",
            "vintage": 1990 + i,
            "region": "Bordeaux",
        }
        for i in range(1, 4)
    ]
    body = "\n".join(json.dumps(line) for line in lines).encode() + b"\nnot json\n[1]\n"
    await clients.storage.put_bytes("data-sources/wine.jsonl", body, "application/x-ndjson")
    wine = await factories.data_source(
        local_settings, name="wine", url="s3://data-sources/wine.jsonl", format="jsonl"
    )
    job = await refresh(client, clients, local_settings, admin, wine["id"])
    assert job["result"]["rowsAccepted"] == 3 and job["result"]["rowsRejected"] == 2
    sale = await ComparableSale.find_one(ComparableSale.externalId == "2")
    assert sale.attributes == {"vintage": 1992, "region": "Bordeaux"}
    assert sale.priceWei == Decimal(2 * 10**17)  # 0.2 ETH, exactly, though 0.1 * 2 is a float
    missing = await factories.data_source(local_settings, name="gone", url="s3://data-sources/none.csv")
    assert (await refresh(client, clients, local_settings, admin, missing["id"]))[
        "error"
    ] == "object_not_found"


async def test_the_cron_queues_each_due_source_once(client, clients, local_settings, source_server):
    source_server.routes["/r.csv"] = Reply(body=b"timestamp,value\n2024-01-01,2500\n")
    due = await factories.data_source(
        local_settings, name="due", kind="index", url=source_server.url("/r.csv")
    )
    await factories.data_source(local_settings, name="off", url=source_server.url("/r.csv"), isEnabled=False)
    assert await service.enqueue_due(clients, local_settings) == {"due": 1, "queued": 1}
    assert await service.enqueue_due(clients, local_settings) == {"due": 1, "queued": 0}  # same job id
    await drain_jobs(clients, local_settings)
    assert await IndexPoint.find_all().count() == 1
    assert await service.enqueue_due(clients, local_settings) == {
        "due": 0,
        "queued": 0,
    }  # next one in an hour
    raw = await DataSource.get_pymongo_collection().find_one({"name": "due"})
    assert raw["status"]["nextFetchAt"] > raw["status"]["lastFetchAt"]
    assert due["id"] == str(raw["_id"])


def _seconds(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()
