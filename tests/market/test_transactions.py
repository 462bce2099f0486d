from datetime import timedelta

import pytest

from app.market import repository, schemas, service
from app.market.documents import Transaction
from tests import factories
from tests.factories import ALICE, BOB, CAROL, T0


async def record(clients, *transactions):
    for tx in transactions:
        await service.record_transaction(clients.redis, tx)


async def hashes(client, path="/api/transactions", **params):
    response = await client.get(path, params=params)
    assert response.status_code == 200, response.text
    return [int(item["transactionHash"], 16) for item in response.json()["items"]]


async def test_writing_the_same_transaction_twice_is_harmless(client, clients):
    tx = factories.transaction(1, status="pending")
    assert await service.record_transaction(clients.redis, tx) is True
    assert await service.record_transaction(clients.redis, tx) is False
    tx.status = "completed"
    tx.price = 99.0  # what the chain fixed is never rewritten
    await service.record_transaction(clients.redis, tx)
    assert await Transaction.count() == 1
    stored = (await client.get("/api/transactions")).json()["items"][0]
    assert stored["status"] == "completed" and stored["price"] == 1.5
    assert stored["priceWei"] == "1500000000000000000"


async def test_filters(client, clients):
    await record(
        clients,
        factories.transaction(1, kind="mint", seller=None, buyer=ALICE, price=None, token_id=1),
        factories.transaction(2, kind="list", seller=ALICE, buyer=None, token_id=1),
        factories.transaction(3, kind="buy", seller=ALICE, buyer=BOB, token_id=1),
        factories.transaction(4, kind="buy", seller=BOB, buyer=CAROL, token_id=2, status="failed"),
        factories.transaction(5, kind="sell", seller=CAROL, buyer=ALICE, token_id=3),
    )
    assert await hashes(client) == [5, 4, 3, 2, 1]  # newest first
    assert await hashes(client, type="buy") == [4, 3]
    assert await hashes(client, tokenId=1) == [3, 2, 1]
    assert await hashes(client, wallet=BOB) == [4, 3]
    assert await hashes(client, status="failed") == [4]
    assert await hashes(
        client,
        **{"from": (T0 + timedelta(minutes=2)).isoformat(), "to": (T0 + timedelta(minutes=4)).isoformat()},
    ) == [3, 2]
    assert await hashes(client, f"/api/users/{ALICE.lower()}/transactions") == [5, 3, 2, 1]
    assert await hashes(client, f"/api/users/{CAROL}/transactions", type="sell") == [5]


async def test_pages_with_a_cursor(client, clients):
    await record(
        clients, *(factories.transaction(n, at=T0 + timedelta(minutes=n // 3)) for n in range(1, 26))
    )
    seen, cursor = [], None
    while True:
        page = (
            await client.get(
                "/api/transactions", params={"limit": 7, **({"cursor": cursor} if cursor else {})}
            )
        ).json()
        seen += [int(i["transactionHash"], 16) for i in page["items"]]
        cursor = page["nextCursor"]
        if not cursor:
            break
    assert sorted(seen) == list(range(1, 26)) and len(seen) == 25


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"type": "steal"}, "invalid_type"),
        ({"status": {"$ne": 1}}, "invalid_status"),
        ({"wallet": "0xnope"}, "invalid_address"),
        ({"tokenId": "-3"}, "invalid_token_id"),
        ({"limit": "0"}, "invalid_limit"),
        ({"cursor": "x.y"}, "invalid_cursor"),
        ({"seller[$ne]": "x"}, "operator_not_allowed"),
    ],
)
async def test_bad_input(client, params, code):
    response = await client.get("/api/transactions", params=params)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == code
    bad_user = await client.get("/api/users/0x12/transactions")
    assert bad_user.json()["error"]["code"] == "invalid_address"


async def test_main_transaction_queries_use_an_index(client, clients):
    from app.lib.pagination import Position, keyset_queries

    await record(clients, *(factories.transaction(n) for n in range(1, 6)))
    doc = await Transaction.get_pymongo_collection().find_one({})
    wallet = service.transaction_filter(schemas.TransactionQuery(wallet=ALICE))
    assert wallet == {"parties": ALICE}
    in_window = service.transaction_filter(
        schemas.TransactionQuery(wallet=ALICE, start=T0, end=T0 + timedelta(days=1))
    )
    for query in ({}, {"tokenId": 1}, wallet, in_window):
        for filter_, sort in [
            *keyset_queries(query, repository.TX_SORT, None),
            *keyset_queries(query, repository.TX_SORT, Position(doc["timestamp"], doc["_id"])),
        ]:
            plan = await Transaction.get_pymongo_collection().find(filter_, sort=sort, limit=20).explain()
            text = str(plan["queryPlanner"]["winningPlan"])
            assert "IXSCAN" in text and "COLLSCAN" not in text, (filter_, text)


async def test_parties_are_derived_by_the_document_for_every_writer(client, clients):
    assert factories.transaction(1, seller=ALICE, buyer=BOB).parties == [ALICE, BOB]
    assert factories.transaction(2, seller=None, buyer=ALICE).parties == [ALICE]
    assert factories.transaction(3, seller=ALICE, buyer=ALICE).parties == [ALICE]
    await record(clients, factories.transaction(4, seller=CAROL, buyer=BOB))
    stored = await Transaction.get_pymongo_collection().find_one({})
    assert stored["parties"] == [CAROL, BOB]


async def test_transactions_written_before_parties_are_found_after_the_backfill(client, clients):
    from app.market import jobs

    await record(
        clients, factories.transaction(1, seller=ALICE, buyer=BOB), factories.transaction(2, seller=CAROL)
    )
    collection = Transaction.get_pymongo_collection()
    await collection.update_one({"tokenId": 1, "seller": CAROL}, {"$unset": {"parties": ""}})
    assert await hashes(client, f"/api/users/{CAROL}/transactions") == []
    assert (await jobs.backfill_search_fields({}))["transactions"] == 1
    assert await hashes(client, f"/api/users/{CAROL}/transactions") == [2]
    assert await hashes(client, wallet=BOB) == [2, 1]


@pytest.mark.parametrize("value", ["0.5", "1700000000", "2025-01-01", "2025-01-01T00:00:00"])
async def test_a_time_is_an_rfc3339_date_time_not_unix_seconds_or_a_bare_date(client, value):
    response = await client.get("/api/transactions", params={"to": value})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "validation_error"
