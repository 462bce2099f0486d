import asyncio

import pytest

from app.audit.documents import AuditLog
from tests import factories

NEW_ASSET = {
    "tokenId": 42,
    "contractAddress": factories.CONTRACT.lower(),
    "name": "Harbour at Dusk",
    "assetType": "Art",
    "description": "Oil on canvas.",
    "metadata": {
        "assetLocation": "Geneva freeport",
        "creationDate": "1921-05-01T00:00:00Z",
        "materials": ["oil", "canvas"],
        "creator": "A. Moreau",
        "provenance": [{"owner": "Private collection", "period": "1921-1980"}],
        "certificates": [
            {
                "type": "authenticity",
                "issuer": "Art Loss Register",
                "fileKey": "documents/42/certificates/a.pdf",
            }
        ],
    },
    "customAttributes": {"medium": "oil", "framed": True},
}


async def test_admin_onboards_an_asset_and_it_is_audited(client, settings):
    admin = await factories.login(settings, roles=("admin",))
    response = await client.post("/api/assets", json=NEW_ASSET, headers=admin.headers)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["tokenId"] == 42 and body["contractAddress"] == factories.CONTRACT  # checksummed
    assert body["metadata"]["customAttributes"] == {"medium": "oil", "framed": True}
    assert body["metadata"]["provenance"][0]["owner"] == "Private collection"
    assert body["ownership"]["currentOwner"] == admin.wallet
    entry = await AuditLog.find_one(AuditLog.action == "asset.create")
    assert entry.entityId == "42" and entry.actor == admin.wallet
    assert entry.oldValue is None and entry.newValue["name"] == "Harbour at Dusk"
    listed = (await client.get("/api/assets")).json()["items"]
    assert [i["tokenId"] for i in listed] == [42]


async def test_an_assets_write_api_key_may_onboard(client, settings):
    key = await factories.api_key(settings, permissions=["assets:write"])
    response = await client.post("/api/assets", json=NEW_ASSET, headers=key.headers)
    assert response.status_code == 201, response.text


async def test_duplicate_token_id_is_409(client, settings):
    admin = await factories.login(settings, roles=("admin",))
    first, second = await asyncio.gather(
        client.post("/api/assets", json=NEW_ASSET, headers=admin.headers),
        client.post("/api/assets", json=NEW_ASSET, headers=admin.headers),
    )
    assert sorted([first.status_code, second.status_code]) == [201, 409]
    conflict = first if first.status_code == 409 else second
    assert conflict.json()["error"]["code"] == "duplicate_token"


async def test_onboarding_needs_admin_or_permission(client, settings):
    assert (await client.post("/api/assets", json=NEW_ASSET)).status_code == 401
    user = await factories.login(settings)
    assert (await client.post("/api/assets", json=NEW_ASSET, headers=user.headers)).status_code == 403
    other_key = await factories.api_key(settings, permissions=["oracle:submit"])
    assert (await client.post("/api/assets", json=NEW_ASSET, headers=other_key.headers)).status_code == 403


@pytest.mark.parametrize(
    "change",
    [
        {"assetType": "Spaceship"},
        {"tokenId": -1},
        {"contractAddress": "0x123"},
        {"name": ""},
        {"currentPrice": {"value": 1}},
        {"ownership": {"currentOwner": factories.BOB}},
        {"$set": {"name": "x"}},
        {"customAttributes": {"$where": "sleep(1)"}},
        {"customAttributes": {"a.b": 1}},
        {"metadata": {"creationDate": {"$gt": ""}}},
        {"name": {"$ne": None}},
    ],
)
async def test_onboarding_refuses_bad_bodies(client, settings, change):
    admin = await factories.login(settings, roles=("admin",))
    response = await client.post("/api/assets", json={**NEW_ASSET, **change}, headers=admin.headers)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"]


async def test_verify_is_admin_only_and_fills_verification(client, settings):
    await factories.asset(1)
    user = await factories.login(settings)
    assert (await client.post("/api/assets/1/verify", headers=user.headers)).status_code == 403
    admin = await factories.login(settings, roles=("admin",))
    response = await client.post(
        "/api/assets/1/verify", json={"verificationData": {"method": "inspection"}}, headers=admin.headers
    )
    assert response.status_code == 200, response.text
    verification = response.json()["verification"]
    assert verification["isVerified"] is True and verification["verifiedBy"] == admin.wallet
    assert verification["verifiedAt"] and verification["verificationData"] == {"method": "inspection"}
    entry = await AuditLog.find_one(AuditLog.action == "asset.verify")
    assert entry.oldValue["verification"]["isVerified"] is False
    assert entry.newValue["verification"]["isVerified"] is True
    assert (await client.post("/api/assets/9/verify", headers=admin.headers)).status_code == 404


