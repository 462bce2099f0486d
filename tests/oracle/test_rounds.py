"""Rounds on real services: operators' submissions through the API and the platform's appraisals, combined
by the accuracy-weighted median with a quorum, an outlier rejected, the gates, and the publication rule."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson import Decimal128, ObjectId

from app.lib.timeutil import utcnow
from app.oracle import joining, ledger, publication, round_repository, rounds
from app.oracle.documents import AIOracleData, ComparableSale, DataSource
from app.oracle.round_documents import OracleRound
from tests import factories

ETH = 10**18


def wei(eth: float) -> int:
    return round(eth * ETH)


def oracle_settings(settings, **changes: Any):
    return settings.model_copy(update={"oracle": settings.oracle.model_copy(update=changes)})


@pytest.fixture(autouse=True)
async def clear_of_window_edges(settings):
    """Submissions of one test land in one window: never start within 3 s of a window's end."""
    window = settings.oracle.round_window_s
    left = window - utcnow().timestamp() % window
    if left < 3:
        await asyncio.sleep(left + 0.1)


async def operators(settings, count: int) -> list[factories.Login]:
    return [await factories.api_key(settings, permissions=["oracle:submit"]) for _ in range(count)]


async def submit(client, operator, token: int, eth: float, low: float, high: float, **fields: Any) -> dict:
    body = {
        "tokenId": token,
        "predictedPrice": eth,
        "interval": {"low": low, "high": high},
        "confidenceScore": 80,
        "modelVersion": "op-1",
        **fields,
    }
    response = await client.post("/api/oracle/price-prediction", headers=operator.headers, json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def appraisal(token: int, eth: float, low: float, high: float, *, at=None, **fields: Any) -> ObjectId:
    """A platform appraisal as the appraisal job writes it: pending, in no round yet."""
    at = at or utcnow()
    document = {
        "tokenId": token,
        "assetType": "Art",
        "timestamp": at,
        "asOf": None,
        "predictedPrice": eth,
        "predictedPriceWei": Decimal128(str(wei(eth))),
        "interval": {
            "low": low,
            "high": high,
            "lowWei": Decimal128(str(wei(low))),
            "highWei": Decimal128(str(wei(high))),
            "confidenceLevel": 0.9,
        },
        "confidenceScore": 80.0,
        "modelVersion": "v-test",
        "dataSourcesUsed": [],
        "status": "pending",
        "operator": None,
        "round": None,
        "outcome": None,
        "createdAt": at,
        **fields,
    }
    return (await AIOracleData.get_pymongo_collection().insert_one(document)).inserted_id


async def platform_round(settings, token: int, eth: float, low: float, high: float, **fields: Any) -> str:
    """A platform appraisal joined to its token's open round: the round's id."""
    made = await appraisal(token, eth, low, high, **fields)
    await joining.assign_appraisals(settings, utcnow())
    return (await AIOracleData.get_pymongo_collection().find_one({"_id": made}))["round"]


async def published(token: int, eth: float, low: float, high: float, *, ago: timedelta) -> None:
    """A round of the token published `ago`: the price the next rounds move from."""
    closes = utcnow() - ago
    answer = {
        "price": eth,
        "priceWei": Decimal128(str(wei(eth))),
        "low": low,
        "lowWei": Decimal128(str(wei(low))),
        "high": high,
        "highWei": Decimal128(str(wei(high))),
        "confidence": 80.0,
        "observedAt": closes,
        "participants": 1,
    }
    await OracleRound.get_pymongo_collection().insert_one(
        {
            "key": f"{token}-1",
            "tokenId": token,
            "assetType": "Art",
            "openedAt": closes - timedelta(minutes=5),
            "closesAt": closes,
            "status": "closed",
            "members": [],
            "answer": answer,
            "decision": {"decision": "published", "reason": "first", "facts": {}, "at": closes},
            "publication": {"status": "accepted", "roundId": 1, "outboxKey": "k"},
        }
    )


async def close(settings, **changes: Any) -> dict[str, int]:
    """The closing pass, one window (and the grace) after now."""
    tuned = oracle_settings(settings, **changes)
    return await rounds.close_due(tuned, utcnow() + timedelta(seconds=tuned.oracle.round_window_s + 10))


async def round_of(client, round_id: str) -> dict:
    response = await client.get(f"/api/oracle/rounds/{round_id}")
    assert response.status_code == 200, response.text
    return response.json()


async def test_three_operators_and_the_platform_give_the_median_and_the_outlier_is_rejected(client, settings):
    await factories.asset(1)
    a, b, c = await operators(settings, 3)
    await appraisal(1, 10.2, 9.2, 11.2)
    await joining.assign_appraisals(settings, utcnow())
    first = await submit(client, a, 1, 10.0, 9.0, 11.0)
    await submit(client, b, 1, 10.4, 9.4, 11.4)
    outlier = await submit(client, c, 1, 30.0, 27.0, 33.0)
    assert {first["round"]["id"], outlier["round"]["id"]} == {first["round"]["id"]}
    assert (await close(settings, round_quorum=3))["closed"] == 1

    found = await round_of(client, first["round"]["id"])
    assert found["status"] == "closed" and found["submissions"] == 3
    answer = found["answer"]
    assert (answer["priceWei"], answer["lowWei"], answer["highWei"]) == (
        str(wei(10.2)),
        str(wei(9.2)),
        str(wei(11.2)),
    )
    assert answer["participants"] == 3
    verdicts = {p["operator"]: (p["status"], p["rejectionReason"]) for p in found["participants"]}
    assert verdicts[c.wallet][0] == "rejected" and verdicts[c.wallet][1].startswith("outside_band: above")
    assert {verdicts[k][0] for k in (a.wallet, b.wallet, "platform")} == {"accepted"}
    assert found["decision"]["decision"] == "published" and found["decision"]["reason"] == "first"
    assert all(g["passed"] for g in found["gates"])

    stored = (await client.get(f"/api/oracle/predictions/{outlier['predictionId']}")).json()
    assert stored["status"] == "rejected" and stored["rejectionReason"].startswith("outside_band")
    assert stored["round"] == first["round"]["id"]
    listed = {o["operator"]: o for o in (await client.get("/api/oracle/operators")).json()["items"]}
    assert listed[c.wallet]["acceptanceRate"] == 0.0
    assert listed[c.wallet]["rejectedByReason"] == {"outside_band": 1}
    assert listed[a.wallet]["acceptanceRate"] == 1.0 and listed["platform"]["accepted"] == 1
    on_its_way = (await client.get(f"/api/oracle/predictions/{first['predictionId']}")).json()
    assert on_its_way["status"] == "submitted" and on_its_way["onChainReference"] is None
    filtered = (await client.get("/api/oracle/predictions", params={"status": "submitted"})).json()
    assert {p["operator"] for p in filtered["items"]} == {a.wallet, b.wallet, None}


async def test_below_the_quorum_a_round_has_no_answer_and_decides_nothing(client, settings):
    await factories.asset(2)
    a, b = await operators(settings, 2)
    joined = await submit(client, a, 2, 5.0, 4.5, 5.5)
    await submit(client, b, 2, 5.1, 4.6, 5.6)
    assert (await close(settings, round_quorum=3))["no_quorum"] == 1
    found = await round_of(client, joined["round"]["id"])
    assert found["status"] == "no_quorum" and found["rejectedBy"] == "quorum"
    assert found["answer"] is None and found["decision"] is None
    assert found["rejectionReason"] == "2 accepted participants of the 3 needed"


async def test_the_median_is_weighted_by_each_operators_record_against_later_sales(client, settings, clients):
    await factories.asset(3)
    good, fresh, other = await operators(settings, 3)
    earlier = utcnow() - timedelta(days=30)
    for day in range(0, 10, 2):  # the good operator's past predictions, each 2% off the sale a day later
        made = earlier + timedelta(days=day)
        counted = "submitted" if day == 8 else "accepted"  # accepted, its round's answer not final yet
        await appraisal(3, 9.8, 9.0, 11.0, at=made, operator=good.wallet, status=counted)
        await ComparableSale.get_pymongo_collection().insert_one(
            {
                "sourceId": ObjectId(),
                "sourceName": "registry",
                "externalId": f"sale-{day}",
                "assetType": "Art",
                "soldAt": made + timedelta(days=1),
                "price": 10.0,
                "priceWei": Decimal128(str(wei(10.0))),
                "currency": "ETH",
                "originalPrice": "10",
                "tokenId": 3,
            }
        )
    await ledger.score_tokens(clients.redis, [3], utcnow())
    joined = await submit(client, good, 3, 10.0, 8.0, 12.0)
    await submit(client, fresh, 3, 11.0, 9.0, 13.0)
    await submit(client, other, 3, 11.5, 9.5, 13.5)
    await close(settings)
    found = await round_of(client, joined["round"]["id"])
    weights = {p["operator"]: p["weight"] for p in found["participants"]}
    assert weights[good.wallet] == pytest.approx(50.0)  # 1 / 2% MdAPE
    assert weights[fresh.wallet] == weights[other.wallet] == settings.oracle.new_operator_weight
    assert found["answer"]["priceWei"] == str(wei(10.0))  # an unweighted median would say 11
    listed = {o["operator"]: o for o in (await client.get("/api/oracle/operators")).json()["items"]}
    assert listed[good.wallet]["live"]["count"] == 5
    assert listed[good.wallet]["live"]["mdape"] == pytest.approx(0.02)
    assert listed[good.wallet]["live"]["coverage"] == 1.0 and listed[good.wallet]["weight"] == pytest.approx(
        50.0
    )


async def test_a_tenfold_jump_is_rejected_alerted_and_not_published(client, settings, monkeypatch):
    await factories.asset(4)
    await published(4, 10.0, 9.0, 11.0, ago=timedelta(hours=1))
    a, b = await operators(settings, 2)
    await appraisal(4, 100.0, 90.0, 110.0)
    await joining.assign_appraisals(settings, utcnow())
    joined = await submit(client, a, 4, 101.0, 91.0, 111.0)
    await submit(client, b, 4, 99.0, 89.0, 109.0)
    logs: list[dict] = []

    class Recorder:  # the module's logger (structlog caches bound loggers, so capture_logs may miss them)
        def warning(self, event, **fields):
            logs.append({"event": event, "log_level": "warning", **fields})

        def info(self, event, **fields):
            logs.append({"event": event, "log_level": "info", **fields})

    monkeypatch.setattr(rounds, "log", Recorder())
    assert (await close(settings))["rejected"] == 1
    found = await round_of(client, joined["round"]["id"])
    assert found["status"] == "rejected" and found["rejectedBy"] == "jump"
    assert found["rejectionReason"].startswith("jump: ") and found["decision"] is None
    assert found["answer"]["priceWei"] == str(wei(100.0))  # kept for audit, never published
    alerts = [e for e in logs if e["event"] == "oracle.round.rejected"]
    assert alerts and alerts[0]["gate"] == "jump" and alerts[0]["log_level"] == "warning"
    metrics = (await client.get("/metrics")).text
    assert 'dynamicvault_oracle_rounds_refused{gate="jump"} 1.0' in metrics
    assert 'dynamicvault_oracle_rounds_refused{gate="bounds"} 0.0' in metrics


async def test_a_price_outside_its_types_bounds_is_rejected(client, settings):
    await factories.asset(5, asset_type="Real Estate")  # at least 1 ETH
    round_id = await platform_round(settings, 5, 0.5, 0.45, 0.55, assetType="Real Estate")
    await close(settings)
    found = await round_of(client, round_id)
    assert found["status"] == "rejected" and found["rejectedBy"] == "bounds"
    assert found["rejectionReason"].startswith("bounds: 0.5 ETH, within [1, 1e+06] ETH")


async def source(name: str, *, errors: int = 0, fetched_ago: timedelta = timedelta(minutes=5)) -> None:
    await DataSource.get_pymongo_collection().insert_one(
        {
            "name": name,
            "type": "file",
            "kind": "sales",
            "configuration": {"refreshInterval": 3600},
            "status": {"isEnabled": True, "errorCount": errors, "lastFetchAt": utcnow() - fetched_ago},
        }
    )


async def test_an_unhealthy_source_lowers_confidence_and_blocks_when_it_carries_the_round(client, settings):
    await source("county-sales", errors=5)  # failing for five fetches in a row
    await source("old-index", fetched_ago=timedelta(days=1))  # 24 refresh intervals behind
    await source("fresh-index")
    for token in (6, 7):
        await factories.asset(token)
    a, b, c = await operators(settings, 3)
    lowered = await submit(client, a, 6, 10.0, 9.0, 11.0, dataSourcesUsed=["county-sales"])
    await submit(client, b, 6, 10.1, 9.1, 11.1, confidenceScore=60, dataSourcesUsed=["fresh-index"])
    await submit(client, c, 6, 10.2, 9.2, 11.2, confidenceScore=90, dataSourcesUsed=["fresh-index"])
    blocked = await submit(client, a, 7, 10.0, 9.0, 11.0, dataSourcesUsed=["old-index", "fresh-index"])
    await submit(client, b, 7, 10.1, 9.1, 11.1, dataSourcesUsed=["county-sales"])
    await submit(client, c, 7, 10.2, 9.2, 11.2, dataSourcesUsed=["fresh-index"])
    await close(settings)

    found = await round_of(client, lowered["round"]["id"])
    penalised = {p["operator"]: p for p in found["participants"]}[a.wallet]
    assert penalised["unhealthySources"] == ["county-sales"]
    assert penalised["effectiveConfidence"] == 40.0 and penalised["confidence"] == 80.0
    assert found["answer"]["confidence"] == 60.0  # the median of 40, 60, 90: 80 with a healthy source
    assert found["status"] == "closed"  # a third of the weight on a bad source: lowered, not blocked

    refused = await round_of(client, blocked["round"]["id"])
    assert refused["status"] == "rejected" and refused["rejectedBy"] == "sources"
    assert "county-sales" in refused["rejectionReason"] and "old-index" in refused["rejectionReason"]


@pytest.mark.parametrize(
    ("last", "ago", "new", "expected"),
    [
        # Art: a 5% threshold, a 7-day heartbeat
        ((10.0, 9.0, 11.0), timedelta(hours=1), (11.0, 10.9, 11.1), ("published", "deviation")),
        ((10.0, 9.0, 11.0), timedelta(days=8), (10.1, 9.1, 11.1), ("published", "heartbeat")),
        ((10.0, 9.0, 11.0), timedelta(hours=1), (10.3, 10.2, 10.4), ("skipped", "within_deviation")),
        ((10.0, 9.0, 11.0), timedelta(hours=1), (11.0, 9.0, 13.0), ("skipped", "within_band")),
    ],
    ids=["deviation-only", "heartbeat-only", "within-deviation", "within-band"],
)
async def test_the_publication_rule(client, settings, last, ago, new, expected):
    await factories.asset(8)
    await published(8, *last, ago=ago)
    round_id = await platform_round(settings, 8, *new)
    await close(settings)
    decision = (await round_of(client, round_id))["decision"]
    assert (decision["decision"], decision["reason"]) == expected
    assert decision["facts"]["deviationBps"] == 500 and decision["facts"]["heartbeatS"] == 7 * 86400


async def test_a_low_confidence_round_abstains_and_says_so(client, settings):
    await factories.asset(9)
    round_id = await platform_round(settings, 9, 10.0, 9.0, 11.0, confidenceScore=30.0)
    await close(settings)
    decision = (await round_of(client, round_id))["decision"]
    assert (decision["decision"], decision["reason"]) == ("abstained", "low_confidence")


async def test_an_operators_round_carries_the_platforms_latest_appraisal(client, settings):
    await factories.asset(10)
    made = await appraisal(
        10, 10.0, 9.0, 11.0, at=utcnow() - timedelta(hours=2), status="accepted", round="10-1"
    )
    (a,) = await operators(settings, 1)
    joined = await submit(client, a, 10, 10.2, 9.2, 11.2)
    await close(settings, round_quorum=2)
    found = await round_of(client, joined["round"]["id"])
    carried = {p["operator"]: p for p in found["participants"]}["platform"]
    assert carried["carried"] is True and carried["predictionId"] == str(made)
    assert found["status"] == "closed" and found["basis"] == "platform"
    assert found["answer"]["priceWei"] == str(wei(10.0))  # one operator does not outvote the platform


async def test_an_operators_later_submission_in_a_round_supersedes_its_earlier_one(client, settings):
    await factories.asset(11)
    (a,) = await operators(settings, 1)
    first = await submit(client, a, 11, 10.0, 9.0, 11.0)
    second = await submit(client, a, 11, 10.5, 9.5, 11.5)
    await close(settings)
    found = await round_of(client, second["round"]["id"])
    assert [p["predictionId"] for p in found["participants"]] == [second["predictionId"]]
    earlier = (await client.get(f"/api/oracle/predictions/{first['predictionId']}")).json()
    assert earlier["status"] == "rejected" and earlier["rejectionReason"].startswith("superseded")


async def test_a_close_a_crash_left_half_done_is_finished_once(client, settings):
    await factories.asset(12)
    round_id = await platform_round(settings, 12, 10.0, 9.0, 11.0)
    later = utcnow() + timedelta(seconds=settings.oracle.round_window_s + 10)
    rounds_collection = OracleRound.get_pymongo_collection()
    # a closer claimed it and died: nobody else takes it before the lease runs out
    await rounds_collection.update_one({"key": round_id}, {"$set": {"status": "closing", "closingAt": later}})
    lease = round_repository.CLOSING_LEASE
    assert await rounds.close_due(settings, later + lease - timedelta(seconds=1)) == {"settled": 0}
    both = await asyncio.gather(
        rounds.close_due(settings, later + lease + timedelta(seconds=1)),
        rounds.close_due(settings, later + lease + timedelta(seconds=1)),
    )
    assert sorted(result.get("closed", 0) for result in both) == [0, 1]
    assert (await round_of(client, round_id))["status"] == "closed"


async def test_performance_carries_the_operators_records(client, settings):
    await factories.asset(13)
    (a,) = await operators(settings, 1)
    await submit(client, a, 13, 10.0, 9.0, 11.0)
    from app.oracle.documents import OracleModel

    await OracleModel(version="v1", status="ready", completedAt=utcnow()).insert()
    body = (await client.get("/api/oracle/performance")).json()
    assert [(o["operator"], o["pending"]) for o in body["operators"]] == [(a.wallet, 1)]


async def test_a_submission_stored_but_never_joined_joins_the_next_pass(client, settings):
    """A crash between storing a submission and joining its round: the publish cron joins it."""
    await factories.asset(14)
    (a,) = await operators(settings, 1)
    orphan = await appraisal(14, 10.0, 9.0, 11.0, at=utcnow() - timedelta(minutes=2), operator=a.wallet)
    result = await joining.assign_appraisals(settings, utcnow())
    assert result["rejoined"] == 1
    stored = await AIOracleData.get_pymongo_collection().find_one({"_id": orphan})
    found = await round_of(client, stored["round"])
    assert found["status"] == "open" and found["submissions"] == 1
    assert (await joining.assign_appraisals(settings, utcnow()))["rejoined"] == 0


async def test_a_crash_between_a_close_and_its_verdicts_is_settled_by_the_next_pass(
    client, settings, monkeypatch
):
    await factories.asset(15)
    a, b, c, d = await operators(settings, 4)
    honest = await submit(client, a, 15, 10.0, 9.0, 11.0)
    await submit(client, b, 15, 10.2, 9.2, 11.2)
    await submit(client, d, 15, 10.1, 9.1, 11.1)
    outlier = await submit(client, c, 15, 50.0, 45.0, 55.0)

    async def died(verdicts):
        if verdicts:  # the round's own, after it was written closed
            raise KeyboardInterrupt

    real = round_repository.set_verdicts
    monkeypatch.setattr(round_repository, "set_verdicts", died)
    with pytest.raises(KeyboardInterrupt):
        await close(settings)
    monkeypatch.setattr(round_repository, "set_verdicts", real)
    assert (await round_of(client, honest["round"]["id"]))["status"] == "closed"
    sealed = await client.get(f"/api/oracle/predictions/{honest['predictionId']}", headers=a.headers)
    assert sealed.json()["status"] == "pending"
    assert (await close(settings))["settled"] == 4
    statuses = {
        key: (await client.get(f"/api/oracle/predictions/{answer['predictionId']}")).json()["status"]
        for key, answer in (("honest", honest), ("outlier", outlier))
    }
    assert statuses == {"honest": "submitted", "outlier": "rejected"}  # its round's answer goes on chain


async def test_one_or_two_operators_cannot_move_the_platforms_price_whatever_band_they_claim(
    client, settings
):
    """A liar cannot take a round over with an absurd band, nor empty it: with three participants the
    median is an honest one's, and below three the platform's appraisal is the answer."""
    for token in (16, 17):
        await factories.asset(token)
    honest, liar = await operators(settings, 2)
    taken = await platform_round(settings, 16, 10.2, 9.2, 11.2)
    await submit(client, honest, 16, 10.0, 9.0, 11.0)
    await submit(client, liar, 16, 9.1, 1e-18, 9.1, confidenceScore=100)  # a band from 1 wei
    emptied = await platform_round(settings, 17, 10.2, 9.2, 11.2)
    await submit(client, liar, 17, 2e-18, 1e-18, 2e-18)  # 2 wei
    await close(settings)
    three = await round_of(client, taken)  # the median of three is an honest one's
    assert three["status"] == "closed" and three["basis"] == "median"
    assert three["answer"]["priceWei"] == str(wei(10.0)) and int(three["answer"]["lowWei"]) == wei(9.0)
    two = await round_of(client, emptied)  # with two, the platform's alone
    assert two["status"] == "closed" and two["basis"] == "platform"
    assert (two["answer"]["priceWei"], two["answer"]["lowWei"], two["answer"]["highWei"]) == (
        str(wei(10.2)),
        str(wei(9.2)),
        str(wei(11.2)),
    )
    for found in (three, two):
        assert all(p["status"] == "accepted" for p in found["participants"])  # too few to judge anyone


async def test_bands_count_at_most_half_the_price_so_a_liar_cannot_stretch_the_answer(client, settings):
    await factories.asset(18)
    a, b, liar = await operators(settings, 3)
    joined = await submit(client, a, 18, 10.0, 9.0, 11.0)
    await submit(client, b, 18, 10.2, 9.2, 11.2)
    await submit(client, liar, 18, 10.1, 1e-18, 1e6)
    await close(settings)
    found = await round_of(client, joined["round"]["id"])
    assert found["basis"] == "median" and found["answer"]["priceWei"] == str(wei(10.1))
    low, high = int(found["answer"]["lowWei"]), int(found["answer"]["highWei"])
    assert wei(9.0) <= low and high <= wei(11.3)  # the median widths, not the liar's


async def test_operators_alone_need_three(client, settings):
    await factories.asset(19)
    a, b = await operators(settings, 2)
    joined = await submit(client, a, 19, 10.0, 9.0, 11.0)
    await submit(client, b, 19, 10.2, 9.2, 11.2)
    await close(settings)
    found = await round_of(client, joined["round"]["id"])
    assert found["status"] == "no_quorum" and found["answer"] is None
    assert found["rejectionReason"] == "operators alone need 3 accepted participants, not 2"


async def test_a_record_counts_each_sale_once_and_only_predictions_made_well_before_it(
    client, settings, clients
):
    """Five submissions seconds before one sale, four of them superseded, do not make a record."""
    await factories.asset(20)
    (farmer,) = await operators(settings, 1)
    sold = utcnow() - timedelta(days=1)
    for second in range(5):
        status = "accepted" if second == 4 else "rejected"
        await appraisal(
            20,
            10.0,
            9.0,
            11.0,
            at=sold - timedelta(seconds=5 - second),
            operator=farmer.wallet,
            status=status,
        )
    for day in range(5):  # and five predictions that did count, each a day before its own sale
        await appraisal(
            20,
            10.0,
            9.0,
            11.0,
            at=sold - timedelta(days=20 - 2 * day),
            operator=farmer.wallet,
            status="accepted",
        )
    for day in [*range(5), None]:
        at = sold if day is None else sold - timedelta(days=19 - 2 * day)
        await ComparableSale.get_pymongo_collection().insert_one(
            {
                "sourceId": ObjectId(),
                "sourceName": "registry",
                "externalId": f"sale-{day}",
                "assetType": "Art",
                "soldAt": at,
                "price": 10.0 if day is None else 12.5,
                "priceWei": Decimal128(str(wei(10.0 if day is None else 12.5))),
                "currency": "ETH",
                "originalPrice": "10",
                "tokenId": 20,
            }
        )
    await ledger.score_tokens(clients.redis, [20], utcnow())
    found = await rounds.record(settings, farmer.wallet, 1000)
    assert len(found) == 5 and {row.ape for row in found} == {0.2}  # the perfect last-second one is not there
    listed = {o["operator"]: o for o in (await client.get("/api/oracle/operators")).json()["items"]}
    assert (
        listed[farmer.wallet]["weight"] == pytest.approx(5.0) and listed[farmer.wallet]["live"]["count"] == 5
    )


async def test_an_answer_older_than_the_maximum_age_is_rejected(client, settings):
    await factories.asset(21)
    round_id = await platform_round(settings, 21, 10.0, 9.0, 11.0, at=utcnow() - timedelta(hours=27))
    await close(settings)
    found = await round_of(client, round_id)
    assert found["status"] == "rejected" and found["rejectedBy"] == "age"


async def test_a_refused_jump_seen_in_three_rounds_in_a_row_is_published_as_real(client, settings):
    await factories.asset(22)
    await published(22, 10.0, 9.0, 11.0, ago=timedelta(hours=2))
    window = timedelta(seconds=settings.oracle.round_window_s)
    start = utcnow() - timedelta(hours=1)
    found = []
    for step in range(4):
        at = start + step * window
        made = await appraisal(22, 16.0, 15.0, 17.0, at=at)
        await joining.assign_appraisals(settings, at)
        await rounds.close_due(settings, at + window + timedelta(seconds=10))
        stored = await AIOracleData.get_pymongo_collection().find_one({"_id": made})
        found.append(await round_of(client, stored["round"]))
    assert [r["status"] for r in found] == ["rejected", "rejected", "rejected", "closed"]
    jump = next(g for g in found[3]["gates"] if g["gate"] == "jump")
    assert jump["passed"] and "confirmed by 3 refused rounds" in jump["detail"]
    assert found[3]["decision"]["decision"] == "published"


async def test_an_earlier_round_is_superseded_only_by_a_later_one_that_passed_its_gates(client, settings):
    await factories.asset(23)
    window = timedelta(seconds=settings.oracle.round_window_s)
    at = utcnow() - 3 * window
    good = await appraisal(23, 10.0, 9.0, 11.0, at=at)
    await joining.assign_appraisals(settings, at)
    bad = await appraisal(23, 1e12, 0.9e12, 1.1e12, at=at + window)  # past every bound
    await joining.assign_appraisals(settings, at + window)
    await rounds.close_due(settings, utcnow())  # both windows are over: one pass closes both
    collection = AIOracleData.get_pymongo_collection()
    first = await round_of(client, (await collection.find_one({"_id": good}))["round"])
    second = await round_of(client, (await collection.find_one({"_id": bad}))["round"])
    assert second["status"] == "rejected" and second["rejectedBy"] == "bounds"
    assert (first["decision"]["decision"], first["decision"]["reason"]) == ("published", "first")


async def test_a_disabled_source_is_not_held_against_what_it_brought(client, settings):
    await DataSource.get_pymongo_collection().insert_one(
        {
            "name": "retired-feed",
            "type": "file",
            "kind": "sales",
            "configuration": {"refreshInterval": 3600},
            "status": {"isEnabled": False, "errorCount": 9, "lastFetchAt": utcnow() - timedelta(days=30)},
        }
    )
    await factories.asset(24)
    round_id = await platform_round(settings, 24, 10.0, 9.0, 11.0, dataSourcesUsed=["retired-feed"])
    await close(settings)
    found = await round_of(client, round_id)
    assert found["status"] == "closed" and found["participants"][0]["unhealthySources"] == []


async def test_one_publishing_pass_at_a_time(clients, client, settings):
    from app.oracle import prediction_service

    await clients.redis.set(prediction_service.PUBLISH_LOCK, "another", px=60_000)
    assert await prediction_service.publish(clients, settings) == {"skipped": "another pass is running"}
    await clients.redis.delete(prediction_service.PUBLISH_LOCK)
    assert "skipped" not in await prediction_service.publish(clients, settings)


async def test_a_submission_without_a_band_is_scored_against_the_band_its_confidence_stands_for(
    client, settings, clients
):
    await factories.asset(25)
    (a,) = await operators(settings, 1)
    body = {"tokenId": 25, "predictedPrice": 10.0, "confidenceScore": 81, "modelVersion": "op-1"}
    made = (await client.post("/api/oracle/price-prediction", headers=a.headers, json=body)).json()
    await ComparableSale.get_pymongo_collection().insert_one(
        {
            "sourceId": ObjectId(),
            "sourceName": "registry",
            "externalId": "sale-25",
            "assetType": "Art",
            "soldAt": utcnow() + timedelta(seconds=1),
            "price": 10.5,  # inside 10 ETH at confidence 81: [9, 11.1]
            "priceWei": Decimal128(str(wei(10.5))),
            "currency": "ETH",
            "originalPrice": "10.5",
            "tokenId": 25,
        }
    )
    await ledger.score_tokens(clients.redis, [25], utcnow() + timedelta(seconds=2))
    stored = await AIOracleData.get_pymongo_collection().find_one({"_id": ObjectId(made["predictionId"])})
    assert stored["outcome"]["covered"] is True and stored["performanceMetrics"]["calibration"] == 1.0


async def test_one_stale_appraisal_carried_into_rounds_again_and_again_confirms_no_jump(client, settings):
    """The same appraisal, carried into round after round, is one observation seen again, not a move
    confirmed: the jump it would make stays refused."""
    await factories.asset(26)
    await published(26, 10.0, 9.0, 11.0, ago=timedelta(hours=3))
    await appraisal(26, 16.0, 15.0, 17.0, at=utcnow() - timedelta(hours=2), status="accepted", round="26-1")
    (a,) = await operators(settings, 1)
    window = timedelta(seconds=settings.oracle.round_window_s)
    hour_ago = (utcnow() - timedelta(hours=1)).timestamp()
    start = datetime.fromtimestamp(hour_ago - hour_ago % window.total_seconds(), UTC)  # a window opens
    statuses = []
    for step in range(4):
        at = start + step * window
        made = await appraisal(26, 10.0, 9.0, 11.0, at=at, operator=a.wallet)  # the operator: the old price
        await joining.assign_appraisals(settings, at + timedelta(seconds=61))  # joins it (an orphan by then)
        await rounds.close_due(settings, at + window + timedelta(seconds=10))
        stored = await AIOracleData.get_pymongo_collection().find_one({"_id": made})
        statuses.append((await round_of(client, stored["round"]))["status"])
    assert statuses == ["rejected"] * 4  # the carried 16 decides (one operator cannot outvote it), refused


async def test_a_platform_appraisal_without_a_positive_price_is_left_out_not_fatal(client, settings):
    for token in (27, 28):
        await factories.asset(token)
    broken = await appraisal(27, 0.0, 0.0, 0.0)
    fine = await appraisal(28, 10.0, 9.0, 11.0)
    await joining.assign_appraisals(settings, utcnow())
    result = await close(settings)
    assert result["no_quorum"] == 1 and result["closed"] == 1
    stored = await AIOracleData.get_pymongo_collection().find_one({"_id": broken})
    assert stored["status"] == "rejected" and stored["rejectionReason"].startswith("invalid")
    assert (await AIOracleData.get_pymongo_collection().find_one({"_id": fine}))["status"] == "submitted"


@pytest.mark.parametrize("rpc_url", [None, ""])  # CHAIN_RPC_URL unset, or set empty
async def test_without_a_chain_a_prediction_its_round_accepted_is_accepted_at_the_close(
    client, settings, rpc_url
):
    """No chain to publish to: the round's answer goes nowhere, so its verdict is final at the close."""
    off = settings.model_copy(update={"chain": settings.chain.model_copy(update={"rpc_url": rpc_url})})
    await factories.asset(80)
    a, b, c = await operators(settings, 3)
    made = [await submit(client, o, 80, 10.0 + i / 10, 9.0, 11.5) for i, o in enumerate((a, b, c))]
    assert (await close(off, round_quorum=3))["published"] == 1
    for answer in made:
        stored = (await client.get(f"/api/oracle/predictions/{answer['predictionId']}")).json()
        assert stored["status"] == "accepted" and stored["onChainReference"] is None


async def test_with_no_price_oracle_deployed_a_published_round_expires_and_its_predictions_settle(
    client, clients, settings
):
    """A chain configured with no PriceOracle on it yet: the round waits for one, and once older than
    ORACLE_GATE_MAX_AGE_S it expires, its predictions `accepted` with nothing on chain."""
    await factories.asset(81)
    a, b, c = await operators(settings, 3)
    made = [await submit(client, o, 81, 10.0 + i / 10, 9.0, 11.5) for i, o in enumerate((a, b, c))]
    assert (await close(settings, round_quorum=3))["published"] == 1
    assert (await publication.push_due(clients, settings, utcnow()))["pushed"] == 0  # nothing to push to
    waiting = (await client.get(f"/api/oracle/predictions/{made[0]['predictionId']}")).json()
    assert waiting["status"] == "submitted"
    later = utcnow() + timedelta(seconds=settings.oracle.gate_max_age_s + 600)
    assert (await publication.push_due(clients, settings, later))["dropped"] == 1
    assert (await round_of(client, made[0]["round"]["id"]))["publication"]["status"] == "expired"
    for answer in made:
        stored = (await client.get(f"/api/oracle/predictions/{answer['predictionId']}")).json()
        assert stored["status"] == "accepted" and stored["onChainReference"] is None
