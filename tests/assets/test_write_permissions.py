"""An API key writes an asset only within its permissions, even on its owner's own assets."""

from litestar.routes import HTTPRoute

from app.assets.documents import Asset
from app.audit.documents import AuditLog
from app.lib.security import OPEN_PREFIXES
from tests import factories

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
PATCH = {"version": 0, "metadata": {"condition": "Forged"}, "customAttributes": {"appraisal": "1000 ETH"}}


async def create_key(client, owner, permissions: list[str]) -> dict[str, str]:
    created = await client.post(
        "/api/auth/api-keys", json={"name": "integration", "permissions": permissions}, headers=owner.headers
    )
    assert created.status_code == 201, created.text
    return {"X-API-Key": created.json()["key"]}


async def unchanged(token_id: int) -> bool:
    doc = await Asset.get_pymongo_collection().find_one({"tokenId": token_id})
    return (
        doc["version"] == 0
        and doc["metadata"]["condition"] is None
        and doc["metadata"]["customAttributes"] == {}
    )


async def test_a_key_without_the_permission_cannot_edit_its_owners_metadata(client, settings):
    owner = await factories.login(settings)
    await factories.asset(1, owner=owner.wallet)
    keys = [
        await create_key(client, owner, []),
        await create_key(client, owner, ["media:write"]),
        (await factories.api_key(settings, permissions=["oracle:submit"], wallet=owner.wallet)).headers,
        (await factories.api_key(settings, permissions=["assets:write"], wallet=owner.wallet)).headers,
    ]
    for headers in keys:
        refused = await client.patch("/api/assets/1/metadata", json=PATCH, headers=headers)
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "insufficient_permission"
    assert await unchanged(1)
    assert await AuditLog.find_one(AuditLog.action == "asset.metadata.update") is None


async def test_the_owner_signed_in_or_with_a_scoped_key_may_edit_metadata(client, settings):
    owner = await factories.login(settings)
    await factories.asset(1, owner=owner.wallet)
    signed_in = await client.patch("/api/assets/1/metadata", json=PATCH, headers=owner.headers)
    assert signed_in.status_code == 200, signed_in.text
    scoped = await create_key(client, owner, ["assets:metadata"])
    with_key = await client.patch(
        "/api/assets/1/metadata", json={"version": 1, "metadata": {"condition": "Good"}}, headers=scoped
    )
    assert with_key.status_code == 200, with_key.text
    assert with_key.json()["metadata"]["condition"] == "Good"


async def test_a_scoped_key_still_edits_only_its_owners_assets(client, settings):
    stranger = await factories.login(settings)
    await factories.asset(1, owner=factories.ALICE)
    key = await create_key(client, stranger, ["assets:metadata"])
    refused = await client.patch("/api/assets/1/metadata", json=PATCH, headers=key)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "not_owner"
    assert await unchanged(1)


async def test_a_key_with_no_permission_is_refused_by_every_write_route(app, client, settings):
    owner = await factories.login(settings)
    await factories.asset(1, owner=owner.wallet)
    key = await create_key(client, owner, [])
    values = {
        "{tokenId:int}": "1",
        "{walletAddress:str}": owner.wallet,
        "{keyId:str}": "k",
        "{role:str}": "user",
    }
    tried = 0
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or route.path.startswith(OPEN_PREFIXES):
            continue
        for handler in route.route_handlers:
            if set(handler.http_methods) <= SAFE_METHODS or handler.opt.get("anonymous"):
                continue
            path = route.path
            for placeholder, value in values.items():
                path = path.replace(placeholder, value)
            for method in set(handler.http_methods) - SAFE_METHODS:
                response = await client.request(method, path, json={}, headers=key)
                assert response.status_code in (401, 403), (method, route.path, response.text)
                tried += 1
    assert tried >= 10
    assert await unchanged(1)
