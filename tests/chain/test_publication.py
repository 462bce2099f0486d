"""The oracle's rounds pushed to the PriceOracle on anvil: deviation, heartbeat, abstention, once.

Rounds are keyed by time windows, so the tests drive time: the platform's appraisals join the round of
the window they are assigned in, and the round closes once that window (and its grace) is over.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from datetime import timedelta

import pytest
from bson import Decimal128, ObjectId

from app.chain import repository as chain_repository
from app.chain import service as chain_service
from app.chain.artifacts import artifact
from app.chain.signer import load_signer
from app.lib import eventlog
from app.market import service as market_service
from app.oracle import joining, publication, publication_repository, rounds
from app.oracle.documents import AIOracleData
from app.oracle.round_documents import OracleRound
from tests.chain.conftest import ONE_ETH, outbox_process, rpc
from tests.factories import T0

WINDOW = timedelta(seconds=300)  # ORACLE_ROUND_WINDOW_S; T0 opens a window
CLOSE = WINDOW + rounds.ROUND_GRACE  # after which a round of the window `at` opens is due
T1 = T0 + timedelta(hours=1)
DAY = T0 + timedelta(days=1)
PUSHED_AT = DAY + CLOSE  # after every round here: none is older than ORACLE_GATE_MAX_AGE_S then
NARROW = {"low": 0.995, "high": 1.005}  # a band whose half-width is 0.5%


class Crash(Exception):
    pass


@pytest.fixture
async def oracle(web3, clients, settings):
    deployed = await chain_service.ensure_deployed(clients, settings)
    return web3.eth.contract(address=deployed["PriceOracle"].address, abi=artifact("PriceOracle").abi)


async def appraisal(
    token_id: int, eth: float, *, at=T0, confidence=80.0, low=0.9, high=1.1, asset_type=None
) -> ObjectId:
    """A platform appraisal, pending, in no round yet."""
    wei = int(eth * ONE_ETH)
    document = {
        "tokenId": token_id,
        "assetId": ObjectId(),
        "assetType": asset_type,
        "timestamp": at,
        "asOf": None,
        "operator": None,
        "round": None,
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
        "status": "pending",
        "onChainReference": None,
        "createdAt": at,
    }
    return (await AIOracleData.get_pymongo_collection().insert_one(document)).inserted_id


async def prediction(prediction_id: ObjectId) -> dict:
    return await AIOracleData.get_pymongo_collection().find_one({"_id": prediction_id})


async def round_of(token_id: int, at=T0) -> dict:
    key = f"{token_id}-{int(at.timestamp()) // int(WINDOW.total_seconds())}"
    return await OracleRound.get_pymongo_collection().find_one({"key": key})


def decided(found: dict) -> tuple[str, str]:
    return found["decision"]["decision"], found["decision"]["reason"]


async def close(settings, at=T0) -> dict:
    """Join the appraisals made by `at` to their rounds (the window of `at`) and close what is due."""
    await joining.assign_appraisals(settings, at)
    return await rounds.close_due(settings, at + CLOSE)


async def push(web3, clients, settings, *, final: bool = True, index: bool = True) -> dict:
    """push_due, the outbox's passes, blocks until final, the indexer, and confirm."""
    pushed = await publication.push_due(clients, settings, PUSHED_AT)
    for _ in range(3):
        await chain_service.process_outbox(clients, settings)
    if final:
        await rpc(web3, "anvil_mine", hex(70))
        await chain_service.process_outbox(clients, settings)
    if index:  # the contract's PriceUpdated, as the indexer read it, confirms a push
        await market_service.index_chain(clients, settings)
        await market_service.announce_chain(clients, settings)
    return {**pushed, **await publication.confirm(clients, settings)}


async def settle(web3, clients, settings, at=T0) -> dict:
    await close(settings, at)
    return await push(web3, clients, settings)


