"""The oracle's appraisals pushed to the PriceOracle on anvil: deviation, heartbeat, abstention, once."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from bson import Decimal128, ObjectId

from app.chain import repository as chain_repository
from app.chain import service as chain_service
from app.chain.artifacts import artifact
from app.market import service as market_service
from app.oracle import publication
from app.oracle.documents import AIOracleData
from tests.chain.conftest import ONE_ETH, rpc
from tests.factories import T0


@pytest.fixture
async def oracle(web3, clients, settings):
    deployed = await chain_service.ensure_deployed(clients, settings)
    return web3.eth.contract(address=deployed["PriceOracle"].address, abi=artifact("PriceOracle").abi)


async def appraisal(
    token_id: int, eth: float, *, at=T0, confidence: float = 80.0, low=0.9, high=1.1
) -> ObjectId:
    wei = int(eth * ONE_ETH)
    document = {
        "tokenId": token_id,
        "timestamp": at,
        "asOf": None,
        "predictedPrice": eth,
        "predictedPriceWei": Decimal128(str(wei)),
        "interval": {
            "low": eth * low,
            "high": eth * high,
            "lowWei": Decimal128(str(int(wei * low))),
            "highWei": Decimal128(str(int(wei * high))),
            "confidenceLevel": 0.9,
        },
        "confidenceScore": confidence,
        "modelVersion": "v-test",
        "status": "accepted",
        "onChainReference": None,
        "createdAt": at,
    }
    return (await AIOracleData.get_pymongo_collection().insert_one(document)).inserted_id


async def prediction(prediction_id: ObjectId) -> dict:
    return await AIOracleData.get_pymongo_collection().find_one({"_id": prediction_id})


async def settle(web3, clients, settings, *, final: bool = True) -> dict:
    """The publish cron, the outbox's passes, blocks until final, and the publish cron again."""
    first = await publication.publish(clients, settings)
    for _ in range(3):
        await chain_service.process_outbox(clients, settings)
    if final:
        await rpc(web3, "anvil_mine", hex(70))
        await chain_service.process_outbox(clients, settings)
    await market_service.index_chain(clients, settings)  # the contract's PriceUpdated confirms a push
    second = await publication.publish(clients, settings)
    return {key: first.get(key, 0) + second.get(key, 0) for key in {*first, *second}}


async def test_first_appraisals_are_published_once_final_with_their_reference(
    web3, clients, settings, oracle
):
    ids = [await appraisal(token, 1.0 + token / 10) for token in (1, 2, 3)]
    result = await settle(web3, clients, settings)
    assert result["published"] == 3 and result["accepted"] == 3
    for token, prediction_id in zip((1, 2, 3), ids, strict=True):
        stored = await prediction(prediction_id)
        assert stored["status"] == "accepted" and stored["publication"]["reason"] == "first"
        reference = stored["onChainReference"]
        assert reference["transactionHash"].startswith("0x") and reference["blockNumber"] > 0
        round_id, price, low, high, confidence, updated_at = await oracle.functions.latest_round(token).call()
        wei = int((1.0 + token / 10) * ONE_ETH)
        assert (round_id, price, low, high, confidence) == (
            stored["publication"]["roundId"],
            wei,
            int(wei * 0.9),
            int(wei * 1.1),
            8000,
        )
        assert updated_at == int(reference["timestamp"].timestamp())
    # one transaction carried the three
    assert await chain_repository.outbox().count_documents({"kind": "set_prices"}) == 1


async def test_deviation_heartbeat_and_abstention_decide_each_appraisal(web3, clients, settings, oracle):
    for token in (1, 2, 3, 4):
        await appraisal(token, 1.0)
    await settle(web3, clients, settings)
    later = T0 + timedelta(hours=1)
    small = await appraisal(1, 1.005, at=later)  # 0.5%: within the 1% deviation
    big = await appraisal(2, 1.05, at=later)  # 5%
    unsure = await appraisal(3, 2.0, at=later, confidence=30.0)
    old = await appraisal(4, 1.5, at=later)
    newer = await appraisal(4, 1.6, at=later + timedelta(minutes=5))
    await settle(web3, clients, settings)
    decided = {
        key: (await prediction(pid))["publication"]
        for key, pid in [("small", small), ("big", big), ("unsure", unsure), ("old", old), ("newer", newer)]
    }
    assert {k: (v["decision"], v["reason"]) for k, v in decided.items()} == {
        "small": ("skipped", "within_deviation"),
        "big": ("published", "deviation"),
        "unsure": ("abstained", "low_confidence"),
        "old": ("superseded", "a later appraisal"),
        "newer": ("published", "deviation"),
    }
    assert (await oracle.functions.latest_round(1).call())[1] == ONE_ETH  # the small move stayed off-chain
    assert (await oracle.functions.latest_round(3).call())[1] == ONE_ETH  # so did the unsure one
    assert (await oracle.functions.latest_round(4).call())[1] == int(1.6 * ONE_ETH)
    beat = await appraisal(1, 1.005, at=T0 + timedelta(seconds=settings.oracle.publish_heartbeat_s + 1))
    await settle(web3, clients, settings)
    assert (await prediction(beat))["publication"]["reason"] == "heartbeat"
    assert (await oracle.functions.latest_round(1).call())[1] == int(1.005 * ONE_ETH)


