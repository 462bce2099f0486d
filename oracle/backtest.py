"""Time-split evaluation: train on the past, score on the later rows, next to the naive baselines."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor

from oracle.baselines import MedianPerCategory, MedianPerUnit
from oracle.conformal import calibration_rows, conformalize, mapie_interval
from oracle.features import Example, FeatureSpace, as_utc
from oracle.metrics import accuracy, coverage, mean_width
from oracle.model import (
    InsufficientData,
    ModelParams,
    booster,
    fit_matrix,
    ordered_rows,
    required_rows,
)

LEVELS = (0.5, 0.8, 0.9, 0.95)
MIN_TEST_ROWS = 20
# The quantile models of the extra levels learn from at most this many rows: coverage is what they are
# scored on, and MAPIE's calibration keeps it honest whatever they were trained on.
LEVEL_TRAIN_ROWS = 20_000


def _level_key(level: float) -> str:
    return f"{level * 100:g}"


def backtest(
    asset_type: str,
    examples: Sequence[Example],
    prices: Sequence[float] | np.ndarray,
    params: ModelParams = ModelParams(),
    *,
    test_share: float = 0.2,
    levels: Sequence[float] = LEVELS,
    return_rows: bool = False,
) -> dict[str, Any]:
    """Fit on the earliest (1 - test_share) of rows by time and report accuracy and coverage on the rest.

    Sales at the same time as the first test sale all go to the test side, so monthly data splits cleanly.

    With `return_rows`, the result also holds `rows`: the test rows' actual and predicted prices, each
    level's band (`low:90`, `high:90`, ...) and each baseline's prices (`baseline:medianPerUnit`, ...),
    so backtests of several types can be scored together (medians do not average).
    """
    ordered, y = ordered_rows(examples, prices)
    rows = len(ordered)
    train_rows = _split(ordered, rows - math.ceil(test_share * rows))
    test_rows = rows - train_rows
    train_needed = max(required_rows(params, level) for level in (params.confidence_level, *levels))
    if train_rows < train_needed or test_rows < MIN_TEST_ROWS:
        needed = max(math.ceil(train_needed / (1 - test_share)), math.ceil(MIN_TEST_ROWS / test_share))
        raise InsufficientData(asset_type, rows, max(needed, rows + 1))

    train, test = ordered[:train_rows], ordered[train_rows:]
    train_prices, actual = np.exp(y[:train_rows]), np.exp(y[train_rows:])
    space = FeatureSpace.discover(asset_type, train)
    X_train, X_test = space.matrix(train), space.matrix(test)
    model = fit_matrix(asset_type, train, y[:train_rows], space, X_train, params)
    point, band_low, band_high = (np.exp(values) for values in model.predict_log(X_test))
    mask = np.array(space.categorical, dtype=bool)

    covered: dict[str, float] = {}
    widths: dict[str, float] = {}
    bands: dict[str, np.ndarray] = {}
    for level in levels:
        if math.isclose(level, params.confidence_level):
            low, high = band_low, band_high
        else:
            low, high = _interval(params, level, X_train, y[:train_rows], X_test, mask, model.band.median)
        bands[f"low:{_level_key(level)}"], bands[f"high:{_level_key(level)}"] = low, high
        covered[_level_key(level)] = coverage(actual, low, high)
        widths[_level_key(level)] = mean_width(low, high, point)

    per_unit = MedianPerUnit().fit(train, train_prices, space=space)
    per_category = MedianPerCategory().fit(train, train_prices, space=space)
    by_unit, by_category = per_unit.predict(test), per_category.predict(test)
    result = {
        "trainRows": train_rows,
        "testRows": test_rows,
        "splitAt": test[0].at.isoformat(),
        "model": {
            **accuracy(actual, point),
            "coverage": covered,
            "meanIntervalWidth": widths,
        },
        "baselines": {
            "medianPerUnit": {"unit": per_unit.unit, **accuracy(actual, by_unit)},
            "medianPerCategory": {"category": per_category.category, **accuracy(actual, by_category)},
        },
    }
    if return_rows:
        result["rows"] = {
            "actual": actual,
            "predicted": point,
            **bands,
            "baseline:medianPerUnit": by_unit,
            "baseline:medianPerCategory": by_category,
        }
    return result


def _split(ordered: Sequence[Example], at: int) -> int:
    """The train/test boundary near row `at`, moved back so that no sale time falls on both sides."""
    if not 0 < at < len(ordered):
        return at
    first_test = as_utc(ordered[at].at)
    while at > 0 and as_utc(ordered[at - 1].at) == first_test:
        at -= 1
    return at


def _interval(
    params: ModelParams,
    level: float,
    X: np.ndarray,
    y: np.ndarray,
    X_test: np.ndarray,
    mask: np.ndarray,
    median: HistGradientBoostingRegressor,
) -> tuple[np.ndarray, np.ndarray]:
    """A CQR band at `level`, calibrated on the latest training rows like the model's own band."""
    split = len(y) - calibration_rows(len(y), level, params.calibration_share)
    # Evenly spaced rows keep the whole period when the training part is thinned.
    keep = np.unique(np.linspace(0, split - 1, min(split, LEVEL_TRAIN_ROWS)).round().astype(int))
    band = conformalize(
        X[keep],
        y[keep],
        X[split:],
        y[split:],
        confidence_level=level,
        regressor=lambda quantile: booster(params, quantile, keep.size, mask),
        median=median,
    )
    low, high = mapie_interval(band, X_test)
    return np.exp(low), np.exp(high)