async def batches(oracle) -> list[list[int]]:
    """The tokens each set_prices the outbox was asked for carries."""
    found = []
    for entry in await chain_repository.outbox().find({"kind": "set_prices"}).to_list(None):
        _, args = oracle.decode_function_input(entry["data"])
        found.append([item["tokenId"] for item in args["prices"]])
    return found


async def updates(oracle, token_id: int) -> list:
    return await oracle.events.PriceUpdated().get_logs(from_block=0, argument_filters={"tokenId": token_id})


async def test_first_prices_are_published_once_final_with_their_reference(
    web3, client, clients, settings, oracle
):
    ids = {token: await appraisal(token, 1.0 + token / 10) for token in (1, 2, 3)}
    assert (await close(settings))["published"] == 3
    assert (await prediction(ids[1]))["status"] == "submitted"  # accepted in its round, on its way
    early = await push(web3, clients, settings, final=False, index=False)
    assert early["pushed"] == 3 and early["accepted"] == 0
    assert (await round_of(1))["publication"]["status"] == "submitted"  # not final yet
    waiting = await prediction(ids[1])
    assert waiting["status"] == "submitted" and waiting["onChainReference"] is None
    unread = await push(web3, clients, settings, index=False)  # final, but not indexed yet
    assert (unread["accepted"], unread["failed"]) == (0, 0)
    assert (await round_of(1))["publication"]["status"] == "submitted"
    assert (await prediction(ids[1]))["status"] == "submitted"
    assert (await push(web3, clients, settings))["accepted"] == 3
    for token, prediction_id in ids.items():
        found = await round_of(token)
        assert decided(found) == ("published", "first") and found["publication"]["status"] == "accepted"
        reference = found["publication"]["onChainReference"]
        assert reference["transactionHash"].startswith("0x") and reference["blockNumber"] > 0
        stored = await prediction(prediction_id)
        assert stored["status"] == "accepted" and stored["onChainReference"] == reference
        shown = (await client.get(f"/api/oracle/predictions/{prediction_id}")).json()
        assert shown["status"] == "accepted"
        assert shown["onChainReference"] == {
            "transactionHash": reference["transactionHash"],
            "blockNumber": reference["blockNumber"],
            "timestamp": reference["timestamp"].isoformat().replace("+00:00", "Z"),
        }
        wei = int((1.0 + token / 10) * ONE_ETH)
        round_id = int(found["closesAt"].timestamp() * 1000)
        assert found["publication"]["roundId"] == round_id
        assert await oracle.functions.latest_round(token).call() == [
            round_id,
            wei,
            int(wei * 0.9),
            int(wei * 1.1),
            8000,
            int(reference["timestamp"].timestamp()),
        ]
    assert await batches(oracle) == [[1, 2, 3]]  # one transaction carried the three
    announced = (await eventlog.replay_page(clients.redis, "0-0", ["prices"])).messages
    assert sorted((m["event"], m["payload"]["tokenId"]) for m in announced) == [
        ("price_updated", 1),
        ("price_updated", 2),
        ("price_updated", 3),
    ]
    first = next(m["payload"] for m in announced if m["payload"]["tokenId"] == 1)
    wei = int(1.1 * ONE_ETH)
    assert (first["priceWei"], first["lowWei"], first["highWei"]) == (
        str(wei),
        str(int(wei * 0.9)),
        str(int(wei * 1.1)),
    )
    assert first["confidence"] == 8000 and first["onChainRoundId"] == str(
        (await round_of(1))["publication"]["roundId"]
    )


