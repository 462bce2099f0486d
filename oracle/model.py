"""The price model of one asset type: gradient boosting on log price with a conformalized 90% interval.

Every booster of the type (point and band) splits on 30% of the features at a time. The point is the
squared-error booster on log price; below `early_stopping_rows` sales it is the mean of a bag of them
(random states apart), blended with a ridge regression (oracle/linear.py) by the weight that fits the
latest rows best. On the Ames benchmark's time split (random states 0-2) the bag and blend gave MdAPE
5.22-5.37% and p95 APE 21.6-21.7%, where the single booster gave 5.20-5.75% and 23.5-24.2%, and a
bag alone 5.19-5.45% and 23.2-23.4%: trees resolve a smooth trend (size, age) into steps, coarsely on
a few thousand rows, and the ridge says it. The median (0.5-quantile) point with half the features
gave 5.62-5.82% and 24.9-25.6%, and priced distressed sales (Ames `Abnorml`) a median 13% too high.
The point learns from every row, including the latest, while the band's quantile models learn from the
earlier rows only, so that the latest rows can conformalize them (see oracle/conformal.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.inspection import permutation_importance

from oracle._forest import CompiledForest
from oracle.conformal import Band, calibration_rows, conformalize
from oracle.features import Example, FeatureSpace, as_utc
from oracle.linear import Linear

# Occlusion explains a prediction through this many of the globally most important features.
EXPLAINED_FEATURES = 10
# Permutation importance on at most this many calibration rows: enough to rank, cheap on big types.
IMPORTANCE_ROWS = 2000
# Enough for the quantile models to say something; the conformal step keeps even a poor band honest.
MIN_TRAIN_ROWS = 15
# The ridge's largest share of the point: it corrects the boosted price, never replaces it.
MAX_LINEAR_WEIGHT = 0.5


@dataclass(frozen=True)
class ModelParams:
    """Hyper-parameters of one type's model; stored with it so a prediction can be traced to them."""

    learning_rate: float = 0.05
    max_iter: int = 400
    max_leaf_nodes: int = 15
    min_samples_leaf: int = 10
    l2_regularization: float = 1.0
    # Bounds the walk of a single-row prediction as well as overfitting.
    max_depth: int | None = 8
    # Share of features each split may choose from: decorrelates trees, a little like a forest.
    max_features: float = 0.3
    # "squared_error" (the mean of log price) or "quantile" (the median) for the point estimate.
    point_loss: str = "squared_error"
    # Rows per type above which boosting stops once a held-out 10% stops improving.
    early_stopping_rows: int = 10_000
    # Below early_stopping_rows, the point is the mean of this many boosters (random states apart):
    # on small data one booster's choice of features per split is a large part of its error.
    bag: int = 10
    # Below early_stopping_rows too, blend a ridge (oracle/linear.py) into the point, by the weight that
    # fits the latest rows best: a few thousand rows resolve a smooth trend only coarsely into steps.
    linear_blend: bool = True
    confidence_level: float = 0.9
    calibration_share: float = 0.2
    min_rows: int = 40
    random_state: int = 0

    def __post_init__(self) -> None:
        if self.point_loss not in {"quantile", "squared_error"}:
            raise ValueError(f"point_loss must be 'quantile' or 'squared_error', not {self.point_loss!r}")
        for name in ("confidence_level", "calibration_share", "max_features"):
            if not 0 < getattr(self, name) < 1 + (name == "max_features"):
                raise ValueError(f"{name} out of range: {getattr(self, name)}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class InsufficientData(ValueError):
    """Too few priced rows for a model that could be trusted; the type gets none rather than a bad one."""

    def __init__(self, asset_type: str, rows: int, needed: int) -> None:
        super().__init__(f"{asset_type}: {rows} priced rows, {needed} needed")
        self.asset_type = asset_type
        self.rows = rows
        self.needed = needed


@dataclass(frozen=True, slots=True)
class Attribution:
    """How much one feature moved one prediction, and which way."""

    feature: str
    importance: float
    direction: int


@dataclass
class Predictions:
    price: np.ndarray
    low: np.ndarray
    high: np.ndarray
    confidence: np.ndarray
    explanations: list[list[Attribution]]


def confidence_score(price: Any, low: Any, high: Any) -> np.ndarray:
    """Confidence 0-100 = 100 * low / high: scale-free; a ±5% band scores ~90, ±25% scores 60, zero width 100.

    `price` is accepted so callers pass the whole prediction; the ratio of the bounds alone measures the
    relative width of the band, whatever the price level.
    """
    low = np.asarray(low, dtype=np.float64)
    high = np.asarray(high, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where(high > 0, 100.0 * low / high, 0.0)
    return np.clip(np.nan_to_num(score, nan=0.0), 0.0, 100.0)


def required_rows(params: ModelParams, confidence_level: float | None = None) -> int:
    """Fewest priced rows a model can be fitted on: `min_rows`, and enough to both train and calibrate."""
    level = params.confidence_level if confidence_level is None else confidence_level
    by_share = math.ceil(MIN_TRAIN_ROWS / (1 - params.calibration_share))
    return max(params.min_rows, calibration_rows(0, level, 0.0) + MIN_TRAIN_ROWS, by_share)


def ordered_rows(
    examples: Sequence[Example], prices: Sequence[float] | np.ndarray
) -> tuple[list[Example], np.ndarray]:
    """The rows with a usable (positive) price, oldest first, and their log prices."""
    prices = np.asarray(prices, dtype=np.float64)
    if len(examples) != prices.size:
        raise ValueError(f"{len(examples)} examples but {prices.size} prices")
    usable = np.flatnonzero(np.isfinite(prices) & (prices > 0))
    order = sorted(usable.tolist(), key=lambda row: (as_utc(examples[row].at).timestamp(), row))
    return [examples[row] for row in order], np.log(prices[order])


def booster(
    params: ModelParams, quantile: float | None, rows: int, categorical: np.ndarray
) -> HistGradientBoostingRegressor:
    """A boosting regressor: squared error when `quantile` is None, else that quantile's pinball loss."""
    loss = {"loss": "squared_error"} if quantile is None else {"loss": "quantile", "quantile": quantile}
    return HistGradientBoostingRegressor(
        **loss,
        learning_rate=params.learning_rate,
        max_iter=params.max_iter,
        max_leaf_nodes=params.max_leaf_nodes,
        max_depth=params.max_depth,
        min_samples_leaf=params.min_samples_leaf,
        l2_regularization=params.l2_regularization,
        max_features=params.max_features,
        early_stopping=rows >= params.early_stopping_rows,
        categorical_features=categorical if categorical.any() else None,
        random_state=params.random_state,
    )


class Point(RegressorMixin, BaseEstimator):
    """The point in log price: (1 - weight) * the mean of the boosters + weight * the ridge.

    TypeModel predicts it through the compiled forest; this estimator is what MAPIE holds as its median
    (it reads it only for its own point output), so MAPIE's point is the served one.
    """

    def __init__(self, boosters=(), linear: Linear | None = None, weight: float = 0.0) -> None:
        self.boosters = boosters
        self.linear = linear
        self.weight = weight

    @property
    def n_features_in_(self) -> int:  # how MAPIE tells a fitted estimator
        return int(self.boosters[0].n_features_in_)

    def fit(self, X: np.ndarray, y: np.ndarray) -> Point:
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.blend(np.mean([model.predict(X) for model in self.boosters], axis=0), X)

    def blend(self, boosted: np.ndarray, X: np.ndarray) -> np.ndarray:
        return self.mix(boosted, self.linear_term(X))

    def mix(self, boosted: np.ndarray, linear_term: np.ndarray | float) -> np.ndarray:
        """The blend of a boosted prediction with the ridge's share (`linear_term`) of the same rows: the
        boosted one itself when the weight is 0 (the term is then 0 too)."""
        return (1 - self.weight) * boosted + linear_term

    def explained(self, forest: CompiledForest, X: np.ndarray) -> np.ndarray:
        """The point as explanations and importance see it: of a bag, its first booster (first in
        `forest`), with the ridge. Occluding or permuting through every member would cost the bag's size
        in time, for members that differ only in their random choice of features per split."""
        return self.blend(forest.predict(X, (0,))[0], X)

    def linear_term(self, X: np.ndarray) -> np.ndarray | float:
        """The ridge's share of the blend: its prediction times its weight (0 without a ridge)."""
        return 0.0 if self.linear is None or self.weight == 0 else self.weight * self.linear.predict(X)


class TypeModel:
    """A fitted model of one asset type: point price, calibrated interval, confidence and explanations."""

    def __init__(
        self,
        asset_type: str,
        space: FeatureSpace,
        params: ModelParams,
        *,
        rows: int,
        trained_from: datetime,
        trained_to: datetime,
        point: Point,
        band: Band,
        global_importance: list[tuple[str, float]],
        reference: np.ndarray,
        forest: CompiledForest,
    ) -> None:
        self.asset_type = asset_type
        self.space = space
        self.params = params
        self.rows = rows
        self.trained_from = trained_from
        self.trained_to = trained_to
        self.global_importance = global_importance
        self.cqr = band.cqr  # MAPIE's regressor, to audit the band against its own predict_interval
        self.band = band
        self.point = point
        self._reference = reference
        index = {name: column for column, name in enumerate(space.names)}
        explained = [name for name, weight in global_importance if weight > 0][:EXPLAINED_FEATURES]
        self._explained = np.array([index[name] for name in explained], dtype=np.intp)
        self._forest = forest
        members = len(point.boosters)
        self._members = tuple(range(members))
        self._bounds = (members, members + 1)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """A version saved when the point was one booster (first in the forest) still loads and serves."""
        if "_members" not in state and "point" in state:
            state["point"] = Point((state["point"],))
            state["_members"], state["_bounds"] = (0,), (1, 2)
            state["params"] = replace(state["params"], bag=1, linear_blend=False)  # as it was fitted
        self.__dict__.update(state)

    def predict(self, examples: Sequence[Example], *, explain: int = 5) -> Predictions:
        """Price, band, confidence and the top `explain` attributions of each example, in one batch."""
        X = self.space.matrix(examples)
        raw, low, high, explained = self._walk(X)
        price, low_price, high_price = np.exp(np.clip(raw, low, high)), np.exp(low), np.exp(high)
        return Predictions(
            price=price,
            low=low_price,
            high=high_price,
            confidence=confidence_score(price, low_price, high_price),
            explanations=self._explain(X, explained, explain) if explain > 0 else [[] for _ in examples],
        )

    def predict_log(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Log price, low and high for a matrix of this model's features; the point kept inside its band."""
        raw, low, high = self._predict_log(X)
        return np.clip(raw, low, high), low, high

    def _predict_log(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self._walk(X)[:3]

    def _walk(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Log price (unclipped), low, high, and the point as explanations see it, in one forest walk."""
        members = len(self._members)
        found = self._forest.predict(X, (*self._members, *self._bounds))
        linear = self.point.linear_term(X)
        raw = self.point.mix(found[:members].mean(axis=0), linear)
        explained = self.point.mix(found[0], linear) if members > 1 else raw
        lower, upper = found[members:]
        low = lower - self.band.low_shift
        high = upper + self.band.high_shift
        # Quantile models may cross after correction; the band is the span between the two bounds.
        return raw, np.minimum(low, high), np.maximum(low, high), explained

    def _explain(self, X: np.ndarray, point: np.ndarray, top: int) -> list[list[Attribution]]:
        """Occlusion: each explained feature is set to its typical value and the change in log price kept.
        `point` is the rows' log price as `Point.explained` gives it."""
        rows, features = X.shape[0], self._explained
        if features.size == 0 or rows == 0:
            return [[] for _ in range(rows)]
        reference = self._reference[features]
        current = X[:, features]
        # A feature already at its reference value cannot have moved the price: no need to predict it.
        moved = ~((current == reference) | (np.isnan(current) & np.isnan(reference)))
        row, slot = np.nonzero(moved)
        occluded = X[row]
        occluded[np.arange(row.size), features[slot]] = reference[slot]
        delta = np.zeros((rows, features.size))
        delta[row, slot] = point[row] - self.point.explained(self._forest, occluded)
        delta[np.abs(delta) < 1e-12] = 0.0
        magnitude = np.abs(delta)
        total = magnitude.sum(axis=1, keepdims=True)
        share = np.divide(magnitude, total, out=np.zeros_like(magnitude), where=total > 0)
        order = np.argsort(-share, axis=1, kind="stable")[:, :top]
        # Plain Python values from here on: building 10,000 rows of attributions from numpy scalars is slow.
        names = [self.space.names[feature] for feature in features.tolist()]
        top_share = np.take_along_axis(share, order, axis=1).tolist()
        top_sign = np.sign(np.take_along_axis(delta, order, axis=1)).astype(int).tolist()
        return [
            [
                Attribution(names[j], weight, sign)
                for j, weight, sign in zip(slots, weights, signs, strict=True)
                if weight > 0
            ]
            for slots, weights, signs in zip(order.tolist(), top_share, top_sign, strict=True)
        ]


def fit(
    asset_type: str,
    examples: Sequence[Example],
    prices: Sequence[float] | np.ndarray,
    params: ModelParams = ModelParams(),
) -> TypeModel:
    """Train one asset type's model; the latest rows by time conformalize its interval."""
    ordered, y = ordered_rows(examples, prices)
    space = FeatureSpace.discover(asset_type, ordered)
    return fit_matrix(asset_type, ordered, y, space, space.matrix(ordered), params)


def fit_matrix(
    asset_type: str,
    ordered: Sequence[Example],
    y: np.ndarray,
    space: FeatureSpace,
    X: np.ndarray,
    params: ModelParams,
) -> TypeModel:
    """`fit` for callers that already hold the time-ordered rows, their log prices and feature matrix."""
    rows = len(ordered)
    if rows < required_rows(params):
        raise InsufficientData(asset_type, rows, required_rows(params))
    split = rows - calibration_rows(rows, params.confidence_level, params.calibration_share)
    mask = np.array(space.categorical, dtype=bool)

    def regressor(quantile: float | None, n: int = split) -> HistGradientBoostingRegressor:
        return booster(params, quantile, n, mask)

    point = _point(params, X, y, split, mask, regressor)
    band = conformalize(
        X[:split],
        y[:split],
        X[split:],
        y[split:],
        confidence_level=params.confidence_level,
        regressor=regressor,
        # MAPIE wants a fitted median model but reads it only for its own point output (and a logged
        # check), never for the band: the point model serves, whatever its loss (a test holds this).
        median=point,
    )
    forest = CompiledForest([*point.boosters, band.lower, band.upper])
    return TypeModel(
        asset_type,
        space,
        params,
        rows=rows,
        trained_from=ordered[0].at,
        trained_to=ordered[-1].at,
        point=point,
        band=band,
        global_importance=_global_importance(
            _Served(forest, point), space, X[split:], y[split:], params.random_state
        ),
        reference=_reference(space, X),
        forest=forest,
    )


def _point(
    params: ModelParams, X: np.ndarray, y: np.ndarray, split: int, mask: np.ndarray, regressor: Any
) -> Point:
    """The point model: one booster; on small data a bag of them, with a ridge blended in by a time split.

    The blend weight is the least-squares one (in [0, MAX_LINEAR_WEIGHT]) of the later rows (the
    calibration rows) for a bag and a ridge fitted on the earlier ones; both are then refitted on every
    row. MAPIE's band never reads the point (oracle/conformal.py), so choosing the weight on those rows
    leaves its calibration as it was.
    """
    rows = X.shape[0]
    quantile = 0.5 if params.point_loss == "quantile" else None
    small = rows < params.early_stopping_rows
    members = params.bag if small else 1

    def bag(Xf: np.ndarray, yf: np.ndarray) -> list[HistGradientBoostingRegressor]:
        out = []
        for member in range(members):
            model = regressor(quantile, Xf.shape[0])
            seed = params.random_state * 100 + member if members > 1 else params.random_state
            model.set_params(random_state=seed)
            out.append(model.fit(Xf, yf))
        return out

    if not (params.linear_blend and small):
        return Point(tuple(bag(X, y)))
    held = Point(tuple(bag(X[:split], y[:split])), Linear(mask).fit(X[:split], y[:split]))
    boosted = held.predict(X[split:])
    gap = held.linear.predict(X[split:]) - boosted
    with np.errstate(all="ignore"):
        weight = float(np.dot(y[split:] - boosted, gap) / max(np.dot(gap, gap), 1e-12))
    weight = float(np.clip(weight, 0.0, MAX_LINEAR_WEIGHT)) if math.isfinite(weight) else 0.0
    return Point(tuple(bag(X, y)), Linear(mask).fit(X, y), weight)


class _Served(RegressorMixin, BaseEstimator):
    """The fitted point as an sklearn estimator that predicts through the compiled forest, as
    explanations see it (`Point.explained`)."""

    def __init__(self, forest: CompiledForest | None = None, point: Point | None = None) -> None:
        self.forest = forest
        self.point = point

    def fit(self, X: np.ndarray, y: np.ndarray) -> _Served:
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.point.explained(self.forest, X)


def _global_importance(
    point: _Served,
    space: FeatureSpace,
    X: np.ndarray,
    y: np.ndarray,
    random_state: int,
) -> list[tuple[str, float]]:
    """Permutation importance on the calibration rows, negatives as zero, normalised to sum 1.

    The point model has seen those rows too, so this ranks what the model relies on rather than what
    generalises; the ranking only chooses which features explanations consider.
    """
    rows = min(X.shape[0], IMPORTANCE_ROWS)
    result = permutation_importance(
        point,
        X,
        y,
        n_repeats=3,
        random_state=random_state,
        max_samples=rows,
    )
    weights = np.clip(np.nan_to_num(result.importances_mean), 0.0, None)
    total = weights.sum()
    weights = weights / total if total > 0 else np.full(weights.size, 1.0 / max(1, weights.size))
    ranked = sorted(zip(space.names, weights.tolist(), strict=True), key=lambda item: (-item[1], item[0]))
    return [(name, float(weight)) for name, weight in ranked]


def _reference(space: FeatureSpace, X: np.ndarray) -> np.ndarray:
    """A typical value per feature (median, or the most frequent code) that stands in for it in occlusion."""
    out = np.full(X.shape[1], np.nan)
    for column, is_categorical in enumerate(space.categorical):
        values = X[:, column][~np.isnan(X[:, column])]
        if values.size == 0:
            continue
        if is_categorical:
            codes, counts = np.unique(values, return_counts=True)
            out[column] = codes[np.argmax(counts)]
        else:
            out[column] = np.median(values)
    return out
