"""Rounds on real services: operators' submissions through the API and the platform's appraisals, combined
by the accuracy-weighted median with a quorum, an outlier rejected, the gates, and the publication rule."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from bson import Decimal128, ObjectId
from structlog.testing import capture_logs

from app.lib.timeutil import utcnow
from app.oracle import ledger, round_repository, rounds
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
    await rounds.assign_appraisals(settings, utcnow())
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
    for day in range(5):  # the good operator's past predictions, 2% off the sales that followed
        await appraisal(
            3, 9.8, 9.0, 11.0, at=earlier + timedelta(days=day), operator=good.wallet, status="accepted"
        )
    await ComparableSale.get_pymongo_collection().insert_one(
        {
            "sourceId": ObjectId(),
            "sourceName": "registry",
            "externalId": "sale-1",
            "assetType": "Art",
            "soldAt": earlier + timedelta(days=10),
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


async def test_a_tenfold_jump_is_rejected_alerted_and_not_published(client, settings):
    await factories.asset(4)
    await published(4, 10.0, 9.0, 11.0, ago=timedelta(hours=1))
    a, b = await operators(settings, 2)
    await appraisal(4, 100.0, 90.0, 110.0)
    await rounds.assign_appraisals(settings, utcnow())
    joined = await submit(client, a, 4, 101.0, 91.0, 111.0)
    await submit(client, b, 4, 99.0, 89.0, 109.0)
    with capture_logs() as logs:
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
    (a,) = await operators(settings, 1)
    joined = await submit(client, a, 5, 0.5, 0.45, 0.55)
    await close(settings)
    found = await round_of(client, joined["round"]["id"])
    assert found["status"] == "rejected" and found["rejectedBy"] == "bounds"


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
    a, b = await operators(settings, 2)
    mixed = await submit(client, a, 6, 10.0, 9.0, 11.0, dataSourcesUsed=["county-sales"])
    await submit(client, b, 6, 10.1, 9.1, 11.1, dataSourcesUsed=["fresh-index"])
    stale = await submit(client, a, 7, 10.0, 9.0, 11.0, dataSourcesUsed=["old-index", "fresh-index"])
    await submit(client, b, 7, 10.1, 9.1, 11.1, dataSourcesUsed=["county-sales"])
    await close(settings)

    found = await round_of(client, mixed["round"]["id"])
    lowered = {p["operator"]: p for p in found["participants"]}[a.wallet]
    assert lowered["unhealthySources"] == ["county-sales"]
    assert lowered["effectiveConfidence"] == 40.0 and lowered["confidence"] == 80.0
    assert found["answer"]["confidence"] == 40.0  # the weighted median of 40 and 80
    assert found["status"] == "closed"  # half the weight on a bad source: lowered, not blocked

    blocked = await round_of(client, stale["round"]["id"])
    assert blocked["status"] == "rejected" and blocked["rejectedBy"] == "sources"
    assert "county-sales" in blocked["rejectionReason"] and "old-index" in blocked["rejectionReason"]


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
    (a,) = await operators(settings, 1)
    joined = await submit(client, a, 8, *new)
    await close(settings)
    decision = (await round_of(client, joined["round"]["id"]))["decision"]
    assert (decision["decision"], decision["reason"]) == expected
    assert decision["facts"]["deviationBps"] == 500 and decision["facts"]["heartbeatS"] == 7 * 86400


async def test_a_low_confidence_round_abstains_and_says_so(client, settings):
    await factories.asset(9)
    (a,) = await operators(settings, 1)
    joined = await submit(client, a, 9, 10.0, 9.0, 11.0, confidenceScore=30)
    await close(settings)
    decision = (await round_of(client, joined["round"]["id"]))["decision"]
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
    assert found["status"] == "closed" and found["answer"]["participants"] == 2


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
    (a,) = await operators(settings, 1)
    joined = await submit(client, a, 12, 10.0, 9.0, 11.0)
    later = utcnow() + timedelta(seconds=settings.oracle.round_window_s + 10)
    rounds_collection = OracleRound.get_pymongo_collection()
    # a closer claimed it and died: nobody else takes it before the lease runs out
    await rounds_collection.update_one(
        {"key": joined["round"]["id"]}, {"$set": {"status": "closing", "closingAt": later}}
    )
    assert await rounds.close_due(settings, later + timedelta(seconds=30)) == {"settled": 0}
    both = await asyncio.gather(
        rounds.close_due(settings, later + timedelta(seconds=61)),
        rounds.close_due(settings, later + timedelta(seconds=61)),
    )
    assert sorted(result.get("closed", 0) for result in both) == [0, 1]
    assert (await round_of(client, joined["round"]["id"]))["status"] == "closed"


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
    result = await rounds.assign_appraisals(settings, utcnow())
    assert result["rejoined"] == 1
    stored = await AIOracleData.get_pymongo_collection().find_one({"_id": orphan})
    found = await round_of(client, stored["round"])
    assert found["status"] == "open" and found["submissions"] == 1
    assert (await rounds.assign_appraisals(settings, utcnow()))["rejoined"] == 0


async def test_a_crash_between_a_close_and_its_verdicts_is_settled_by_the_next_pass(
    client, settings, monkeypatch
):
    await factories.asset(15)
    a, b, c = await operators(settings, 3)
    honest = await submit(client, a, 15, 10.0, 9.0, 11.0)
    await submit(client, b, 15, 10.2, 9.2, 11.2)
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
    assert (await client.get(f"/api/oracle/predictions/{honest['predictionId']}")).json()[
        "status"
    ] == "pending"
    assert (await close(settings))["settled"] == 3
    statuses = {
        key: (await client.get(f"/api/oracle/predictions/{answer['predictionId']}")).json()["status"]
        for key, answer in (("honest", honest), ("outlier", outlier))
    }
    assert statuses == {"honest": "accepted", "outlier": "rejected"}