async def test_deviation_heartbeat_abstention_skips_and_supersession(web3, clients, settings, oracle):
    for token in range(1, 7):
        await appraisal(token, 1.0, asset_type="Art" if token == 6 else None)
    assert (await settle(web3, clients, settings))["accepted"] == 6
    earlier = await appraisal(5, 1.2, at=T1 - timedelta(minutes=10), **NARROW)
    await appraisal(1, 1.005, at=T1)  # 0.5%: within the 1% deviation
    await appraisal(2, 1.05, at=T1, **NARROW)  # 5%, beyond its band's half-width
    await appraisal(3, 1.05, at=T1)  # 5%, but within its ±10% band
    await appraisal(4, 1.2, at=T1, confidence=30.0, **NARROW)
    await appraisal(5, 1.1, at=T1, **NARROW)
    await appraisal(6, 1.03, at=T1, asset_type="Art", **NARROW)  # 3%: within Art's 5%
    await joining.assign_appraisals(settings, T1)
    await appraisal(5, 1.3, at=T1 + WINDOW, **NARROW)  # the next window's round
    await settle(web3, clients, settings, T1 + WINDOW)  # closes both of token 5's rounds in one pass
    assert {token: decided(await round_of(token, T1)) for token in range(1, 7)} == {
        1: ("skipped", "within_deviation"),
        2: ("published", "deviation"),
        3: ("skipped", "within_band"),
        4: ("abstained", "low_confidence"),
        5: ("superseded", "a later round of the token"),
        6: ("skipped", "within_deviation"),
    }
    latest = await round_of(5, T1 + WINDOW)
    assert decided(latest) == ("published", "deviation") and latest["publication"]["status"] == "accepted"
    assert (await round_of(5, T1)).get("publication") is None
    gone = await prediction(earlier)
    assert gone["status"] == "rejected" and gone["rejectionReason"].startswith("superseded")
    first = (await round_of(1))["publication"]["roundId"]  # T0's rounds share their close
    assert {token: (await oracle.functions.latest_round(token).call())[:2] for token in range(1, 7)} == {
        1: [first, ONE_ETH],  # the skipped, abstained and superseded stayed off-chain
        2: [(await round_of(2, T1))["publication"]["roundId"], int(1.05 * ONE_ETH)],
        3: [first, ONE_ETH],
        4: [first, ONE_ETH],
        5: [latest["publication"]["roundId"], int(1.3 * ONE_ETH)],
        6: [first, ONE_ETH],
    }
    await appraisal(1, 1.005, at=DAY)  # a day after its first: the default heartbeat
    await appraisal(6, 1.005, at=DAY, asset_type="Art")  # Art's heartbeat is a week
    assert (await settle(web3, clients, settings, DAY))["accepted"] == 1
    assert decided(await round_of(1, DAY)) == ("published", "heartbeat")
    assert decided(await round_of(6, DAY)) == ("skipped", "within_deviation")
    assert (await oracle.functions.latest_round(1).call())[1] == int(1.005 * ONE_ETH)
    assert (await oracle.functions.latest_round(6).call())[1] == ONE_ETH


async def test_a_crash_between_recording_a_push_and_asking_pushes_each_round_once(
    web3, clients, settings, oracle, monkeypatch
):
    await appraisal(7, 1.0)
    await close(settings)

    async def crash(*args, **kwargs):
        raise Crash

    monkeypatch.setattr(publication, "_ask", crash)
    with pytest.raises(Crash):
        await publication.push_due(clients, settings, PUSHED_AT)
    assert (await round_of(7))["publication"]["status"] == "submitted"  # recorded, never asked for
    assert await batches(oracle) == []
    monkeypatch.undo()
    assert (await publication.push_due(clients, settings, PUSHED_AT))["pushed"] == 0  # recorded once
    assert (await publication.confirm(clients, settings))["asked"] == 1
    result = await push(web3, clients, settings)
    assert result["accepted"] == 1 and result["asked"] == 0
    assert (await round_of(7))["publication"]["status"] == "accepted"
    assert len(await updates(oracle, 7)) == 1 and await batches(oracle) == [[7]]


