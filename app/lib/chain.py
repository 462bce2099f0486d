"""Embedded models of on-chain facts that several domains store (asset prices, oracle submissions)."""

from __future__ import annotations

import re
from datetime import datetime

from pydantic import BaseModel


class ChainReference(BaseModel):
    """Where a write landed on the chain: its transaction, block and block time."""

    transactionHash: str | None = None
    blockNumber: int | None = None
    timestamp: datetime | None = None


_URL_PATH = re.compile(r"\b(https?|wss?)://([^/\s'\"@]*@)?([^/\s'\"]+)[^\s'\"]*")


def without_url_secrets(text: str) -> str:
    """`text` with every URL cut to its scheme and host: an RPC provider's URL often carries its API key
    in the path or query (and credentials before the host), which no log or output should show."""
    return _URL_PATH.sub(lambda m: f"{m.group(1)}://{m.group(3)}/…", text)
