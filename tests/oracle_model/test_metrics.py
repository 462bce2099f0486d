"""Metrics on arrays small enough to check by hand."""

import math

import numpy as np
import pytest

from oracle.metrics import accuracy, coverage, mean_width


def test_accuracy_is_in_fractions_and_skips_unusable_rows() -> None:
    actual = [100.0, 200.0, 400.0, 50.0, np.nan, 10.0]
    predicted = [110.0, 180.0, 400.0, 75.0, 10.0, np.nan]
    result = accuracy(actual, predicted)
    assert result["count"] == 4
    assert result["mdape"] == pytest.approx(0.1)
    assert result["mape"] == pytest.approx(0.175)
    assert result["p95Ape"] == pytest.approx(0.44)  # errors 0, .1, .1, .5: 85% of the way from .1 to .5


def test_accuracy_of_nothing_is_nan() -> None:
    result = accuracy([], [])
    assert result["count"] == 0 and math.isnan(result["mdape"])


def test_coverage_counts_bounds_as_inside() -> None:
    assert coverage([1, 2, 3, 4], [0, 2, 4, 0], [2, 3, 5, 3]) == 0.5
    assert coverage([1, np.nan], [0, 0], [2, 2]) == 1.0


def test_mean_width_is_relative_to_the_prediction() -> None:
    assert mean_width([90, 80], [110, 120], [100, 100]) == pytest.approx(0.3)


def test_lengths_must_match() -> None:
    with pytest.raises(ValueError):
        accuracy([1, 2], [1])
