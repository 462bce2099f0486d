"""From a source's rows to comparable sales and index points: mapping, checking, pricing in wei.

Pure: no I/O (`parsing` reads the bytes into rows). A row that cannot be used, or that MongoDB could not
store as it is (a key with NUL, text that is no UTF-8, a number past a float), is rejected with a reason
and counted, and the rows around it go on. Amounts stay `Decimal` from the bytes to the wei, so nothing
is rounded before the one rounding to whole wei.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from typing import Any

from app.lib.errors import AppError
from app.lib.money import WEI_PER_ETH
from app.lib.timeutil import EARLIEST_YEAR, LATEST_YEAR, as_utc

MAX_ATTRIBUTES = 200
MAX_TEXT = 1000
MAX_ID = 200
MAX_PRICE = Decimal(10) ** 15  # ETH or USD: far above any sale, and its wei fits Decimal128's 34 digits
MIN_EXPONENT = -30  # far below a wei; `1e-999999999` would reach Decimal128 (and text) as a billion digits
MAX_INT64 = 2**63 - 1
MAX_INT_DIGITS = 19  # a CSV cell of more digits is no int64: read it as a decimal, never through int()
SALE_ROLES = ("price", "currency", "soldAt", "externalId", "assetType")
# A sale of a platform asset: the column holding its tokenId, read only when the mapping names one (a
# source that may do so moves that asset's appraisals, so naming it takes the oracle:manage permission).
TOKEN_ROLE = "tokenId"
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")


class SourceError(AppError):
    """A fetch that failed as a whole: a body that cannot be parsed, a page without rows."""

    status_code, code = 422, "source_invalid"


@dataclass(frozen=True)
class Row:
    number: int  # the line (CSV, JSON Lines) or the position among the rows of every page (JSON), from 1
    values: Mapping[str, Any]


# ---------------------------------------------------------------- values


def decimal_of(value: Any) -> Decimal | None:
    """An exact finite number from a cell or a JSON value, or None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, Decimal | int):
        number = Decimal(value)
    elif isinstance(value, float):
        number = Decimal(repr(value))
    elif isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        number = Decimal(value.strip())
    else:
        return None
    return number if number.is_finite() else None


def time_of(value: Any) -> datetime | None:
    """A UTC time from ISO 8601 text (a date alone is its midnight) or Unix seconds, in 1900-8999."""
    when: datetime | None = None
    if isinstance(value, datetime):
        when = value
    elif isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.strip())
        except ValueError:
            when = None
    if when is None:
        # Unix seconds: a number, or digits long enough not to be a year or a date without separators.
        seconds = decimal_of(value) if not isinstance(value, str) or len(value.strip()) >= 9 else None
        if seconds is None or abs(seconds) > 10**11:
            return None
        try:
            when = datetime.fromtimestamp(float(seconds), tz=UTC)
        except (
            ValueError,
            OverflowError,
            OSError,
        ):  # before year 1, or past what the platform's C time holds
            return None
    try:
        when = as_utc(when)
    except OverflowError:
        return None
    return when if EARLIEST_YEAR <= when.year <= LATEST_YEAR else None


