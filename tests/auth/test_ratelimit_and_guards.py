"""Rate limits in Redis (per IP, per principal, per route group) and the authorization helpers on routes."""

from __future__ import annotations

import asyncio
import secrets

import httpx
from litestar import Litestar, Request, get, post
from litestar.params import FromPath

from app.audit.documents import AuditLog
from app.auth.middleware import authentication_middleware
from app.config import RateLimitRule
from app.lib.errors import EXCEPTION_HANDLERS
from app.lib.security import ensure_owner_or_admin, requires_permission, requires_roles
from app.main import DOCUMENTS
from tests import factories


def code(response) -> str:
    return response.json()["error"]["code"]


def tiny_limits(settings, **groups: RateLimitRule):
    auth = settings.auth.model_copy(update={"rate_limits": {**settings.auth.rate_limits, **groups}})
    return settings.model_copy(update={"auth": auth})


@get("/t/private", cache=False)
async def private(request: Request) -> dict[str, str]:
    return {"wallet": request.user.wallet_address}


@get("/t/public", opt={"anonymous": True}, cache=False)
async def public(request: Request) -> dict[str, str | None]:
    return {"wallet": request.user.wallet_address if request.user else None}


@get("/t/unlimited", opt={"anonymous": True, "rate_limit": None}, cache=False)
async def unlimited() -> dict[str, bool]:
    return {"ok": True}


@post("/t/assets", guards=[requires_permission("assets:write")], status_code=200)
async def write_asset() -> dict[str, bool]:
    return {"ok": True}


@get("/t/admin", guards=[requires_roles("admin")], cache=False)
async def admin_only() -> dict[str, bool]:
    return {"ok": True}


@get("/t/owned/{owner:str}", cache=False)
async def owned(request: Request, owner: FromPath[str]) -> dict[str, bool]:
    ensure_owner_or_admin(request.user, owner)
    return {"ok": True}


def test_app(settings, clients, ip: str = "10.0.0.1") -> httpx.AsyncClient:
    """A small app with the real middleware and the real Redis/MongoDB clients (no lifespan of its own)."""
    app = Litestar(
        route_handlers=[private, public, unlimited, write_asset, admin_only, owned],
        middleware=[authentication_middleware(settings)],
        exception_handlers=EXCEPTION_HANDLERS,
    )
    app.state.clients = clients
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(ip, 1)), base_url="http://t")


test_app.__test__ = False  # a helper, not a test


# --- rate limits -----------------------------------------------------------------------------------------


async def test_a_nonce_flood_gets_429_with_retry_after_and_writes_nothing_to_mongodb(
    client, settings, clients
):
    wallet = factories.new_account().address
    limit = settings.auth.rate_limits["auth"].per_ip
    statuses = [
        (await client.get("/api/auth/nonce", params={"walletAddress": wallet})).status_code
        for _ in range(limit)
    ]
    assert statuses == [200] * limit
    refused = await client.get("/api/auth/nonce", params={"walletAddress": wallet})
    assert refused.status_code == 429
    assert code(refused) == "rate_limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.json()["error"]["details"]["scope"] == "ip"
    await client.get("/api/auth/nonce", params={"walletAddress": wallet})  # still refused, not recorded again
    # one audit entry for the flood, and nothing else in MongoDB
    entries = await AuditLog.find_all().to_list()
    assert [(e.action, e.reason, e.ipAddress) for e in entries] == [
        ("auth.rate_limited", "auth:ip", "127.0.0.1")
    ]
    for document in DOCUMENTS:
        if document is not AuditLog:
            assert await document.get_pymongo_collection().count_documents({}) == 0, document
    assert len([k async for k in clients.redis.scan_iter("auth:nonce:*")]) == limit  # each with a TTL


