"""Naive price baselines: what the model has to beat for its accuracy to mean anything."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from oracle.features import Example, FeatureSpace


def _mdape(actual: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.median(np.abs(predicted - actual) / actual))


def _usable(examples: Sequence[Example], prices: Any) -> tuple[list[Example], np.ndarray]:
    prices = np.asarray(prices, dtype=np.float64)
    if len(examples) != prices.size:
        raise ValueError(f"{len(examples)} examples but {prices.size} prices")
    keep = np.flatnonzero(np.isfinite(prices) & (prices > 0))
    if keep.size == 0:
        raise ValueError("no positive prices to fit a baseline on")
    return [examples[row] for row in keep], prices[keep]


class MedianPerUnit:
    """Median price per unit of one size attribute, times the unit: the classic price-per-square-metre.

    `fit` may be handed an already discovered feature space of the same rows to skip discovery.
    """

    def __init__(self) -> None:
        self.unit: str | None = None
        self._space: FeatureSpace | None = None
        self._rate = float("nan")
        self._overall = float("nan")

    def fit(
        self, examples: Sequence[Example], prices: Any, *, space: FeatureSpace | None = None
    ) -> MedianPerUnit:
        """Pick the positive numeric attribute whose median rate prices the training rows best."""
        examples, prices = _usable(examples, prices)
        space = space or FeatureSpace.discover(examples[0].asset_type, examples)
        # A year is not a quantity to price per unit.
        candidates = [name for name in space.summary()["numeric"] if f"age:{name}" not in space.names]
        X = space.matrix(examples, candidates)
        self._space, self._overall = space, float(np.median(prices))
        best = np.inf
        for column, name in enumerate(candidates):
            values = X[:, column]
            positive = values > 0
            if not positive.any():
                continue
            rate = float(np.median(prices[positive] / values[positive]))
            error = _mdape(prices, np.where(positive, rate * values, self._overall))
            if error < best:
                best, self.unit, self._rate = error, name, rate
        return self

    def predict(self, examples: Sequence[Example]) -> np.ndarray:
        """Rate times unit, or the overall median where the unit is missing or not positive."""
        if self._space is None:
            raise RuntimeError("fit the baseline first")
        if self.unit is None:
            return np.full(len(examples), self._overall)
        values = self._space.matrix(examples, [self.unit])[:, 0]
        return np.where(values > 0, self._rate * np.nan_to_num(values), self._overall)


class MedianPerCategory:
    """Median price of the asset's category in one categorical attribute (a neighbourhood, a collection)."""

    def __init__(self) -> None:
        self.category: str | None = None
        self._space: FeatureSpace | None = None
        self._medians: dict[float, float] = {}
        self._overall = float("nan")

    def fit(
        self, examples: Sequence[Example], prices: Any, *, space: FeatureSpace | None = None
    ) -> MedianPerCategory:
        """Pick the categorical attribute whose per-category medians price the training rows best."""
        examples, prices = _usable(examples, prices)
        space = space or FeatureSpace.discover(examples[0].asset_type, examples)
        candidates = list(space.summary()["categorical"])
        X = space.matrix(examples, candidates)
        self._space, self._overall = space, float(np.median(prices))
        best = np.inf
        for column, name in enumerate(candidates):
            codes = X[:, column]
            medians = {
                float(code): float(np.median(prices[codes == code]))
                for code in np.unique(codes[~np.isnan(codes)])
            }
            error = _mdape(prices, self._lookup(codes, medians))
            if error < best:
                best, self.category, self._medians = error, name, medians
        return self

    def predict(self, examples: Sequence[Example]) -> np.ndarray:
        """The category's training median, or the overall median for a missing or unseen category."""
        if self._space is None:
            raise RuntimeError("fit the baseline first")
        if self.category is None:
            return np.full(len(examples), self._overall)
        codes = self._space.matrix(examples, [self.category])[:, 0]
        return self._lookup(codes, self._medians)

    def _lookup(self, codes: np.ndarray, medians: dict[float, float]) -> np.ndarray:
        return np.array([medians.get(float(code), self._overall) for code in codes])
