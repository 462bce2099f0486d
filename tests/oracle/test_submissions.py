"""Operators' price predictions over the API: who may submit, what a body may say, Idempotency-Key retries,
how many one operator may send per token and round, the round a submission joins, and who sees it: sealed
to all but its operator and admins until its round closes, its inputs to them only ever."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
from bson import Decimal128, ObjectId

from app.lib.timeutil import utcnow
from app.oracle import joining, prediction_service, round_repository, rounds
from app.oracle.documents import AIOracleData
from tests import factories

ROUTE = "/api/oracle/price-prediction"
PREDICTIONS = "/api/oracle/predictions"
TOKEN = 7
INPUTS = {"marketData": {"floor": 1.2}, "sentimentAnalysis": {"score": 0.4}}
BODY = {
    "tokenId": TOKEN,
    "predictedPrice": 1.5,
    "confidenceScore": 80,
    "modelVersion": "op-1.0",
    "dataSourcesUsed": ["ames-sales"],
    "inputs": INPUTS,
}


def code(response) -> str:
    return response.json()["error"]["code"]


def stored():
    return AIOracleData.get_pymongo_collection()


async def submit(client, who, key: str | None = None, **changes):
    body = {name: value for name, value in {**BODY, **changes}.items() if value is not None}
    headers = {**who.headers, **({"Idempotency-Key": key} if key is not None else {})}
    return await client.post(ROUTE, json=body, headers=headers)


async def operator(settings) -> factories.Login:
    return await factories.api_key(settings, permissions=["oracle:submit"])


async def close_rounds(settings) -> dict[str, int]:
    """The closing pass one window (and the grace) on: every round open now closes, its members judged."""
    return await rounds.close_due(settings, utcnow() + timedelta(seconds=settings.oracle.round_window_s + 10))


async def platform_appraisal(token: int = TOKEN) -> str:
    """A platform appraisal as the appraisal job writes it: pending, in no round yet."""
    now = utcnow()
    made = await stored().insert_one(
        {
            "tokenId": token,
            "assetType": "Art",
            "timestamp": now,
            "asOf": None,
            "predictedPrice": 1.4,
            "predictedPriceWei": Decimal128("1400000000000000000"),
            "interval": None,
            "confidenceScore": 70.0,
            "modelVersion": "v-test",
            "dataSourcesUsed": [],
            "inputs": {"marketData": {"floor": 1.1}},
            "status": "pending",
            "operator": None,
            "round": None,
            "outcome": None,
            "createdAt": now,
        }
    )
    return str(made.inserted_id)


def headers_of(who: factories.Login | None) -> dict[str, str]:
    return who.headers if who else {}


async def detail(client, prediction_id: str, who: factories.Login | None):
    return await client.get(f"{PREDICTIONS}/{prediction_id}", headers=headers_of(who))


async def listed(client, who: factories.Login | None, **params) -> list[str]:
    page = await client.get(PREDICTIONS, params=params, headers=headers_of(who))
    assert page.status_code == 200, page.text
    return [item["id"] for item in page.json()["items"]]


async def only_item(client, who: factories.Login | None) -> dict:
    [item] = (await client.get(PREDICTIONS, headers=headers_of(who))).json()["items"]
    return item


async def pages(client, who: factories.Login | None) -> list[str]:
    seen, cursor = [], None
    while True:
        params = {"limit": 2, "tokenId": TOKEN, **({"cursor": cursor} if cursor else {})}
        page = await client.get(PREDICTIONS, params=params, headers=headers_of(who))
        assert page.status_code == 200, page.text
        seen += [item["id"] for item in page.json()["items"]]
        cursor = page.json()["nextCursor"]
        if not cursor:
            return seen


def pinned(monkeypatch, settings, into: float = 100.0):
    """Pin the clock of submissions `into` seconds after the opening of the current window: every
    submission of the test falls in one window, whatever the wall clock does meanwhile."""
    _key, opens, closes = joining.window(TOKEN, utcnow(), settings.oracle.round_window_s)
    now = opens + timedelta(seconds=into)
    monkeypatch.setattr(prediction_service, "utcnow", lambda: now)
    return now, closes


@pytest.fixture
async def asset(client):
    return await factories.asset(TOKEN)


@pytest.fixture
async def op(asset, settings) -> factories.Login:
    return await operator(settings)


async def test_a_submission_is_stored_exactly_and_answers_its_open_round(client, op):
    wei = "1234567890123456789"
    created = await submit(client, op, predictedPrice=None, predictedPriceWei=wei)
    assert created.status_code == 201, created.text
    answer = created.json()
    assert answer["status"] == "pending" and "Idempotent-Replayed" not in created.headers
    assert answer["round"]["status"] == "open" and answer["round"]["closesAt"]
    assert answer["round"]["id"].startswith(f"{TOKEN}-")
    doc = await stored().find_one({"_id": ObjectId(answer["predictionId"])})
    assert doc["operator"] == op.wallet and doc["apiKeyId"] == op.api_key_id
    assert str(doc["predictedPriceWei"].to_decimal()) == wei and doc["round"] == answer["round"]["id"]
    detail = (await client.get(f"{PREDICTIONS}/{answer['predictionId']}", headers=op.headers)).json()
    assert (detail["predictedPriceWei"], detail["operator"], detail["status"]) == (wei, op.wallet, "pending")
    assert detail["inputs"]["marketData"] == INPUTS["marketData"]


async def test_only_submitters_may_submit_and_a_revoked_key_is_refused(client, settings, op):
    without = await factories.api_key(settings, permissions=["assets:write"])
    refused = await submit(client, without)
    assert refused.status_code == 403 and code(refused) == "insufficient_permission"
    anonymous = await client.post(ROUTE, json=BODY)
    assert anonymous.status_code == 401
    for who in (
        await factories.login(settings, roles=("user", "oracle")),
        await factories.login(settings, roles=("user", "admin")),
    ):
        assert (await submit(client, who)).status_code == 201

    owner = await factories.login(settings, roles=("user", "oracle"))
    made = await client.post(
        "/api/auth/api-keys", json={"name": "op", "permissions": ["oracle:submit"]}, headers=owner.headers
    )
    key_id, key = made.json()["id"], {"X-API-Key": made.json()["key"]}
    assert (await client.post(ROUTE, json=BODY, headers=key)).status_code == 201
    assert (await client.delete(f"/api/auth/api-keys/{key_id}", headers=owner.headers)).status_code == 204
    revoked = await client.post(ROUTE, json=BODY, headers=key)
    assert revoked.status_code == 401 and code(revoked) == "api_key_revoked"
    assert await stored().count_documents({}) == 3


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"predictedPrice": None}, "price_required"),
        ({"predictedPriceWei": "1500000000000000000"}, "ambiguous_amount"),
        ({"predictedPrice": 0}, "invalid_amount"),
        ({"predictedPrice": -1}, "invalid_amount"),
        ({"predictedPrice": 1e-30}, "invalid_amount"),  # under one wei
        ({"predictedPrice": None, "predictedPriceWei": "0"}, "validation_error"),
        ({"predictedPrice": 1e12}, "amount_out_of_range"),
        ({"predictedPrice": None, "predictedPriceWei": str(2**96)}, "amount_out_of_range"),
        ({"predictedPrice": None, "predictedPriceWei": "9" * 30}, "validation_error"),
        ({"interval": {"low": 1.6, "high": 2.0}}, "interval_excludes_price"),
        ({"interval": {"lowWei": "1", "highWei": "1499999999999999999"}}, "interval_excludes_price"),
        ({"interval": {"low": 2.0, "high": 1.0}}, "invalid_interval"),
        ({"interval": {"low": 1.0}}, "invalid_interval"),
        ({"interval": {"highWei": "2000000000000000000"}}, "invalid_interval"),
        ({"interval": {"low": 1.0, "lowWei": "1", "high": 2.0}}, "ambiguous_amount"),
    ],
)
async def test_amounts_and_bands_outside_the_contract_are_400_with_their_code(client, op, changes, expected):
    refused = await submit(client, op, **changes)
    assert refused.status_code == 400 and code(refused) == expected, refused.text
    assert await stored().count_documents({}) == 0


async def test_the_largest_price_the_oracle_holds_is_taken_with_its_band_exact(client, settings, op):
    top = str(2**96 - 1)
    band = {"lowWei": "1", "highWei": top}
    created = await submit(client, op, predictedPrice=None, predictedPriceWei=top, interval=band)
    assert created.status_code == 201, created.text
    prediction_id = created.json()["predictionId"]
    # sealed until its round closes: its operator reads it, the public does not yet
    own = (await detail(client, prediction_id, op)).json()
    assert (own["predictedPriceWei"], own["status"]) == (top, "pending")
    assert (own["interval"]["lowWei"], own["interval"]["highWei"]) == ("1", top)
    assert (await detail(client, prediction_id, None)).status_code == 404
    await close_rounds(settings)
    public = (await detail(client, prediction_id, None)).json()
    assert public["predictedPriceWei"] == top and public["status"] == "accepted"
    assert (public["interval"]["lowWei"], public["interval"]["highWei"]) == ("1", top)


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999"])
async def test_non_finite_numbers_are_400_never_500(client, op, number):
    for field in (b'"predictedPrice"', b'"confidenceScore"'):
        others = {k: v for k, v in BODY.items() if k.encode() != field.strip(b'"')}
        raw = json.dumps(others).encode()[:-1] + b", " + field + b": " + number + b"}"
        headers = {**op.headers, "Content-Type": "application/json"}
        refused = await client.post(ROUTE, content=raw, headers=headers)
        assert refused.status_code == 400, (raw, refused.text)
        assert code(refused) in {"malformed_json", "validation_error"}
    assert await stored().count_documents({}) == 0


async def test_unknown_tokens_fields_and_oversized_bodies_are_refused(client, op):
    missing = await submit(client, op, tokenId=999)
    assert missing.status_code == 404 and code(missing) == "asset_not_found"
    for changes in (
        {"surprise": 1},
        {"interval": {"low": 1, "high": 2, "mid": 1.5}},
        {"confidenceScore": 101},
    ):
        refused = await submit(client, op, **changes)
        assert refused.status_code == 400 and code(refused) == "validation_error", refused.text
    huge = await submit(client, op, inputs={"marketData": {"blob": "x" * 70_000}})
    assert huge.status_code == 413 and code(huge) == "payload_too_large"
    assert await stored().count_documents({}) == 0


@pytest.mark.parametrize(
    "market",
    [
        {"volume": 2**64 - 1},
        {"volume": 10**29},
        {"\u0000key": 1},
        {"$where": "sleep(1000)"},
        {"$set": {"status": "accepted"}},
        {"floor.eth": 1.2},
        {"nested": {"deeper": {"$gt": 0}}},
        {"rows": [1, {"ok": 1}, [{"a.b": 2}]]},
        {"rows": [{"$ref": "users", "$id": 1}]},
        {".": 1},
        {"$": 1},
    ],
    ids=[
        "uint64",
        "30-digit-int",
        "nul-in-key",
        "dollar-key",
        "operator-object",
        "dotted-key",
        "nested-dollar-key",
        "dotted-key-in-a-list",
        "dbref-in-a-list",
        "lone-dot",
        "lone-dollar",
    ],
)
async def test_inputs_mongodb_cannot_or_should_not_store_are_400_not_500(client, op, market):
    # JSON integers past 64 bits decode to Python ints BSON cannot encode (OverflowError), and BSON keys
    # cannot hold a NUL byte (InvalidDocument): the insert must not be the first place they are caught.
    # Keys starting with $ or holding a dot, at any depth (in lists too), would read as operators or paths
    # to anything that updates or queries the document: refused as well.
    answer = await submit(client, op, inputs={"marketData": market})
    assert answer.status_code == 400 and code(answer) == "invalid_inputs", answer.text
    assert await stored().count_documents({}) == 0
    assert await round_repository.rounds().count_documents({"submissions": {"$gt": 0}}) == 0


async def test_inputs_keys_with_a_dollar_or_unicode_inside_are_kept_exactly(client, op):
    market = {"price$": 1, "a$b": {"x$": [1, {"€uro": 2}]}, "emoji🙂": "v.1.2", "list": ["$x", "a.b"]}
    created = await submit(client, op, inputs={"marketData": market})
    assert created.status_code == 201, created.text
    doc = await stored().find_one({"_id": ObjectId(created.json()["predictionId"])})
    assert doc["inputs"]["marketData"] == market  # only keys are checked: values may say anything


async def test_a_retry_with_the_same_key_and_body_answers_the_stored_prediction(client, op):
    first = await submit(client, op, key="retry-1")
    again = await submit(client, op, key="retry-1")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert await stored().count_documents({}) == 1
    rnd = (await client.get(f"/api/oracle/rounds/{first.json()['round']['id']}")).json()
    assert rnd["submissions"] == 1


async def test_the_same_key_with_another_body_is_422_and_stores_nothing(client, op):
    assert (await submit(client, op, key="k-1")).status_code == 201
    for changes in (
        {"predictedPrice": 1.6},
        {"inputs": None},
        {"predictedPrice": None, "predictedPriceWei": "1"},
    ):
        reused = await submit(client, op, key="k-1", **changes)
        assert reused.status_code == 422 and code(reused) == "idempotency_key_reused", reused.text
    assert await stored().count_documents({}) == 1


async def test_two_operators_may_use_the_same_key_and_share_the_tokens_round(
    client, settings, op, monkeypatch
):
    now = utcnow()  # one instant: both fall in the same window whatever the clock does
    monkeypatch.setattr(prediction_service, "utcnow", lambda: now)
    other = await operator(settings)
    mine, theirs = await submit(client, op, key="shared"), await submit(client, other, key="shared")
    assert mine.status_code == theirs.status_code == 201
    assert "Idempotent-Replayed" not in theirs.headers
    assert mine.json()["predictionId"] != theirs.json()["predictionId"]
    assert mine.json()["round"]["id"] == theirs.json()["round"]["id"]
    assert await stored().count_documents({"idempotencyKey": "shared"}) == 2
    rnd = (await client.get(f"/api/oracle/rounds/{mine.json()['round']['id']}")).json()
    assert rnd["submissions"] == 2 and rnd["status"] == "open"


@pytest.mark.parametrize("key", ["has a space", "x" * 300, "tab\tkey", ""])
async def test_malformed_idempotency_keys_are_400(client, op, key):
    refused = await submit(client, op, key=key)
    assert refused.status_code == 400 and code(refused) == "invalid_idempotency_key", refused.text
    assert await stored().count_documents({}) == 0


async def test_concurrent_retries_store_one_prediction_and_count_it_once(client, op):
    answers = await asyncio.gather(*(submit(client, op, key="race") for _ in range(3)))
    assert [a.status_code for a in answers] == [201, 201, 201], [a.text for a in answers]
    assert len({a.json()["predictionId"] for a in answers}) == 1
    assert sum("Idempotent-Replayed" not in a.headers for a in answers) == 1
    assert await stored().count_documents({}) == 1
    (first,) = [a.json() for a in answers if "Idempotent-Replayed" not in a.headers]
    # a replay racing the first request may answer before its round is joined (`round` null then)
    rnd = (await client.get(f"/api/oracle/rounds/{first['round']['id']}")).json()
    assert rnd["submissions"] == 1  # a losing racer's submission must not be counted in its round


async def test_a_pending_submission_is_sealed_but_to_its_operator_and_admins(client, settings, op):
    """Until its round closes no one but its operator (and admins) learns an operator's price, or that it
    was sent: the detail is the 404 of a prediction that does not exist, and the lists leave it out."""
    prediction_id = (await submit(client, op)).json()["predictionId"]
    admin = await factories.login(settings, roles=("user", "admin"))
    other_op = await operator(settings)
    assert (await submit(client, other_op)).status_code == 201  # its own, sealed from op in turn
    user = await factories.login(settings)
    absent = str(ObjectId())
    nowhere = (await detail(client, absent, None)).json()["error"]
    for who in (other_op, user, None):
        hidden = await detail(client, prediction_id, who)
        assert hidden.status_code == 404 and code(hidden) == "prediction_not_found", (who, hidden.text)
        error = hidden.json()["error"]
        assert {**error, "message": error["message"].replace(prediction_id, absent)} == nowhere
        for params in ({}, {"tokenId": TOKEN}, {"operator": op.wallet}, {"status": "pending"}):
            assert prediction_id not in await listed(client, who, **params), (who, params)
    for who in (op, admin):
        shown = await detail(client, prediction_id, who)
        assert shown.status_code == 200 and shown.json()["operator"] == op.wallet, shown.text
        assert prediction_id in await listed(client, who, operator=op.wallet, status="pending")
    # each operator sees its own pending submissions and no other's; admins see all of them
    assert len(await listed(client, op)) == len(await listed(client, other_op)) == 1
    assert len(await listed(client, admin)) == 2
    assert await listed(client, None) == await listed(client, user) == []


async def test_a_platform_appraisal_is_never_sealed(client, settings, op):
    appraisal = await platform_appraisal()
    user = await factories.login(settings)
    for who in (None, user, op):
        shown = await detail(client, appraisal, who)
        assert shown.status_code == 200 and shown.json()["status"] == "pending", (who, shown.text)
        assert shown.json()["operator"] is None
        assert await listed(client, who, status="pending") == [appraisal]
        assert await listed(client, who, operator="platform") == [appraisal]


async def test_a_closed_rounds_submissions_are_public(client, settings, op):
    other_op = await operator(settings)
    mine = (await submit(client, op)).json()["predictionId"]
    theirs = (await submit(client, other_op, predictedPrice=1.6)).json()["predictionId"]
    assert await listed(client, None) == []
    await close_rounds(settings)
    for who in (None, await factories.login(settings), other_op, op):
        assert set(await listed(client, who)) == {mine, theirs}, who
        for prediction_id in (mine, theirs):
            shown = await detail(client, prediction_id, who)
            assert shown.status_code == 200 and shown.json()["status"] == "accepted", (who, shown.text)
    assert (await detail(client, theirs, op)).json()["predictedPrice"] == 1.6


async def test_inputs_are_shown_to_the_submitter_and_admins_only(client, settings, op):
    prediction_id = (await submit(client, op)).json()["predictionId"]
    admin = await factories.login(settings, roles=("user", "admin"))
    other_op = await operator(settings)
    user = await factories.login(settings)
    for who in (op, admin):  # while its round is open, only they see it at all
        for view in ((await detail(client, prediction_id, who)).json(), await only_item(client, who)):
            assert view["inputs"]["sentimentAnalysis"] == INPUTS["sentimentAnalysis"], who
    await close_rounds(settings)
    for who, sees in ((op, True), (admin, True), (other_op, False), (user, False), (None, False)):
        shown = await detail(client, prediction_id, who)
        assert shown.status_code == 200 and shown.json()["status"] == "accepted", (who, shown.text)
        for view in (shown.json(), await only_item(client, who)):
            assert (view["inputs"] is not None) == sees, (who, view["inputs"])
            if sees:
                assert view["inputs"]["sentimentAnalysis"] == INPUTS["sentimentAnalysis"]


async def test_predictions_list_newest_first_in_keyset_pages(client, settings, op):
    made = [(await submit(client, op, predictedPrice=1 + n / 10)).json()["predictionId"] for n in range(5)]
    admin = await factories.login(settings, roles=("user", "admin"))
    assert await pages(client, op) == await pages(client, admin) == made[::-1]
    assert await pages(client, None) == []  # sealed while their round is open
    await close_rounds(settings)  # the latest per operator is accepted, the earlier superseded: public
    assert await pages(client, None) == made[::-1]


async def test_predictions_filter_by_token_operator_status_and_platform(client, settings, op):
    await factories.asset(8)
    other = await operator(settings)
    mine = (await submit(client, op)).json()["predictionId"]
    theirs = (await submit(client, other, tokenId=8)).json()["predictionId"]
    rejected = (await submit(client, other)).json()["predictionId"]
    await stored().update_one({"_id": ObjectId(rejected)}, {"$set": {"status": "rejected"}})
    platform = ObjectId()
    await stored().insert_one(
        {
            **(await stored().find_one({"_id": ObjectId(mine)})),
            "_id": platform,
            "operator": None,
            "apiKeyId": None,
            "idempotencyKey": None,
            "createdAt": utcnow(),
        }
    )

    admin = await factories.login(settings, roles=("user", "admin"))

    async def ids(**params) -> list[str]:
        return await listed(client, admin, **params)

    assert await ids(tokenId=8) == [theirs]
    assert await ids(operator=other.wallet.lower()) == [rejected, theirs]
    assert await ids(operator=other.wallet, status="rejected") == [rejected]
    assert await ids(status="pending", tokenId=TOKEN) == [str(platform), mine]
    assert await ids(operator="platform") == [str(platform)]
    # the same filters as the public and each operator see them: the pending submissions of others left out
    assert await listed(client, None) == [str(platform), rejected]
    assert await listed(client, None, tokenId=8) == []
    assert await listed(client, None, operator=other.wallet) == [rejected]
    assert await listed(client, None, status="pending") == [str(platform)]
    assert await listed(client, op, status="pending") == [str(platform), mine]
    assert await listed(client, op, operator=other.wallet) == [rejected]
    assert await listed(client, other, status="pending") == [str(platform), theirs]
    assert await listed(client, other, operator=op.wallet) == []


async def test_bad_list_parameters_and_foreign_cursors_are_400(client, settings, op):
    await factories.asset(8)
    for token in (TOKEN, 8):
        assert (await submit(client, op, tokenId=token)).status_code == 201
    foreign = (await client.get("/api/oracle/rounds", params={"limit": 1})).json()["nextCursor"]
    own = (await client.get(PREDICTIONS, params={"limit": 1}, headers=op.headers)).json()["nextCursor"]
    assert foreign and own
    payload, signature = own.split(".")
    forged = f"{payload}.{'B' if signature[0] == 'A' else 'A'}{signature[1:]}"
    for params, expected in (
        ({"status": "approved"}, "invalid_status"),
        ({"operator": "0x1234"}, "invalid_operator"),
        ({"cursor": foreign}, "invalid_cursor"),
        ({"cursor": forged}, "invalid_cursor"),
        ({"operator": op.wallet[:2] + op.wallet[2:].swapcase()}, "invalid_operator"),  # bad EIP-55
    ):
        answer = await client.get(PREDICTIONS, params=params)
        assert answer.status_code == 400 and code(answer) == expected, (params, answer.text)


async def test_an_operator_sends_at_most_five_submissions_per_token_and_round(
    client, settings, op, monkeypatch
):
    now, closes = pinned(monkeypatch, settings, into=100.25)
    limit = settings.oracle.max_submissions_per_round
    assert limit == 5
    sent = [await submit(client, op, key=f"q-{n}", predictedPrice=1 + n / 10) for n in range(limit)]
    assert [s.status_code for s in sent] == [201] * limit
    refused = await submit(client, op, key="q-extra")
    assert refused.status_code == 429 and code(refused) == "too_many_submissions", refused.text
    wait = int(refused.headers["Retry-After"])
    assert wait == int((closes - now).total_seconds()) + 1 == 200  # until the next round opens
    assert refused.json()["error"]["details"] == {"limit": limit, "retryAfter": wait}
    assert (await submit(client, op)).status_code == 429  # without a key just the same
    assert await stored().count_documents({"operator": op.wallet}) == limit
    rnd = (await client.get(f"/api/oracle/rounds/{sent[0].json()['round']['id']}")).json()
    assert rnd["submissions"] == limit
    # a replay of a stored key answers its prediction, past the limit: it sends nothing new
    again = await submit(client, op, key="q-0", predictedPrice=1.0)
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true", again.text
    assert again.json()["predictionId"] == sent[0].json()["predictionId"]
    # the key refused is no stored key: a retry of it is refused again, not replayed
    assert (await submit(client, op, key="q-extra")).status_code == 429


async def test_the_submission_limit_is_per_operator_token_and_window(client, settings, op, monkeypatch):
    _now, closes = pinned(monkeypatch, settings)
    await factories.asset(8)
    limit = settings.oracle.max_submissions_per_round
    for _ in range(limit):
        assert (await submit(client, op)).status_code == 201
    assert (await submit(client, op)).status_code == 429
    assert (await submit(client, op, tokenId=8)).status_code == 201  # another token
    assert (await submit(client, await operator(settings))).status_code == 201  # another operator
    # refusals are not counted: the limit is of what is stored
    assert await stored().count_documents({"operator": op.wallet, "tokenId": TOKEN}) == limit
    # the next window opens a new count
    later = closes + timedelta(seconds=1)
    monkeypatch.setattr(prediction_service, "utcnow", lambda: later)
    created = await submit(client, op)
    assert created.status_code == 201, created.text
    assert created.json()["round"]["id"] == joining.window(TOKEN, later, settings.oracle.round_window_s)[0]


async def test_the_submission_limit_follows_its_setting(client, settings, op, monkeypatch):
    pinned(monkeypatch, settings)
    monkeypatch.setattr(settings.oracle, "max_submissions_per_round", 2)
    assert [(await submit(client, op)).status_code for _ in range(3)] == [201, 201, 429]
    refused = await submit(client, op)
    assert refused.json()["error"]["details"]["limit"] == 2


async def test_concurrent_submissions_cannot_pass_the_limit_together(client, settings, op, monkeypatch):
    pinned(monkeypatch, settings)
    limit = settings.oracle.max_submissions_per_round
    answers = await asyncio.gather(*(submit(client, op, key=f"burst-{n}") for n in range(20 * limit)))
    assert {a.status_code for a in answers} == {201, 429}, [a.text for a in answers]
    stored_now = await stored().count_documents({"operator": op.wallet})
    assert [a.status_code for a in answers].count(201) == stored_now
    assert stored_now == limit
