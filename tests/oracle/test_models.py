"""The oracle end to end on real services: sales in through a source, a version trained by the worker,
appraisals written to predictions and assets, versions rolled forward, the live ledger scoring sales."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import pytest

from app.assets.documents import Asset, AssetMetadata, PriceHistory
from app.audit.documents import AuditLog
from app.lib.money import wei_to_eth
from app.market import service as market_service
from app.oracle import service
from app.oracle.documents import AIOracleData, OracleModel
from tests import factories
from tests.conftest import drain_jobs
from tests.oracle.conftest import Reply

MODELS, APPRAISALS = "/api/oracle/models", "/api/oracle/appraisals"
START = datetime(2024, 1, 1, tzinfo=UTC)
RATE = 2000  # USD per ETH, flat


def sales_csv(n: int, *, seed: int = 1, art: int = 5) -> bytes:
    """`n` house sales in USD over two years (price follows the area and the district), and a few art
    sales in ETH: too few for a model."""
    rng = random.Random(seed)
    lines = ["id,price,sold_at,currency,assetType,area,district,tokenId"]
    for i in range(n):
        area = rng.randint(60, 300)
        district = rng.choice("ABC")
        price = 1500 * area * {"A": 1.0, "B": 1.3, "C": 0.8}[district] * rng.lognormvariate(0, 0.08)
        sold = START + timedelta(days=730 * i / n)
        lines.append(f"h{i},{price:.0f},{sold:%Y-%m-%d},USD,Real Estate,{area},{district},")
    for i in range(art):
        lines.append(f"a{i},{1 + i},{START + timedelta(days=i):%Y-%m-%d},ETH,Art,,,")
    return ("\n".join(lines) + "\n").encode()


RATES_CSV = f"timestamp,value\n2023-01-01T00:00:00Z,{RATE}\n".encode()


async def load_sales(client, clients, settings, admin, source_server, n: int = 240) -> None:
    source_server.routes["/rates.csv"] = Reply(body=RATES_CSV)
    source_server.routes["/sales.csv"] = Reply(body=sales_csv(n))
    rates = await factories.data_source(
        settings, name="ETH/USD", kind="index", url=source_server.url("/rates.csv")
    )
    sales = await factories.data_source(
        settings,
        name="houses",
        url=source_server.url("/sales.csv"),
        configuration={"mapping": {"soldAt": "sold_at", "externalId": "id"}},
    )
    for source in (rates, sales):
        assert (
            await client.post(f"/api/oracle/data-sources/{source['id']}/refresh", headers=admin.headers)
        ).status_code == 202
        await drain_jobs(clients, settings)


async def run_job(client, clients, settings, response) -> dict:
    assert response.status_code == 202, response.text
    await drain_jobs(clients, settings)
    status = (await client.get(response.json()["statusUrl"])).json()
    assert status["success"] is True, status
    return status["result"]


async def train(client, clients, settings, admin, **body) -> dict:
    return await run_job(
        client, clients, settings, await client.post(MODELS, json=body, headers=admin.headers)
    )


async def appraise(client, clients, settings, admin, **body) -> dict:
    return await run_job(
        client, clients, settings, await client.post(APPRAISALS, json=body, headers=admin.headers)
    )


async def house(token_id: int, area: int, district: str, **fields) -> Asset:
    metadata = AssetMetadata(customAttributes={"area": area, "district": district})
    return await factories.asset(token_id, asset_type="Real Estate", metadata=metadata, **fields)


@pytest.fixture
async def trained(client, clients, local_settings, admin, source_server) -> dict:
    await load_sales(client, clients, local_settings, admin, source_server)
    return await train(client, clients, local_settings, admin)


async def test_a_version_is_trained_per_type_with_a_clear_status_for_too_little_data(
    client, clients, local_settings, admin, trained
):
    assert trained["status"] == "ready"
    assert trained["types"] == {"Art": "insufficient_data", "Real Estate": "ready"}

    assert (await client.get(MODELS)).status_code == 401  # the versions name sources and features
    page = (await client.get(MODELS, headers=admin.headers)).json()
    [version] = page["items"]
    assert version["version"] == trained["modelVersion"]
    assert version["isCurrent"] is True and version["status"] == "ready"
    types = {t["assetType"]: t for t in version["types"]}
    assert types["Art"]["rows"] == 5 and types["Art"]["needed"] == local_settings.oracle.min_training_rows
    house_model = types["Real Estate"]
    assert house_model["currency"] == "USD" and house_model["rows"] == 240
    assert {"area", "district"} <= set(house_model["features"]["numeric"]) | set(
        house_model["features"]["categorical"]
    )
    assert len(version["dataHash"]) == 64 and len(version["artifact"]["sha256"]) == 64
    assert version["dataSourcesUsed"] == ["houses"]
    backtest = version["backtest"]["byType"]["Real Estate"]
    assert backtest["testRows"] > 0 and set(backtest["model"]["coverage"]) == {"50", "80", "90", "95"}
    assert backtest["model"]["mdape"] < backtest["baselines"]["medianPerCategory"]["mdape"]
    assert version["backtest"]["overall"]["testRows"] == backtest["testRows"]
    assert version["backtest"]["overall"]["trainRows"] == backtest["trainRows"]
    [audited] = await AuditLog.find(AuditLog.action == "oracle.model.train").to_list()
    assert audited.entityId == version["jobId"]

    stored = await OracleModel.find_one(OracleModel.version == trained["modelVersion"])
    assert stored.artifact.key.startswith("oracle-models/")
    assert (await client.get(f"{MODELS}/{trained['modelVersion']}", headers=admin.headers)).json()[
        "version"
    ] == trained["modelVersion"]


async def test_training_and_appraising_need_the_permission(client, local_settings, admin):
    user = await factories.login(local_settings)
    key = await factories.api_key(local_settings, permissions=["datasources:write"])
    for headers in (user.headers, key.headers):
        assert (await client.post(MODELS, json={}, headers=headers)).status_code == 403
        assert (await client.post(APPRAISALS, json={}, headers=headers)).status_code == 403
    assert (await client.post(MODELS, json={})).status_code == 401


async def test_appraisals_write_predictions_prices_and_the_asset_detail(
    client, clients, local_settings, admin, trained
):
    await house(1, 100, "A")
    await house(2, 250, "B")
    await factories.asset(3, asset_type="Vehicle")  # no sales of its type: no model
    result = await appraise(client, clients, local_settings, admin)
    assert result["appraised"] == 2 and result["skipped"] == {"no_model": 1}
    assert await AuditLog.find(AuditLog.action == "oracle.appraisal.request").count() == 1
    assert result["modelVersion"] == trained["modelVersion"]

    small = await AIOracleData.find_one(AIOracleData.tokenId == 1)
    big = await AIOracleData.find_one(AIOracleData.tokenId == 2)
    assert big.predictedPrice > 2 * small.predictedPrice  # 2.5 times the area, and a dearer district
    expected_small = 1500 * 100 / RATE  # ETH
    assert abs(small.predictedPrice - expected_small) / expected_small < 0.25
    assert small.interval.low <= small.predictedPrice <= small.interval.high
    assert wei_to_eth(small.predictedPriceWei) == small.predictedPrice  # the ETH value is the exact wei's
    assert wei_to_eth(small.interval.lowWei) == small.interval.low
    assert 0 < small.confidenceScore <= 100 and small.modelVersion == trained["modelVersion"]
    assert small.featureImportance and {f.feature for f in small.featureImportance} & {"area", "district"}
    assert (
        small.dataSourcesUsed == ["houses"] and small.status == "pending" and small.round is None
    )  # its round is joined by oracle.publish

    detail = (await client.get("/api/assets/1")).json()
    appraisal = detail["appraisal"]
    assert appraisal["predictionId"] == str(small.id) and appraisal["price"] == small.predictedPrice
    assert appraisal["priceWei"] == str(int(small.predictedPriceWei))
    assert detail["currentPrice"]["value"] == small.predictedPrice
    assert detail["currentPrice"]["aiConfidenceScore"] == small.confidenceScore
    points = await PriceHistory.find(PriceHistory.tokenId == 1).to_list()
    assert [(p.source.type, p.source.modelVersion, p.price) for p in points] == [
        ("ai-oracle", trained["modelVersion"], small.predictedPrice)
    ]

    anonymous = (await client.get(f"/api/oracle/predictions/{small.id}")).json()
    assert anonymous["inputs"] is None and anonymous["interval"]["lowWei"].isdigit()
    signed_in = (await client.get(f"/api/oracle/predictions/{small.id}", headers=admin.headers)).json()
    assert signed_in["inputs"]["assetSpecific"]["area"] == 100
    assert signed_in["inputs"]["economicIndicators"]["usdPerEth"] == RATE
    assert (await client.get("/api/oracle/predictions/" + "0" * 24)).status_code == 404


async def test_an_appraisal_job_run_twice_writes_each_prediction_and_point_once(
    client, clients, local_settings, admin, trained
):
    await house(1, 120, "C")
    requested_at = datetime.now(UTC).isoformat()
    for _ in range(2):  # a retry of the same job after a crash, in another second
        await service.appraise(
            clients, local_settings, [1], None, None, "oracle.appraise:retried", requested_at
        )
        await asyncio.sleep(1.05)
    assert await AIOracleData.find_all().count() == 1
    assert await PriceHistory.find(PriceHistory.tokenId == 1).count() == 1


async def test_a_new_version_rolls_forward_and_predictions_cite_it(
    client, clients, local_settings, admin, trained
):
    await house(1, 150, "A")
    await appraise(client, clients, local_settings, admin, tokenIds=[1])
    second = await train(client, clients, local_settings, admin)
    assert second["modelVersion"] != trained["modelVersion"]
    versions = {
        v["version"]: v["isCurrent"]
        for v in (await client.get(MODELS, headers=admin.headers)).json()["items"]
    }
    assert versions == {trained["modelVersion"]: False, second["modelVersion"]: True}

    result = await appraise(client, clients, local_settings, admin, tokenIds=[1])
    assert result["modelVersion"] == second["modelVersion"]
    cited = [
        p.modelVersion for p in await AIOracleData.find(AIOracleData.tokenId == 1).sort("createdAt").to_list()
    ]
    assert cited == [trained["modelVersion"], second["modelVersion"]]
    detail = (await client.get("/api/assets/1")).json()
    assert detail["appraisal"]["modelVersion"] == second["modelVersion"]
    assert (await client.get("/api/oracle/performance")).json()["modelVersion"] == second["modelVersion"]
    old = (
        await client.get("/api/oracle/performance", params={"modelVersion": trained["modelVersion"]})
    ).json()
    assert old["modelVersion"] == trained["modelVersion"] and old["isCurrent"] is False


async def test_historical_appraisals_use_a_version_trained_before_and_keep_todays_price(
    client, clients, local_settings, admin, source_server
):
    await load_sales(client, clients, local_settings, admin, source_server)
    cutoff = START + timedelta(days=500)
    early = await train(client, clients, local_settings, admin, asOf=cutoff.isoformat())
    stored = await OracleModel.find_one(OracleModel.version == early["modelVersion"])
    assert stored.counts["rows"] < 240  # only the sales before the cutoff (and the art)
    await house(1, 100, "A", price="3.0", created=datetime.now(UTC))  # today's price

    before = await client.post(
        APPRAISALS, json={"asOf": (cutoff - timedelta(days=1)).isoformat()}, headers=admin.headers
    )
    assert before.status_code == 409 and before.json()["error"]["code"] == "no_model"
    past = cutoff + timedelta(days=10)
    result = await appraise(client, clients, local_settings, admin, asOf=past.isoformat())
    assert result["modelVersion"] == early["modelVersion"] and result["appraised"] == 1
    [prediction] = await AIOracleData.find_all().to_list()
    assert prediction.asOf.replace(tzinfo=UTC) == past
    asset = await Asset.find_one(Asset.tokenId == 1)
    assert asset.currentPrice.value == 3.0  # the newer price stays
    assert await PriceHistory.find(PriceHistory.tokenId == 1).count() == 1  # the historical point is added


async def test_the_live_ledger_scores_an_appraisal_against_the_next_sale(
    client, clients, local_settings, admin, trained
):
    await house(1, 100, "A")
    await appraise(client, clients, local_settings, admin, tokenIds=[1])
    [prediction] = await AIOracleData.find_all().to_list()
    price = round(prediction.predictedPrice * 1.1, 6)
    later = factories.transaction(2, token_id=1, price=price, at=datetime.now(UTC) + timedelta(days=1))
    await market_service.record_transaction(clients.redis, later)
    assert (await service.score_ledger(clients.redis))[
        "scored"
    ] == 0  # a sale dated tomorrow has not happened
    sold_at = prediction.timestamp.replace(tzinfo=UTC) + timedelta(milliseconds=5)
    await asyncio.sleep(0.02)
    sale = factories.transaction(1, token_id=1, price=price, at=sold_at)
    await market_service.record_transaction(clients.redis, sale)

    assert (await service.score_ledger(clients.redis))["scored"] == 1
    assert (await service.score_ledger(clients.redis))["scored"] == 0  # scored once
    scored = (await client.get(f"/api/oracle/predictions/{prediction.id}")).json()
    assert (
        scored["outcome"]["price"] == price
        and scored["outcome"]["source"] == f"chain:{sale.blockchain.transactionHash}"
    )
    assert abs(scored["outcome"]["ape"] - abs(prediction.predictedPrice - price) / price) < 1e-9
    assert scored["performanceMetrics"]["errorMargin"] == scored["outcome"]["ape"]
    live = (await client.get("/api/oracle/performance")).json()["live"]
    assert live["count"] == 1 and abs(live["mdape"] - scored["outcome"]["ape"]) < 1e-9
    assert live["coverage90"] == float(scored["outcome"]["covered"])
    assert live["byType"]["Real Estate"]["count"] == 1


async def test_without_a_model_appraisals_and_performance_say_so(client, admin):
    response = await client.post(APPRAISALS, json={}, headers=admin.headers)
    assert response.status_code == 409 and response.json()["error"]["code"] == "no_model"
    missing = await client.get("/api/oracle/performance")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


async def test_a_version_without_any_ready_type_fails_and_the_current_one_stays(
    client, clients, local_settings, admin, trained
):
    cutoff = START + timedelta(days=5)  # only the art sales are earlier: too few for any model
    failed = await train(client, clients, local_settings, admin, asOf=cutoff.isoformat())
    assert failed["status"] == "failed" and failed["error"] == "insufficient_data"
    assert failed["types"] == {"Art": "insufficient_data", "Real Estate": "insufficient_data"}
    versions = {
        v["version"]: (v["status"], v["isCurrent"])
        for v in (await client.get(MODELS, headers=admin.headers)).json()["items"]
    }
    assert versions == {trained["modelVersion"]: ("ready", True), failed["modelVersion"]: ("failed", False)}
    stored = await OracleModel.find_one(OracleModel.version == failed["modelVersion"])
    assert stored.artifact is None


async def test_appraisals_and_trainings_refuse_a_future_as_of(client, admin, trained):
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    for route in (MODELS, APPRAISALS):
        refused = await client.post(route, json={"asOf": tomorrow}, headers=admin.headers)
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "as_of_in_future"


async def test_a_named_version_cannot_appraise_as_of_a_time_before_its_data(client, admin, trained):
    past = (START + timedelta(days=400)).isoformat()  # the version learnt from every sale, later ones too
    body = {"asOf": past, "modelVersion": trained["modelVersion"]}
    refused = await client.post(APPRAISALS, json=body, headers=admin.headers)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "no_model"


async def test_a_historical_version_never_becomes_the_current_one(
    client, clients, local_settings, admin, trained
):
    early = await train(
        client, clients, local_settings, admin, asOf=(START + timedelta(days=600)).isoformat()
    )
    assert early["status"] == "ready"
    versions = {
        v["version"]: v["isCurrent"]
        for v in (await client.get(MODELS, headers=admin.headers)).json()["items"]
    }
    assert versions == {trained["modelVersion"]: True, early["modelVersion"]: False}
    await house(1, 100, "A")
    assert (await appraise(client, clients, local_settings, admin))["modelVersion"] == trained["modelVersion"]


async def test_one_training_is_queued_at_a_time(client, admin):
    first = await client.post(MODELS, json={}, headers=admin.headers)
    again = await client.post(MODELS, json={}, headers=admin.headers)
    assert again.status_code == 202 and again.json()["jobId"] == first.json()["jobId"]
    other = await client.post(MODELS, json={"asOf": START.isoformat()}, headers=admin.headers)
    assert other.status_code == 409 and other.json()["error"]["code"] == "training_in_progress"


async def test_only_oracle_managers_may_tie_a_sources_sales_to_platform_assets(client, local_settings, admin):
    key = await factories.api_key(local_settings, permissions=["datasources:write"])
    body = {
        "name": "tied",
        "type": "file",
        "kind": "sales",
        "url": "https://example.org/sales.csv",
        "format": "csv",
        "configuration": {"mapping": {"tokenId": "token"}},
    }
    refused = await client.post("/api/oracle/data-sources", json=body, headers=key.headers)
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "insufficient_permission"
    created = await client.post(
        "/api/oracle/data-sources", json={**body, "configuration": {}}, headers=key.headers
    )
    assert created.status_code == 201, created.text
    patch = {"configuration": {"mapping": {"tokenId": "token"}}}
    source = f"/api/oracle/data-sources/{created.json()['id']}"
    assert (await client.patch(source, json=patch, headers=key.headers)).status_code == 403
    allowed = await client.patch(source, json=patch, headers=admin.headers)
    assert allowed.status_code == 200 and allowed.json()["configuration"]["mapping"]["tokenId"] == "token"


async def test_the_ledger_scores_a_historical_appraisal_whose_sale_came_before_its_last_run(
    client, clients, local_settings, admin, source_server
):
    await load_sales(client, clients, local_settings, admin, source_server)
    early = await train(
        client, clients, local_settings, admin, asOf=(START + timedelta(days=300)).isoformat()
    )
    await house(1, 100, "A")
    sale = factories.transaction(1, token_id=1, price="80", at=START + timedelta(days=320))
    await market_service.record_transaction(clients.redis, sale)
    assert (await service.score_ledger(clients.redis))["scored"] == 0  # nothing appraised yet
    await appraise(client, clients, local_settings, admin, asOf=(START + timedelta(days=310)).isoformat())
    assert (await service.score_ledger(clients.redis))["scored"] == 1  # the sale is older than the last run
    [prediction] = await AIOracleData.find_all().to_list()
    assert prediction.modelVersion == early["modelVersion"] and prediction.outcome.price == 80.0


async def test_a_listing_price_counts_when_the_sales_carry_asking_prices(
    client, clients, local_settings, admin, source_server
):
    source_server.routes["/rates.csv"] = Reply(body=RATES_CSV)
    rows = ["id,price,sold_at,currency,assetType,area,listingPrice"]
    rng = random.Random(4)
    for i in range(200):  # the asking price tells the price; the area does not
        price = rng.uniform(100_000, 900_000)
        sold = START + timedelta(days=2 * i)
        rows.append(
            f"s{i},{price:.0f},{sold:%Y-%m-%d},USD,Real Estate,{rng.randint(60, 300)},{price * 1.02:.0f}"
        )
    source_server.routes["/sales.csv"] = Reply(body=("\n".join(rows) + "\n").encode())
    rates = await factories.data_source(
        local_settings, name="ETH/USD", kind="index", url=source_server.url("/rates.csv")
    )
    sales = await factories.data_source(
        local_settings,
        name="asking",
        url=source_server.url("/sales.csv"),
        configuration={"mapping": {"soldAt": "sold_at", "externalId": "id"}},
    )
    for source in (rates, sales):
        await client.post(f"/api/oracle/data-sources/{source['id']}/refresh", headers=admin.headers)
        await drain_jobs(clients, local_settings)
    await train(client, clients, local_settings, admin)
    await house(1, 150, "A", listed_at=str(800_000 / RATE))
    await house(2, 150, "A", listed_at=str(150_000 / RATE))
    await appraise(client, clients, local_settings, admin)
    dear = await AIOracleData.find_one(AIOracleData.tokenId == 1)
    cheap = await AIOracleData.find_one(AIOracleData.tokenId == 2)
    assert dear.predictedPrice > 2.5 * cheap.predictedPrice
    assert dear.inputs.marketData["listingPrice"] == 800_000