async def _patch(client, headers, body, token=1):
    return await client.patch(f"/api/assets/{token}/metadata", json=body, headers=headers)


async def test_owner_patches_metadata_and_custom_attributes(client, settings):
    owner = await factories.login(settings)
    await factories.asset(1, owner=owner.wallet)
    await _patch(client, owner.headers, {"version": 0, "customAttributes": {"a": 1, "b": 2}})
    response = await _patch(
        client,
        owner.headers,
        {
            "version": 1,
            "metadata": {
                "condition": "Good",
                "materials": ["bronze"],
                "creationDate": "1900-01-01T00:00:00Z",
            },
            "customAttributes": {"a": None, "c": {"nested": [1, 2]}},
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["metadata"]["condition"] == "Good" and body["metadata"]["materials"] == ["bronze"]
    assert body["metadata"]["creationDate"].startswith("1900-01-01")
    assert body["metadata"]["customAttributes"] == {"b": 2, "c": {"nested": [1, 2]}}
    assert body["version"] == 2
    entry = await AuditLog.find(AuditLog.action == "asset.metadata.update").sort("-timestamp").first_or_none()
    assert entry.oldValue["metadata.condition"] is None
    assert entry.newValue["metadata.condition"] == "Good"
    assert entry.oldValue["metadata.customAttributes"] == {"a": 1, "b": 2}


async def test_only_the_owner_or_an_admin_may_patch(client, settings):
    owner = await factories.login(settings)
    await factories.asset(1, owner=owner.wallet)
    stranger = await factories.login(settings)
    refused = await _patch(client, stranger.headers, {"version": 0, "metadata": {"condition": "Poor"}})
    assert refused.status_code == 403
    assert (await _patch(client, {}, {"version": 0, "metadata": {"condition": "Poor"}})).status_code == 401
    admin = await factories.login(settings, roles=("admin",))
    assert (
        await _patch(client, admin.headers, {"version": 0, "metadata": {"condition": "Fair"}})
    ).status_code == 200
    assert (await _patch(client, admin.headers, {"version": 1, "metadata": {}}, token=5)).status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"version": 0, "ownership": {"currentOwner": "0x" + "1" * 40}},
        {"version": 0, "currentPrice": {"value": 1000}},
        {"version": 0, "marketStatus": {"isListed": True}},
        {"version": 0, "verification": {"isVerified": True}},
        {"version": 0, "stats": {"viewCount": 10**6}},
        {"version": 0, "$set": {"ownership.currentOwner": "x"}},
        {"version": 0, "metadata": {"$set": {"condition": "x"}}},
        {"version": 0, "metadata": {"ownership": "x"}},
        {"version": 0, "customAttributes": {"$where": "1"}},
        {"version": 0, "customAttributes": {"x": {"$gt": ""}}},
        {"version": 0, "metadata": {"materials": "not-a-list"}},
        {"metadata": {"condition": "no version"}},
    ],
)
async def test_patch_refuses_everything_but_metadata(client, settings, body):
    owner = await factories.login(settings)
    await factories.asset(1, owner=owner.wallet)
    response = await _patch(client, owner.headers, body)
    assert response.status_code in (400, 422), response.text
    stored = (await client.get("/api/assets/1")).json()
    assert stored["version"] == 0 and stored["ownership"]["currentOwner"] == owner.wallet


async def test_stale_version_is_409(client, settings):
    owner = await factories.login(settings)
    await factories.asset(1, owner=owner.wallet)
    first, second = await asyncio.gather(
        _patch(client, owner.headers, {"version": 0, "metadata": {"condition": "A"}}),
        _patch(client, owner.headers, {"version": 0, "metadata": {"condition": "B"}}),
    )
    assert sorted([first.status_code, second.status_code]) == [200, 409]
    conflict = first if first.status_code == 409 else second
    assert conflict.json()["error"]["code"] == "version_conflict"
    assert conflict.json()["error"]["details"]["currentVersion"] == 1


@pytest.mark.parametrize("version", [2**63, -(2**65)])
async def test_a_version_no_document_can_hold_is_a_conflict_not_a_crash(client, settings, version):
    owner = await factories.login(settings)
    await factories.asset(1, owner=owner.wallet)
    response = await _patch(client, owner.headers, {"version": version, "metadata": {"condition": "A"}})
    assert response.status_code == 409 and response.json()["error"]["code"] == "version_conflict"