class _Refused(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


def storable(text: str) -> bool:
    """Whether MongoDB can store `text`: UTF-8 has no lone surrogate (JSON's `"\\ud800"` makes one)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def attribute_name(column: Any) -> str | None:
    """A column's name as an attribute key MongoDB stores as it is (no dots, no leading `$`); a name with
    NUL or no UTF-8 refuses the row, as no document may hold it."""
    name = str(column).strip().replace(".", "_")[:100]
    if "\x00" in name:
        raise _Refused("invalid_column_name")
    if not storable(name):
        raise _Refused("invalid_encoding")
    if name.startswith("$"):
        name = "_" + name[1:]
    return name or None


def attribute_value(value: Any, *, text: bool) -> Any:
    """A number or a category, as found: CSV cells that read as numbers become numbers."""
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return value
    if text and isinstance(value, str):
        if (
            _INTEGER.fullmatch(value)
            and len(value.lstrip("+-")) <= MAX_INT_DIGITS
            and abs(int(value)) <= MAX_INT64
        ):
            return int(value)
        number = decimal_of(value)
        if number is not None:
            value = number
    if isinstance(value, int):
        if abs(value) <= MAX_INT64:
            return value
        try:
            return float(value)
        except OverflowError:
            raise _Refused("invalid_number") from None
    if isinstance(value, Decimal):
        converted = float(value)
        if converted in (float("inf"), float("-inf")):
            raise _Refused("invalid_number")
        return converted
    if isinstance(value, float):
        return value
    value = str(value)
    if len(value) > MAX_TEXT:
        raise _Refused("value_too_long")
    if not storable(value):
        raise _Refused("invalid_encoding")
    return value


def attributes_of(values: Mapping[str, Any], skip: set[str], constants: Mapping[str, Any], *, text: bool):
    """Every column but the mapped ones, as attributes, with `constants` where a column is missing."""
    attributes: dict[str, Any] = {}
    for column, raw in values.items():
        if column in skip:
            continue
        name = attribute_name(column)
        value = attribute_value(raw, text=text)
        if name is not None and value is not None:
            attributes[name] = value
    for name, value in constants.items():
        attributes.setdefault(name, value)
    if len(attributes) > MAX_ATTRIBUTES:
        raise _Refused("too_many_columns")
    return attributes


# ---------------------------------------------------------------- sales and points


@dataclass(frozen=True)
class Sale:
    external_id: str
    asset_type: str
    sold_at: datetime
    currency: str
    price: Decimal  # in `currency`, exactly as given
    attributes: dict[str, Any]
    token_id: int | None = None


@dataclass(frozen=True)
class Point:
    timestamp: datetime
    value: Decimal


def _present(values: Mapping[str, Any], column: str) -> Any:
    value = values.get(column)
    return None if value is None or (isinstance(value, str) and not value.strip()) else value


def _external_id(value: Any) -> str | None:
    if isinstance(value, bool) or value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, Decimal) and not (value.is_finite() and abs(value.adjusted()) <= MAX_ID):
        return None  # `1e999999999` would be written out as a billion digits first
    text = format(value, "f") if isinstance(value, Decimal) else str(value).strip()
    return text if 0 < len(text) <= MAX_ID and storable(text) else None


def sale_of(row: Row, mapping: Mapping[str, str], defaults: Mapping[str, Any], *, text: bool) -> Sale | str:
    """A sale from a row, or the reason it is rejected."""
    columns = {role: mapping.get(role) or role for role in SALE_ROLES}
    values = row.values
    raw_id = _present(values, columns["externalId"])
    if raw_id is None:
        return "missing_external_id"
    external_id = _external_id(raw_id)
    if external_id is None:
        return "invalid_external_id"
    raw_price = _present(values, columns["price"])
    if raw_price is None:
        return "missing_price"
    price = decimal_of(raw_price)
    if price is None or not 0 < price < MAX_PRICE or price.adjusted() < MIN_EXPONENT:
        return "invalid_price"
    raw_time = _present(values, columns["soldAt"])
    if raw_time is None:
        return "missing_sold_at"
    sold_at = time_of(raw_time)
    if sold_at is None:
        return "invalid_sold_at"
    currency = _present(values, columns["currency"]) or defaults.get("currency")
    if currency is None:
        return "missing_currency"
    currency = str(currency).strip().upper()
    if currency not in ("ETH", "USD"):
        return "unsupported_currency"
    asset_type = _present(values, columns["assetType"]) or defaults.get("assetType")
    if asset_type is None:
        return "missing_asset_type"
    asset_type = str(asset_type).strip()
    if not 0 < len(asset_type) <= 100 or not storable(asset_type):
        return "invalid_asset_type"
    token_id = None
    token_column = mapping.get(TOKEN_ROLE)
    if token_column:
        columns[TOKEN_ROLE] = token_column
    raw_token = _present(values, token_column) if token_column else None
    if raw_token is not None:
        token = decimal_of(raw_token)
        if token is None or token != token.to_integral_value() or not 0 <= token <= MAX_INT64:
            return "invalid_token_id"
        token_id = int(token)
    try:
        attributes = attributes_of(values, set(columns.values()), defaults.get("attributes") or {}, text=text)
    except _Refused as refused:
        return refused.reason
    return Sale(external_id, asset_type, sold_at, currency, price, attributes, token_id)


def point_of(row: Row, mapping: Mapping[str, str]) -> Point | str:
    """An index point from a row, or the reason it is rejected."""
    raw_time = _present(row.values, mapping.get("timestamp") or "timestamp")
    if raw_time is None:
        return "missing_timestamp"
    timestamp = time_of(raw_time)
    if timestamp is None:
        return "invalid_timestamp"
    raw_value = _present(row.values, mapping.get("value") or "value")
    if raw_value is None:
        return "missing_value"
    value = decimal_of(raw_value)
    if value is None or not 0 < value < MAX_PRICE or value.adjusted() < MIN_EXPONENT:
        return "invalid_value"
    return Point(timestamp, value)


# ---------------------------------------------------------------- pricing


class Rates:
    """An ETH/USD series (USD per ETH): the rate at a time is the latest point at or before it."""

    def __init__(self, points: list[tuple[datetime, Decimal]]) -> None:
        ordered = sorted(points)
        self._times = [as_utc(at) for at, _ in ordered]
        self._values = [value for _, value in ordered]

    def at(self, when: datetime) -> Decimal | None:
        index = bisect_right(self._times, when) - 1
        return self._values[index] if index >= 0 else None


@dataclass(frozen=True)
class Priced:
    wei: int
    usd: Decimal | None
    rate: Decimal | None  # the USD per ETH used, when there was one


def _whole_wei(eth: Decimal) -> int:
    with localcontext() as context:
        context.prec = 80  # exact for every price below MAX_PRICE before the one rounding
        return int((eth * WEI_PER_ETH).to_integral_value(rounding=ROUND_HALF_EVEN))


def priced(sale: Sale, rates: Rates) -> Priced | str:
    """The sale in whole wei (half-even), converting USD at the ETH/USD rate of its sale time."""
    rate = rates.at(sale.sold_at)
    if sale.currency == "ETH":
        usd = sale.price * rate if rate is not None else None
        wei = _whole_wei(sale.price)
    else:
        if rate is None:
            return "no_usd_rate"
        with localcontext() as context:
            context.prec = 80
            wei = int((sale.price * WEI_PER_ETH / rate).to_integral_value(rounding=ROUND_HALF_EVEN))
        usd = sale.price
    if wei <= 0:
        return "invalid_price"
    return Priced(wei, usd, rate)