async def test_batches_hold_at_most_the_configured_number(web3, clients, settings, oracle):
    small = settings.model_copy(update={"oracle": settings.oracle.model_copy(update={"publish_batch": 2})})
    for token in range(10, 15):
        await appraisal(token, 1.0)
    assert (await settle(web3, clients, small))["accepted"] == 5
    assert sorted(map(len, await batches(oracle))) == [1, 2, 2]
    entries = await chain_repository.outbox().find({"kind": "set_prices"}).to_list(None)
    assert {e["status"] for e in entries} == {"confirmed"}
    keys = Counter([(await round_of(token))["publication"]["outboxKey"] for token in range(10, 15)])
    assert sorted(keys.values()) == [1, 2, 2] and set(keys) == {e["key"] for e in entries}
    for token in range(10, 15):
        assert (await oracle.functions.latest_round(token).call())[1] == ONE_ETH


async def test_a_round_the_contract_would_refuse_fails_alone_before_it_is_sent(
    web3, clients, settings, oracle
):
    broken = await appraisal(20, 1.0)
    fine = await appraisal(21, 1.0)
    await close(settings)
    await OracleRound.get_pymongo_collection().update_one(  # an answer whose band misses its price
        {"key": (await round_of(20))["key"]}, {"$set": {"answer.lowWei": Decimal128(str(12 * ONE_ETH // 10))}}
    )
    pushed = await push(web3, clients, settings)
    assert (pushed["pushed"], pushed["dropped"], pushed["accepted"]) == (1, 1, 1)
    found = await round_of(20)
    assert found["publication"]["status"] == "failed" and found["publication"].get("onChainReference") is None
    assert found["publication"]["error"] == "invalid: the price is outside its band"
    assert await batches(oracle) == [[21]]  # the batch it would have failed went out without it
    assert (await prediction(fine))["onChainReference"] is not None
    assert (await prediction(broken))["onChainReference"] is None
    assert (await prediction(broken))["status"] == "accepted"  # by its round; its push failed
    assert (await oracle.functions.latest_round(20).call())[0] == 0
    await appraisal(20, 1.0, at=T1)  # a failed push is no published price: the next is the first
    assert (await settle(web3, clients, settings, T1))["accepted"] == 1
    assert decided(await round_of(20, T1)) == ("published", "first")


async def test_reconciliation_finds_a_price_mongodb_says_differently(web3, client, clients, settings, oracle):
    await appraisal(30, 1.0)
    await appraisal(31, 2.0)
    await settle(web3, clients, settings)
    clean = await publication.reconcile(clients, settings)
    assert clean["sampled"] == 2 and clean["drift"] == {"price": 0}
    await OracleRound.get_pymongo_collection().update_one(
        {"key": (await round_of(31))["key"]}, {"$set": {"answer.priceWei": Decimal128(str(3 * ONE_ETH))}}
    )
    found = await publication.reconcile(clients, settings)
    assert found["sampled"] == 2 and found["drift"] == {"price": 1}
    drift = (await client.get("/api/chain/status")).json()["drift"]
    assert drift["byField"]["price"] == 1
    assert [(i["tokenId"], i["chain"], i["database"]) for i in drift["items"]] == [
        (31, str(2 * ONE_ETH), str(3 * ONE_ETH))
    ]


async def test_a_round_the_chain_skipped_is_failed_not_accepted(web3, clients, settings, oracle):
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
    result = await settle(web3, clients, settings)
    assert result["accepted"] == 1 and result["failed"] == 1
    assert (await round_of(41))["publication"]["status"] == "accepted"
    skipped = (await round_of(40))["publication"]
    assert skipped["status"] == "failed" and "newer round" in skipped["error"]
    assert skipped.get("onChainReference") is None and (await prediction(stale))["onChainReference"] is None
    assert (await prediction(stale))["status"] == "accepted"
    assert (await prediction(landed))["onChainReference"] is not None
    assert (await oracle.functions.latest_round(40).call())[0] == 2**60


async def test_two_publishers_at_once_push_each_round_once(web3, clients, settings, oracle):
    for token in (50, 51, 52):
        await appraisal(token, 1.0)

    async def publisher():
        await close(settings)
        await publication.push_due(clients, settings, PUSHED_AT)

    await asyncio.gather(publisher(), publisher())
    assert (await push(web3, clients, settings))["accepted"] == 3
    assert sorted(token for batch in await batches(oracle) for token in batch) == [50, 51, 52]
    for token in (50, 51, 52):
        assert len(await updates(oracle, token)) == 1
        assert (await round_of(token))["publication"]["status"] == "accepted"


async def test_a_round_names_the_asset_of_its_appraisal(client, settings):
    """The round a platform appraisal opens records the appraisal's asset, not the appraisal."""
    made = await prediction(await appraisal(60, 1.0, asset_type="Art"))
    await joining.assign_appraisals(settings, T0)
    found = await round_of(60)
    assert found["assetType"] == "Art" and found["members"] == [made["_id"]]
    assert found["assetId"] == made["assetId"]


async def test_rounds_decided_while_unpushed_go_out_latest_first_and_never_stale(
    web3, clients, settings, oracle
):
    """Rounds decided while nothing pushed them (no contract yet, workers behind): per token only the
    latest goes out, and none older than ORACLE_GATE_MAX_AGE_S."""
    await appraisal(60, 1.0)
    await appraisal(61, 1.0)
    await close(settings)
    await appraisal(60, 1.2, at=T1, low=0.99, high=1.01)  # a 20% move on a narrow band: published
    await close(settings, T1)
    assert decided(await round_of(60, T1)) == ("published", "deviation")
    late = T0 + timedelta(seconds=settings.oracle.gate_max_age_s) + CLOSE + WINDOW
    result = await publication.push_due(clients, settings, late)
    assert result == {"pushed": 1, "dropped": 2}
    assert (await round_of(60))["publication"]["status"] == "superseded"
    assert (await round_of(61))["publication"]["status"] == "expired"
    assert (await round_of(60, T1))["publication"]["status"] == "submitted"
    assert await batches(oracle) == [[60]]


@pytest.mark.parametrize("step", ["signed", "sent", "mined"])
async def test_a_worker_process_killed_mid_push_updates_each_round_on_chain_once(
    web3, clients, settings, oracle, step
):
    """A worker process SIGKILLed after signing, after sending, or after reading the receipt of a
    `set_prices`, each before recording it: the next pass still lands exactly one update per round."""
    await appraisal(8, 1.0)
    await close(settings)
    assert (await publication.push_due(clients, settings, PUSHED_AT))["pushed"] == 1
    signer = load_signer(settings).address
    sent = await web3.eth.get_transaction_count(signer)
    assert await outbox_process(settings, 3, step) == -signal.SIGKILL
    [entry] = await chain_repository.outbox().find({"kind": "set_prices"}).to_list(None)
    assert entry["status"] == {"signed": "signed", "sent": "signed", "mined": "sent"}[step]
    assert (await push(web3, clients, settings))["accepted"] == 1
    assert (await round_of(8))["publication"]["status"] == "accepted"
    assert len(await updates(oracle, 8)) == 1 and await batches(oracle) == [[8]]
    [entry] = await chain_repository.outbox().find({"kind": "set_prices"}).to_list(None)
    assert entry["status"] == "confirmed" and len(entry["attempts"]) == 1
    assert await web3.eth.get_transaction_count(signer) == sent + 1  # one transaction, sent once


async def test_a_push_never_made_leaves_its_predictions_accepted_without_a_reference(
    web3, clients, settings, oracle
):
    """A round left unpushed while the chain was away expires, and one a later round of the token
    replaced is superseded: the predictions they accepted are `accepted`, with nothing on chain."""
    old = await appraisal(60, 1.0)
    await close(settings)
    assert (await prediction(old))["status"] == "submitted"
    later = T0 + timedelta(days=2)  # past ORACLE_GATE_MAX_AGE_S
    assert (await publication.push_due(clients, settings, later))["dropped"] == 1
    assert (await round_of(60))["publication"]["status"] == "expired"
    dropped = await prediction(old)
    assert dropped["status"] == "accepted" and dropped["onChainReference"] is None
    replaced = await appraisal(61, 1.0)
    await close(settings)
    await appraisal(61, 1.2, at=T1)
    await close(settings, T1)
    pushed = await push(web3, clients, settings)
    assert (pushed["pushed"], pushed["dropped"], pushed["accepted"]) == (1, 1, 1)
    assert (await round_of(61))["publication"]["status"] == "superseded"
    assert (await prediction(replaced))["status"] == "accepted"
    assert (await prediction(replaced))["onChainReference"] is None
    assert await batches(oracle) == [[61]] and len(await updates(oracle, 61)) == 1


async def test_a_prediction_settled_after_its_rounds_push_takes_the_pushs_reference(
    web3, clients, settings, oracle, monkeypatch
):
    """A crash between a close and its verdicts leaves the prediction `pending`; by the time the next pass
    settles it the round's push may have landed, and the prediction is then accepted with its reference."""
    late = await appraisal(70, 1.0)

    async def died(verdicts):
        if verdicts:
            raise Crash

    monkeypatch.setattr(rounds.round_repository, "set_verdicts", died)
    with pytest.raises(Crash):
        await close(settings)
    monkeypatch.undo()
    assert (await push(web3, clients, settings))["accepted"] == 1
    assert (await prediction(late))["status"] == "pending"
    assert (await rounds.close_due(settings, PUSHED_AT))["settled"] == 1
    assert (await prediction(late))["status"] == "submitted"  # its round's verdict, behind its push
    await publication.confirm(clients, settings)
    settled = await prediction(late)
    assert settled["status"] == "accepted"
    assert settled["onChainReference"] == (await round_of(70))["publication"]["onChainReference"]


async def test_a_crash_between_settling_a_push_and_its_predictions_is_settled_by_the_next_pass(
    web3, clients, settings, oracle, monkeypatch
):
    made = await appraisal(71, 1.0)
    await close(settings)
    real = publication_repository.settle_predictions

    async def died(keys=None):
        if keys:  # the push's own rounds, once settled
            raise Crash
        return 0

    monkeypatch.setattr(publication_repository, "settle_predictions", died)
    with pytest.raises(Crash):
        await push(web3, clients, settings)
    monkeypatch.setattr(publication_repository, "settle_predictions", real)
    assert (await round_of(71))["publication"]["status"] == "accepted"
    assert (await prediction(made))["status"] == "submitted"
    assert (await publication.confirm(clients, settings))["accepted"] == 0  # its round is settled
    settled = await prediction(made)
    assert settled["status"] == "accepted"
    assert settled["onChainReference"] == (await round_of(71))["publication"]["onChainReference"]


async def test_a_push_that_lost_every_round_to_a_concurrent_one_asks_for_nothing(
    web3, clients, settings, oracle, monkeypatch
):
    """Another publisher records every round this one read, in batches of its own (another batch size):
    this one then has nothing to push, and asks the outbox for no empty `set_prices`."""
    for token in (80, 81):
        await appraisal(token, 1.0)
    await close(settings)
    one_each = settings.model_copy(update={"oracle": settings.oracle.model_copy(update={"publish_batch": 1})})
    read = publication_repository.undecided_publications
    overtaken = False

    async def overtaken_after_reading(limit):
        nonlocal overtaken
        found = await read(limit)
        if not overtaken:
            overtaken = True
            await publication.push_due(clients, one_each, PUSHED_AT)
        return found

    monkeypatch.setattr(publication_repository, "undecided_publications", overtaken_after_reading)
    await publication.push_due(clients, settings, PUSHED_AT)
    assert sorted(await batches(oracle)) == [[80], [81]]
    monkeypatch.undo()
    assert (await push(web3, clients, settings))["accepted"] == 2
    for token in (80, 81):
        assert len(await updates(oracle, token)) == 1