async def test_the_auth_group_is_stricter_and_separate_from_the_default_group(client, settings):
    login = await factories.login(settings)
    wallet = factories.new_account().address
    for _ in range(settings.auth.rate_limits["auth"].per_ip + 1):
        last = await client.get("/api/auth/nonce", params={"walletAddress": wallet})
    assert last.status_code == 429
    assert (await client.get("/api/auth/me", headers=login.headers)).status_code == 200
    verify = await client.post(
        "/api/auth/verify", json={"walletAddress": wallet, "signature": "0x", "message": "m"}
    )
    assert verify.status_code == 429  # the whole auth group shares the counter


async def test_failed_credentials_count_against_the_ip(client, settings, clients):
    limit = settings.auth.rate_limits["default"].per_ip
    small = tiny_limits(settings, default=RateLimitRule(per_ip=5, per_principal=100))
    async with test_app(small, clients) as app_client:
        statuses = [
            (await app_client.get("/t/private", headers={"Authorization": "Bearer nope"})).status_code
            for _ in range(6)
        ]
    assert statuses == [401] * 5 + [429]
    assert limit > 5


async def test_per_principal_limits_follow_the_user_across_ips(client, settings, clients):
    small = tiny_limits(settings, default=RateLimitRule(per_ip=1000, per_principal=3))
    login, other = await factories.login(settings), await factories.login(settings)
    async with test_app(small, clients) as app_client:
        for _ in range(3):
            assert (await app_client.get("/t/private", headers=login.headers)).status_code == 200
        refused = await app_client.get("/t/private", headers=login.headers)
        assert refused.status_code == 429
        assert refused.json()["error"]["details"]["scope"] == "principal"
        assert (await app_client.get("/t/private", headers=other.headers)).status_code == 200
    # the same user through another process and IP is still over its limit: counters live in Redis
    async with test_app(small, clients) as second_process:
        assert (await second_process.get("/t/private", headers=login.headers)).status_code == 429


