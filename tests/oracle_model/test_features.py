"""Feature discovery and encoding."""

import json
import math
import random
from datetime import UTC, date, datetime

import numpy as np

from oracle.features import MAX_CATEGORIES, MAX_FEATURES, Example, FeatureSpace, decimal_year

AT = datetime(2010, 7, 2, 12, tzinfo=UTC)


def _examples(n: int = 100) -> list[Example]:
    """Rows whose attributes each exercise one discovery rule."""
    rows = []
    for i in range(n):
        attributes = {
            "size": 50.0 + i,
            "hasGarden": i % 2 == 0,
            "district": ("North", "South", "East")[i % 3],
            "reference": f"REF-{i:05d}",
            "colour": "grey",
            "floors": 2,
            "mostlyNumber": "unknown" if i == 0 else i % 7,
            "payload": {"nested": i},
        }
        if i < 2:
            attributes["rareNote"] = "x"
        rows.append(Example("Flat", AT, attributes))
    return rows


def test_discovery_keeps_numbers_and_categories_and_drops_ids_constants_and_rare() -> None:
    space = FeatureSpace.discover("Flat", _examples())
    summary = space.summary()
    assert summary["numeric"] == ["hasGarden", "mostlyNumber", "size"]
    assert summary["categorical"] == {"district": 3}
    for dropped in ("reference", "colour", "floors", "rareNote", "payload"):
        assert dropped not in space.names
    assert summary["derived"] == ["time"]
    assert space.categorical == tuple(name == "district" for name in space.names)


def test_year_like_numbers_and_dates_get_ages() -> None:
    examples = [
        Example(
            "House",
            AT,
            {
                "yearBuilt": 2000 + i % 5,
                "renovated": "2005-07-02" if i % 2 else datetime(2008, 7, 2, 12, tzinfo=UTC),
                "soldOn": date(2010, 1, 1),
                "rooms": 1 + i % 4,
            },
        )
        for i in range(40)
    ]
    space = FeatureSpace.discover("House", examples)
    assert "yearBuilt" in space.names and "age:yearBuilt" in space.names
    assert "rooms" in space.names and "age:rooms" not in space.names
    assert "renovated" not in space.names and "age:renovated" in space.names
    row = dict(zip(space.names, space.matrix(examples[:2])[1], strict=True))
    assert row["age:yearBuilt"] == decimal_year(AT) - 2001
    assert math.isclose(row["age:renovated"], 5.0, abs_tol=0.01)
    first = dict(zip(space.names, space.matrix(examples[:1])[0], strict=True))
    assert math.isclose(first["age:renovated"], 2.0, abs_tol=0.01)
    assert math.isclose(first["age:soldOn"], 0.5, abs_tol=0.01)


def test_names_do_not_depend_on_row_or_key_order() -> None:
    examples = _examples()
    shuffled = examples[:]
    random.Random(7).shuffle(shuffled)
    reversed_keys = [
        Example(e.asset_type, e.at, dict(reversed(list(e.attributes.items())))) for e in shuffled
    ]
    space = FeatureSpace.discover("Flat", examples)
    assert FeatureSpace.discover("Flat", reversed_keys).names == space.names
    plain = [name for name in space.names if name != "time"]
    assert plain == sorted(plain)


def test_matrix_marks_missing_values_and_unknown_categories_as_nan() -> None:
    space = FeatureSpace.discover("Flat", _examples())
    new = [
        Example("Flat", AT, {"size": 70, "district": "South", "hasGarden": True}),
        Example("Flat", AT, {"district": "Atlantis", "size": "not a number"}),
    ]
    X = space.matrix(new)
    assert X.shape == (2, len(space.names)) and X.dtype == np.float64
    column = {name: index for index, name in enumerate(space.names)}
    assert X[0, column["size"]] == 70.0
    assert X[0, column["hasGarden"]] == 1.0
    assert X[0, column["district"]] in {0.0, 1.0, 2.0}
    assert np.isnan(X[0, column["mostlyNumber"]])
    assert np.isnan(X[1, column["district"]])
    assert np.isnan(X[1, column["size"]])
    assert X[1, column["time"]] == decimal_year(AT)


def test_rare_categories_share_one_other_code() -> None:
    examples = [Example("Art", AT, {"artist": f"artist-{i % 300:03d}"}) for i in range(1200)]
    space = FeatureSpace.discover("Art", examples)
    assert space.summary()["categorical"] == {"artist": MAX_CATEGORIES + 1}
    codes = space.matrix(examples)[:, space.names.index("artist")]
    assert np.nanmax(codes) == MAX_CATEGORIES
    assert np.sum(codes == MAX_CATEGORIES) == 50 * 4
    unseen = space.matrix([Example("Art", AT, {"artist": "newcomer"})])[0, 0]
    assert unseen == MAX_CATEGORIES


def test_derived_market_features() -> None:
    sale = datetime(2008, 7, 2, 12, tzinfo=UTC)
    examples = [
        Example(
            "Token",
            AT,
            {"rarity": float(i)},
            listing_price=200.0 if i else None,
            previous_sales=((sale, 100.0), (datetime(2006, 1, 1, tzinfo=UTC), 50.0), (AT, 999.0))
            if i == 1
            else (),
            index_levels={"eth-usd": 1500.0 + i},
        )
        for i in range(30)
    ]
    space = FeatureSpace.discover("Token", examples)
    assert space.summary()["derived"] == [
        "time",
        "listingPrice",
        "lastSalePrice",
        "yearsSinceLastSale",
        "index:eth-usd",
    ]
    row = dict(zip(space.names, space.matrix(examples[:2])[1], strict=True))
    assert row["listingPrice"] == math.log(200.0)
    assert row["lastSalePrice"] == math.log(100.0)  # the sale at `at` itself does not count
    assert math.isclose(row["yearsSinceLastSale"], 2.0, abs_tol=0.01)
    assert row["index:eth-usd"] == 1501.0
    first = dict(zip(space.names, space.matrix(examples[:1])[0], strict=True))
    assert np.isnan(first["listingPrice"]) and np.isnan(first["lastSalePrice"])


def test_inputs_are_json_and_readable() -> None:
    examples = [
        Example(
            "Flat", AT, {"size": 50.0 + i, "district": "North" if i % 2 else "South"}, listing_price=300.0
        )
        for i in range(20)
    ]
    space = FeatureSpace.discover("Flat", examples)
    inputs = space.inputs(Example("Flat", AT, {"district": "North"}, listing_price=300.0))
    json.dumps(inputs, allow_nan=False)
    assert inputs["district"] == "North"
    assert inputs["size"] is None
    assert math.isclose(inputs["listingPrice"], 300.0)


def test_feature_count_is_capped() -> None:
    examples = [Example("Wide", AT, {f"m{j:03d}": float(i * j) for j in range(260)}) for i in range(10)]
    space = FeatureSpace.discover("Wide", examples)
    assert len(space.names) == MAX_FEATURES
    assert "time" in space.names
