"""The chain domain's collections: `deploymentLogs` (seed 000 1.4), one document per deployment tried."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pymongo
from beanie import Document
from pydantic import BaseModel, Field
from pymongo import IndexModel

from app.lib.timeutil import utcnow

DEPLOYMENT_STATUSES = ("pending", "deployed", "failed")


class DeploymentLog(Document):
    """One deployment of one contract: `pending` once its transaction is signed (its hash is known
    before it is sent, so a crash in between is found again), then `deployed` or `failed`."""

    contract: str
    chainId: int
    address: str | None = None
    txHash: str | None = None
    block: int | None = None
    status: str = "pending"
    error: str | None = None
    artifactHash: str
    # The constructor's arguments as strings: a deployment is reused only for the same ones.
    args: list[str] = Field(default_factory=list)
    deployer: str
    # The hash of the chain's block 0 when it was deployed: another one there is another chain.
    genesis: str | None = None
    createdAt: datetime = Field(default_factory=utcnow)
    updatedAt: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "deploymentLogs"
        indexes = [
            IndexModel(
                [
                    ("contract", pymongo.ASCENDING),
                    ("chainId", pymongo.ASCENDING),
                    ("createdAt", pymongo.DESCENDING),
                ],
                name="contract_chainId_createdAt",
            ),
        ]


OUTBOX_STATUSES = ("intent", "signed", "sent", "mined", "confirmed", "failed")


class Attempt(BaseModel):
    """One signed transaction for an outbox entry; replacements share its nonce with higher fees."""

    txHash: str
    raw: str
    maxFeePerGas: int
    maxPriorityFeePerGas: int
    signedAt: datetime


class Receipt(BaseModel):
    transactionHash: str
    blockNumber: int
    blockHash: str
    status: int
    gasUsed: int
    effectiveGasPrice: int | None = None
    contractAddress: str | None = None


class OutboxTransaction(Document):
    """A transaction the platform sends: intent -> signed -> sent -> mined -> confirmed, or failed.

    `key` names what it does (`mint:<chain>:<token>:<id>`), so asking twice asks once. The nonce is given
    at signing, unique per chain and sender (the index below is the ledger's guarantee), and every
    attempt is stored before it is sent, so a crash at any step is found again by nonce and hash.
    """

    key: str
    kind: str
    chainId: int
    sender: str
    to: str | None = None
    data: str = "0x"
    value: str = "0"
    gas: int | None = None
    nonce: int | None = None
    status: str = "intent"
    attempts: list[Attempt] = Field(default_factory=list)
    txHash: str | None = None
    sentBlock: int | None = None
    receipt: Receipt | None = None
    error: str | None = None
    ref: dict[str, Any] = Field(default_factory=dict)
    createdAt: datetime = Field(default_factory=utcnow)
    updatedAt: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "outbox"
        indexes = [
            IndexModel([("key", pymongo.ASCENDING)], unique=True, name="key_unique"),
            IndexModel(
                [("chainId", pymongo.ASCENDING), ("sender", pymongo.ASCENDING), ("nonce", pymongo.ASCENDING)],
                unique=True,
                partialFilterExpression={"nonce": {"$type": ["int", "long"]}},
                name="chainId_sender_nonce_unique",
            ),
            IndexModel(
                [("status", pymongo.ASCENDING), ("createdAt", pymongo.ASCENDING)], name="status_createdAt"
            ),
        ]


class ChainEvent(Document):
    """One log of the platform's contracts, decoded; keyed by block hash, transaction and log index, so
    indexing a range again adds nothing. A reorg marks the orphaned ones `removed`."""

    chainId: int
    contract: str
    address: str
    event: str
    blockNumber: int
    blockHash: str
    txHash: str
    logIndex: int
    tokenId: int | None = None
    args: dict[str, Any] = Field(default_factory=dict)  # uint256 values as decimal strings
    blockTime: datetime | None = None
    removed: bool = False
    indexedAt: datetime = Field(default_factory=utcnow)
    # The stream's view of the event (app/market/announcing.py announces it): `toAnnounce` is set whenever
    # it appears or a reorg removes it; `announced` says what was last announced ("added", "removed"),
    # `announcements` how many times, which keys the next announcement.
    toAnnounce: bool | None = None
    announced: str | None = None
    announcements: int = 0

    class Settings:
        name = "chainEvents"
        retired_indexes = ["chainId_token_block_log"]
        indexes = [
            IndexModel(
                [
                    ("chainId", pymongo.ASCENDING),
                    ("blockHash", pymongo.ASCENDING),
                    ("txHash", pymongo.ASCENDING),
                    ("logIndex", pymongo.ASCENDING),
                ],
                unique=True,
                name="chainId_block_tx_log_unique",
            ),
            IndexModel(
                [("chainId", pymongo.ASCENDING), ("blockNumber", pymongo.ASCENDING)], name="chainId_block"
            ),
            # A token's events of one contract: the market reads its transfers and listings apart from
            # the oracle's many price updates.
            IndexModel(
                [
                    ("chainId", pymongo.ASCENDING),
                    ("contract", pymongo.ASCENDING),
                    ("tokenId", pymongo.ASCENDING),
                    ("blockNumber", pymongo.ASCENDING),
                ],
                name="chainId_contract_token_block",
            ),
            IndexModel(
                [("chainId", pymongo.ASCENDING), ("blockNumber", pymongo.ASCENDING), ("logIndex", 1)],
                name="to_announce",
                partialFilterExpression={"toAnnounce": True},
            ),
            # Whether a listing's seller approved the marketplace for all its tokens, and which tokens
            # an owner's such approval touches: few events each, so partial.
            IndexModel(
                [("chainId", pymongo.ASCENDING), ("args.owner", pymongo.ASCENDING), ("blockNumber", 1)],
                name="operator_approvals",
                partialFilterExpression={"event": "ApprovalForAll"},
            ),
            IndexModel(
                [("chainId", pymongo.ASCENDING), ("args.seller", pymongo.ASCENDING)],
                name="listings_by_seller",
                partialFilterExpression={"event": "Listed"},
            ),
        ]


class ChainBlock(Document):
    """A block the indexer read, by number: its hash is checked again on later polls to find reorgs."""

    chainId: int
    number: int
    hash: str
    parentHash: str | None = None

    class Settings:
        name = "chainBlocks"
        indexes = [
            IndexModel(
                [("chainId", pymongo.ASCENDING), ("number", pymongo.DESCENDING)],
                unique=True,
                name="chainId_number_unique",
            )
        ]


class IndexerCursor(Document):
    """How far the indexer has read a chain, and the last reorg it rolled back."""

    chainId: int
    block: int
    hash: str | None = None
    lastReorg: dict[str, Any] | None = None  # {at, fork, depth, removed}
    updatedAt: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "indexerCursors"
        indexes = [IndexModel([("chainId", pymongo.ASCENDING)], unique=True, name="chainId_unique")]
