"""Exact on-chain amounts: wei is an integer, stored as Decimal128, shown as a decimal string."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import BeforeValidator, Field, PlainSerializer

WEI_PER_ETH = 10**18


def _to_wei(value: object) -> Decimal:
    if isinstance(value, bool):
        raise ValueError("wei must be an integer amount")
    if hasattr(value, "to_decimal"):  # bson.Decimal128
        value = value.to_decimal()
    try:
        amount = Decimal(str(value)) if not isinstance(value, Decimal) else value
    except ArithmeticError as exc:
        raise ValueError("wei must be an integer amount") from exc
    if not amount.is_finite() or amount != amount.to_integral_value() or amount < 0:
        raise ValueError("wei must be a non-negative integer amount")
    return amount.quantize(Decimal(1))


# Stored as Decimal128 (exact up to 34 digits: far beyond any price), serialised as a decimal string.
Wei = Annotated[
    Decimal,
    BeforeValidator(_to_wei),
    PlainSerializer(lambda v: str(int(v)), return_type=str, when_used="json"),
    Field(json_schema_extra={"type": "string", "pattern": "^[0-9]+$"}),
]


def wei_to_eth(wei: int | Decimal) -> float:
    """The float ETH value used for sorting and charts."""
    return float(Decimal(int(wei)) / WEI_PER_ETH)


def eth_to_wei(eth: Decimal | str | float) -> int:
    """Whole wei for an ETH amount given as a decimal (floats go through their shortest repr)."""
    return int((Decimal(str(eth)) * WEI_PER_ETH).to_integral_value())


def wei_string(value: object) -> str | None:
    """A stored wei amount (Decimal128, Decimal or int) as the API's exact decimal string."""
    if value is None:
        return None
    if hasattr(value, "to_decimal"):  # bson.Decimal128
        value = value.to_decimal()
    return str(int(value))
