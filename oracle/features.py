"""Turn heterogeneous asset records into a numeric matrix, with the feature set discovered from the data."""

from __future__ import annotations

import math
import numbers
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any

import numpy as np

# An attribute rarer than this share of rows carries too little signal to learn from.
MIN_PRESENCE = 0.05
# The share of present values that must agree on a kind (number, date) for the attribute to take it.
KIND_SHARE = 0.9
# HistGradientBoosting takes at most max_bins (255) categories per feature: the rarer share an "other" code.
MAX_CATEGORIES = 250
MAX_FEATURES = 200
# Distinct values per present value above which a text attribute is an identifier, not a category.
ID_LIKE_SHARE = 0.9
ID_LIKE_MIN_ROWS = 20
YEAR_RANGE = (1700, 2100)
SECONDS_PER_YEAR = 365.2425 * 86400

_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")

# What a single attribute value is; anything else (lists, dicts, None, NaN) counts as absent.
_ABSENT, _NUM, _DATE, _TEXT = 0, 1, 2, 3


@dataclass(frozen=True, slots=True)
class Example:
    """One priced observation: a sale, or the asset as of an appraisal time.

    Prices are in the model's unit. Of `previous_sales` only those strictly before `at` count, so a
    record that already holds the sale being priced does not leak it.
    """

    asset_type: str
    at: datetime
    attributes: Mapping[str, Any] = field(default_factory=dict)
    listing_price: float | None = None
    previous_sales: tuple[tuple[datetime, float], ...] = ()
    index_levels: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Feature:
    name: str
    # numeric | categorical | age_year | age_date | time | listing | last_price | last_years | index
    kind: str
    source: str = ""  # the attribute or index series it reads
    categories: Mapping[str, int] | None = None
    other_code: float = math.nan  # the code of categories outside `categories`, NaN when none were cut


