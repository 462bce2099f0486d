"""Asset views are built from allow-lists per role: internal fields never reach anonymous callers."""

from app.assets.documents import Asset, AssetMetadata, Certificate, Provenance
from tests import factories

DETAIL_KEYS = {
    "id",
    "tokenId",
    "contractAddress",
    "name",
    "assetType",
    "description",
    "metadata",
    "verification",
    "chain",
    "currentPrice",
    "appraisal",
    "marketStatus",
    "ownership",
    "stats",
    "media",
    "version",
    "createdAt",
    "updatedAt",
}
METADATA_KEYS = {
    "assetLocation",
    "acquisitionDate",
    "dimensions",
    "materials",
    "creator",
    "creationDate",
    "condition",
    "provenance",
    "certificates",
    "customAttributes",
}
LIST_ITEM_KEYS = {
    "tokenId",
    "name",
    "assetType",
    "owner",
    "isVerified",
    "thumbnailUrl",
    "currentPrice",
    "marketStatus",
    "viewCount",
    "createdAt",
    "updatedAt",
}
PRICE_KEYS = {"value", "valueWei", "valueUsd", "aiConfidenceScore", "updatedAt"}
LISTING_KEYS = {"isListed", "listingPrice", "listingPriceWei", "listedAt", "listedBy"}
CERTIFICATE_KEY = "documents/1/certificates/authenticity.pdf"
DOCUMENTATION_KEY = "documents/1/legal/provenance.pdf"
# Written straight to MongoDB, as other components (or a later version) might: none may be shown.
SECRETS = {
    "parties": ["0x" + "a" * 40],
    "internalNotes": "reserve 40 ETH",
    "metadata.appraiserNotes": "reserve 41 ETH",
    "currentPrice.modelInternals": "reserve 42 ETH",
    "appraisal": {"predictionId": "p", "price": 1.0, "modelInternals": "reserve 46 ETH"},
    "marketStatus.reservePrice": "reserve 43 ETH",
    "ownership.kycStatus": "reserve 44 ETH",
    "chain": {"contractAddress": "0x" + "c" * 40, "status": "minted", "signerKey": "reserve 47 ETH"},
    "verification.inspectorPhone": "reserve 45 ETH",
}
LEAKS = ("reserve 4", "nameLower", "parties", "verifiedBy", "verificationData", "viewFlushSeq", "seal-7731")


async def hostile_asset(client, settings) -> tuple[factories.Login, factories.Login]:
    owner = await factories.login(settings)
    admin = await factories.login(settings, roles=("admin",))
    metadata = AssetMetadata(
        condition="Good",
        provenance=[Provenance(owner="Gallery X", period="1990-2000", documentation=DOCUMENTATION_KEY)],
        certificates=[Certificate(type="authenticity", issuer="ALR", fileKey=CERTIFICATE_KEY)],
    )
    await factories.asset(1, owner=owner.wallet, price="2", listed_at="3", metadata=metadata)
    verified = await client.post(
        "/api/assets/1/verify",
        json={"verificationData": {"sealNumber": "seal-7731"}},
        headers=admin.headers,
    )
    assert verified.status_code == 200, verified.text
    await Asset.get_pymongo_collection().update_one({"tokenId": 1}, {"$set": SECRETS})
    return owner, admin


def assert_public_detail(body: dict) -> None:
    assert set(body) == DETAIL_KEYS
    assert set(body["metadata"]) == METADATA_KEYS
    assert body["metadata"]["provenance"] == [{"owner": "Gallery X", "period": "1990-2000"}]
    assert body["metadata"]["certificates"] == [{"type": "authenticity", "issuer": "ALR", "date": None}]
    assert set(body["verification"]) == {"isVerified", "verifiedAt"} and body["verification"]["isVerified"]
    assert set(body["currentPrice"]) == PRICE_KEYS and set(body["marketStatus"]) == LISTING_KEYS
    assert set(body["ownership"]) == {"currentOwner", "ownerSince"}
    assert set(body["stats"]) == {"viewCount", "favoriteCount", "offerCount"}
    text = str(body)
    for leak in (*LEAKS, CERTIFICATE_KEY, DOCUMENTATION_KEY):
        assert leak not in text, leak


async def test_an_anonymous_detail_holds_exactly_the_public_fields(client, settings):
    _, admin = await hostile_asset(client, settings)
    for _ in range(2):  # a cache miss, then a hit
        response = await client.get("/api/assets/1")
        assert response.status_code == 200, response.text
        assert_public_detail(response.json())
        assert admin.wallet not in response.text


async def test_signed_in_callers_and_the_owner_get_the_public_fields_too(client, settings):
    owner, _ = await hostile_asset(client, settings)
    stranger = await factories.login(settings)
    for login in (stranger, owner):
        assert_public_detail((await client.get("/api/assets/1", headers=login.headers)).json())
    patched = await client.patch(
        "/api/assets/1/metadata",
        json={"version": 1, "metadata": {"condition": "Fair"}},
        headers=owner.headers,
    )
    assert patched.status_code == 200, patched.text
    assert_public_detail(patched.json())


async def test_an_admin_sees_the_verification_details(client, settings):
    _, admin = await hostile_asset(client, settings)
    await client.get("/api/assets/1")  # the public view is cached now
    body = (await client.get("/api/assets/1", headers=admin.headers)).json()
    assert set(body) == DETAIL_KEYS
    verification = body["verification"]
    assert set(verification) == {"isVerified", "verifiedBy", "verifiedAt", "verificationData"}
    assert verification["verifiedBy"] == admin.wallet
    assert verification["verificationData"] == {"sealNumber": "seal-7731"}
    assert body["metadata"]["provenance"][0]["documentation"] == DOCUMENTATION_KEY
    assert body["metadata"]["certificates"][0]["fileKey"] == CERTIFICATE_KEY
    for leak in ("reserve 4", "nameLower", "parties", "viewFlushSeq"):
        assert leak not in str(body), leak
    assert_public_detail((await client.get("/api/assets/1")).json())  # nothing of it was cached


async def test_list_views_hold_exactly_the_public_fields(client, settings):
    owner, _ = await hostile_asset(client, settings)
    for path in ("/api/assets", f"/api/users/{owner.wallet}/assets", "/api/market/listings"):
        response = await client.get(path)
        assert response.status_code == 200, response.text
        [item] = response.json()["items"]
        assert set(item) == LIST_ITEM_KEYS, path
        assert set(item["currentPrice"]) == PRICE_KEYS and set(item["marketStatus"]) == LISTING_KEYS
        for leak in (*LEAKS, CERTIFICATE_KEY, DOCUMENTATION_KEY):
            assert leak not in response.text, (path, leak)
