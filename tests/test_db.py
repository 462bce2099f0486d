from datetime import UTC, datetime
from decimal import Decimal

import pytest
from pymongo.errors import DuplicateKeyError

from app.assets.documents import Asset, CurrentPrice
from app.main import DOCUMENTS
from app.market.documents import Transaction, TransactionChain
from tests import factories

# Seed plan 3.1.6, plus what the design adds (TTL on sessions, the audit trail).
EXPECTED_INDEXES = {
    "users": [([("walletAddress", 1)], True), ([("apiKeys.key", 1)], False), ([("nonce", 1)], False)],
    "assets": [
        ([("tokenId", 1)], True),
        ([("ownership.currentOwner", 1)], False),
        ([("assetType", 1)], False),
        ([("marketStatus.isListed", 1)], False),
        ([("currentPrice.value", 1)], False),
    ],
    "priceHistory": [
        ([("tokenId", 1), ("timestamp", -1)], False),
        ([("assetId", 1), ("timestamp", -1)], False),
    ],
    "transactions": [
        ([("tokenId", 1)], False),
        ([("seller", 1)], False),
        ([("buyer", 1)], False),
        ([("blockchain.transactionHash", 1), ("tokenId", 1)], True),
        ([("timestamp", -1)], False),
    ],
    "aiOracleData": [
        ([("tokenId", 1), ("timestamp", -1)], False),
        ([("assetId", 1), ("timestamp", -1)], False),
        ([("status", 1)], False),
        ([("operator", 1), ("idempotencyKey", 1)], True),
    ],
    "oracleRounds": [([("key", 1)], True), ([("tokenId", 1), ("closesAt", -1)], False)],
    "auditLogs": [([("timestamp", 1), ("_id", 1)], False)],  # the archive's order (no TTL)
    "sessions": [([("expiresAt", 1)], False), ([("endedAt", 1)], False)],
    "deploymentLogs": [([("contract", 1), ("chainId", 1), ("createdAt", -1)], False)],
    "outbox": [([("key", 1)], True), ([("chainId", 1), ("sender", 1), ("nonce", 1)], True)],
    "events": [([("eventId", 1), ("createdAt", 1)], False), ([("doneAt", 1), ("createdAt", 1)], False)],
    "chainEvents": [([("chainId", 1), ("blockNumber", 1), ("logIndex", 1)], False)],  # toAnnounce only
    "webhooks": [
        ([("owner", 1), ("createdAt", -1), ("_id", -1)], False),
        ([("status", 1), ("topics", 1)], False),
    ],
    "webhookDeliveries": [
        ([("webhookId", 1), ("eventId", 1)], True),
        ([("status", 1), ("nextAttemptAt", 1)], False),
    ],
}


def _serves(index: tuple, keys: list[tuple[str, int]]) -> bool:
    """Whether an index serves the queries of one with `keys`: it leads with them (one key may run either
    way, as an index is walked in both directions)."""
    lead = index[: len(keys)]
    if len(keys) == 1:
        return len(lead) == 1 and lead[0][0] == keys[0][0]
    return lead == tuple(keys)


@pytest.mark.parametrize("collection", sorted(EXPECTED_INDEXES))
async def test_seed_indexes_exist(client, settings, clients, collection):
    info = await clients.mongo[settings.mongodb.database][collection].index_information()
    present = [
        (
            tuple((k, int(d)) for k, d in spec["key"]),
            bool(spec.get("unique")),
            "partialFilterExpression" in spec,
        )
        for spec in info.values()
    ]
    for keys, unique in EXPECTED_INDEXES[collection]:
        exact = [(index, is_unique) for index, is_unique, _ in present if index == tuple(keys)]
        if unique:  # a unique one must be exactly that: a longer key would let duplicates in
            assert (tuple(keys), True) in exact, f"{collection} lacks unique {keys}: {present}"
        else:  # or one leading with its keys; not a partial one, which serves only queries naming its filter
            assert exact or any(_serves(index, keys) for index, _, partial in present if not partial), (
                f"{collection} lacks {keys}: {present}"
            )


async def test_assets_keep_no_index_that_another_already_serves(client, settings, clients):
    """Every index of an asset is rewritten when it is: one that leads another is only a cost."""
    from app.lib.db import init_db

    assets = clients.mongo[settings.mongodb.database]["assets"]
    await assets.create_index("assetType", name="assetType")  # as an older version made it
    await init_db(clients.mongo, settings, DOCUMENTS)
    keys = [tuple(k for k, _ in spec["key"]) for spec in (await assets.index_information()).values()]
    redundant = [a for a in keys if any(b != a and b[: len(a)] == a for b in keys)]
    assert redundant == []


