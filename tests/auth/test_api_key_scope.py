"""What an API key may do: its own permissions, bounded by its owner's current roles unless an admin
granted them."""

from __future__ import annotations

import httpx
import msgspec
from litestar import Litestar, Request, get, post

from app.auth import api_keys, schemas, tokens
from app.auth.documents import User
from app.auth.middleware import authentication_middleware
from app.lib.errors import EXCEPTION_HANDLERS
from app.lib.security import Principal, current_principal, requires_permission, requires_roles
from tests import factories


def code(response) -> str:
    return response.json()["error"]["code"]


async def me(client, headers):
    return await client.get("/api/auth/me", headers=headers)


@get("/t/me", cache=False)
async def other_me(request: Request) -> schemas.PrincipalOut:
    return schemas.PrincipalOut.of(current_principal(request))


@post("/t/oracle", guards=[requires_permission("oracle:submit")], status_code=200)
async def submit() -> dict[str, bool]:
    return {"ok": True}


@get("/t/oracle-role", guards=[requires_roles("oracle", "admin")], cache=False)
async def oracle_role() -> dict[str, bool]:
    return {"ok": True}


def other_process(settings, clients) -> httpx.AsyncClient:
    """Another api process (own middleware state; the same Redis and MongoDB) with guarded routes."""
    app = Litestar(
        route_handlers=[other_me, submit, oracle_role],
        middleware=[authentication_middleware(settings)],
        exception_handlers=EXCEPTION_HANDLERS,
    )
    app.state.clients = clients
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("10.0.0.3", 1)), base_url="http://t"
    )


