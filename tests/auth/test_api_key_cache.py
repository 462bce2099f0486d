"""The Redis cache of API-key lookups: hits, and revocations, role changes, suspensions and expiry at once."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
from litestar import Litestar, Request, get

from app.audit.documents import AuditLog
from app.auth import api_keys, schemas, service, tokens
from app.auth.documents import User
from app.auth.middleware import authentication_middleware
from app.lib.context import RequestContext
from app.lib.errors import EXCEPTION_HANDLERS
from app.lib.security import Principal, current_principal
from app.lib.timeutil import as_utc, utcnow
from tests import factories


def code(response) -> str:
    return response.json()["error"]["code"]


async def me(client, headers):
    return await client.get("/api/auth/me", headers=headers)


def entry_key(login) -> str:
    return api_keys.api_key_cache_key(tokens.hash_api_key(login.api_key))


def owner_of(login) -> Principal:
    return Principal(user_id=login.user_id, wallet_address=login.wallet, roles=frozenset({"user"}))


@get("/t/me", cache=False)
async def other_me(request: Request) -> schemas.PrincipalOut:
    return schemas.PrincipalOut.of(current_principal(request))


def other_process(settings, clients) -> httpx.AsyncClient:
    """Another api process: its own middleware (own process-local state), the same Redis and MongoDB."""
    app = Litestar(
        route_handlers=[other_me],
        middleware=[authentication_middleware(settings)],
        exception_handlers=EXCEPTION_HANDLERS,
    )
    app.state.clients = clients
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("10.0.0.2", 1)), base_url="http://t"
    )


async def test_a_cached_api_key_still_works_without_mongodb(client, settings, clients):
    login = await factories.api_key(settings, permissions=["assets:write"])
    first = await me(client, login.headers)
    assert first.status_code == 200, first.text
    assert 0 < await clients.redis.pttl(entry_key(login)) <= api_keys.API_KEY_CACHE_TTL.total_seconds() * 1000
    # Hide the key from MongoDB behind the service's back: only a cache hit can still accept it.
    await User.get_pymongo_collection().update_one(
        {"apiKeys.keyId": login.api_key_id}, {"$set": {"apiKeys.$.key": "0" * 64}}
    )
    second = await me(client, login.headers)
    assert second.status_code == 200 and second.json() == first.json()
    assert second.json()["permissions"] == ["assets:write"] and second.json()["apiKeyId"] == login.api_key_id
    async with other_process(settings, clients) as other:  # every process reads the same entry
        assert (await other.get("/t/me", headers=login.headers)).json() == first.json()


async def test_a_revoked_key_is_refused_on_the_very_next_request_even_when_cached(client, settings, clients):
    owner = await factories.login(settings)
    created = await client.post(
        "/api/auth/api-keys", json={"name": "ci", "permissions": ["media:write"]}, headers=owner.headers
    )
    key_id, headers = created.json()["id"], {"X-API-Key": created.json()["key"]}
    async with other_process(settings, clients) as other:
        assert (await me(client, headers)).status_code == 200
        assert (await other.get("/t/me", headers=headers)).status_code == 200
        cached = api_keys.api_key_cache_key(tokens.hash_api_key(headers["X-API-Key"]))
        assert await clients.redis.exists(cached)

        assert (await client.delete(f"/api/auth/api-keys/{key_id}", headers=owner.headers)).status_code == 204
        assert not await clients.redis.exists(cached)
        for response in (await me(client, headers), await other.get("/t/me", headers=headers)):
            assert response.status_code == 401 and code(response) == "api_key_revoked"


async def test_a_role_change_of_the_keys_owner_applies_at_once(client, settings):
    admin = await factories.login(settings, roles=("admin",))
    key = await factories.api_key(settings, permissions=["oracle:submit"])
    assert (await me(client, key.headers)).json()["roles"] == ["user"]  # now cached
    granted = await client.post(
        f"/api/auth/users/{key.wallet}/roles", json={"role": "oracle"}, headers=admin.headers
    )
    assert granted.status_code == 200
    assert (await me(client, key.headers)).json()["roles"] == ["oracle", "user"]
    revoked = await client.delete(f"/api/auth/users/{key.wallet}/roles/oracle", headers=admin.headers)
    assert revoked.status_code == 200
    assert (await me(client, key.headers)).json()["roles"] == ["user"]


async def test_an_expired_key_is_refused_even_if_cached(client, settings, clients, monkeypatch):
    login = await factories.api_key(
        settings, permissions=["assets:write"], expires_at=utcnow() + timedelta(hours=1)
    )
    assert (await me(client, login.headers)).status_code == 200
    later = utcnow() + timedelta(hours=1, seconds=1)
    monkeypatch.setattr(api_keys, "utcnow", lambda: later)  # the key's expiry passes while it is cached
    assert await clients.redis.exists(entry_key(login))
    response = await me(client, login.headers)
    assert response.status_code == 401 and code(response) == "api_key_expired"


async def test_a_key_is_cached_no_longer_than_it_is_valid(client, settings, clients):
    login = await factories.api_key(
        settings, permissions=["assets:write"], expires_at=utcnow() + timedelta(seconds=5)
    )
    assert (await me(client, login.headers)).status_code == 200
    assert 0 < await clients.redis.pttl(entry_key(login)) <= 5000


async def test_a_refill_racing_a_revoke_does_not_resurrect_the_key(client, settings, clients):
    login = await factories.api_key(settings, permissions=["assets:write"])
    redis, generation_key = clients.redis, api_keys.api_key_generation_key(login.api_key_id)
    # A refill misses the cache (reading the key's generation in the same round trip) and finds the key
    # valid in MongoDB; before it writes the entry, a revocation runs from start to end.
    generation = api_keys.as_generation(await redis.get(generation_key))
    entry, _ = await api_keys.load_api_key(login.api_key, generation=generation)
    await api_keys.revoke_api_key(redis, login.api_key_id, context=RequestContext(principal=owner_of(login)))
    await api_keys.cache_api_key(redis, login.api_key, entry)  # the refill's late write lands

    assert await redis.exists(entry_key(login))  # the stale entry is there, but does not count:
    assert (
        api_keys.api_key_from_cache(
            await redis.get(entry_key(login)), await redis.get(generation_key), login.api_key_id
        )
        is None
    )
    response = await me(client, login.headers)
    assert response.status_code == 401 and code(response) == "api_key_revoked"


async def test_a_refill_racing_a_role_change_does_not_cache_the_old_roles(client, settings, clients):
    admin = await factories.login(settings, roles=("admin",))
    login = await factories.api_key(settings, permissions=["oracle:submit"])
    redis = clients.redis
    generation = api_keys.as_generation(await redis.get(api_keys.api_key_generation_key(login.api_key_id)))
    stale, _ = await api_keys.load_api_key(login.api_key, generation=generation)
    admin_principal = Principal(
        user_id=admin.user_id, wallet_address=admin.wallet, roles=frozenset({"admin"})
    )
    await service.change_role(
        redis, settings, login.wallet, "oracle", grant=True, context=RequestContext(principal=admin_principal)
    )
    await api_keys.cache_api_key(redis, login.api_key, stale)
    assert stale.roles == ("user",)
    assert (await me(client, login.headers)).json()["roles"] == ["oracle", "user"]


async def test_suspending_the_owner_stops_their_cached_keys_and_sessions_at_once(client, settings):
    admin = await factories.login(settings, roles=("admin",))
    owner = await factories.login(settings)
    key = await factories.api_key(settings, permissions=["media:write"], wallet=owner.wallet)
    assert (await me(client, key.headers)).status_code == 200  # cached
    assert (await me(client, owner.headers)).status_code == 200

    path = f"/api/auth/users/{owner.wallet}/status"
    suspended = await client.put(path, json={"status": "suspended"}, headers=admin.headers)
    assert suspended.status_code == 200, suspended.text
    assert suspended.json()["status"] == "suspended"
    refused_key = await me(client, key.headers)
    assert refused_key.status_code == 401 and code(refused_key) == "account_inactive"
    refused_session = await me(client, owner.headers)
    assert refused_session.status_code == 401 and code(refused_session) == "session_revoked"

    reactivated = await client.put(path, json={"status": "active"}, headers=admin.headers)
    assert reactivated.status_code == 200 and reactivated.json()["status"] == "active"
    assert (await me(client, key.headers)).status_code == 200  # the key was never revoked
    assert (await me(client, owner.headers)).status_code == 401  # the sessions stay ended

    entries = await AuditLog.find(AuditLog.action == "auth.user.status").sort("timestamp").to_list()
    assert [(e.oldValue, e.newValue, e.entityId) for e in entries] == [
        ({"status": "active"}, {"status": "suspended"}, owner.wallet),
        ({"status": "suspended"}, {"status": "active"}, owner.wallet),
    ]


async def test_only_admins_suspend_and_not_themselves(client, settings):
    admin = await factories.login(settings, roles=("admin",))
    user = await factories.login(settings)
    path = f"/api/auth/users/{admin.wallet}/status"
    forbidden = await client.put(path, json={"status": "suspended"}, headers=user.headers)
    assert forbidden.status_code == 403 and code(forbidden) == "insufficient_role"
    own = await client.put(path, json={"status": "suspended"}, headers=admin.headers)
    assert own.status_code == 409 and code(own) == "cannot_suspend_self"
    bad = await client.put(path, json={"status": "banished"}, headers=admin.headers)
    assert bad.status_code == 400
    assert (await User.find_one(User.walletAddress == admin.wallet)).status == "active"


async def test_last_used_is_written_off_the_request_path_at_most_once_a_minute(client, settings, clients):
    login = await factories.api_key(settings, permissions=["assets:write"])
    collection = User.get_pymongo_collection()

    async def last_used():
        raw = await collection.find_one({"apiKeys.keyId": login.api_key_id}, {"apiKeys": 1})
        value = next(k for k in raw["apiKeys"] if k["keyId"] == login.api_key_id).get("lastUsed")
        return as_utc(value) if value is not None else None

    assert (await me(client, login.headers)).status_code == 200  # a miss: written with the lookup
    assert await last_used() is not None
    # As if that write were two minutes old and its once-a-minute marker had lapsed:
    rewound = utcnow() - timedelta(minutes=2)
    await collection.update_one(
        {"apiKeys.keyId": login.api_key_id}, {"$set": {"apiKeys.$.lastUsed": rewound}}
    )
    await clients.redis.delete(api_keys.api_key_used_key(login.api_key_id))
    async with other_process(settings, clients) as other:  # a cache hit in a process new to this key
        assert (await other.get("/t/me", headers=login.headers)).status_code == 200
        for _ in range(200):  # written by a background task, after the response
            if (await last_used()) > rewound + timedelta(minutes=1):
                break
            await asyncio.sleep(0.01)
        written = await last_used()
        assert written > rewound + timedelta(minutes=1)
        # within the minute nobody writes it again, whichever process asks
        assert await api_keys.record_api_key_use(clients.redis, login.user_id, login.api_key_id) is False
        assert (await other.get("/t/me", headers=login.headers)).status_code == 200
        assert (await me(client, login.headers)).status_code == 200
        await asyncio.sleep(0.05)
        assert await last_used() == written
