"""The point of a type with few sales: a bag of boosters, blended with a ridge by the weight that the
latest rows choose; and a version saved before the blend still serves."""

import pickle
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from oracle.features import Example
from oracle.linear import Linear
from oracle.model import MAX_LINEAR_WEIGHT, ModelParams, TypeModel, fit

from .conftest import FAST

START = datetime(2024, 1, 1, tzinfo=UTC)


def _sales(n: int, log_price, seed: int = 4) -> tuple[list[Example], np.ndarray]:
    rng = np.random.default_rng(seed)
    size, age = rng.uniform(50, 300, n), rng.uniform(0, 80, n)
    examples = [
        Example("T", START + timedelta(hours=i), {"size": float(s), "age": float(a)})
        for i, (s, a) in enumerate(zip(size, age, strict=True))
    ]
    return examples, np.exp(log_price(size, age) + rng.normal(0, 0.02, n))


def test_the_blend_weight_follows_what_the_latest_rows_say() -> None:
    """A smooth price is the ridge's to say, a stepped one the trees': the weight goes where each fits."""
    smooth = fit("T", *_sales(600, lambda s, a: 10 + 0.004 * s - 0.003 * a), FAST)
    stepped = fit(
        "T", *_sales(600, lambda s, a: 10 + 0.6 * (s > 120) + 0.6 * (s > 220) - 0.5 * (a > 40)), FAST
    )
    # the ridge corrects the boosted price, at most half of it
    assert smooth.point.weight == MAX_LINEAR_WEIGHT > stepped.point.weight >= 0.0
    assert len(smooth.point.boosters) == FAST.bag


def test_the_served_point_is_the_blend_of_the_bag_and_the_ridge() -> None:
    examples, prices = _sales(600, lambda s, a: 10 + 0.004 * s - 0.003 * a)
    model = fit("T", examples, prices, ModelParams(learning_rate=0.1, max_iter=100, bag=3))
    X = model.space.matrix(examples[:50])
    bagged = np.mean([booster.predict(X) for booster in model.point.boosters], axis=0)
    expected = (1 - model.point.weight) * bagged + model.point.weight * model.point.linear.predict(X)
    raw, low, high = model.predict_log(X)
    assert raw == pytest.approx(np.clip(expected, low, high), abs=1e-9)


def test_a_type_with_many_sales_keeps_one_booster_and_no_blend() -> None:
    examples, prices = _sales(600, lambda s, a: 10 + 0.004 * s - 0.003 * a)
    model = fit("T", examples, prices, ModelParams(learning_rate=0.1, max_iter=100, early_stopping_rows=500))
    assert len(model.point.boosters) == 1 and model.point.linear is None


def test_the_ridge_goes_on_only_a_little_past_its_training_range() -> None:
    """A hostile or mistyped attribute (1e308 square metres) must not extrapolate without end, or overflow
    to NaN: past half the training range beyond its edge, a value counts as that far."""
    rng = np.random.default_rng(1)
    X = rng.uniform(0, 100, (300, 3))
    y = 1 + 0.02 * X[:, 0] - 0.01 * X[:, 1]
    linear = Linear(np.array([False, False, False])).fit(X, y)
    low, high = X[:, 0].min(), X[:, 0].max()
    near, far, huge = X[:1].copy(), X[:1].copy(), X[:1].copy()
    near[0, 0], far[0, 0], huge[0, 0] = high + 0.1 * (high - low), high + 0.5 * (high - low), 1e308
    assert linear.predict(near) < linear.predict(far)  # a little past the edge still counts
    assert np.isfinite(linear.predict(huge)).all()
    assert linear.predict(huge) == pytest.approx(linear.predict(far))


def test_a_version_saved_with_a_single_booster_point_still_serves() -> None:
    examples, prices = _sales(300, lambda s, a: 10 + 0.004 * s - 0.003 * a)
    model = fit(
        "T", examples, prices, ModelParams(learning_rate=0.1, max_iter=100, bag=1, linear_blend=False)
    )
    before = model.predict(examples[:20])
    # As such a version was pickled: the booster itself as its point, no record of the forest's members.
    old = pickle.loads(pickle.dumps(model))
    state = old.__dict__
    state["point"] = state["point"].boosters[0]
    del state["_members"], state["_bounds"]
    loaded: TypeModel = pickle.loads(pickle.dumps(old))
    after = loaded.predict(examples[:20])
    assert after.price == pytest.approx(before.price) and after.low == pytest.approx(before.low)
    assert (loaded.params.bag, loaded.params.linear_blend) == (1, False)  # as it was fitted
    assert [a.feature for a in after.explanations[0]] == [a.feature for a in before.explanations[0]]


def test_sales_with_numbers_near_the_float_limit_do_not_fail_the_fit() -> None:
    """Two hostile rows (1e308 square metres) overflow a column's mean: the ridge leaves that column out,
    and the type still trains and prices every asset."""
    examples, prices = _sales(300, lambda s, a: 10 + 0.004 * s - 0.003 * a)
    for i in (5, 6):
        examples[i] = Example("T", examples[i].at, {"size": 1e308, "age": examples[i].attributes["age"]})
    model = fit("T", examples, prices, ModelParams(learning_rate=0.1, max_iter=100, bag=2))
    predicted = model.predict([*examples[:20], examples[5]])
    assert np.isfinite(predicted.price).all() and np.isfinite(predicted.low).all()
    assert 0.0 <= model.point.weight <= MAX_LINEAR_WEIGHT