async def test_api_keys_are_limited_per_key(client, settings, clients):
    small = tiny_limits(settings, default=RateLimitRule(per_ip=1000, per_principal=2))
    key = await factories.api_key(settings, permissions=["assets:write"])
    async with test_app(small, clients) as app_client:
        statuses = [(await app_client.post("/t/assets", headers=key.headers)).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


def guessed_secret(key_id: str) -> str:
    """A key of our shape for a real (public) key id, with a secret the guesser made up."""
    return f"dv_{key_id}_{secrets.token_urlsafe(32)}"


async def test_garbage_secrets_for_a_real_key_id_do_not_spend_its_quota(client, settings, clients):
    small = tiny_limits(
        settings,
        default=RateLimitRule(per_ip=1000, per_principal=3),
        failed_credentials=RateLimitRule(per_ip=1000),
    )
    key = await factories.api_key(settings, permissions=["assets:write"])
    for ip in ("203.0.113.1", "203.0.113.2", "203.0.113.3"):  # a guesser on a few IPs
        async with test_app(small, clients, ip=ip) as attacker:
            for _ in range(10):
                response = await attacker.post(
                    "/t/assets", headers={"X-API-Key": guessed_secret(key.api_key_id)}
                )
                assert response.status_code == 401 and code(response) == "invalid_api_key"
    async with test_app(small, clients, ip="198.51.100.7") as operator:
        statuses = [(await operator.post("/t/assets", headers=key.headers)).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]  # the key's own quota, all of it, and no more


async def test_failed_credentials_per_ip_have_their_own_limit(client, settings, clients):
    small = tiny_limits(
        settings,
        default=RateLimitRule(per_ip=1000, per_principal=1000),
        failed_credentials=RateLimitRule(per_ip=5),
    )
    known = await factories.api_key(settings, permissions=["assets:write"])
    cold = await factories.api_key(settings, permissions=["assets:write"])
    async with test_app(small, clients, ip="203.0.113.9") as app_client:
        assert (await app_client.post("/t/assets", headers=known.headers)).status_code == 200
        guesses = [
            await app_client.post("/t/assets", headers={"X-API-Key": guessed_secret(known.api_key_id)}),
            await app_client.post("/t/assets", headers={"X-API-Key": "dv_garbage"}),
            await app_client.get("/t/private", headers={"Authorization": "Bearer garbage"}),
            await app_client.post("/t/assets", headers={"X-API-Key": guessed_secret(cold.api_key_id)}),
            await app_client.post("/t/assets", headers={"X-API-Key": guessed_secret(cold.api_key_id)}),
            await app_client.post("/t/assets", headers={"X-API-Key": guessed_secret(cold.api_key_id)}),
        ]
        assert [r.status_code for r in guesses] == [401] * 5 + [429]
        refused = guesses[-1]
        assert (
            code(refused) == "rate_limited"
            and refused.json()["error"]["details"]["scope"] == "failed_credentials"
        )
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        # past the limit, an unproven key is not even looked up from this IP, even the right one ...
        assert (await app_client.post("/t/assets", headers=cold.headers)).status_code == 429
        # ... while a key already proven (cached) keeps working
        assert (await app_client.post("/t/assets", headers=known.headers)).status_code == 200
    async with test_app(small, clients, ip="203.0.113.10") as elsewhere:  # another IP is not affected
        assert (await elsewhere.post("/t/assets", headers=cold.headers)).status_code == 200


async def test_concurrent_requests_cannot_overrun_the_limit(client, settings, clients):
    small = tiny_limits(settings, default=RateLimitRule(per_ip=10, per_principal=1000))
    async with test_app(small, clients) as app_client:
        responses = await asyncio.gather(*(app_client.get("/t/public") for _ in range(25)))
    assert sorted(r.status_code for r in responses) == [200] * 10 + [429] * 15


async def test_a_route_can_opt_out_of_rate_limits(client, settings, clients):
    small = tiny_limits(settings, default=RateLimitRule(per_ip=1, per_principal=1))
    async with test_app(small, clients) as app_client:
        assert all([(await app_client.get("/t/unlimited")).status_code == 200 for _ in range(5)])


# --- guards and anonymous access -------------------------------------------------------------------------


async def test_routes_require_a_principal_unless_they_opt_in(client, settings, clients):
    login = await factories.login(settings)
    async with test_app(settings, clients) as app_client:
        refused = await app_client.get("/t/private")
        assert refused.status_code == 401 and code(refused) == "authentication_required"
        assert (await app_client.get("/t/public")).json() == {"wallet": None}
        assert (await app_client.get("/t/public", headers=login.headers)).json() == {"wallet": login.wallet}
        assert (await app_client.get("/t/private", headers=login.headers)).status_code == 200


async def test_permission_guard_accepts_scoped_keys_and_admins_only(client, settings, clients):
    scoped = await factories.api_key(settings, permissions=["assets:write"])
    unscoped = await factories.api_key(settings, permissions=["media:write"], roles=("admin",))
    admin = await factories.login(settings, roles=("admin",))
    user = await factories.login(settings)
    async with test_app(settings, clients) as app_client:
        assert (await app_client.post("/t/assets", headers=scoped.headers)).status_code == 200
        assert (await app_client.post("/t/assets", headers=admin.headers)).status_code == 200
        for login in (unscoped, user):  # a key acts within its own permissions, even an admin's key
            response = await app_client.post("/t/assets", headers=login.headers)
            assert response.status_code == 403 and code(response) == "insufficient_permission"
        assert (await app_client.post("/t/assets")).status_code == 401


async def test_role_guard_and_owner_or_admin_check(client, settings, clients):
    admin = await factories.login(settings, roles=("admin",))
    owner = await factories.login(settings)
    stranger = await factories.login(settings)
    async with test_app(settings, clients) as app_client:
        assert (await app_client.get("/t/admin", headers=admin.headers)).status_code == 200
        assert code(await app_client.get("/t/admin", headers=owner.headers)) == "insufficient_role"
        path = f"/t/owned/{owner.wallet.lower()}"
        assert (await app_client.get(path, headers=owner.headers)).status_code == 200
        assert (await app_client.get(path, headers=admin.headers)).status_code == 200
        refused = await app_client.get(path, headers=stranger.headers)
        assert refused.status_code == 403 and code(refused) == "not_owner"
