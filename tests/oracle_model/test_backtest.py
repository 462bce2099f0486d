"""The time-split backtest report."""

import json
import math

import numpy as np
import pytest

from oracle.backtest import LEVELS, backtest
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


def test_backtest_needs_enough_rows_on_both_sides() -> None:
    examples, prices = make_sales(90, seed=8)
    with pytest.raises(InsufficientData) as raised:
        backtest("Synthetic", examples, prices, FAST)
    assert raised.value.rows == 90 and raised.value.needed > 90
    examples, prices = make_sales(120, seed=8)
    with pytest.raises(InsufficientData):
        backtest("Synthetic", examples, prices, FAST, test_share=0.05)
    assert math.isfinite(backtest("Synthetic", examples, prices, FAST)["model"]["mdape"])
