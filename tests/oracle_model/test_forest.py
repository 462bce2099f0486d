"""The compiled few-row walk must reproduce sklearn's predictions exactly."""

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor

from oracle._forest import CompiledForest


def test_compiled_forest_predicts_what_sklearn_predicts() -> None:
    rng = np.random.default_rng(0)
    n = 3000
    X = rng.normal(size=(n, 6))
    X[:, 1] = rng.integers(0, 40, n)  # categorical codes
    X[:, 4] = rng.integers(0, 4, n)
    X[rng.random(X.shape) < 0.1] = np.nan
    y = (
        np.nan_to_num(X[:, 0])
        + (np.nan_to_num(X[:, 1]) % 7) * 0.3
        + np.isnan(X[:, 2])
        + rng.normal(0, 0.1, n)
    )
    mask = np.array([False, True, False, False, True, False])
    models = [
        HistGradientBoostingRegressor(max_iter=40, categorical_features=mask, **loss).fit(X, y)
        for loss in ({}, {"loss": "quantile", "quantile": 0.1})
    ]
    forest = CompiledForest(models)

    X_new = rng.normal(size=(300, 6))
    X_new[:, 1] = rng.integers(-3, 60, 300)  # negative and never-seen codes
    X_new[:5, 1] = [2.5, 300.0, -0.5, 1e9, 39.0]  # not a code at all
    X_new[:, 4] = rng.integers(0, 4, 300)
    X_new[rng.random(X_new.shape) < 0.2] = np.nan
    walked = forest.predict(X_new, (0, 1))
    for index, model in enumerate(models):
        np.testing.assert_allclose(walked[index], model.predict(X_new), rtol=0, atol=1e-12)
    np.testing.assert_allclose(forest.predict(X_new, (1,))[0], models[1].predict(X_new), rtol=0, atol=1e-12)


def test_compiled_forest_without_categories() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(500, 3))
    X[rng.random(X.shape) < 0.3] = np.nan
    y = np.nan_to_num(X[:, 0]) * 2 + np.isnan(X[:, 1])
    model = HistGradientBoostingRegressor(max_iter=30).fit(X, y)
    np.testing.assert_allclose(CompiledForest([model]).predict(X, (0,))[0], model.predict(X), atol=1e-12)
