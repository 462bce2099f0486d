"""Roles granted and revoked by admins (effective at once), and the API key lifecycle."""

from __future__ import annotations

from datetime import timedelta

import pytest

from app.audit.documents import AuditLog
from app.auth import api_keys, tokens
from app.auth.documents import User
from app.lib.timeutil import utcnow
from tests import factories


def code(response) -> str:
    return response.json()["error"]["code"]


async def me(client, headers):
    return await client.get("/api/auth/me", headers=headers)


async def grant(client, wallet: str, role: str, headers):
    return await client.post(f"/api/auth/users/{wallet}/roles", json={"role": role}, headers=headers)


# --- roles ---------------------------------------------------------------------------------------------


async def test_an_admin_grants_and_revokes_a_role_effective_at_once(client, settings):
    admin = await factories.login(settings, roles=("admin",))
    target = await factories.login(settings)
    granted = await grant(client, target.wallet, "oracle", admin.headers)
    assert granted.status_code == 200, granted.text
    assert sorted(granted.json()["roles"]) == ["oracle", "user"]
    # the target's existing access token (minted with ["user"]) now carries the new role
    assert sorted((await me(client, target.headers)).json()["roles"]) == ["oracle", "user"]

    revoked = await client.delete(
        f"/api/auth/users/{target.wallet.lower()}/roles/oracle", headers=admin.headers
    )
    assert revoked.status_code == 200
    assert revoked.json()["roles"] == ["user"]
    assert (await me(client, target.headers)).json()["roles"] == ["user"]

    entries = (
        await AuditLog.find({"action": {"$in": ["auth.role.grant", "auth.role.revoke"]}})
        .sort("timestamp")
        .to_list()
    )
    assert [(e.action, e.oldValue, e.newValue) for e in entries] == [
        ("auth.role.grant", {"roles": ["user"]}, {"roles": ["user", "oracle"]}),
        ("auth.role.revoke", {"roles": ["user", "oracle"]}, {"roles": ["user"]}),
    ]
    assert entries[0].actor == admin.wallet and entries[0].entityId == target.wallet


async def test_revoking_admin_takes_admin_routes_away_at_once(client, settings):
    admin = await factories.login(settings, roles=("admin",))
    other_admin = await factories.login(settings, roles=("admin", "user"))
    assert (
        await client.get(f"/api/auth/users/{admin.wallet}", headers=other_admin.headers)
    ).status_code == 200
    response = await client.delete(f"/api/auth/users/{other_admin.wallet}/roles/admin", headers=admin.headers)
    assert response.status_code == 200
    refused = await client.get(f"/api/auth/users/{admin.wallet}", headers=other_admin.headers)
    assert refused.status_code == 403 and code(refused) == "insufficient_role"


async def test_only_admins_change_roles(client, settings):
    user = await factories.login(settings)
    response = await grant(client, user.wallet, "admin", user.headers)
    assert response.status_code == 403 and code(response) == "insufficient_role"
    key = await factories.api_key(settings, permissions=["assets:write"], roles=("admin",))
    response = await grant(client, user.wallet, "admin", key.headers)
    assert response.status_code == 403  # API keys never act as admins
    assert await User.find_one(User.walletAddress == user.wallet, User.roles == "admin") is None


async def test_role_changes_refuse_bad_input(client, settings):
    admin = await factories.login(settings, roles=("admin",))
    unknown_role = await grant(client, admin.wallet, "superuser", admin.headers)
    assert unknown_role.status_code == 400
    bad_revoke = await client.delete(f"/api/auth/users/{admin.wallet}/roles/superuser", headers=admin.headers)
    assert bad_revoke.status_code == 400 and code(bad_revoke) == "unknown_role"
    nobody = factories.new_account().address
    missing = await grant(client, nobody, "oracle", admin.headers)
    assert missing.status_code == 404 and code(missing) == "user_not_found"
    not_an_address = await grant(client, "0xnope", "oracle", admin.headers)
    assert not_an_address.status_code == 400
    own = await client.delete(f"/api/auth/users/{admin.wallet}/roles/admin", headers=admin.headers)
    assert own.status_code == 409 and code(own) == "cannot_revoke_own_admin"


# --- API keys ------------------------------------------------------------------------------------------


async def test_api_key_lifecycle_create_list_use_revoke(client, settings):
    owner = await factories.login(settings)
    created = await client.post(
        "/api/auth/api-keys", json={"name": "uploader", "permissions": ["media:write"]}, headers=owner.headers
    )
    assert created.status_code == 201, created.text
    body = created.json()
    key = body["key"]
    assert key.startswith("dv_") and body["permissions"] == ["media:write"] and body["lastUsed"] is None

    # stored hashed: the key itself is nowhere in the user document
    raw = await User.get_pymongo_collection().find_one({"walletAddress": owner.wallet})
    assert key not in str(raw)
    assert raw["apiKeys"][0]["key"] == tokens.hash_api_key(key)

    listed = await client.get("/api/auth/api-keys", headers=owner.headers)
    assert listed.status_code == 200
    assert [k["id"] for k in listed.json()] == [body["id"]]
    assert "key" not in listed.json()[0]

    used = await me(client, {"X-API-Key": key})
    assert used.status_code == 200
    assert used.json()["kind"] == "api_key" and used.json()["apiKeyId"] == body["id"]
    assert used.json()["permissions"] == ["media:write"]
    listed = (await client.get("/api/auth/api-keys", headers=owner.headers)).json()
    assert listed[0]["lastUsed"] is not None

    revoked = await client.delete(f"/api/auth/api-keys/{body['id']}", headers=owner.headers)
    assert revoked.status_code == 204
    refused = await me(client, {"X-API-Key": key})
    assert refused.status_code == 401 and code(refused) == "api_key_revoked"
    again = await client.delete(f"/api/auth/api-keys/{body['id']}", headers=owner.headers)
    assert again.status_code == 409

    actions = [
        e.action
        for e in await AuditLog.find({"action": {"$regex": "^auth\\.api_key"}}).sort("timestamp").to_list()
    ]
    assert actions == ["auth.api_key.create", "auth.api_key.revoke"]


