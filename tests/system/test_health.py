import dataclasses

from arq import create_pool
from arq.connections import RedisSettings

from app.lib.embedded import EmbeddedStack


async def test_health_is_ok(client):
    response = await client.get("/api/system/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ready_reports_every_dependency_up(client, services):
    response = await client.get("/api/system/ready")
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ready"
    assert {name: check["status"] for name, check in body["checks"].items()} == {
        "mongodb": "up",
        "redis": "up",
        "s3": "up",
        "chain": "up" if services["chain"] else "disabled",
    }


async def test_ready_is_503_naming_redis_when_redis_is_stopped(app, client, clients, tmp_path):
    with EmbeddedStack(log_dir=tmp_path) as stack:
        url = stack.start_redis()
        doomed = await create_pool(RedisSettings.from_dsn(url))
        assert await doomed.ping()
    # the server is gone now; the app keeps its other clients
    app.state.clients = dataclasses.replace(clients, redis=doomed)
    try:
        response = await client.get("/api/system/ready")
    finally:
        app.state.clients = clients
        await doomed.aclose()
    body = response.json()
    assert response.status_code == 503
    assert body["status"] == "unavailable"
    assert body["checks"]["redis"]["status"] == "down"
    assert body["checks"]["redis"]["error"]
    assert body["checks"]["mongodb"]["status"] == "up"


async def test_openapi_lists_the_routes(client):
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert "/api/system/health" in paths
    assert "/api/system/ready" in paths
    assert "/api/jobs/{jobId}" in paths
    # the seed plan's routes (section 2.3 and 4) are all there
    for path in [
        "/api/auth/nonce",
        "/api/auth/verify",
        "/api/auth/refresh",
        "/api/auth/logout",
        "/api/assets",
        "/api/assets/{tokenId}",
        "/api/assets/{tokenId}/price-history",
        "/api/users/{walletAddress}/assets",
        "/api/assets/{tokenId}/metadata",
        "/api/assets/{tokenId}/images",
        "/api/assets/{tokenId}/documents",
        "/api/storage/presigned-url",
        "/api/assets/{tokenId}/process-media",
        "/api/transactions",
        "/api/users/{walletAddress}/transactions",
        "/api/market/stats",
        "/api/market/listings",
    ]:
        assert path in paths, path
    schemes = response.json()["components"]["securitySchemes"]
    assert schemes["BearerToken"]["scheme"] == "bearer"
    assert schemes["ApiKey"] == {"type": "apiKey", "name": "X-API-Key", "in": "header"}
