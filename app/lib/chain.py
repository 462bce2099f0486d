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


# Any scheme (http, wss, redis, mongodb...), in any case, up to a space, a quote or a bracket.
_URL = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*)://([^\s'\"<>]+)")
_HOST_END = re.compile(r"[/?#]")


def _host_only(match: re.Match[str]) -> str:
    rest = match.group(2)
    if "@" in rest:  # credentials, whatever they hold (a password may have a slash): up to the last @
        rest = rest.rsplit("@", 1)[1]
    return f"{match.group(1)}://{_HOST_END.split(rest, maxsplit=1)[0]}/…"


def without_url_secrets(text: str) -> str:
    """`text` with every URL cut to its scheme and host: an RPC provider's URL often carries its API key
    in the path or query (and credentials before the host), which no log or output should show."""
    return _URL.sub(_host_only, text)
