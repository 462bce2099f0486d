"""Whatever a client sends to any route in the OpenAPI document, the answer is never a 5xx.

Routes are read from /schema/openapi.json, so every route added later is covered without listing it.
"""

import itertools

import pytest

from app.lib import ratelimit
from tests import factories

# Values that break naive code: operators, huge numbers, unicode, traversal, empties, injection.
PATH_VALUES = ["-1", "0", "99999999999999999999999", "abc", "%24where", "..%2F..%2Fetc", "0x", "%00", "ü" * 3]
QUERY_VALUES = ["", "-1", "1e309", "abc", "$where", "[object Object]", "' OR 1=1", "A" * 3000, "\u202e"]
# Well-typed but extreme: they pass parsing and reach the services' arithmetic.
QUERY_VALUES += ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "-9223372036854775809", "1e308"]
BODIES = [
    b"{bad json",
    b"[]",
    b"null",
    b'"string"',
    b'{"$gt": ""}',
    b'{"$where": "sleep(1000)"}',
    b'{"walletAddress": {"$ne": null}, "tokenId": {"$gt": 0}}',
    b'{"a": ' * 200 + b"1" + b"}" * 200,
    b"\xff\xfe\x00garbage",
    # well-typed bodies with extreme timestamps reach the services' date handling
    b'{"name": "k", "permissions": ["media:write"], "expiresAt": "0001-01-01T00:00:00+01:00"}',
    b'{"name": "k", "permissions": ["media:write"], "expiresAt": "9999-12-31T23:59:59-01:00"}',
]
SKIP_PATHS = {"/metrics"}


async def _routes(client):
    schema = (await client.get("/schema/openapi.json")).json()
    for path, item in schema["paths"].items():
        if path in SKIP_PATHS or path.startswith("/schema"):
            continue
        for method, operation in item.items():
            if method in {"get", "post", "put", "patch", "delete"}:
                yield path, method, operation


def _fill(path: str, value: str) -> str:
    parts = []
    for part in path.split("/"):
        parts.append(value if part.startswith("{") and part.endswith("}") else part)
    return "/".join(parts)


def _query_names(operation) -> list[str]:
    return [p["name"] for p in operation.get("parameters", []) if p.get("in") == "query"]


@pytest.fixture(params=["anonymous", "admin"])
async def send(request, client, clients, settings):
    """Send a request and assert it is not a 5xx; runs as an anonymous caller and as an admin."""
    headers = {}
    if request.param == "admin":  # gets past every guard, into the handlers
        headers = (await factories.login(settings, roles=("user", "admin"))).headers

    async def send(method: str, url: str, extra_headers: dict[str, str] | None = None, **kwargs) -> None:
        all_headers = {**headers, **(extra_headers or {})}
        response = await client.request(method.upper(), url, headers=all_headers, **kwargs)
        if response.status_code == 429:  # the sweep outruns any sane limit: reset the counters, go again
            keys = [key async for key in clients.redis.scan_iter(match=f"{ratelimit.KEY_PREFIX}*")]
            await clients.redis.delete(*keys)
            response = await client.request(method.upper(), url, headers=all_headers, **kwargs)
        assert response.status_code < 500, (
            f"{method.upper()} {url} -> {response.status_code}: {response.text[:300]}"
        )
        if response.status_code >= 400:
            body = response.json()
            assert set(body) == {"error"} and body["error"]["code"], body

    return send


async def test_hostile_path_values_never_cause_a_server_error(client, send):
    async for path, method, _ in _routes(client):
        if "{" not in path:
            continue
        for value in PATH_VALUES:
            await send(method, _fill(path, value))


async def test_hostile_query_values_never_cause_a_server_error(client, send):
    async for path, method, operation in _routes(client):
        url = _fill(path, "1")
        names = [*_query_names(operation), "owner[$ne]", "sort", "limit", "cursor"]
        for name, value in itertools.product(names, QUERY_VALUES):
            await send(method, url, params={name: value})


@pytest.mark.parametrize(
    "content_type", ["application/json", "text/plain", "multipart/form-data; boundary=x"]
)
async def test_hostile_bodies_never_cause_a_server_error(client, send, content_type):
    async for path, method, _ in _routes(client):
        if method not in {"post", "put", "patch"}:
            continue
        for body in BODIES:
            await send(method, _fill(path, "1"), {"content-type": content_type}, content=body)
