from typing import Annotated

import httpx
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
