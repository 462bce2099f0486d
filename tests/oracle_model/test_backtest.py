"""The time-split backtest report."""

import json
import math
from dataclasses import replace
from datetime import datetime

import numpy as np
import pytest

from oracle.backtest import LEVELS, backtest
from oracle.metrics import accuracy, coverage
from oracle.model import InsufficientData
from oracle.synthetic import make_sales

from .conftest import FAST


def test_backtest_splits_by_time_and_reports_model_and_baselines() -> None:
    examples, prices = make_sales(1500, seed=8)
    order = np.argsort([e.at.timestamp() for e in examples], kind="stable")
    shuffled = np.random.default_rng(0).permutation(len(examples))  # input order must not matter
    report = backtest("Synthetic", [examples[i] for i in shuffled], prices[shuffled], FAST)
    json.dumps(report, allow_nan=False)
    assert (report["trainRows"], report["testRows"]) == (1200, 300)
    assert report["splitAt"] == examples[order[1200]].at.isoformat()
    model = report["model"]
    assert {"count", "mdape", "p95Ape", "mape", "coverage", "meanIntervalWidth"} <= model.keys()
    assert model["count"] == 300 and 0 < model["mdape"] < 0.2
    assert list(model["coverage"]) == ["50", "80", "90", "95"] == [f"{level * 100:g}" for level in LEVELS]
    assert all(0 <= c <= 1 for c in model["coverage"].values())
    assert model["coverage"]["95"] >= model["coverage"]["50"] + 0.2
    widths = model["meanIntervalWidth"]
    assert widths["50"] < widths["80"] < widths["90"] < widths["95"]
    per_unit, per_category = report["baselines"]["medianPerUnit"], report["baselines"]["medianPerCategory"]
    assert per_unit["unit"] == "area" and per_unit["count"] == 300
    assert per_category["category"] == "district"
    assert model["mdape"] < 0.5 * min(per_unit["mdape"], per_category["mdape"])


def test_sales_at_the_same_time_stay_on_one_side() -> None:
    examples, prices = make_sales(400, seed=10)
    monthly = [
        replace(e, at=e.at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)) for e in examples
    ]
    report = backtest("Synthetic", monthly, prices, FAST, levels=(0.9,))
    split = datetime.fromisoformat(report["splitAt"])
    assert report["trainRows"] == sum(e.at < split for e in monthly) < 320
    assert report["trainRows"] + report["testRows"] == 400


def test_backtest_can_return_its_test_rows_for_pooled_scoring() -> None:
    examples, prices = make_sales(600, seed=9)
    report = backtest("Synthetic", examples, prices, FAST, levels=(0.8, 0.9), return_rows=True)
    rows = report["rows"]
    assert set(rows) == {
        "actual",
        "predicted",
        "low:80",
        "high:80",
        "low:90",
        "high:90",
        "baseline:medianPerUnit",
        "baseline:medianPerCategory",
    }
    assert all(len(values) == report["testRows"] == 120 for values in rows.values())
    np.testing.assert_allclose(np.sort(rows["actual"]), np.sort(prices[-120:]))
    assert accuracy(rows["actual"], rows["predicted"])["mdape"] == report["model"]["mdape"]
    assert coverage(rows["actual"], rows["low:80"], rows["high:80"]) == report["model"]["coverage"]["80"]


def test_backtest_needs_enough_rows_on_both_sides() -> None:
    examples, prices = make_sales(90, seed=8)
    with pytest.raises(InsufficientData) as raised:
        backtest("Synthetic", examples, prices, FAST)
    assert raised.value.rows == 90 and raised.value.needed > 90
    examples, prices = make_sales(120, seed=8)
    with pytest.raises(InsufficientData):
        backtest("Synthetic", examples, prices, FAST, test_share=0.05)
    assert math.isfinite(backtest("Synthetic", examples, prices, FAST)["model"]["mdape"])
