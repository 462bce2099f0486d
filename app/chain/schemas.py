"""Response bodies of the chain API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from app.lib.schemas import Schema


class Deployment(Schema):
    """A deployed contract: where it is and its ABI, so that a client can call it."""

    name: str
    address: str
    chainId: int
    abi: list[dict[str, Any]]
    transactionHash: str | None
    blockNumber: int | None
    artifactHash: str
    deployedAt: datetime


class DeploymentList(Schema):
    chainId: int
    deployments: list[Deployment]


class Reorg(Schema):
    at: datetime
    fork: int
    depth: int
    removed: int


class OutboxFigures(Schema):
    open: int
    byStatus: dict[str, int]


class SignerView(Schema):
    address: str
    balanceWei: str
    balance: float


class DriftItem(Schema):
    tokenId: int
    field: str
    chain: str | None
    database: str | None


class DriftReport(Schema):
    """The last reconciliation: a sample of tokens read on the chain at `block` and compared."""

    at: datetime
    block: int
    sampled: int
    byField: dict[str, int]
    items: list[DriftItem]


class ChainStatus(Schema):
    chainId: int
    headBlock: int
    indexedBlock: int | None
    lag: int | None
    lastReorg: Reorg | None
    outbox: OutboxFigures
    signer: SignerView
    drift: DriftReport | None
