"""The reads an appraisal makes of many tokens: every one found, in order, a slice of `$in` at a time."""

import pytest

from app.assets import price_records
from app.lib import db
from tests import factories


def test_in_slices_cover_every_value_in_order_and_none_over_the_size():
    slices = list(db.in_slices(list(range(7)), 3))
    assert slices == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(db.in_slices([], 3)) == []


@pytest.mark.usefixtures("client")
async def test_appraisal_batch_reads_tokens_across_slices(monkeypatch):
    monkeypatch.setattr(price_records, "in_slices", lambda values: db.in_slices(values, 2))
    for token in (1, 2, 3, 5, 8):
        await factories.asset(token)
    found = await price_records.appraisal_batch([8, 5, 4, 3, 2, 1], None, 10)
    assert [a["tokenId"] for a in found] == [1, 2, 3, 5, 8]
    # `limit` counts the tokens asked for, from the lowest: 4 has no asset
    assert [a["tokenId"] for a in await price_records.appraisal_batch([8, 5, 4, 3, 2, 1], None, 4)] == [
        1,
        2,
        3,
    ]
    assert [a["tokenId"] for a in await price_records.appraisal_batch([8, 5, 4, 3], 3, 10)] == [5, 8]