async def test_a_crash_between_deciding_and_asking_pushes_each_round_once(
    web3, clients, settings, oracle, monkeypatch
):
    first = await appraisal(7, 1.0)
    real_ask = publication._ask

    async def died(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(publication, "_ask", died)
    with pytest.raises(KeyboardInterrupt):
        await publication.publish(clients, settings)
    assert (await prediction(first))["status"] == "submitted"  # decided, never asked for
    monkeypatch.setattr(publication, "_ask", real_ask)
    result = await settle(web3, clients, settings)
    assert result["asked"] == 1 and (await prediction(first))["status"] == "accepted"
    events = await oracle.events.PriceUpdated().get_logs(from_block=0, argument_filters={"tokenId": 7})
    assert len(events) == 1 and await chain_repository.outbox().count_documents({"kind": "set_prices"}) == 1


async def test_batches_hold_at_most_the_configured_number(web3, clients, settings, oracle):
    small = settings.model_copy(update={"oracle": settings.oracle.model_copy(update={"publish_batch": 2})})
    for token in range(10, 15):
        await appraisal(token, 1.0)
    await settle(web3, clients, small)
    entries = await chain_repository.outbox().find({"kind": "set_prices"}).to_list(None)
    assert len(entries) == 3 and {e["status"] for e in entries} == {"confirmed"}
    for token in range(10, 15):
        assert (await oracle.functions.latest_round(token).call())[1] == ONE_ETH


async def test_a_push_that_cannot_go_through_rejects_its_appraisals(web3, clients, settings, oracle):
    broken = await appraisal(20, 1.0, low=1.2, high=1.3)  # a band that does not hold its price
    await settle(web3, clients, settings)
    stored = await prediction(broken)
    assert stored["status"] == "rejected" and "would revert" in stored["publication"]["error"]
    assert (await oracle.functions.latest_round(20).call())[0] == 0


async def test_reconciliation_finds_a_price_mongodb_says_differently(web3, client, clients, settings, oracle):
    first, second = await appraisal(30, 1.0), await appraisal(31, 2.0)
    await settle(web3, clients, settings)
    clean = await publication.reconcile(clients, settings)
    assert clean["sampled"] == 2 and clean["drift"] == {"price": 0}
    await AIOracleData.get_pymongo_collection().update_one(
        {"_id": second}, {"$set": {"predictedPriceWei": Decimal128(str(3 * ONE_ETH))}}
    )
    found = await publication.reconcile(clients, settings)
    assert found["drift"] == {"price": 1}
    drift = (await client.get("/api/chain/status")).json()["drift"]
    assert drift["byField"]["price"] == 1
    assert [(i["tokenId"], i["chain"], i["database"]) for i in drift["items"]] == [
        (31, str(2 * ONE_ETH), str(3 * ONE_ETH))
    ]
    assert (await prediction(first))["status"] == "accepted"


async def test_a_round_the_chain_skipped_is_rejected_not_accepted(web3, clients, settings, oracle):
    """The chain held a newer round for the token: the push lands, but no PriceUpdated says so for it."""
    await chain_service.submit_call(
        settings,
        key="newer",
        kind="set_prices",
        contract=oracle,
        function="set_prices",
        args=[[(40, 2**60, ONE_ETH, ONE_ETH, ONE_ETH, 5000)]],
    )
    for _ in range(2):
        await chain_service.process_outbox(clients, settings)
    stale = await appraisal(40, 1.0)
    landed = await appraisal(41, 1.0)
    await settle(web3, clients, settings)
    assert (await prediction(landed))["status"] == "accepted"
    skipped = await prediction(stale)
    assert skipped["status"] == "rejected" and "newer round" in skipped["publication"]["error"]
    assert (await oracle.functions.latest_round(40).call())[0] == 2**60


async def test_two_publishers_at_once_push_each_round_once(web3, clients, settings, oracle):
    for token in (50, 51, 52):
        await appraisal(token, 1.0)
    await asyncio.gather(publication.publish(clients, settings), publication.publish(clients, settings))
    await settle(web3, clients, settings)
    assert await chain_repository.outbox().count_documents({"kind": "set_prices"}) == 1
    for token in (50, 51, 52):
        events = await oracle.events.PriceUpdated().get_logs(
            from_block=0, argument_filters={"tokenId": token}
        )
        assert len(events) == 1
