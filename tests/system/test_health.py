import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from arq import create_pool
from arq.connections import RedisSettings
from pydantic import SecretStr

from app.audit.documents import AuditLog
from app.config import RateLimitRule
from app.lib.clients import Clients
from app.lib.embedded import EmbeddedStack
from app.lib.observability import is_operator
from app.main import create_app
from app.system import service


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


OPERATOR_TOKEN = "operator-token-for-tests-0123456789abcdef"


@asynccontextmanager
async def app_with(settings, clients, **updates) -> AsyncIterator[httpx.AsyncClient]:
    """Another api process on the same services, with these settings changed (e.g. a METRICS_TOKEN)."""
    other = create_app(settings.model_copy(update=updates))
    other.state.clients = clients
    transport = httpx.ASGITransport(app=other, client=("10.9.8.7", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


@asynccontextmanager
async def redis_stopped(clients, tmp_path) -> AsyncIterator[Clients]:
    """The app's clients, but with a Redis whose server has gone away."""
    with EmbeddedStack(log_dir=tmp_path) as stack:
        url = stack.start_redis()
        doomed = await create_pool(RedisSettings.from_dsn(url))
        assert await doomed.ping()
    try:
        yield dataclasses.replace(clients, redis=doomed)
    finally:
        await doomed.aclose()


async def ping_calls(redis) -> int:
    return int((await redis.info("commandstats")).get("cmdstat_ping", {}).get("calls", 0))


async def test_ready_is_503_naming_redis_when_redis_is_stopped(app, client, clients, tmp_path):
    async with redis_stopped(clients, tmp_path) as broken:
        # the server is gone now; the app keeps its other clients
        app.state.clients = broken
        try:
            response = await client.get("/api/system/ready")
        finally:
            app.state.clients = clients
    body = response.json()
    assert response.status_code == 503
    assert body["status"] == "unavailable"
    assert body["checks"]["redis"] == {"status": "down", "error": "connection_failed"}  # development: open
    assert body["checks"]["mongodb"]["status"] == "up"


async def test_anonymous_readiness_says_up_or_down_and_nothing_more(client, settings, clients, tmp_path):
    async with (
        redis_stopped(clients, tmp_path) as broken,
        app_with(settings, broken, metrics_token=SecretStr(OPERATOR_TOKEN)) as http,
    ):
        anonymous = await http.get("/api/system/ready")
        operator = await http.get("/api/system/ready", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"})
        wrong = await http.get("/api/system/ready", headers={"Authorization": "Bearer guessed"})
    assert anonymous.status_code == operator.status_code == wrong.status_code == 503
    for response in (anonymous, wrong):
        body = response.json()
        assert set(body) == {"status", "checks"}
        assert body["checks"]["redis"] == {"status": "down"}
        assert body["checks"]["mongodb"] == {"status": "up"}
        assert "Error" not in response.text and "refused" not in response.text.lower()
    details = operator.json()
    assert details["checks"]["redis"] == {"status": "down", "error": "connection_failed"}
    assert details["checks"]["mongodb"]["latencyMs"] >= 0 and details["checkedAt"]
    assert "Error" not in operator.text  # an error code, not the exception's text


async def test_a_readiness_flood_checks_the_dependencies_once(client, clients):
    fresh = dataclasses.replace(clients)  # clients this process has not checked yet
    await clients.redis.config_resetstat()
    report = await service.ReadinessCache().get(fresh)
    assert report.ready and await ping_calls(clients.redis) == 1
    await clients.redis.config_resetstat()
    cache = service.ReadinessCache(ttl_s=30)
    reports = await asyncio.gather(*(cache.get(fresh) for _ in range(50)))
    assert {id(r) for r in reports} == {id(reports[0])}
    assert await ping_calls(clients.redis) == 1  # one refresh for all fifty
    assert await cache.get(fresh) is reports[0]  # and none within its ttl
    assert await ping_calls(clients.redis) == 1
    expired = service.ReadinessCache(ttl_s=0)
    await expired.get(fresh)
    await expired.get(fresh)
    assert await ping_calls(clients.redis) == 3


async def test_a_flood_of_ready_requests_over_http_costs_one_round_of_checks(client, app, clients):
    app.state.clients = dataclasses.replace(clients)
    try:
        await clients.redis.config_resetstat()
        responses = await asyncio.gather(*(client.get("/api/system/ready") for _ in range(40)))
    finally:
        app.state.clients = clients
    assert {r.status_code for r in responses} == {200}
    assert await ping_calls(clients.redis) == 1


async def test_system_routes_are_rate_limited_per_ip_but_liveness_is_not(client, settings, clients):
    rules = {**settings.auth.rate_limits, "system": RateLimitRule(per_ip=3, per_principal=3)}
    auth = settings.auth.model_copy(update={"rate_limits": rules})
    async with app_with(settings, clients, auth=auth) as http:
        statuses = [(await http.get("/api/system/ready")).status_code for _ in range(3)]
        refused = await http.get("/api/system/ready")
        assert statuses == [200, 200, 200]
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert (await http.post("/api/system/worker-ping")).status_code == 429  # the group shares the counter
        assert (await http.get("/api/jobs/nope")).status_code == 429
        assert [(await http.get("/api/system/health")).status_code for _ in range(10)] == [200] * 10
    entries = await AuditLog.find(AuditLog.action == "auth.rate_limited").to_list()
    assert [(e.reason, e.ipAddress) for e in entries] == [("system:ip", "10.9.8.7")]


async def test_metrics_need_the_operator_token(client, settings, clients):
    async with app_with(settings, clients, metrics_token=SecretStr(OPERATOR_TOKEN)) as http:
        anonymous = await http.get("/metrics")
        wrong = await http.get("/metrics", headers={"Authorization": "Bearer guessed"})
        operator = await http.get("/metrics", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"})
    for response in (anonymous, wrong):
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "operator_token_required"
        assert response.headers["www-authenticate"] == "Bearer"
    assert operator.status_code == 200 and "dynamicvault_requests_total" in operator.text


def test_without_a_token_metrics_are_open_in_development_and_closed_in_production(settings):
    assert is_operator(settings, None)
    production = settings.model_copy(update={"app_env": "production"})
    assert not is_operator(production, None)
    assert not is_operator(production, "Bearer ")
    with_token = settings.model_copy(update={"metrics_token": SecretStr(OPERATOR_TOKEN)})
    assert is_operator(with_token, f"Bearer {OPERATOR_TOKEN}")
    assert is_operator(with_token, f"bearer  {OPERATOR_TOKEN} ")
    assert not is_operator(with_token, OPERATOR_TOKEN)
    assert not is_operator(with_token, f"Basic {OPERATOR_TOKEN}")


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
    assert {k: schemes["ApiKey"][k] for k in ("type", "name", "in")} == {
        "type": "apiKey",
        "name": "X-API-Key",
        "in": "header",
    }
