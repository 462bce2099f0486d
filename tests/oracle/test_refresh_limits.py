"""A refresh's memory is bounded by its body, not by how many rows the body holds, and a fetch stops at
ORACLE_MAX_ROWS_PER_FETCH rows on the record."""

import gc
import tracemalloc

from app.oracle.documents import ComparableSale
from tests import factories
from tests.oracle.conftest import Reply
from tests.oracle.test_refresh import refresh, source

HEADER = b"externalId,price,soldAt,currency,assetType,area,quality\n"


def _csv(rows: int, *, good_every: int) -> bytes:
    """`rows` sales, one in `good_every` of them with a price and the others with a price that is no
    number (rejected: parsed and checked like any row, but not written, which keeps the test quick)."""
    lines = [
        b"%d,%s,2024-01-01T00:00:%02dZ,ETH,Art,%d,q%d\n"
        % (n, b"1.5" if n % good_every == 0 else b"x", n % 60, n, n % 7)
        for n in range(rows)
    ]
    return HEADER + b"".join(lines)


def _limited(settings, rows: int):
    return settings.model_copy(
        update={"oracle": settings.oracle.model_copy(update={"max_rows_per_fetch": rows})}
    )


async def test_a_fetch_stops_at_the_row_limit_and_keeps_what_it_wrote(
    client, clients, local_settings, admin, source_server
):
    limited = _limited(local_settings, 2500)
    source_server.routes["/many.csv"] = Reply(body=_csv(4000, good_every=2))
    many = await factories.data_source(limited, name="many", url=source_server.url("/many.csv"))
    job = await refresh(client, clients, limited, admin, many["id"])
    assert (job["success"], job["error"]) == (False, "too_many_rows")
    shown = await source(client, admin, many["id"])
    assert shown["status"]["lastError"] == "too_many_rows" and shown["status"]["errorCount"] == 1
    last = shown["lastFetch"]
    assert (last["rowsAccepted"], last["rowsRejected"]) == (1250, 1250)  # rows 1-2500 of the file
    assert last["rejectedByReason"] == {"invalid_price": 1250}
    assert [s["row"] for s in last["rejectedSamples"]] == [3, 5, 7, 9, 11, 13, 15, 17, 19, 21]  # the first
    assert await ComparableSale.find_all().count() == 1250


async def test_memory_stays_bounded_by_the_body_not_its_rows(
    client, clients, local_settings, admin, source_server
):
    body = _csv(30_000, good_every=20)  # 1.3 MB
    source_server.routes["/large.csv"] = Reply(body=body)
    large = await factories.data_source(local_settings, name="large", url=source_server.url("/large.csv"))
    gc.collect()
    tracemalloc.start()
    try:
        job = await refresh(client, clients, local_settings, admin, large["id"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert job["success"] is True and job["result"]["rowsAccepted"] == 1500, job
    last = (await source(client, admin, large["id"]))["lastFetch"]
    assert last["rejectedByReason"] == {"invalid_price": 28_500} and len(last["rejectedSamples"]) == 10
    # The body is held once or twice (as it streams in, then whole) and a batch of rows beside it (about
    # 3x in all); holding every row parsed, as a refresh did, costs about 50x.
    assert peak < 6 * len(body), (peak, len(body))
