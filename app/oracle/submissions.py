"""Operators' submissions (seed 4.3, `POST /api/oracle/price-prediction`): checked, stored once per
Idempotency-Key, and what the prediction lists show of them.

- **Amounts** are exact wei: the price in ETH (`predictedPrice`) or in wei (`predictedPriceWei`), exactly
  one; positive (400 `invalid_amount`), at most the PriceOracle's 96 bits (400 `amount_out_of_range`); a
  band, when given, holds the price (400 `interval_excludes_price`).
- **Idempotency** (the IETF `Idempotency-Key` draft): the key is unique per operator in MongoDB, beside a
  hash of the request. A retry with the same key and body answers the stored prediction again; the same
  key with another body is 422 `idempotency_key_reused`.
- **Who sees what**: an operator's `inputs` go to that operator and to admins only.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from decimal import Decimal
from typing import Any

import bson
import bson.errors
import msgspec
from bson import Decimal128, ObjectId

from app.lib.errors import BadRequest, Unprocessable, require_one_of
from app.lib.money import eth_to_wei, wei_to_eth
from app.lib.params import MAX_INT64, checksum_address
from app.lib.security import Principal
from app.oracle import round_repository
from app.oracle import round_schemas as schemas
from oracle.rounds import MAX_WEI

IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")  # printable ASCII, no spaces
STATUSES = ("pending", "submitted", "accepted", "rejected")


def idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not IDEMPOTENCY_KEY.fullmatch(value):
        raise BadRequest(
            "Idempotency-Key must be 1-255 printable ASCII characters", code="invalid_idempotency_key"
        )
    return value


def _wei(eth: float | None, wei: str | None, field: str) -> int | None:
    if eth is None and wei is None:
        return None
    if eth is not None and wei is not None:
        raise BadRequest(f"give {field} in ETH or in wei, not both", code="ambiguous_amount")
    value = eth_to_wei(Decimal(repr(eth))) if eth is not None else int(wei or 0)
    if value <= 0:
        raise BadRequest(f"{field} must be a positive amount (at least 1 wei)", code="invalid_amount")
    if value > MAX_WEI:
        raise BadRequest(
            f"{field} is above the largest price the oracle holds (2^96-1 wei)", code="amount_out_of_range"
        )
    return value


def amounts(data: schemas.PredictionSubmit) -> tuple[int, tuple[int, int] | None]:
    """The price in wei, and the band in wei when one was given; 400 with a code for a bad amount."""
    price = _wei(data.predictedPrice, data.predictedPriceWei, "predictedPrice")
    if price is None:
        raise BadRequest("predictedPrice or predictedPriceWei is required", code="price_required")
    if data.interval is None:
        return price, None
    low = _wei(data.interval.low, data.interval.lowWei, "interval.low")
    high = _wei(data.interval.high, data.interval.highWei, "interval.high")
    if low is None or high is None:
        raise BadRequest("an interval needs both bounds", code="invalid_interval")
    if low > high:
        raise BadRequest("interval.low is above interval.high", code="invalid_interval")
    if not low <= price <= high:
        raise BadRequest("the interval does not contain the predicted price", code="interval_excludes_price")
    return price, (low, high)


def request_hash(data: schemas.PredictionSubmit) -> str:
    """The request as decoded (field order fixed by its schema): a retry of the same body hashes the same."""
    return hashlib.sha256(msgspec.json.encode(data)).hexdigest()


def check_inputs(inputs: dict[str, Any]) -> None:
    """400 `invalid_inputs` for what the store cannot keep (an integer past 64 bits, a NUL in a key) or
    should not (a key starting with `$` or holding a `.`, which update operators would read as paths)."""
    try:
        bson.encode(inputs)
    except (bson.errors.InvalidDocument, OverflowError) as exc:
        raise BadRequest(
            "inputs hold a value the store cannot keep (an integer past 64 bits, or a NUL in a key)",
            code="invalid_inputs",
        ) from exc
    pending = [inputs]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                if key.startswith("$") or "." in key:
                    raise BadRequest(
                        f"inputs key {key[:40]!r} starts with $ or holds a dot", code="invalid_inputs"
                    )
                pending.append(item)
        elif isinstance(value, list):
            pending.extend(value)


def new_document(
    data: schemas.PredictionSubmit,
    asset: dict[str, Any],
    principal: Principal,
    key: str | None,
    fingerprint: str,
    now: datetime,
) -> dict[str, Any]:
    price, band = amounts(data)
    inputs = msgspec.to_builtins(data.inputs) if data.inputs else {}
    check_inputs(inputs)
    return {
        "_id": ObjectId(),
        "assetId": asset.get("_id"),
        "tokenId": data.tokenId,
        "assetType": asset.get("assetType"),
        "timestamp": now,
        "asOf": None,
        "predictedPrice": wei_to_eth(price),
        "predictedPriceWei": Decimal128(str(price)),
        "predictedPriceUsd": None,
        "interval": {
            "low": wei_to_eth(band[0]),
            "high": wei_to_eth(band[1]),
            "lowWei": Decimal128(str(band[0])),
            "highWei": Decimal128(str(band[1])),
            "confidenceLevel": 0.9,
        }
        if band
        else None,
        "confidenceScore": data.confidenceScore,
        "dataSourcesUsed": list(data.dataSourcesUsed),
        "modelVersion": data.modelVersion,
        "inputs": {
            "marketData": {},
            "assetSpecific": {},
            "economicIndicators": {},
            "sentimentAnalysis": {},
            **inputs,
        },
        "featureImportance": [msgspec.to_builtins(f) for f in data.featureImportance],
        "performanceMetrics": {"accuracy": None, "errorMargin": None, "calibration": None},
        "status": "pending",
        "onChainReference": None,
        "outcome": None,
        "operator": principal.wallet_address,
        "apiKeyId": principal.api_key_id,
        "idempotencyKey": key,
        "requestHash": fingerprint,
        "round": None,
        "rejectionReason": None,
        "createdAt": now,
    }


def replayed(
    existing: dict[str, Any], fingerprint: str, round_ref: dict[str, Any] | None
) -> schemas.PredictionCreated:
    """The answer to a retry: the stored prediction, if the key came with the same request."""
    if existing.get("requestHash") != fingerprint:
        raise Unprocessable(
            "this Idempotency-Key was used with another request body", code="idempotency_key_reused"
        )
    return created(existing, round_ref)


def created(document: dict[str, Any], round_ref: dict[str, Any] | None) -> schemas.PredictionCreated:
    return schemas.PredictionCreated(
        predictionId=str(document["_id"]),
        status=document["status"],
        round=schemas.RoundRef(**round_ref) if round_ref else None,
    )


async def round_ref(key: str | None) -> dict[str, Any] | None:
    found = await round_repository.find_round(key) if key else None
    if found is None:
        return None
    return {"id": found["key"], "closesAt": found["closesAt"], "status": found["status"]}


def shows_inputs(document: dict[str, Any], viewer: Principal | None) -> bool:
    """An operator's inputs to that operator and admins; a platform appraisal's to any signed-in caller."""
    if viewer is None:
        return False
    operator = document.get("operator")
    return operator is None or viewer.is_admin or viewer.wallet_address == operator


def token_filter(token_id: int | None) -> dict[str, Any]:
    if token_id is None:
        return {}
    if not 0 <= token_id <= MAX_INT64:
        raise BadRequest("tokenId must be an integer from 0 to 2^63-1", code="invalid_token_id")
    return {"tokenId": token_id}


def sealed(document: dict[str, Any], viewer: Principal | None) -> bool:
    """An operator's submission is sealed until its round closes, but to that operator and admins: no one
    copies another's price, or moves last knowing it."""
    if document.get("status") != "pending" or document.get("operator") is None:
        return False
    return viewer is None or not (viewer.is_admin or viewer.wallet_address == document["operator"])


def list_query(
    token_id: int | None, operator: str | None, status: str | None, viewer: Principal | None
) -> dict[str, Any]:
    query: dict[str, Any] = token_filter(token_id)
    if viewer is None or not viewer.is_admin:  # the sealed submissions stay out (see `sealed`)
        visible: list[dict[str, Any]] = [{"status": {"$ne": "pending"}}, {"operator": None}]
        if viewer is not None:
            visible.append({"operator": viewer.wallet_address})
        query["$or"] = visible
    if operator is not None:
        query["operator"] = (
            None if operator == "platform" else checksum_address(operator, code="invalid_operator")
        )
    if status is not None:
        require_one_of(status, STATUSES, field="status", code="invalid_status")
        query["status"] = status
    return query