async def test_sessions_expire_through_ttl_indexes(client, settings, clients):
    """Expired sessions go 30 days after their expiry, ended (logged-out, revoked) ones 7 days after."""
    info = await clients.mongo[settings.mongodb.database]["sessions"].index_information()
    ttl = {
        tuple(spec["key"]): spec["expireAfterSeconds"]
        for spec in info.values()
        if "expireAfterSeconds" in spec
    }
    assert ttl == {(("expiresAt", 1),): 30 * 86400, (("endedAt", 1),): 7 * 86400}


async def test_webhook_deliveries_expire_30_days_after_creation(client, settings, clients):
    info = await clients.mongo[settings.mongodb.database]["webhookDeliveries"].index_information()
    ttl = {tuple(s["key"]): s["expireAfterSeconds"] for s in info.values() if "expireAfterSeconds" in s}
    assert ttl == {(("createdAt", 1),): 30 * 86400}


async def test_announced_events_expire_a_week_after_they_are_handed_over(client, settings, clients):
    info = await clients.mongo[settings.mongodb.database]["events"].index_information()
    ttl = {tuple(s["key"]): s["expireAfterSeconds"] for s in info.values() if "expireAfterSeconds" in s}
    assert ttl == {(("doneAt", 1),): 7 * 86400}


async def test_no_ttl_index_deletes_audit_entries(client, settings, clients):
    """Audit entries leave through the archive only (app/audit/retention.py)."""
    info = await clients.mongo[settings.mongodb.database]["auditLogs"].index_information()
    assert [name for name, spec in info.items() if "expireAfterSeconds" in spec] == []


async def test_every_collection_is_registered(client):
    names = {document.get_collection_name() for document in DOCUMENTS}
    assert names == {
        "users",
        "sessions",
        "assets",
        "priceHistory",
        "transactions",
        "aiOracleData",
        "dataSources",
        "comparableSales",
        "indexPoints",
        "oracleModels",
        "oracleRounds",
        "auditLogs",
        "deploymentLogs",
        "outbox",
        "chainEvents",
        "chainBlocks",
        "indexerCursors",
        "webhooks",
        "webhookDeliveries",
        "events",
    }


async def test_token_id_is_unique(client):
    await factories.asset(1)
    with pytest.raises(DuplicateKeyError):
        await factories.asset(1)
    assert await Asset.find(Asset.tokenId == 1).count() == 1


async def test_transaction_hash_is_unique(client):
    def tx() -> Transaction:
        return Transaction(
            type="buy",
            tokenId=1,
            timestamp=datetime.now(UTC),
            blockchain=TransactionChain(transactionHash="0x" + "ab" * 32),
        )

    await tx().insert()
    with pytest.raises(DuplicateKeyError):
        await tx().insert()


async def test_wei_amounts_survive_the_round_trip_exactly(client):
    wei = Decimal("123456789012345678901234567")  # 27 digits: more than a float or int64 keeps
    await factories.asset(2, currentPrice=CurrentPrice(value=123456789.01234568, valueWei=wei))
    raw = await Asset.get_pymongo_collection().find_one({"tokenId": 2})
    assert str(raw["currentPrice"]["valueWei"]) == "123456789012345678901234567"
    loaded = await Asset.find_one(Asset.tokenId == 2)
    assert loaded.currentPrice.valueWei == wei
    assert loaded.model_dump(mode="json")["currentPrice"]["valueWei"] == "123456789012345678901234567"


async def test_datetimes_come_back_timezone_aware(client):
    await factories.asset(3)
    loaded = await Asset.find_one(Asset.tokenId == 3)
    assert loaded.createdAt.tzinfo is not None


async def test_an_index_an_older_version_made_is_dropped_at_start_up(client, settings, clients):
    """The unique transaction hash of old refused the second token of a sweep: start-up drops it."""
    from app.lib.db import init_db

    transactions = clients.mongo[settings.mongodb.database]["transactions"]
    await transactions.create_index("blockchain.transactionHash", unique=True, name="transactionHash_unique")
    await init_db(clients.mongo, settings, DOCUMENTS)
    names = set(await transactions.index_information())
    assert "transactionHash_unique" not in names and "transactionHash_tokenId_unique" in names
