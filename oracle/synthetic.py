"""Synthetic sales with a known structure, for tests and speed benchmarks that need no real data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from oracle.features import Example

DISTRICTS = ("Center", "Harbor", "Hills", "Meadow", "Mill", "North", "Old Town", "Park", "River", "South")
STYLES = ("Apartment", "Detached", "Semi", "Terrace")
CONDITIONS = ("Poor", "Fair", "Good", "Excellent")
ENERGY = ("A", "B", "C", "D", "E", "F", "G")


def make_sales(
    n: int,
    *,
    seed: int = 0,
    asset_type: str = "Synthetic",
    start: datetime = datetime(2020, 1, 1, tzinfo=UTC),
    years: float = 4.0,
) -> tuple[list[Example], np.ndarray]:
    """`n` sales in time order: price grows with size and quality, falls with age, follows a market index.

    The noise is log-normal and wider for poor-condition assets, so intervals have to adapt per row.
    """
    rng = np.random.default_rng(seed)
    offsets = np.sort(rng.uniform(0.0, years, n))
    months = int(np.ceil(years * 12)) + 1
    market = 100.0 * np.exp(np.cumsum(rng.normal(0.004, 0.012, months)))  # a drifting monthly index
    level = market[(offsets * 12).astype(int)]

    area = np.exp(rng.normal(np.log(120.0), 0.45, n))
    rooms = np.clip(np.round(area / 30 + rng.normal(0, 0.7, n)), 1, 12)
    year_built = rng.integers(1900, 2021, n)
    quality = rng.integers(1, 11, n)
    district = rng.integers(0, len(DISTRICTS), n)
    style = rng.integers(0, len(STYLES), n)
    condition = rng.choice(len(CONDITIONS), n, p=[0.1, 0.25, 0.45, 0.2])
    garden = rng.random(n) < 0.4
    lot = np.where(rng.random(n) < 0.8, np.exp(rng.normal(np.log(400.0), 0.6, n)), np.nan)
    floor = rng.integers(0, 15, n)
    bathrooms = np.clip(np.round(rooms / 2.5 + rng.normal(0, 0.5, n)), 1, 5)
    energy = rng.integers(0, len(ENERGY), n)
    renovated_years_ago = np.where(rng.random(n) < 0.5, rng.uniform(0.0, 30.0, n), np.nan)

    district_premium = np.linspace(-0.35, 0.45, len(DISTRICTS))[rng.permutation(len(DISTRICTS))]
    style_premium = np.array([-0.1, 0.12, 0.03, 0.0])
    age = (2020 - year_built).astype(float)
    log_value = (
        np.log(2500.0)
        + 0.9 * np.log(area)
        + 0.06 * (quality - 5)
        - 0.004 * age
        + 0.25 * (age > 100)
        + district_premium[district]
        + style_premium[style]
        + 0.08 * (condition - 1.5)
        + 0.05 * garden
        + 0.05 * np.nan_to_num(np.log(lot / 400.0))
        + 0.03 * (bathrooms - 1.5)
        - 0.02 * (energy - 3)
        + np.where(np.isnan(renovated_years_ago), 0.0, 0.1 - 0.005 * np.nan_to_num(renovated_years_ago))
        + np.log(level / 100.0)
    )
    noise = rng.normal(0.0, 1.0, n) * np.where(condition == 0, 0.22, 0.09)
    prices = np.exp(log_value + noise)

    examples = []
    for i in range(n):
        at = start + timedelta(days=float(offsets[i]) * 365.25)
        attributes: dict[str, object] = {
            "area": round(float(area[i]), 1),
            "rooms": int(rooms[i]),
            "yearBuilt": int(year_built[i]),
            "quality": int(quality[i]) if rng.random() > 0.05 else None,
            "district": DISTRICTS[district[i]],
            "style": STYLES[style[i]],
            "condition": CONDITIONS[condition[i]],
            "garden": bool(garden[i]),
            "floor": int(floor[i]),
            "bathrooms": int(bathrooms[i]),
            "energy": ENERGY[energy[i]],
            "reference": f"SYN-{seed}-{i:07d}",  # an identifier: discovery must drop it
        }
        if not np.isnan(renovated_years_ago[i]):
            renovated = at - timedelta(days=float(renovated_years_ago[i]) * 365.25)
            attributes["renovatedOn"] = renovated.date().isoformat()
        if not np.isnan(lot[i]):
            attributes["lotSize"] = round(float(lot[i]), 1)
        listing = float(prices[i] * np.exp(rng.normal(0.04, 0.06))) if rng.random() < 0.6 else None
        previous: tuple[tuple[datetime, float], ...] = ()
        if rng.random() < 0.3:
            back = float(rng.uniform(0.5, 8.0))
            drift = np.exp(-0.03 * back + rng.normal(0.0, 0.08))
            previous = ((at - timedelta(days=back * 365.25), float(prices[i] * drift)),)
        examples.append(
            Example(
                asset_type=asset_type,
                at=at,
                attributes=attributes,
                listing_price=listing,
                previous_sales=previous,
                index_levels={"market": float(level[i])},
            )
        )
    return examples, prices
