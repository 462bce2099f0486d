"""The synthetic sales generator."""

import numpy as np

from oracle.synthetic import make_sales


def test_same_seed_same_sales_in_time_order() -> None:
    first, prices = make_sales(200, seed=5)
    again, prices_again = make_sales(200, seed=5)
    other, _ = make_sales(200, seed=6)
    assert first == again and np.array_equal(prices, prices_again)
    assert first != other
    assert [e.at for e in first] == sorted(e.at for e in first)
    assert np.all(prices > 0) and len(first) == 200
    assert all(e.at.tzinfo is not None and "market" in e.index_levels for e in first)
