"""The price band: MAPIE's conformalized quantile regression over gradient-boosting quantile models."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from mapie.regression import ConformalizedQuantileRegressor
from sklearn.ensemble import HistGradientBoostingRegressor


@dataclass(frozen=True)
class Band:
    """A fitted band in log price: [lower(x) - low_shift, upper(x) + high_shift].

    CQR shifts the two quantile models by constants fixed at conformalization. They are read back from
    MAPIE's own predict_interval once, so predictions can skip MAPIE's per-call overhead.
    """

    cqr: ConformalizedQuantileRegressor
    lower: HistGradientBoostingRegressor
    upper: HistGradientBoostingRegressor
    median: HistGradientBoostingRegressor
    low_shift: float
    high_shift: float


def calibration_rows(rows: int, confidence_level: float, share: float) -> int:
    """Rows that conformalize a `confidence_level` band: the share, or more if MAPIE's quantile needs it."""
    # Each tail's level (1 - alpha/2) needs about 2/alpha scores; in floating point 0.9 asks for 21.
    needed = math.ceil(2 / (1 - confidence_level))
    return max(math.ceil(share * rows), needed)


@contextmanager
def quiet_mapie() -> Iterator[None]:
    """Keep MAPIE from configuring the process's logging.

    Its predict_interval calls `logging.basicConfig` to report crossed quantiles, which would add a stderr
    handler to the root logger of whatever service imports this package. A NullHandler makes that call a
    no-op; it is removed again afterwards.
    """
    root = logging.getLogger()
    guard = logging.NullHandler() if not root.handlers else None
    if guard is not None:
        root.addHandler(guard)
    try:
        yield
    finally:
        if guard is not None:
            root.removeHandler(guard)


def conformalize(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_calibration: np.ndarray,
    y_calibration: np.ndarray,
    *,
    confidence_level: float,
    regressor: Callable[[float], HistGradientBoostingRegressor],
    median: HistGradientBoostingRegressor | None = None,
) -> Band:
    """Fit the quantile models on the earlier rows and let MAPIE conformalize them on the later ones.

    `regressor(quantile)` makes an unfitted quantile model. MAPIE reads the median model only for its own
    point output, so an already fitted one may be passed in.
    """
    lower = regressor((1 - confidence_level) / 2).fit(X_train, y_train)
    upper = regressor((1 + confidence_level) / 2).fit(X_train, y_train)
    median = median if median is not None else regressor(0.5).fit(X_train, y_train)
    cqr = ConformalizedQuantileRegressor(
        [lower, upper, median], confidence_level=confidence_level, prefit=True
    )
    cqr.conformalize(X_calibration, y_calibration)
    one = X_calibration[:1]
    with quiet_mapie():
        _, interval = cqr.predict_interval(one)
    low_shift = float(lower.predict(one)[0] - interval[0, 0, 0])
    high_shift = float(interval[0, 1, 0] - upper.predict(one)[0])
    return Band(cqr, lower, upper, median, low_shift, high_shift)


def mapie_interval(band: Band, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The band's (low, high) in log price straight from MAPIE, for batch evaluation."""
    with quiet_mapie():
        _, interval = band.cqr.predict_interval(X)
    return interval[:, 0, 0], interval[:, 1, 0]
