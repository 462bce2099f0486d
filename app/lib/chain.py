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


# Any scheme (http, wss, redis, mongodb...), in any case, up to a space or a bracket. A scheme is at most
# 32 characters, so a long run of letters and dashes is not tried again at every boundary.
_URL = re.compile(r"(?<![A-Za-z0-9+.-])([a-zA-Z][a-zA-Z0-9+.-]{0,31})://([^\s<>]+)")
_HOST_END = re.compile(r"[/?#]")
# What a host (or a list of them, as MongoDB's) looks like: names or bracketed addresses, with ports.
_HOSTS = re.compile(
    r"(?:[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?(?:,(?:[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?)*"
)
_TRAILING = "'\"),;]}"


def _host_only(match: re.Match[str]) -> str:
    rest = match.group(2)
    stripped = rest.rstrip(_TRAILING)
    tail = rest[len(stripped) :]  # the quote or bracket that closes the URL in its text, kept
    # Credentials end at the last @ before the path, query or fragment; an @ after them is not theirs.
    authority = stripped
    end = _HOST_END.search(stripped)
    before = stripped if end is None else stripped[: end.start()]
    at = stripped.rfind("@", 0, len(before) if "@" in before else 0)
    if at >= 0:
        authority = stripped[at + 1 :]
    else:
        # A password holding a slash or a quote (RFC 3986 allows a quote): its @ comes after one.
        first_at = stripped.find("@")
        if first_at >= 0 and not _HOSTS.fullmatch(before):
            authority = stripped[first_at + 1 :]
    host = _HOST_END.split(authority, maxsplit=1)[0]
    if not _HOSTS.fullmatch(host):
        return f"{match.group(1)}://…{tail}"
    return f"{match.group(1)}://{host}/…{tail}"


def without_url_secrets(text: str) -> str:
    """`text` with every URL cut to its scheme and host: an RPC provider's URL often carries its API key
    in the path or query (and credentials before the host), which no log or output should show."""
    return _URL.sub(_host_only, text) if "://" in text else text
