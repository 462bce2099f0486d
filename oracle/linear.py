"""A ridge regression on a type's feature matrix, blended into the boosted point (see oracle/model.py).

Trees cut the feature space into steps; a price that grows smoothly with size or age is what a linear
model says well and boosting on a few thousand rows says coarsely. The design is built from the matrix
alone, so it is as generic as the features: each numeric column (its median where missing, a missing
flag where any is missing, its log1p when it is non-negative and reaches past 10, and hinges
max(0, x - knot) at interior quantiles when it takes many values; each held within the range training
saw, widened by half of it), and each categorical column one hot per category seen often enough.
Columns are standardised and the ridge penalty is chosen by generalised cross-validation. Prediction
is plain numpy, cheap on a row.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.linear_model import RidgeCV

# Hinges per many-valued numeric column, at these many interior quantiles.
KNOTS = 5
# A numeric column with fewer distinct values gets no hinges.
HINGE_MIN_DISTINCT = 10
# A category seen in fewer training rows gets no column of its own (it reads as none of them).
MIN_CATEGORY_ROWS = 5
# At most this many rows (evenly spread in time) fit the ridge: plenty for a few hundred coefficients.
MAX_ROWS = 20_000
ALPHAS = np.logspace(-2, 3, 16)
# How far past the training range (as a share of it) a value still moves the line.
EXTRAPOLATION = 0.5


class Linear:
    """Ridge on log price over a design derived from the feature matrix; `categorical` marks code columns."""

    def __init__(self, categorical: np.ndarray) -> None:
        self.categorical = np.asarray(categorical, dtype=bool)

    def fit(self, X: np.ndarray, y: np.ndarray) -> Linear:
        if X.shape[0] > MAX_ROWS:
            keep = np.unique(np.linspace(0, X.shape[0] - 1, MAX_ROWS).round().astype(int))
            X, y = X[keep], y[keep]
        self.numeric = np.flatnonzero(~self.categorical)
        values = X[:, self.numeric]
        with np.errstate(all="ignore"):
            present = ~np.isnan(values)
            median = np.array(
                [np.median(c[p]) if p.any() else 0.0 for c, p in zip(values.T, present.T, strict=True)]
            )
        self.median = median
        filled = np.where(present, values, median)
        low, high = filled.min(axis=0, initial=np.inf), filled.max(axis=0, initial=-np.inf)
        # A value far past what training saw is read as if it were at most half the range past it: the
        # line goes on a little (a sale after the latest one, a house a little larger), not without end
        # (a mistyped or hostile 1e308 neither extrapolates absurdly nor overflows).
        low, high = np.where(np.isfinite(low), low, 0.0), np.where(np.isfinite(high), high, 0.0)
        self.low, self.high = low - EXTRAPOLATION * (high - low), high + EXTRAPOLATION * (high - low)
        self.logged = np.flatnonzero((low >= 0) & (high > 10))
        self.flagged = np.flatnonzero(~present.all(axis=0))
        # Hinges and category columns as flat (column, knot or code) pairs: one numpy step each.
        hinge_columns, hinge_knots = [], []
        for j in range(self.numeric.size):
            column = values[present[:, j], j]
            if np.unique(column).size >= HINGE_MIN_DISTINCT:
                knots = np.unique(np.quantile(column, np.linspace(0, 1, KNOTS + 2)[1:-1]))
                hinge_columns += [j] * knots.size
                hinge_knots += knots.tolist()
        self.hinge_columns, self.hinge_knots = np.array(hinge_columns, dtype=np.intp), np.array(hinge_knots)
        level_columns, level_codes = [], []
        for column in np.flatnonzero(self.categorical):
            codes, counts = np.unique(X[~np.isnan(X[:, column]), column], return_counts=True)
            kept = codes[counts >= MIN_CATEGORY_ROWS]
            level_columns += [int(column)] * kept.size
            level_codes += kept.tolist()
        self.level_columns, self.level_codes = np.array(level_columns, dtype=np.intp), np.array(level_codes)
        design = self._design(X)
        with np.errstate(all="ignore"):
            mean, scale = design.mean(axis=0), design.std(axis=0)
        # A column whose moments overflow (values near the float limit) or that never varies says nothing
        # the ridge can use: it is left out (a zero coefficient) rather than failing the fit.
        usable = np.isfinite(mean) & np.isfinite(scale) & (scale > 0)
        self.coef = np.zeros(design.shape[1])
        self.intercept, self.alpha = float(np.mean(y)), math.nan
        if usable.any():
            ridge = RidgeCV(alphas=ALPHAS).fit((design[:, usable] - mean[usable]) / scale[usable], y)
            self.coef[usable] = ridge.coef_ / scale[usable]
            self.intercept = float(ridge.intercept_ - mean[usable] @ self.coef[usable])
            self.alpha = float(ridge.alpha_)
        return self

    def _design(self, X: np.ndarray) -> np.ndarray:
        values = X[:, self.numeric]
        filled = np.clip(np.where(np.isnan(values), self.median, values), self.low, self.high)
        parts = [
            filled,
            np.log1p(np.maximum(filled[:, self.logged], 0)),
            np.isnan(values[:, self.flagged]),
            np.maximum(0.0, filled[:, self.hinge_columns] - self.hinge_knots),
            X[:, self.level_columns] == self.level_codes,
        ]
        return np.hstack([np.asarray(part, dtype=np.float64) for part in parts])

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self._design(np.asarray(X, dtype=np.float64)) @ self.coef + self.intercept
