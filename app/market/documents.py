"""Marketplace transactions (seed plan 3.1.3)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import pymongo
from beanie import Document, PydanticObjectId
from pydantic import BaseModel, Field, model_validator
from pymongo import IndexModel

from app.lib.money import Wei

TransactionType = Literal["mint", "list", "buy", "sell", "delist", "transfer"]
TransactionStatus = Literal["pending", "completed", "failed"]


class TransactionChain(BaseModel):
    transactionHash: str
    blockNumber: int | None = None
    # Set by the chain indexer: the block and log it read the transaction from (a reorg that orphans the
    # block removes the transaction).
    blockHash: str | None = None
    logIndex: int | None = None
    gasUsed: int | None = None
    gasPriceWei: Wei | None = None


class Transaction(Document):
    type: TransactionType
    tokenId: int
    assetId: PydanticObjectId | None = None
    price: float | None = None
    priceWei: Wei | None = None
    priceUsd: float | None = None
    seller: str | None = None
    buyer: str | None = None
    timestamp: datetime
    blockchain: TransactionChain
    status: TransactionStatus = "pending"
    platformFee: float | None = None
    platformFeeWei: Wei | None = None
    paymentMethod: str = "eth"
    # Both parties, so "a wallet's transactions" is one equality on a multikey index instead of an `$or`
    # over seller and buyer (which no planner serves in (timestamp, _id) order). Derived, never given:
    # every writer that builds the document (the API, the indexer, scripts/seed.py) stores it. Documents
    # written before the field existed are filled by the `market.backfill_parties` job.
    parties: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _derive_parties(self) -> Transaction:
        self.parties = [party for party in dict.fromkeys((self.seller, self.buyer)) if party]
        return self

    class Settings:
        name = "transactions"
        # Dropped at start-up where an older version made them (app/lib/db.py).
        retired_indexes = ["transactionHash_unique"]
        indexes = [
            IndexModel([("tokenId", pymongo.ASCENDING)], name="tokenId"),
            IndexModel([("seller", pymongo.ASCENDING)], name="seller"),
            IndexModel([("buyer", pymongo.ASCENDING)], name="buyer"),
            # One row per token a transaction moved: a sweep buying several tokens is several sales.
            IndexModel(
                [("blockchain.transactionHash", pymongo.ASCENDING), ("tokenId", pymongo.ASCENDING)],
                unique=True,
                name="transactionHash_tokenId_unique",
            ),
            IndexModel([("timestamp", pymongo.DESCENDING)], name="timestamp"),
            # Keyset pagination by (timestamp, _id), overall and per token.
            IndexModel([("timestamp", pymongo.DESCENDING), ("_id", pymongo.DESCENDING)], name="timestamp_id"),
            IndexModel(
                [
                    ("tokenId", pymongo.ASCENDING),
                    ("timestamp", pymongo.DESCENDING),
                    ("_id", pymongo.DESCENDING),
                ],
                name="tokenId_timestamp_id",
            ),
            IndexModel(
                [
                    ("parties", pymongo.ASCENDING),
                    ("timestamp", pymongo.DESCENDING),
                    ("_id", pymongo.DESCENDING),
                ],
                name="parties_timestamp_id",
            ),
            IndexModel(
                [("type", pymongo.ASCENDING), ("timestamp", pymongo.DESCENDING)], name="type_timestamp"
            ),
        ]
