"""Accuracy and interval metrics on price scale, as fractions (0.055 = 5.5%)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def _arrays(*values: Any) -> tuple[np.ndarray, ...]:
    arrays = tuple(np.asarray(value, dtype=np.float64).ravel() for value in values)
    if len({array.size for array in arrays}) > 1:
        raise ValueError(f"arrays of different lengths: {[array.size for array in arrays]}")
    return arrays


def accuracy(actual: Any, predicted: Any) -> dict[str, float | int]:
    """Median, 95th percentile and mean absolute percentage error over the rows where both are usable."""
    actual, predicted = _arrays(actual, predicted)
    usable = np.isfinite(actual) & np.isfinite(predicted) & (actual != 0)
    errors = np.abs(predicted[usable] - actual[usable]) / np.abs(actual[usable])
    if errors.size == 0:
        return {"count": 0, "mdape": math.nan, "p95Ape": math.nan, "mape": math.nan}
    return {
        "count": int(errors.size),
        "mdape": float(np.median(errors)),
        "p95Ape": float(np.percentile(errors, 95)),
        "mape": float(np.mean(errors)),
    }


def coverage(actual: Any, low: Any, high: Any) -> float:
    """Share of actual prices inside their interval (bounds included)."""
    actual, low, high = _arrays(actual, low, high)
    usable = np.isfinite(actual) & np.isfinite(low) & np.isfinite(high)
    if not usable.any():
        return math.nan
    inside = (actual[usable] >= low[usable]) & (actual[usable] <= high[usable])
    return float(inside.mean())


def mean_width(low: Any, high: Any, predicted: Any) -> float:
    """Mean interval width relative to the predicted price: (high - low) / predicted."""
    low, high, predicted = _arrays(low, high, predicted)
    usable = np.isfinite(low) & np.isfinite(high) & np.isfinite(predicted) & (predicted != 0)
    if not usable.any():
        return math.nan
    return float(np.mean((high[usable] - low[usable]) / predicted[usable]))
