import logging
import socket
from typing import Annotated

import httpx
import pytest
from arq.connections import ArqRedis
from botocore.exceptions import EndpointConnectionError
from litestar import Litestar, post
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from litestar.params import Body

from app.lib.errors import EXCEPTION_HANDLERS


async def test_unknown_route_is_json_404(client):
    response = await client.get("/api/does-not-exist")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["code"] == "not_found"


async def test_wrong_method_is_405_in_the_error_format(client):
    response = await client.delete("/api/system/health")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


async def test_every_response_carries_a_request_id(client):
    response = await client.get("/api/system/health")
    assert len(response.headers["x-request-id"]) == 32
    echoed = await client.get("/api/system/health", headers={"X-Request-ID": "trace-abc-12345"})
    assert echoed.headers["x-request-id"] == "trace-abc-12345"
    # a hostile id (log injection) is replaced, not echoed
    hostile = await client.get("/api/system/health", headers={"X-Request-ID": 'x\\n{"level":"error"}'})
    assert hostile.headers["x-request-id"] != 'x\\n{"level":"error"}'


async def test_metrics_count_requests_by_route_template_and_status(client):
    await client.get("/api/jobs/abc")
    await client.get("/api/jobs/def")
    metrics = (await client.get("/metrics")).text
    line = next(
        line
        for line in metrics.splitlines()
        if line.startswith("dynamicvault_requests_total")
        and 'path="/api/jobs/{jobId}"' in line
        and "404" in line
    )
    assert float(line.rsplit(" ", 1)[1]) >= 2
    assert "dynamicvault_request_duration_seconds_bucket" in metrics


async def test_malformed_json_is_400_malformed_json(client):
    response = await client.post(
        "/api/auth/verify", content=b'{"walletAddress": ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_json"


async def test_an_oversize_body_is_413_in_the_error_format():
    @post("/upload", request_max_body_size=1024)
    async def upload(
        data: Annotated[dict[str, UploadFile], Body(media_type=RequestEncodingType.MULTI_PART)],
    ) -> None:
        return None

    app = Litestar([upload], exception_handlers=EXCEPTION_HANDLERS)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        response = await http.post("/upload", files={"file": ("a.bin", b"x" * 4096)})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/api/auth/me", {}, 401),  # refused by the authentication middleware
        ("/api/auth/me", {"Authorization": "Bearer not-a-jwt"}, 401),
        ("/api/no-such-route", {}, 404),  # refused by the router, before any middleware
    ],
)
async def test_errors_raised_before_the_handler_carry_a_request_id(client, path, headers, status):
    response = await client.get(path, headers={**headers, "X-Request-ID": "trace-before-handler-1"})
    assert response.status_code == status
    assert response.headers["x-request-id"] == "trace-before-handler-1"
    assert response.json()["error"]["code"]


async def test_a_rate_limited_answer_carries_a_request_id(client):
    for _ in range(100):
        response = await client.get("/api/auth/nonce", params={"walletAddress": "0x" + "11" * 20})
        if response.status_code == 429:
            break
    assert response.status_code == 429
    assert response.headers["retry-after"]
    assert len(response.headers["x-request-id"]) == 32


def _requests_counted(metrics: str, path: str, status: int) -> float:
    labels = (f'path="{path}"', f'status_code="{status}"')
    for line in metrics.splitlines():
        if line.startswith("dynamicvault_requests_total") and all(label in line for label in labels):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_metrics_and_access_log_see_the_status_of_refusals_by_middleware(client, caplog):
    before = (await client.get("/metrics")).text
    caplog.set_level(logging.INFO, logger="http")
    for _ in range(2):
        assert (await client.get("/api/auth/me")).status_code == 401
    after = (await client.get("/metrics")).text
    assert _requests_counted(after, "/api/auth/me", 401) - _requests_counted(before, "/api/auth/me", 401) == 2
    assert _requests_counted(after, "/api/auth/me", 200) == _requests_counted(before, "/api/auth/me", 200)
    access = [
        r for r in caplog.records if "http.request" in r.getMessage() and "/api/auth/me" in r.getMessage()
    ]
    assert len(access) == 2 and all("'status': 401" in r.getMessage() for r in access), [
        r.getMessage() for r in access
    ]


async def test_a_dependency_that_cannot_be_reached_is_503_not_500(client, clients, monkeypatch):
    """Redis refusing connections (a real client on a port nothing listens on) answers 503 in the format."""
    with socket.socket() as probe:  # a free port, closed again: connections to it are refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    unreachable = ArqRedis.from_url(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=1)
    monkeypatch.setattr(clients, "redis", unreachable)
    try:
        response = await client.get("/api/assets")
    finally:
        await unreachable.aclose()
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "service_unavailable"


async def test_options_lists_every_method_of_its_path(client):
    """Litestar's automatic OPTIONS kept the methods of the first handler registered on a path."""
    for path, methods in (("/api/assets", {"GET", "POST"}), ("/api/auth/api-keys", {"GET", "POST"})):
        response = await client.options(path)
        assert response.status_code == 204
        assert {m.strip() for m in response.headers["allow"].split(",")} == {*methods, "OPTIONS"}


async def test_an_unreachable_s3_is_503_not_500():
    @post("/upload")
    async def upload() -> None:
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9")

    app = Litestar([upload], exception_handlers=EXCEPTION_HANDLERS)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        response = await http.post("/upload")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "service_unavailable"


async def test_a_json_body_over_a_mebibyte_is_413_before_it_is_decoded(client, settings):
    """The file routes set their own limits; no JSON body of the API comes near this one."""
    big = b'{"walletAddress": "' + b"0" * (1024 * 1024) + b'"}'
    response = await client.post(
        "/api/auth/verify", content=big, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "payload_too_large"
