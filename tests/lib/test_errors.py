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
        and 'path="/api/jobs/{job_id}"' in line
        and "404" in line
    )
    assert float(line.rsplit(" ", 1)[1]) >= 2
    assert "dynamicvault_request_duration_seconds_bucket" in metrics
