"""Embedded models of on-chain facts that several domains store (asset prices, oracle submissions)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class ChainReference(BaseModel):
    """Where a write landed on the chain: its transaction, block and block time."""

    transactionHash: str | None = None
    blockNumber: int | None = None
    timestamp: datetime | None = None