async def test_a_json_body_is_read_strictly_as_its_schema_states(client, settings):
    """Lenient decoding would take 0 for false and "7" for 7: a body its schema refuses is refused."""
    admin = await factories.login(settings, roles=("user", "admin"))
    await factories.asset(7)
    response = await client.post("/api/assets/7/verify", json={"isVerified": 0}, headers=admin.headers)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert error["details"][0]["field"] == "isVerified"
    asset = (await client.get("/api/assets/7")).json()
    assert asset["verification"]["isVerified"] is False  # nothing was written


@pytest.mark.parametrize("body", [{}, {"metadata": {}}, {"metadata": None}])
async def test_an_empty_patch_changes_nothing_but_still_needs_the_current_version(client, settings, body):
    """An empty merge patch (RFC 7396) is a no-op: 200 with the asset as it is, nothing written."""
    owner = await factories.login(settings)
    await factories.asset(1, owner=owner.wallet)
    response = await _patch(client, owner.headers, {"version": 0, **body})
    assert response.status_code == 200, response.text
    assert response.json()["version"] == 0
    stale = await _patch(client, owner.headers, {"version": 3, **body})
    assert stale.status_code == 409
    assert stale.json()["error"]["details"]["currentVersion"] == 0


async def test_an_empty_owner_is_refused_not_read_as_the_creator(client, settings):
    admin = await factories.login(settings, roles=("user", "admin"))
    body = {"tokenId": 9, "contractAddress": factories.CONTRACT, "name": "A", "assetType": "Art", "owner": ""}
    response = await client.post("/api/assets", json=body, headers=admin.headers)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_address"


# MongoDB stores 8-byte integers only: a larger one in free-form JSON is a 400 naming where it is, not a
# write that fails with a 500.
TOO_BIG = [
    ({"a": 2**63}, "customAttributes.a"),
    ({"a": -(2**63) - 1}, "customAttributes.a"),
    ({"a": {"b": [1, 2**70]}}, "customAttributes.a.b[1]"),
]


def _refused_as_too_big(response, path):
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_attributes"
    assert error["message"].startswith(f"{path} is an integer outside")


@pytest.mark.parametrize(("attributes", "path"), TOO_BIG)
@pytest.mark.parametrize("where", ["customAttributes", "metadata"])
async def test_onboarding_refuses_an_integer_the_store_cannot_hold(client, settings, attributes, path, where):
    admin = await factories.login(settings, roles=("admin",))
    body = (
        {**NEW_ASSET, "customAttributes": attributes}
        if where == "customAttributes"
        else {**NEW_ASSET, "customAttributes": {}, "metadata": {"customAttributes": attributes}}
    )
    _refused_as_too_big(await client.post("/api/assets", json=body, headers=admin.headers), path)
    assert (await client.get("/api/assets/42")).status_code == 404


@pytest.mark.parametrize(("attributes", "path"), TOO_BIG)
async def test_patch_refuses_an_integer_the_store_cannot_hold(client, settings, attributes, path):
    owner = await factories.login(settings)
    await factories.asset(1, owner=owner.wallet)
    _refused_as_too_big(
        await _patch(client, owner.headers, {"version": 0, "customAttributes": attributes}), path
    )
    assert (await client.get("/api/assets/1")).json()["version"] == 0


@pytest.mark.parametrize(("attributes", "path"), TOO_BIG)
async def test_verify_refuses_an_integer_the_store_cannot_hold(client, settings, attributes, path):
    await factories.asset(1)
    admin = await factories.login(settings, roles=("admin",))
    response = await client.post(
        "/api/assets/1/verify", json={"verificationData": attributes}, headers=admin.headers
    )
    _refused_as_too_big(response, path.replace("customAttributes", "verificationData"))
    assert (await client.get("/api/assets/1")).json()["verification"]["isVerified"] is False


async def test_the_largest_and_smallest_stored_integers_are_kept(client, settings):
    owner = await factories.login(settings)
    await factories.asset(1, owner=owner.wallet)
    edges = {"max": 2**63 - 1, "min": -(2**63), "list": [2**63 - 1]}
    response = await _patch(client, owner.headers, {"version": 0, "customAttributes": edges})
    assert response.status_code == 200, response.text
    assert response.json()["metadata"]["customAttributes"] == edges


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400"])
async def test_a_number_json_cannot_carry_is_refused(client, settings, number):
    owner = await factories.login(settings)
    await factories.asset(1, owner=owner.wallet)
    response = await client.patch(
        "/api/assets/1/metadata",
        content=f'{{"version": 0, "customAttributes": {{"a": {number}}}}}',
        headers={**owner.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert (await client.get("/api/assets/1")).json()["version"] == 0
