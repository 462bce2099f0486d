"""Opaque, signed keyset cursors, and the keyset queries that page through a sorted collection.

A cursor is the (sort value, _id) of the last item a page returned, plus the scope it belongs to
(resource and sort), as base64url JSON with an HMAC: a client cannot forge one into an arbitrary query,
and a cursor from another list or sort is refused.

The next page is not one `$or` query but up to three plain ones, run in order until the page is full:
ties with the cursor's value and a later `_id`, then values strictly beyond it, then (for nullable
fields sorted descending) the nulls. Each is an equality-plus-range on the (field, _id) index, which
every MongoDB planner, SecantusDB's included, serves with an index scan.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId

from app.lib.errors import BadRequest

MAX_CURSOR_CHARS = 512
_SIG_BYTES = 16
_RANGE_OPS = ("$gt", "$gte", "$lt", "$lte")


@dataclass(frozen=True)
class Sort:
    """A list order: a document path, a direction (1 or -1), and whether the field may be null."""

    path: str
    direction: int
    nullable: bool = False


@dataclass(frozen=True)
class Position:
    value: Any
    id: ObjectId


def _key(secret: str) -> bytes:
    return hmac.new(secret.encode(), b"dynamicvault/cursor/v1", hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _encode_value(value: Any) -> list:
    if value is None:
        return ["z"]
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return ["d", int(aware.timestamp() * 1000)]
    if isinstance(value, bool):
        return ["b", value]
    if isinstance(value, int | float):
        return ["n", value]
    if isinstance(value, str):
        return ["s", value]
    raise TypeError(f"cannot page on a {type(value).__name__}")


def _decode_value(raw: Any) -> Any:
    if not isinstance(raw, list) or not raw or not isinstance(raw[0], str):
        raise ValueError("bad value")
    kind = raw[0]
    if kind == "z" and len(raw) == 1:
        return None
    if len(raw) != 2:
        raise ValueError("bad value")
    value = raw[1]
    if kind == "d" and isinstance(value, int) and not isinstance(value, bool):
        return datetime.fromtimestamp(value / 1000, tz=UTC)
    if kind == "b" and isinstance(value, bool):
        return value
    if kind == "n" and isinstance(value, int | float) and not isinstance(value, bool):
        return value
    if kind == "s" and isinstance(value, str):
        return value
    raise ValueError("bad value")


def encode_cursor(secret: str, scope: str, position: Position) -> str:
    """An opaque, signed token for `position` within the list `scope`."""
    payload = json.dumps(
        {"k": scope, "v": _encode_value(position.value), "i": str(position.id)}, separators=(",", ":")
    ).encode()
    signature = hmac.new(_key(secret), payload, hashlib.sha256).digest()[:_SIG_BYTES]
    return f"{_b64(payload)}.{_b64(signature)}"


def decode_cursor(secret: str, scope: str, token: str) -> Position:
    """The position a cursor names; 400 `invalid_cursor` for anything not issued by us for this list."""
    invalid = BadRequest("cursor is malformed, tampered with or from another list", code="invalid_cursor")
    if not token or len(token) > MAX_CURSOR_CHARS or token.count(".") != 1:
        raise invalid
    body, signature = token.split(".")
    try:
        payload, given = _unb64(body), _unb64(signature)
    except (binascii.Error, ValueError):
        raise invalid from None
    expected = hmac.new(_key(secret), payload, hashlib.sha256).digest()[:_SIG_BYTES]
    if not hmac.compare_digest(given, expected):
        raise invalid
    try:
        data = json.loads(payload)
        if not isinstance(data, dict) or data.get("k") != scope or not isinstance(data.get("i"), str):
            raise ValueError("wrong scope")
        return Position(_decode_value(data.get("v")), ObjectId(data["i"]))
    except (ValueError, InvalidId, TypeError):
        raise invalid from None


def value_at(document: dict[str, Any], path: str) -> Any:
    """The value at a dotted path of a raw document (None when absent)."""
    value: Any = document
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _satisfies(value: Any, ops: dict[str, Any]) -> bool:
    try:
        for op, bound in ops.items():
            if (
                (op == "$gt" and not value > bound)
                or (op == "$gte" and not value >= bound)
                or (op == "$lt" and not value < bound)
                or (op == "$lte" and not value <= bound)
            ):
                return False
    except TypeError:
        return False
    return True


def _with(base: dict[str, Any], path: str, condition: Any) -> dict[str, Any] | None:
    """`base` plus a condition on `path`, merged with any range `base` already has on it.

    None when the two cannot both hold (so the query is skipped rather than sent).
    """
    existing = base.get(path)
    merged = dict(base)
    if existing is None:
        merged[path] = condition
        return merged
    if not isinstance(existing, dict) or not all(op in _RANGE_OPS for op in existing):
        raise ValueError(f"cannot combine a keyset with the filter on {path}")
    if not isinstance(condition, dict):  # an equality: keep it only if the range admits it
        if condition is None or not _satisfies(condition, existing):
            return None
        merged[path] = condition
        return merged
    ops = dict(existing)
    for op, bound in condition.items():
        if op in ops:
            tighter = max if op in ("$gt", "$gte") else min
            ops[op] = tighter(ops[op], bound)
        else:
            ops[op] = bound
    merged[path] = ops
    return merged


def keyset_queries(
    base: dict[str, Any], sort: Sort, after: Position | None
) -> list[tuple[dict[str, Any], list[tuple[str, int]]]]:
    """The (filter, sort) queries that, run in order, list what follows `after`."""
    order = [(sort.path, sort.direction), ("_id", sort.direction)]
    if after is None:
        return [(base, order)]
    beyond = "$gt" if sort.direction == 1 else "$lt"
    candidates: list[dict[str, Any] | None] = [
        _with({**base, "_id": {beyond: after.id}}, sort.path, after.value)
    ]
    if after.value is None:
        # Nulls sort first: ascending continues into every non-null value, descending has ended.
        if sort.direction == 1:
            candidates.append(_with(base, sort.path, {"$gte": float("-inf")}))  # nullable fields are numeric
    else:
        candidates.append(_with(base, sort.path, {beyond: after.value}))
        if sort.direction == -1 and sort.nullable:
            candidates.append(_with(base, sort.path, None) if sort.path not in base else None)
    return [(query, order) for query in candidates if query is not None]


async def keyset_page(
    collection,
    base: dict[str, Any],
    sort: Sort,
    *,
    limit: int,
    after: Position | None,
    projection: dict[str, Any] | None,
    max_time_ms: int,
) -> tuple[list[dict[str, Any]], Position | None]:
    """Up to `limit` raw documents after `after`, and the position of the last one when more follow."""
    wanted = limit + 1
    documents: list[dict[str, Any]] = []
    for query, order in keyset_queries(base, sort, after):
        cursor = collection.find(query, projection, sort=order, limit=wanted - len(documents))
        documents.extend(await cursor.max_time_ms(max_time_ms).to_list())
        if len(documents) >= wanted:
            break
    if len(documents) <= limit:
        return documents, None
    page = documents[:limit]
    last = page[-1]
    return page, Position(value_at(last, sort.path), last["_id"])
