"""Request parameters and parsers every domain shares: limits, cursors, sorts, addresses, query guards."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any

from eth_utils import is_checksum_address, to_checksum_address
from litestar.connection import ASGIConnection
from litestar.params import PathParameter, QueryParameter
from pymongo.errors import ExecutionTimeout

from app.lib.errors import BadRequest, ServiceUnavailable
from app.lib.pagination import Position, Sort, decode_cursor, encode_cursor
from app.lib.timeutil import CLIENT_TIME_PATTERN

PUBLIC = {"anonymous": True}  # route opt: open to anonymous callers (request.user is None for them)
# Open to anonymous callers, and the answer depends on who asks (the document says credentials are optional).
OPTIONAL_AUTH = {"anonymous": True, "optional_auth": True}
MAX_LIMIT = 100
DEFAULT_LIMIT = 20
MAX_INT64 = 2**63 - 1  # MongoDB stores 8-byte integers: a larger id names nothing
ADDRESS = r"^0x[0-9a-fA-F]{40}$"
_HEX_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")

# The constraints below are documented (schema_extra) rather than enforced by Litestar: the services
# check them, answering each with its own code (invalid_limit, invalid_wallet_address, ...).
LimitParam = Annotated[
    int | None,
    QueryParameter(description="1 to 100, default 20", schema_extra={"minimum": 1, "maximum": MAX_LIMIT}),
]
CursorParam = Annotated[str | None, QueryParameter(description="nextCursor of the previous page")]
ADDRESS_DOC = "a 0x-prefixed 20-byte hex address: all one case, or EIP-55 checksummed"
WalletPath = Annotated[str, PathParameter(description=ADDRESS_DOC, schema_extra={"pattern": ADDRESS})]
TokenIdPath = Annotated[int, PathParameter(schema_extra={"minimum": 0, "maximum": MAX_INT64})]
TIME_DOC = "ISO-8601, a year from 1900 to 8999"
# Taken as text and read by parse_time: Litestar's own conversion would also take "0.5" (Unix seconds).
TIME_SCHEMA = {"format": "date-time", "pattern": CLIENT_TIME_PATTERN}
FromParam = Annotated[
    str | None, QueryParameter(name="from", description=f"{TIME_DOC}, inclusive", schema_extra=TIME_SCHEMA)
]
ToParam = Annotated[
    str | None,
    QueryParameter(name="to", description=f"{TIME_DOC}, exclusive; after from", schema_extra=TIME_SCHEMA),
]
_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})", re.IGNORECASE)


def parse_time(value: str | None, field: str) -> datetime | None:
    """An RFC 3339 date-time (what `format: date-time` means), or 400 `validation_error`."""
    if value is None:
        return None
    try:
        if not _DATE_TIME.fullmatch(value):
            raise ValueError(value)
        return datetime.fromisoformat(value.upper())
    except ValueError:
        raise BadRequest(
            f"{field} must be an RFC 3339 date-time, such as 2025-01-01T00:00:00Z",
            code="validation_error",
            details=[{"field": field, "message": "not an RFC 3339 date-time", "source": "query"}],
        ) from None


def one_of(values: Iterable[str]) -> dict[str, Any]:
    """A parameter's documented choices (`schema_extra`), checked by the service with its own code."""
    return {"enum": list(values)}


def sorts_of(names: Iterable[str]) -> dict[str, Any]:
    """The documented choices of a `sort` parameter: each name, ascending or with '-' descending."""
    return one_of(value for name in names for value in (name, f"-{name}"))


def plain_query(connection: ASGIConnection, _: Any = None) -> None:
    """A guard for every route: query parameters are plain names, each sent at most once.

    `owner[$ne]=` and the like are how operators get smuggled into queries, and a repeated parameter
    (`limit=1&limit=500`) is read differently by different layers (HTTP parameter pollution): both are
    refused outright.
    """
    seen: set[str] = set()
    for name, _value in connection.query_params.multi_items():
        if any(char in name for char in "[]$."):
            raise BadRequest(
                f"query parameter {name!r} is not allowed",
                code="operator_not_allowed",
                details={"name": name},
            )
        if name in seen:
            raise BadRequest(
                f"query parameter {name!r} is sent more than once",
                code="repeated_parameter",
                details={"name": name},
            )
        seen.add(name)


plain_query.errors = {400: ("operator_not_allowed", "repeated_parameter")}


def parse_limit(limit: int | None, maximum: int = MAX_LIMIT, default: int = DEFAULT_LIMIT) -> int:
    """A page size within 1..maximum, or 400 `invalid_limit`."""
    if limit is None:
        return default
    if not 1 <= limit <= maximum:
        raise BadRequest(f"limit must be between 1 and {maximum}", code="invalid_limit")
    return limit


def parse_sort(
    value: str | None, sorts: dict[str, tuple[str, bool]], default: str = "-createdAt"
) -> tuple[str, Sort]:
    """`field` (ascending) or `-field` (descending) from the fixed set; 400 `invalid_sort` otherwise."""
    raw = default if value is None else value
    name = raw[1:] if raw.startswith("-") else raw
    if name not in sorts:
        raise BadRequest(
            f"sort must be one of {', '.join(sorts)}, optionally prefixed with '-' for descending",
            code="invalid_sort",
            details={"allowed": sorted(sorts)},
        )
    path, nullable = sorts[name]
    return raw, Sort(path, -1 if raw.startswith("-") else 1, nullable)


def parse_address(value: str, field: str = "walletAddress") -> str:
    """An EIP-55 checksummed address (the form addresses are stored in), or 400 `invalid_address`."""
    if not isinstance(value, str) or not _HEX_ADDRESS.fullmatch(value):
        raise BadRequest(f"{field} must be a 0x-prefixed 20-byte hex address", code="invalid_address")
    return to_checksum_address(value)


def checksum_address(value: object, *, code: str = "invalid_wallet_address") -> str:
    """The EIP-55 form of a 0x address in one case or valid EIP-55 mixed case (else a typo), or 400."""
    if not isinstance(value, str) or not _HEX_ADDRESS.fullmatch(value):
        raise BadRequest("walletAddress is not an Ethereum address", code=code)
    body = value[2:]
    if body != body.lower() and body != body.upper() and not is_checksum_address(value):
        raise BadRequest("walletAddress has a wrong EIP-55 checksum", code=code)
    return to_checksum_address(value)


@asynccontextmanager
async def bounded_query() -> AsyncIterator[None]:
    """A query over its time budget (maxTimeMS) is a 503, not a 500."""
    try:
        yield
    except ExecutionTimeout as exc:
        raise ServiceUnavailable("the query took too long; narrow the filters", code="query_timeout") from exc


async def signed_page(
    secret: str,
    scope: str,
    cursor: str | None,
    fetch: Callable[..., Awaitable[tuple[list[dict[str, Any]], Position | None]]],
) -> tuple[list[dict[str, Any]], str | None]:
    """One keyset page of the list `scope`: `fetch(after=...)` from where `cursor` points (400 for a cursor
    not issued for `scope`), within the query budget; its documents and the cursor to the next page."""
    after = decode_cursor(secret, scope, cursor) if cursor is not None else None
    async with bounded_query():
        docs, last = await fetch(after=after)
    return docs, encode_cursor(secret, scope, last) if last else None
