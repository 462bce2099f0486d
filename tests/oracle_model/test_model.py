"""Fitting, the conformal band, confidence and explanations."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from oracle.conformal import conformalize
from oracle.features import Example, FeatureSpace
from oracle.model import (
    InsufficientData,
    ModelParams,
    TypeModel,
    booster,
    confidence_score,
    fit,
    ordered_rows,
)
from oracle.synthetic import make_sales

from .conftest import FAST, TRAIN_ROWS


def test_too_few_rows_give_no_model() -> None:
    examples, prices = make_sales(39, seed=1)
    with pytest.raises(InsufficientData) as raised:
        fit("Synthetic", examples, prices)
    assert (raised.value.asset_type, raised.value.rows, raised.value.needed) == ("Synthetic", 39, 40)


def test_params_are_checked() -> None:
    with pytest.raises(ValueError):
        ModelParams(point_loss="mean")
    with pytest.raises(ValueError):
        ModelParams(confidence_level=1.0)
    assert ModelParams().as_dict()["confidence_level"] == 0.9


def test_no_examples_no_predictions(model: TypeModel) -> None:
    predictions = model.predict([])
    assert predictions.price.shape == (0,) and predictions.explanations == []


def test_unusable_prices_do_not_count_as_rows() -> None:
    examples, prices = make_sales(45, seed=1)
    prices[:10] = [0, -1, np.nan, np.inf, 0, 0, 0, 0, 0, 0]
    with pytest.raises(InsufficientData) as raised:
        fit("Synthetic", examples, prices, FAST)
    assert raised.value.rows == 35


def test_band_covers_about_its_level_of_later_sales(
    model: TypeModel, sales: tuple[list[Example], np.ndarray]
) -> None:
    examples, prices = sales
    later, actual = examples[TRAIN_ROWS:], prices[TRAIN_ROWS:]
    assert len(later) >= 1000 and min(e.at for e in later) > model.trained_to
    predictions = model.predict(later, explain=0)
    covered = np.mean((actual >= predictions.low) & (actual <= predictions.high))
    assert 0.85 <= covered <= 0.95


def test_point_lies_inside_its_band(model: TypeModel, sales: tuple[list[Example], np.ndarray]) -> None:
    predictions = model.predict(sales[0][TRAIN_ROWS:], explain=0)
    assert np.all(predictions.low <= predictions.price) and np.all(predictions.price <= predictions.high)
    assert np.all(predictions.low < predictions.high)


def test_band_is_mapies_conformalized_interval(
    model: TypeModel, sales: tuple[list[Example], np.ndarray]
) -> None:
    later = sales[0][TRAIN_ROWS:]
    points, interval = model.cqr.predict_interval(model.space.matrix(later))
    low, high = interval[:, 0, 0], interval[:, 1, 0]
    predictions = model.predict(later, explain=0)
    np.testing.assert_allclose(predictions.low, np.exp(low), rtol=1e-9)
    np.testing.assert_allclose(predictions.high, np.exp(high), rtol=1e-9)
    np.testing.assert_allclose(predictions.price, np.exp(np.clip(points, low, high)), rtol=1e-9)


def test_one_row_predicts_as_in_a_large_batch(
    model: TypeModel, sales: tuple[list[Example], np.ndarray]
) -> None:
    later = sales[0][TRAIN_ROWS:]
    batch = model.predict(later, explain=3)  # large enough for sklearn's own prediction loop
    for row in (0, 17, len(later) - 1):
        single = model.predict([later[row]], explain=3)
        np.testing.assert_allclose(single.price[0], batch.price[row], rtol=1e-12)
        np.testing.assert_allclose(single.low[0], batch.low[row], rtol=1e-12)
        np.testing.assert_allclose(single.high[0], batch.high[row], rtol=1e-12)
        assert [a.feature for a in single.explanations[0]] == [a.feature for a in batch.explanations[row]]


def test_confidence_score_is_the_ratio_of_the_bounds() -> None:
    price = np.array([100.0, 100.0, 100.0, 100.0, 100.0])
    low = np.array([95.0, 75.0, 100.0, -5.0, np.nan])
    high = np.array([105.0, 125.0, 100.0, 105.0, 110.0])
    score = confidence_score(price, low, high)
    np.testing.assert_allclose(score[:3], [100 * 95 / 105, 60.0, 100.0])
    assert score[0] == pytest.approx(90.48, abs=0.01)
    assert score[3] == 0.0 and score[4] == 0.0


def test_predictions_carry_their_confidence(
    model: TypeModel, sales: tuple[list[Example], np.ndarray]
) -> None:
    predictions = model.predict(sales[0][TRAIN_ROWS : TRAIN_ROWS + 50], explain=0)
    np.testing.assert_allclose(predictions.confidence, 100 * predictions.low / predictions.high)
    assert predictions.explanations == [[] for _ in range(50)]


def test_global_importance_is_a_ranking_that_sums_to_one(model: TypeModel) -> None:
    weights = [weight for _, weight in model.global_importance]
    assert sorted(name for name, _ in model.global_importance) == sorted(model.space.names)
    assert sum(weights) == pytest.approx(1.0)
    assert weights == sorted(weights, reverse=True) and min(weights) >= 0
    assert model.global_importance[0][0] in {"listingPrice", "area"}


def _sized(n: int, seed: int = 0) -> tuple[list[Example], np.ndarray]:
    """Price proportional to size; colour is noise."""
    rng = np.random.default_rng(seed)
    start = datetime(2021, 1, 1, tzinfo=UTC)
    size = rng.uniform(30, 300, n)
    examples = [
        Example(
            "Flat",
            start + timedelta(days=i),
            {
                "size": float(size[i]),
                "colour": ("red", "green", "blue")[i % 3],
                "floor": int(rng.integers(0, 9)),
            },
        )
        for i in range(n)
    ]
    return examples, 3000.0 * size * np.exp(rng.normal(0, 0.05, n))


def test_attribution_points_the_way_the_feature_moves_the_price() -> None:
    examples, prices = _sized(600)
    model = fit("Flat", examples, prices, FAST)
    at = examples[-1].at
    big, small = (Example("Flat", at, {"size": s, "colour": "red", "floor": 4}) for s in (280.0, 40.0))
    predictions = model.predict([big, small], explain=5)
    top_big, top_small = predictions.explanations[0][0], predictions.explanations[1][0]
    assert (top_big.feature, top_big.direction) == ("size", 1)
    assert (top_small.feature, top_small.direction) == ("size", -1)
    for explanation in predictions.explanations:
        assert len(explanation) <= 5
        importances = [a.importance for a in explanation]
        assert importances == sorted(importances, reverse=True)
        assert all(0 < i <= 1 for i in importances) and sum(importances) <= 1 + 1e-9
        assert all(a.direction in (-1, 0, 1) for a in explanation)


def test_same_random_state_gives_the_same_model() -> None:
    examples, prices = _sized(300, seed=2)
    params = ModelParams(learning_rate=0.1, max_iter=60, random_state=5)
    first = fit("Flat", examples, prices, params).predict(examples[-20:])
    second_model = fit("Flat", examples[::-1], prices[::-1], params)  # row order must not matter either
    second = second_model.predict(examples[-20:])
    for name in ("price", "low", "high", "confidence"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    assert first.explanations == second.explanations


def test_model_records_its_training_window(model: TypeModel, sales: tuple[list[Example], np.ndarray]) -> None:
    examples = sales[0][:TRAIN_ROWS]
    assert model.rows == TRAIN_ROWS and model.asset_type == "Synthetic"
    assert model.trained_from == min(e.at for e in examples) and model.trained_to == max(
        e.at for e in examples
    )
    assert model.params.as_dict()["max_iter"] == FAST.max_iter


def test_the_band_does_not_depend_on_which_model_mapie_takes_as_its_median(
    sales: tuple[list[Example], np.ndarray],
) -> None:
    """The fit hands MAPIE the point model (squared error) as its median: the band must be the one MAPIE
    gives with a median quantile model of its own."""
    examples, prices = sales
    ordered, y = ordered_rows(examples[:TRAIN_ROWS], prices[:TRAIN_ROWS])
    space = FeatureSpace.discover("Synthetic", ordered)
    X, mask = space.matrix(ordered), np.array(space.categorical, dtype=bool)
    split = 1600

    def regressor(quantile: float | None) -> object:
        return booster(FAST, quantile, split, mask)

    point = regressor(None).fit(X[:split], y[:split])
    band = dict(confidence_level=0.9, regressor=regressor)
    ours = conformalize(X[:split], y[:split], X[split:], y[split:], median=point, **band)
    mapies = conformalize(X[:split], y[:split], X[split:], y[split:], **band)
    assert mapies.median is not point and mapies.median.loss == "quantile"
    assert (ours.low_shift, ours.high_shift) == pytest.approx(
        (mapies.low_shift, mapies.high_shift), abs=1e-12
    )


def test_a_median_point_model_is_fitted_and_banded_too(sales: tuple[list[Example], np.ndarray]) -> None:
    examples, prices = sales
    params = ModelParams(learning_rate=0.1, max_iter=150, point_loss="quantile", max_features=0.5)
    median = fit("Synthetic", examples[:TRAIN_ROWS], prices[:TRAIN_ROWS], params)
    assert all(m.loss == "quantile" and m.quantile == 0.5 for m in median.point.boosters)
    later, actual = examples[TRAIN_ROWS:], prices[TRAIN_ROWS:]
    predictions = median.predict(later, explain=0)
    covered = np.mean((actual >= predictions.low) & (actual <= predictions.high))
    assert 0.85 <= covered <= 0.95
    errors = np.abs(predictions.price - actual) / actual
    assert np.median(errors) < 0.2
