from app.audit.documents import AuditLog
from app.auth import sessions
from tests import factories
from tests.auth.test_ratelimit_and_guards import test_app


async def test_a_bearer_token_from_the_factory_authenticates(client, settings):
    login = await factories.login(settings, roles=("admin",))
    response = await client.get("/api/auth/me", headers=login.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["walletAddress"] == login.wallet
    assert body["userId"] == login.user_id
    assert body["roles"] == ["admin"]
    assert body["kind"] == "user"
    assert body["sessionId"] == login.session_id


async def test_an_api_key_from_the_factory_authenticates(client, settings):
    login = await factories.api_key(settings, permissions=["assets:write"])
    response = await client.get("/api/auth/me", headers=login.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["kind"] == "api_key"
    assert body["walletAddress"] == login.wallet
    assert body["apiKeyId"] == login.api_key_id
    assert body["permissions"] == ["assets:write"]


async def test_a_request_with_both_credentials_is_refused_whatever_they_hold(client, settings):
    """Which credential would act is a guess: a valid bearer with any key (or the reverse) is a 400."""
    bearer = await factories.login(settings, roles=("user", "admin"))
    key = await factories.api_key(settings, permissions=["assets:write"])
    for headers in (
        {**bearer.headers, **key.headers},
        {**bearer.headers, "X-API-Key": "dv_not-a-key"},
        {"Authorization": "Bearer not-a-jwt", **key.headers},
    ):
        for path in ("/api/auth/me", "/api/assets"):
            response = await client.get(path, headers=headers)
            assert response.status_code == 400, response.text
            assert response.json()["error"]["code"] == "ambiguous_credentials"


async def test_a_protected_route_without_credentials_is_401(client):
    response = await client.get("/api/auth/me")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_required"


async def test_a_malformed_authorization_header_is_401(client):
    for value in ("Basic abc", "Bearer", "Bearer not-a-jwt"):
        response = await client.get("/api/auth/me", headers={"Authorization": value})
        assert response.status_code == 401, value
        assert response.json()["error"]["code"] in {"invalid_authorization_header", "invalid_token"}


async def test_bad_credentials_are_401_even_on_anonymous_routes(client):
    wallet = factories.new_account().address
    ok = await client.get("/api/auth/nonce", params={"walletAddress": wallet})
    assert ok.status_code == 200
    bad = await client.get(
        "/api/auth/nonce", params={"walletAddress": wallet}, headers={"Authorization": "Bearer x.y.z"}
    )
    assert bad.status_code == 401
    assert bad.json()["error"]["code"] == "invalid_token"
    bad_key = await client.get(
        "/api/auth/nonce", params={"walletAddress": wallet}, headers={"X-API-Key": "dv_nope"}
    )
    assert bad_key.status_code == 401
    assert bad_key.json()["error"]["code"] == "invalid_api_key"


async def test_system_routes_schema_and_metrics_stay_open(client):
    for path in ("/api/system/health", "/schema/openapi.json", "/metrics"):
        response = await client.get(path, headers={"Authorization": "Bearer garbage"})
        assert response.status_code == 200, path


async def test_a_revoked_session_is_refused_at_once(client, settings, clients):
    login = await factories.login(settings)
    assert (await client.get("/api/auth/me", headers=login.headers)).status_code == 200
    await sessions.revoke_session(clients.redis, settings, login.session_id, reason="test")
    response = await client.get("/api/auth/me", headers=login.headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "session_revoked"


async def test_a_revoked_session_is_refused_even_when_the_redis_cache_is_gone(client, settings, clients):
    login = await factories.login(settings)
    await sessions.revoke_session(clients.redis, settings, login.session_id, reason="test")
    await clients.redis.delete(sessions.session_key(login.session_id))
    response = await client.get("/api/auth/me", headers=login.headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "session_revoked"


async def test_a_valid_session_survives_a_cache_miss(client, settings, clients):
    login = await factories.login(settings)
    await clients.redis.delete(sessions.session_key(login.session_id))
    response = await client.get("/api/auth/me", headers=login.headers)
    assert response.status_code == 200
    assert response.json()["walletAddress"] == login.wallet


async def test_refused_credentials_are_audited_with_their_reason(client, settings):
    await client.get("/api/auth/me", headers={"Authorization": "Bearer x.y.z", "User-Agent": "probe/1"})
    await client.get("/api/auth/me", headers={"X-API-Key": "dv_nope"})
    entries = await AuditLog.find(AuditLog.action == "auth.credentials_rejected").sort("timestamp").to_list()
    assert [(e.entityId, e.reason, e.success) for e in entries] == [
        ("bearer", "invalid_token", False),
        ("api_key", "invalid_api_key", False),
    ]
    assert entries[0].ipAddress == "127.0.0.1" and entries[0].userAgent == "probe/1"


async def test_a_flood_of_refused_credentials_writes_one_audit_entry_per_ip_and_reason(
    client, settings, clients
):
    for _ in range(20):
        assert (
            await client.get("/api/auth/me", headers={"Authorization": "Bearer x.y.z"})
        ).status_code == 401
    for _ in range(5):
        await client.get("/api/auth/me", headers={"X-API-Key": "dv_nope"})
    async with test_app(settings, clients, ip="203.0.113.50") as elsewhere:
        for _ in range(5):
            await elsewhere.get("/t/private", headers={"Authorization": "Bearer x.y.z"})
    entries = await AuditLog.find(AuditLog.action == "auth.credentials_rejected").to_list()
    assert sorted((e.ipAddress, e.reason) for e in entries) == [
        ("127.0.0.1", "invalid_api_key"),
        ("127.0.0.1", "invalid_token"),
        ("203.0.113.50", "invalid_token"),
    ]
    # the next window records again
    await clients.redis.delete(*[k async for k in clients.redis.scan_iter("auth:audit:rejected:*")])
    await client.get("/api/auth/me", headers={"Authorization": "Bearer x.y.z"})
    assert await AuditLog.find(AuditLog.action == "auth.credentials_rejected").count() == 4
