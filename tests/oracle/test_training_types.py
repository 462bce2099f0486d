"""Each asset type trains on its own: one whose data its fit cannot take fails alone."""

from datetime import UTC, datetime

from app.oracle import training
from oracle.model import ModelParams
from oracle.synthetic import make_sales

PARAMS = ModelParams(learning_rate=0.1, max_iter=60, bag=2)


def _sales(asset_type: str, n: int, seed: int) -> list[dict]:
    examples, prices = make_sales(n, seed=seed, asset_type=asset_type, start=datetime(2024, 1, 1, tzinfo=UTC))
    return [
        {
            "assetType": asset_type,
            "soldAt": e.at,
            "price": float(p),
            "currency": "ETH",
            "attributes": e.attributes,
        }
        for e, p in zip(examples, prices, strict=True)
    ]


def test_a_type_whose_fit_fails_fails_alone(monkeypatch):
    real = training.fit

    def fails_on_wine(asset_type, *args, **kwargs):
        if asset_type == "Wine":
            raise ValueError("Input X contains NaN.")
        return real(asset_type, *args, **kwargs)

    monkeypatch.setattr(training, "fit", fails_on_wine)
    fitted = training.fit_version(_sales("Art", 120, 1) + _sales("Wine", 120, 2), [], PARAMS, "v1")
    types = {t["assetType"]: t for t in fitted["types"]}
    assert types["Art"]["status"] == "ready" and "Art" in fitted["bundle"].models
    assert types["Wine"]["status"] == "failed" and "Wine" not in fitted["bundle"].models
    assert "contains NaN" in types["Wine"]["error"] and types["Wine"]["rows"] == 120
    assert fitted["counts"]["readyTypes"] == 1


def test_a_type_whose_backtest_fails_keeps_its_model(monkeypatch):
    def fails(*args, **kwargs):
        raise ValueError("window shape cannot be larger than input array shape")

    monkeypatch.setattr(training, "backtest", fails)
    fitted = training.fit_version(_sales("Art", 120, 1), [], PARAMS, "v1")
    [record] = fitted["types"]
    assert record["status"] == "ready" and record["backtest"] is None and fitted["backtest"] is None