async def create_key(client, headers, permissions, wallet=None) -> dict:
    body = {"name": "k", "permissions": permissions}
    if wallet is not None:
        body["walletAddress"] = wallet
    response = await client.post("/api/auth/api-keys", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


async def test_a_self_granted_key_loses_a_permission_at_once_when_its_owner_loses_the_role(
    client, settings, clients
):
    admin = await factories.login(settings, roles=("admin",))
    operator = await factories.login(settings, roles=("user", "oracle"))
    created = await create_key(client, operator.headers, ["oracle:submit"])
    assert created["grantedBy"] == operator.wallet and created["grantedByAdmin"] is False
    key = {"X-API-Key": created["key"]}
    async with other_process(settings, clients) as other:
        assert (await me(client, key)).json()["permissions"] == ["oracle:submit"]  # cached from here on
        assert (await other.post("/t/oracle", headers=key)).status_code == 200

        revoked = await client.delete(
            f"/api/auth/users/{operator.wallet}/roles/oracle", headers=admin.headers
        )
        assert revoked.status_code == 200
        principal = (await me(client, key)).json()
        assert principal["permissions"] == [] and principal["roles"] == ["user"]
        refused = await other.post("/t/oracle", headers=key)
        assert refused.status_code == 403 and code(refused) == "insufficient_permission"
        # the key itself is unchanged: it is what the owner may do that bounds it
        listed = (await client.get("/api/auth/api-keys", headers=operator.headers)).json()
        assert listed[0]["permissions"] == ["oracle:submit"] and listed[0]["revokedAt"] is None

        granted = await client.post(
            f"/api/auth/users/{operator.wallet}/roles", json={"role": "oracle"}, headers=admin.headers
        )
        assert granted.status_code == 200
        assert (await me(client, key)).json()["permissions"] == ["oracle:submit"]
        assert (await other.post("/t/oracle", headers=key)).status_code == 200


async def test_an_admins_own_key_shrinks_when_they_stop_being_admin(client, settings):
    admin = await factories.login(settings, roles=("admin",))
    other_admin = await factories.login(settings, roles=("admin",))
    created = await create_key(client, admin.headers, ["assets:write", "oracle:submit"])
    assert created["grantedBy"] == admin.wallet and created["grantedByAdmin"] is False
    key = {"X-API-Key": created["key"]}
    assert (await me(client, key)).json()["permissions"] == ["assets:write", "oracle:submit"]
    revoked = await client.delete(f"/api/auth/users/{admin.wallet}/roles/admin", headers=other_admin.headers)
    assert revoked.status_code == 200
    assert (await me(client, key)).json()["permissions"] == []


async def test_an_admin_granted_key_keeps_permissions_its_owner_roles_lack(client, settings):
    admin = await factories.login(settings, roles=("admin",))
    user = await factories.login(settings)
    created = await create_key(client, admin.headers, ["assets:write", "oracle:submit"], wallet=user.wallet)
    assert created["grantedBy"] == admin.wallet and created["grantedByAdmin"] is True
    key = {"X-API-Key": created["key"]}
    assert (await me(client, key)).json()["permissions"] == ["assets:write", "oracle:submit"]
    # the owner's roles change: the admin's grant stands
    for method, path, body in (
        ("POST", f"/api/auth/users/{user.wallet}/roles", {"role": "oracle"}),
        ("DELETE", f"/api/auth/users/{user.wallet}/roles/oracle", None),
        ("DELETE", f"/api/auth/users/{user.wallet}/roles/user", None),
    ):
        response = await client.request(method, path, json=body, headers=admin.headers)
        assert response.status_code == 200, response.text
        assert (await me(client, key)).json()["permissions"] == ["assets:write", "oracle:submit"]
    listed = (
        await client.get("/api/auth/api-keys", params={"walletAddress": user.wallet}, headers=admin.headers)
    ).json()
    assert listed[0]["grantedBy"] == admin.wallet and listed[0]["grantedByAdmin"] is True


async def test_the_factory_key_is_an_admin_grant_for_a_plain_user(client, settings):
    key = await factories.api_key(settings, permissions=["assets:write"])
    raw = await User.get_pymongo_collection().find_one({"apiKeys.keyId": key.api_key_id}, {"apiKeys": 1})
    assert raw["apiKeys"][0]["grantedByAdmin"] is True and raw["apiKeys"][0]["grantedBy"] is None
    assert (await me(client, key.headers)).json()["permissions"] == ["assets:write"]


async def test_a_key_stored_without_a_grant_is_self_granted(client, settings, clients):
    key = await factories.api_key(settings, permissions=["assets:write", "media:write"])
    assert (await me(client, key.headers)).json()["permissions"] == ["assets:write", "media:write"]
    # a key stored before grants were recorded
    await User.get_pymongo_collection().update_one(
        {"apiKeys.keyId": key.api_key_id},
        {"$unset": {"apiKeys.$.grantedBy": "", "apiKeys.$.grantedByAdmin": ""}},
    )
    await clients.redis.delete(api_keys.api_key_cache_key(tokens.hash_api_key(key.api_key)))
    assert (await me(client, key.headers)).json()["permissions"] == ["media:write"]  # what "user" grants


async def test_a_cache_entry_of_the_older_shape_is_a_miss(client, settings, clients):
    key = await factories.api_key(settings, permissions=["assets:write"])
    generation = api_keys.as_generation(
        await clients.redis.get(api_keys.api_key_generation_key(key.api_key_id))
    )
    entry, _ = await api_keys.load_api_key(key.api_key, generation=generation)
    older = msgspec.to_builtins(entry)
    del older["granted_by_admin"]
    assert api_keys.api_key_from_cache(msgspec.json.encode(older), generation, key.api_key_id) is None
    assert api_keys.api_key_from_cache(msgspec.json.encode(entry), generation, key.api_key_id) is not None


async def test_an_api_key_never_passes_a_role_guard(client, settings, clients):
    admin = await factories.login(settings, roles=("admin",))
    operator = await factories.login(settings, roles=("user", "oracle"))
    keys = [
        {"X-API-Key": (await create_key(client, operator.headers, ["oracle:submit"]))["key"]},
        {"X-API-Key": (await create_key(client, admin.headers, ["oracle:submit"]))["key"]},
        {
            "X-API-Key": (await create_key(client, admin.headers, ["oracle:submit"], wallet=operator.wallet))[
                "key"
            ]
        },
    ]
    async with other_process(settings, clients) as other:
        assert (await other.get("/t/oracle-role", headers=operator.headers)).status_code == 200
        assert (await other.get("/t/oracle-role", headers=admin.headers)).status_code == 200
        for key in keys:
            assert (await other.post("/t/oracle", headers=key)).status_code == 200
            refused = await other.get("/t/oracle-role", headers=key)
            assert refused.status_code == 403 and code(refused) == "insufficient_role"
        admin_only = await client.get(f"/api/auth/users/{operator.wallet}", headers=keys[1])
        assert admin_only.status_code == 403 and code(admin_only) == "insufficient_role"


def test_principal_can_bounds_self_granted_keys_by_roles():
    def key(roles, permissions, admin_granted=False):
        return Principal(
            user_id="u",
            wallet_address="0x0",
            roles=frozenset(roles),
            kind="api_key",
            key_permissions=frozenset(permissions),
            key_granted_by_admin=admin_granted,
        )

    assert key({"oracle"}, {"oracle:submit"}).can("oracle:submit")
    assert not key({"user"}, {"oracle:submit"}).can("oracle:submit")
    assert key({"admin"}, {"assets:write"}).can("assets:write")
    assert not key({"admin"}, {"assets:write"}).can("media:write")  # never beyond the key's own
    assert key({"user"}, {"assets:write"}, admin_granted=True).can("assets:write")
    assert not key({"admin"}, set(), admin_granted=True).can("assets:write")
    assert not key({"admin"}, {"assets:write"}).is_admin