def as_utc(moment: datetime) -> datetime:
    """A naive datetime is taken to be UTC already."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def decimal_year(moment: datetime) -> float:
    """The year as a number (2009.5 = early July 2009), so ages and trends are plain subtractions."""
    moment = as_utc(moment).astimezone(UTC)
    start, length = _year_span(moment.year)
    return moment.year + (moment.timestamp() - start) / length


@lru_cache(maxsize=1024)
def _year_span(year: int) -> tuple[float, float]:
    start = datetime(year, 1, 1, tzinfo=UTC).timestamp()
    return start, datetime(year + 1, 1, 1, tzinfo=UTC).timestamp() - start


def _kind(value: Any) -> int:
    # Exact type checks first: they are the common case and much cheaper than isinstance chains.
    kind = type(value)
    if kind is float:
        return _NUM if math.isfinite(value) else _ABSENT
    if kind is int or kind is bool:
        return _NUM
    if kind is str:
        return _text_kind(value)
    if isinstance(value, bool | numbers.Real):
        return _NUM if math.isfinite(value) else _ABSENT
    if isinstance(value, str):
        return _text_kind(str(value))
    if isinstance(value, date):  # datetime is a date too
        return _DATE
    return _ABSENT


@lru_cache(maxsize=65536)
def _text_kind(value: str) -> int:
    text = value.strip()
    if not text:
        return _ABSENT
    if _NUMBER.fullmatch(text):
        return _NUM
    if _ISO_DATE.match(text) and _as_datetime(text) is not None:
        return _DATE
    return _TEXT


def _as_float(value: Any) -> float:
    kind = type(value)
    if kind is float:
        return value if math.isfinite(value) else math.nan
    if kind is int or kind is bool:
        return float(value)
    if isinstance(value, bool | numbers.Real):
        number = float(value)
        return number if math.isfinite(number) else math.nan
    if isinstance(value, str) and _text_kind(value) == _NUM:
        return float(value)
    return math.nan


def _as_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return as_utc(value)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str) and _ISO_DATE.match(value.strip()):
        try:
            return as_utc(datetime.fromisoformat(value.strip()))
        except ValueError:
            return None
    return None


def _category(value: Any) -> str | None:
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, bool | numbers.Real) and _kind(value) == _NUM:
        return str(value)
    return None


def _last_sale(example: Example) -> tuple[datetime, float] | None:
    at = as_utc(example.at)
    earlier = [(as_utc(when), price) for when, price in example.previous_sales if as_utc(when) < at]
    return max(earlier, key=lambda sale: sale[0]) if earlier else None


def _log_price(price: float | None) -> float:
    return math.log(price) if price is not None and math.isfinite(price) and price > 0 else math.nan


class FeatureSpace:
    """The features of one asset type: their names, kinds and category codes, fixed at training time."""

    def __init__(self, asset_type: str, features: Sequence[_Feature]) -> None:
        self.asset_type = asset_type
        self._features = tuple(features)
        self.names: tuple[str, ...] = tuple(feature.name for feature in self._features)
        self.categorical: tuple[bool, ...] = tuple(f.kind == "categorical" for f in self._features)

    @classmethod
    def discover(cls, asset_type: str, examples: Sequence[Example]) -> FeatureSpace:
        """Choose the features an asset type's records support, by the rules in this module's constants."""
        rows = len(examples)
        kinds: dict[str, list[int]] = {}  # attribute -> rows per kind (absent, number, date, text)
        for example in examples:
            for key, value in example.attributes.items():
                kind = _kind(value)
                if kind == _ABSENT or type(key) is not str:
                    continue
                tally = kinds.get(key)
                if tally is None:
                    tally = kinds[key] = [0, 0, 0, 0]
                tally[kind] += 1
        needed = max(1, math.ceil(MIN_PRESENCE * rows))

        derived_names = {"time", "listingPrice", "lastSalePrice", "yearsSinceLastSale"}
        attributes: list[tuple[int, _Feature, _Feature | None]] = []  # (present, feature, its age)
        for key in sorted(kinds):
            counts = kinds[key]
            present = sum(counts)
            if present < needed or key in derived_names or key.startswith(("age:", "index:")):
                continue
            values = [example.attributes.get(key) for example in examples]
            if counts[_NUM] >= KIND_SHARE * present:
                chosen = _numeric(key, values)
            elif counts[_DATE] >= KIND_SHARE * present:
                chosen = (_Feature(f"age:{key}", "age_date", key), None)
            elif counts[_TEXT] > present / 2:
                chosen = _categorical(key, values, present)
            else:
                chosen = None
            if chosen is not None:
                attributes.append((present, *chosen))

        extras: list[_Feature] = [_Feature("time", "time")]
        if any(not math.isnan(_log_price(example.listing_price)) for example in examples):
            extras.append(_Feature("listingPrice", "listing"))
        if any(_last_sale(example) is not None for example in examples):
            extras += [_Feature("lastSalePrice", "last_price"), _Feature("yearsSinceLastSale", "last_years")]
        series = sorted({str(name) for example in examples for name in example.index_levels})
        extras += [_Feature(f"index:{name}", "index", name) for name in series]

        # Past the cap, the most often present attributes stay; derived features always do.
        budget = max(0, MAX_FEATURES - len(extras))
        ranked = sorted(attributes, key=lambda item: (-item[0], item[1].name))
        kept: list[_Feature] = []
        for _, feature, age in ranked:
            cost = 1 + (age is not None)
            if len(kept) + cost <= budget:
                kept += [feature] + ([age] if age is not None else [])
        plain = sorted((f for f in kept if not f.name.startswith("age:")), key=lambda f: f.name)
        ages = sorted((f for f in kept if f.name.startswith("age:")), key=lambda f: f.name)
        return cls(asset_type, [*plain, *ages, *extras][:MAX_FEATURES])

    def matrix(self, examples: Sequence[Example], names: Sequence[str] | None = None) -> np.ndarray:
        """The float64 matrix (rows, features): NaN where missing, categories as integer codes.

        `names` limits it to those features, in that order, for callers that need only a few.
        """
        features = self._features if names is None else [self._features[self.names.index(n)] for n in names]
        out = np.empty((len(examples), len(features)), dtype=np.float64)
        needs_time = any(f.kind in {"time", "age_year"} for f in features)
        years = [decimal_year(example.at) for example in examples] if needs_time else []
        needs_last = any(f.kind in {"last_price", "last_years"} for f in features)
        last = [_last_sale(example) for example in examples] if needs_last else []
        for column, feature in enumerate(features):
            out[:, column] = self._column(feature, examples, years, last)
        return out

    def _column(
        self,
        feature: _Feature,
        examples: Sequence[Example],
        years: list[float],
        last: list[tuple[datetime, float] | None],
    ) -> list[float]:
        source = feature.source
        match feature.kind:
            case "numeric":
                return [_as_float(example.attributes.get(source)) for example in examples]
            case "categorical":
                codes, other = feature.categories or {}, feature.other_code
                return [_code(codes, other, example.attributes.get(source)) for example in examples]
            case "age_year":
                return [
                    year - _as_float(example.attributes.get(source))
                    for year, example in zip(years, examples, strict=True)
                ]
            case "age_date":
                return [_date_age(example, source) for example in examples]
            case "time":
                return years
            case "listing":
                return [_log_price(example.listing_price) for example in examples]
            case "last_price":
                return [_log_price(sale[1]) if sale else math.nan for sale in last]
            case "last_years":
                return [
                    (as_utc(example.at) - sale[0]).total_seconds() / SECONDS_PER_YEAR if sale else math.nan
                    for sale, example in zip(last, examples, strict=True)
                ]
            case _:
                return [_as_float(example.index_levels.get(source)) for example in examples]

    def inputs(self, example: Example) -> dict[str, Any]:
        """What a prediction read, by feature name: categories as text, prices unlogged, for the record."""
        row = self.matrix([example])[0]
        out: dict[str, Any] = {}
        for feature, value in zip(self._features, row, strict=True):
            if feature.kind == "categorical":
                out[feature.name] = _category(example.attributes.get(feature.source))
            elif math.isnan(value):
                out[feature.name] = None
            elif feature.kind in {"listing", "last_price"}:
                out[feature.name] = math.exp(value)
            else:
                out[feature.name] = float(value)
        return out

    def summary(self) -> dict[str, Any]:
        """The discovered features by kind, for model cards and logs."""
        attributes = {"numeric", "categorical"}
        return {
            "numeric": [f.name for f in self._features if f.kind == "numeric"],
            "categorical": {
                f.name: len(f.categories or {}) + (not math.isnan(f.other_code))
                for f in self._features
                if f.kind == "categorical"
            },
            "derived": [f.name for f in self._features if f.kind not in attributes],
        }


def _numeric(key: str, values: list[Any]) -> tuple[_Feature, _Feature | None] | None:
    numbers_ = np.array([_as_float(value) for value in values])
    numbers_ = numbers_[~np.isnan(numbers_)]
    if numbers_.size == 0 or numbers_.min() == numbers_.max():
        return None
    low, high = YEAR_RANGE
    year_like = bool(
        np.all(numbers_ == np.round(numbers_)) and low <= numbers_.min() and numbers_.max() <= high
    )
    return _Feature(key, "numeric", key), (_Feature(f"age:{key}", "age_year", key) if year_like else None)


def _categorical(key: str, values: list[Any], present: int) -> tuple[_Feature, None] | None:
    counts = Counter(text for text in map(_category, values) if text is not None)
    distinct = len(counts)
    if distinct < 2:
        return None
    if present >= ID_LIKE_MIN_ROWS and distinct >= ID_LIKE_SHARE * present:
        return None
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    kept = {text: code for code, (text, _) in enumerate(ranked[:MAX_CATEGORIES])}
    other = float(len(kept)) if distinct > MAX_CATEGORIES else math.nan
    return _Feature(key, "categorical", key, kept, other), None


def _code(codes: Mapping[str, int], other: float, value: Any) -> float:
    text = _category(value)
    if text is None:
        return math.nan
    code = codes.get(text)
    return float(code) if code is not None else other


def _date_age(example: Example, source: str) -> float:
    moment = _as_datetime(example.attributes.get(source))
    if moment is None:
        return math.nan
    return (as_utc(example.at) - moment).total_seconds() / SECONDS_PER_YEAR
