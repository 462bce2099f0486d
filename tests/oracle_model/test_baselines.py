"""The naive baselines choose their attribute from the data."""

from datetime import UTC, datetime, timedelta

import numpy as np

from oracle.baselines import MedianPerCategory, MedianPerUnit
from oracle.features import Example

START = datetime(2022, 1, 1, tzinfo=UTC)


def _rows(n: int = 400) -> tuple[list[Example], np.ndarray]:
    """Price = rate of the zone * area; rooms follow area loosely, colour and year are noise."""
    rng = np.random.default_rng(4)
    area = rng.uniform(40, 200, n)
    zone = rng.integers(0, 4, n)
    rate = np.array([1600.0, 1900.0, 2200.0, 2500.0])[zone]
    examples = [
        Example(
            "Flat",
            START + timedelta(days=i),
            {
                "area": float(area[i]),
                "rooms": int(area[i] // 40 + rng.integers(0, 3)),
                "yearBuilt": int(rng.integers(1950, 2020)),
                "zone": f"zone-{zone[i]}",
                "colour": ("red", "blue")[int(rng.integers(0, 2))],
            },
        )
        for i in range(n)
    ]
    return examples, rate * area * np.exp(rng.normal(0, 0.05, n))


def test_median_per_unit_picks_the_size_attribute() -> None:
    examples, prices = _rows()
    baseline = MedianPerUnit().fit(examples, prices)
    assert baseline.unit == "area"
    predicted = baseline.predict([*examples[:3], Example("Flat", START, {"rooms": 3})])
    rate = np.median(prices / np.array([e.attributes["area"] for e in examples]))
    np.testing.assert_allclose(predicted[:3], [rate * e.attributes["area"] for e in examples[:3]])
    assert predicted[3] == np.median(prices)


def test_median_per_category_picks_the_category_that_sets_the_price() -> None:
    examples, prices = _rows()
    baseline = MedianPerCategory().fit(examples, prices)
    assert baseline.category == "zone"
    zone_3 = [p for e, p in zip(examples, prices, strict=True) if e.attributes["zone"] == "zone-3"]
    predicted = baseline.predict(
        [
            Example("Flat", START, {"zone": "zone-3"}),
            Example("Flat", START, {"zone": "zone-9"}),
            Example("Flat", START),
        ]
    )
    np.testing.assert_allclose(predicted, [np.median(zone_3), np.median(prices), np.median(prices)])


def test_baselines_without_candidates_predict_the_overall_median() -> None:
    examples = [Example("Flat", START + timedelta(days=i)) for i in range(10)]
    prices = np.arange(1.0, 11.0)
    for baseline in (MedianPerUnit().fit(examples, prices), MedianPerCategory().fit(examples, prices)):
        assert np.all(baseline.predict(examples[:2]) == 5.5)
    assert MedianPerUnit().fit(examples, prices).unit is None