async def test_an_expired_api_key_is_401(client, settings, clients):
    login = await factories.api_key(
        settings, permissions=["assets:write"], expires_at=utcnow() + timedelta(hours=1)
    )
    assert (await me(client, login.headers)).status_code == 200
    await User.get_pymongo_collection().update_one(
        {"apiKeys.keyId": login.api_key_id},
        {"$set": {"apiKeys.$.expiresAt": utcnow() - timedelta(seconds=1)}},
    )
    # That write went behind the service's back, so drop the key's cache entry as the service's own
    # writes do (an expiry reached while cached: test_api_key_cache.py).
    await clients.redis.delete(api_keys.api_key_cache_key(tokens.hash_api_key(login.api_key)))
    response = await me(client, login.headers)
    assert response.status_code == 401 and code(response) == "api_key_expired"


@pytest.mark.parametrize(
    "key",
    ["garbage", "dv_0123456789ab_" + "A" * 43, "dv_" + "x" * 300],
    ids=["not our shape", "unknown", "oversize"],
)
async def test_an_unknown_or_malformed_api_key_is_401(client, key):
    response = await me(client, {"X-API-Key": key})
    assert response.status_code == 401 and code(response) == "invalid_api_key"


async def test_a_user_cannot_mint_a_key_with_permissions_their_roles_lack(client, settings):
    user = await factories.login(settings)
    response = await client.post(
        "/api/auth/api-keys", json={"name": "sneaky", "permissions": ["oracle:submit"]}, headers=user.headers
    )
    assert response.status_code == 403 and code(response) == "permission_not_grantable"
    unknown = await client.post(
        "/api/auth/api-keys", json={"name": "typo", "permissions": ["oracle:submitt"]}, headers=user.headers
    )
    assert unknown.status_code == 400 and code(unknown) == "unknown_permission"
    past = await client.post(
        "/api/auth/api-keys",
        json={"name": "old", "permissions": ["media:write"], "expiresAt": "2020-01-01T00:00:00Z"},
        headers=user.headers,
    )
    assert past.status_code == 400 and code(past) == "invalid_expiry"


async def test_an_admin_creates_an_oracle_key_for_an_operator_wallet(client, settings):
    admin = await factories.login(settings, roles=("admin",))
    operator = await factories.login(settings, roles=("oracle",))
    response = await client.post(
        "/api/auth/api-keys",
        json={"name": "oracle node 1", "permissions": ["oracle:submit"], "walletAddress": operator.wallet},
        headers=admin.headers,
    )
    assert response.status_code == 201, response.text
    principal = (await me(client, {"X-API-Key": response.json()["key"]})).json()
    assert principal["walletAddress"] == operator.wallet and principal["permissions"] == ["oracle:submit"]
    listed = await client.get(
        "/api/auth/api-keys", params={"walletAddress": operator.wallet}, headers=admin.headers
    )
    assert [k["name"] for k in listed.json()] == ["oracle node 1"]
    # and a non-admin can neither create nor list keys of another wallet
    for response in (
        await client.post(
            "/api/auth/api-keys",
            json={"name": "x", "permissions": [], "walletAddress": admin.wallet},
            headers=operator.headers,
        ),
        await client.get(
            "/api/auth/api-keys", params={"walletAddress": admin.wallet}, headers=operator.headers
        ),
    ):
        assert response.status_code == 403


async def test_an_api_key_cannot_manage_api_keys(client, settings):
    login = await factories.api_key(settings, permissions=["assets:write"], roles=("admin",))
    response = await client.post(
        "/api/auth/api-keys", json={"name": "x", "permissions": []}, headers=login.headers
    )
    assert response.status_code == 403 and code(response) == "session_required"
    assert (
        await client.delete(f"/api/auth/api-keys/{login.api_key_id}", headers=login.headers)
    ).status_code == 403


async def test_a_user_cannot_revoke_someone_elses_key(client, settings):
    victim = await factories.api_key(settings, permissions=["media:write"])
    attacker = await factories.login(settings)
    response = await client.delete(f"/api/auth/api-keys/{victim.api_key_id}", headers=attacker.headers)
    assert response.status_code == 404
    assert (await me(client, victim.headers)).status_code == 200
    admin = await factories.login(settings, roles=("admin",))
    assert (
        await client.delete(f"/api/auth/api-keys/{victim.api_key_id}", headers=admin.headers)
    ).status_code == 204
    assert (await me(client, victim.headers)).status_code == 401


async def test_active_keys_per_user_are_capped(client, settings):
    user = await factories.login(settings)
    for _ in range(settings.auth.max_api_keys_per_user):
        await factories.api_key(settings, permissions=["media:write"], wallet=user.wallet)
    response = await client.post(
        "/api/auth/api-keys",
        json={"name": "one too many", "permissions": ["media:write"]},
        headers=user.headers,
    )
    assert response.status_code == 409 and code(response) == "too_many_api_keys"


async def test_an_empty_wallet_address_lists_nobodys_keys_not_the_admins_own(client, settings):
    """`?walletAddress=` names no wallet: it is refused, not read as "the caller's"."""
    admin = await factories.login(settings, roles=("user", "admin"))
    response = await client.get("/api/auth/api-keys?walletAddress=", headers=admin.headers)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_wallet_address"
