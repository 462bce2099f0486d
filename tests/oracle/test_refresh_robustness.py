"""No row, page or surprise can fail a refresh off the record: a bad row is a counted rejection, a bad page
or fetch a recorded failure with a code, and anything unforeseen a recorded `internal_error` with
back-off, so a source is never re-fetched every minute in silence."""

import json

import pytest
from bson.errors import InvalidDocument

from app.oracle import repository
from app.oracle.documents import ComparableSale
from tests import factories
from tests.oracle.conftest import Reply
from tests.oracle.test_refresh import _seconds as seconds
from tests.oracle.test_refresh import refresh, source

GOOD = {"externalId": "ok", "price": 1, "soldAt": "2024-01-01", "currency": "ETH", "assetType": "Art"}


def _line(**changes) -> bytes:
    return json.dumps({**GOOD, **changes}).encode()


async def test_rows_that_cannot_be_read_or_stored_are_rejected_not_the_fetch(
    client, clients, local_settings, admin, source_server
):
    deep = b'{"externalId": "deep", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    lines = [
        _line(),
        _line(externalId="neg", soldAt=-99999999999),  # before year 1: no datetime holds it
        _line(externalId="big").replace(b"}", b', "weight": ' + b"9" * 400 + b"}"),  # no float holds it
        _line(externalId="nul", **{"a\u0000b": 1}),  # MongoDB keys cannot hold NUL
        _line(externalId="sur").replace(b"}", b', "note": "\\ud800"}'),  # a lone surrogate: no UTF-8
        _line(externalId=1).replace(b"1,", b"1e99999,", 1),  # an id of 100,000 digits
        deep,
    ]
    source_server.routes["/rows.jsonl"] = Reply(body=b"\n".join(lines) + b"\n")
    jsonl = await factories.data_source(
        local_settings, name="jsonl", url=source_server.url("/rows.jsonl"), format="jsonl"
    )
    job = await refresh(client, clients, local_settings, admin, jsonl["id"])
    assert job["success"] is True, job
    last = (await source(client, admin, jsonl["id"]))["lastFetch"]
    assert last["rejectedByReason"] == {
        "invalid_column_name": 1,
        "invalid_encoding": 1,
        "invalid_external_id": 1,
        "invalid_number": 1,
        "invalid_sold_at": 1,
        "malformed_json": 1,
    }
    assert last["rowsAccepted"] == 1

    header = b"externalId,price,soldAt,currency,assetType,area\n"
    source_server.routes["/cells.csv"] = Reply(
        body=header + b"1,1,2024-01-01,ETH,Art,12\n2,1,2024-01-01,ETH,Art," + b"7" * 5000 + b"\n"
    )
    cells = await factories.data_source(local_settings, name="cells", url=source_server.url("/cells.csv"))
    job = await refresh(client, clients, local_settings, admin, cells["id"])
    assert job["success"] is True, job
    last = (await source(client, admin, cells["id"]))["lastFetch"]
    assert (last["rowsAccepted"], last["rejectedByReason"]) == (1, {"invalid_number": 1})


@pytest.mark.parametrize(
    ("routes", "code"),
    [
        ({"/api": {"items": [GOOD], "next": "http://[::1"}}, "url_refused"),  # a next page that is no URL
        ({"/api": {"items": [GOOD], "next": "/jump"}, "/jump": 99999}, "url_refused"),  # redirect: bad port
    ],
)
async def test_a_page_that_leads_nowhere_is_a_recorded_failure(
    client, clients, local_settings, admin, source_server, routes, code
):
    for path, answer in routes.items():
        source_server.routes[path] = (
            Reply(302, headers={"Location": f"http://127.0.0.1:{answer}/x"})
            if isinstance(answer, int)
            else Reply(body=json.dumps(answer).encode())
        )
    api = await factories.data_source(
        local_settings,
        name="api",
        type="api",
        format="json",
        url=source_server.url("/api"),
        configuration={"rowsPath": "items", "nextUrlPath": "next"},
    )
    job = await refresh(client, clients, local_settings, admin, api["id"])
    assert (job["success"], job["error"]) == (False, code)
    status = (await source(client, admin, api["id"]))["status"]
    assert (status["lastError"], status["errorCount"]) == (code, 1)
    assert seconds(status["nextFetchAt"]) - seconds(status["lastAttemptAt"]) == 60


async def test_an_unforeseen_error_is_recorded_as_internal_error_with_back_off(
    client, clients, local_settings, admin, source_server, monkeypatch
):
    async def broken(operations):
        raise InvalidDocument("key 'a\\x00b' must not contain NULL bytes: secret detail")

    monkeypatch.setattr(repository, "write_sales", broken)
    source_server.routes["/data.csv"] = Reply(
        body=b"externalId,price,soldAt,currency,assetType\n1,1,2024-01-01,ETH,Art\n"
    )
    data = await factories.data_source(local_settings, name="data", url=source_server.url("/data.csv"))
    job = await refresh(client, clients, local_settings, admin, data["id"])
    assert (job["success"], job["error"]) == (False, "internal_error")
    assert "secret detail" not in json.dumps(job)
    status = (await source(client, admin, data["id"]))["status"]
    assert (status["lastError"], status["errorCount"]) == ("internal_error", 1)
    assert "secret detail" not in status["lastErrorMessage"]
    assert seconds(status["nextFetchAt"]) - seconds(status["lastAttemptAt"]) == 60
    assert await ComparableSale.find_all().count() == 0


async def test_an_unknown_name_and_a_refused_one_are_recorded_alike(client, clients, settings, admin):
    found = []
    for name, url in (("internal", "http://localhost:9/x"), ("unknown", "http://no-such-host.invalid/x")):
        created = await factories.data_source(settings, name=name, url=url)
        job = await refresh(client, clients, settings, admin, created["id"])  # OUTBOUND_ALLOW_PRIVATE off
        status = (await source(client, admin, created["id"]))["status"]
        found.append((job["error"], status["lastError"], status["lastErrorMessage"]))
    assert found[0] == found[1], found
    assert "localhost" not in found[0][2]
