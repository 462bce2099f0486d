"""The schemas in the OpenAPI document describe what the handlers send (they are sent as built, not
through the schema): every role's detail and the market stats decode into them and back, unchanged."""

import json

import msgspec

from app.assets import schemas
from app.assets.documents import AssetMedia, AssetMetadata, Certificate, MediaFile, Provenance
from app.market import schemas as market_schemas
from tests import factories

ORIGINAL = "images/originals/7/7_primary_20250101.jpg"


def every_kind_of_media() -> AssetMedia:
    def file(key: str, kind: str, **fields) -> MediaFile:
        return MediaFile(key=key, kind=kind, contentType="image/jpeg", size=10, sha256="ab" * 32, **fields)

    return AssetMedia(
        imageKeys=[ORIGINAL],
        files=[
            file(ORIGINAL, "image", label="primary", status="processed", width=800, height=600),
            file("images/thumbnails/7/md.jpg", "thumbnail", label="md", access="public"),
            file("images/previews/7/p.jpg", "preview", source=ORIGINAL, access="public"),
            file("images/watermarked/7/w.jpg", "watermarked", source=ORIGINAL, access="public"),
            file("images/highres/7/h.jpg", "highres", source=ORIGINAL, access="authenticated"),
            MediaFile(key="documents/7/c.pdf", kind="document", category="certificates", access="admin"),
            MediaFile(key="documents/7/l.pdf", kind="document", category="legal", access="authenticated"),
            MediaFile(key="videos/7/v.mp4", kind="video", access="authenticated"),
            MediaFile(key="models/7/m.glb", kind="model", access="authenticated"),
            MediaFile(key="temp/7/x.jpg", kind="image", status="staged"),
            MediaFile(key="temp/7/y.jpg", kind="image", status="rejected", error="unsupported_format"),
        ],
    )


def assert_described_by(body: bytes, schema: type) -> None:
    decoded = msgspec.json.decode(body, type=schema)  # a field it lacks, or of another type, fails here
    assert json.loads(msgspec.json.encode(decoded)) == json.loads(body)  # and a field it omits, here


async def test_every_roles_detail_is_described_by_the_asset_detail_schema(client, settings):
    owner = await factories.login(settings)
    stranger = await factories.login(settings)
    admin = await factories.login(settings, roles=("admin",))
    metadata = AssetMetadata(
        materials=["oil"],
        provenance=[Provenance(owner="Gallery X", period="1990-2000", documentation="documents/7/p.pdf")],
        certificates=[Certificate(type="authenticity", issuer="ALR", fileKey="documents/7/c.pdf")],
        customAttributes={"series": {"n": 1}},
    )
    await factories.asset(
        7, owner.wallet, price="2", listed_at="3", metadata=metadata, media=every_kind_of_media()
    )
    verified = await client.post(
        "/api/assets/7/verify", json={"verificationData": {"seal": "7731"}}, headers=admin.headers
    )
    assert verified.status_code == 200, verified.text
    assert_described_by(verified.content, schemas.AssetDetail)
    for headers in ({}, stranger.headers, owner.headers, admin.headers, {}):
        response = await client.get("/api/assets/7", headers=headers)
        assert response.status_code == 200, response.text
        assert_described_by(response.content, schemas.AssetDetail)
    admin_view = msgspec.json.decode(
        (await client.get("/api/assets/7", headers=admin.headers)).content, type=schemas.AssetDetail
    )
    assert admin_view.media.uploads and admin_view.media.documents and admin_view.media.images
    assert admin_view.verification.verificationData == {"seal": "7731"}


async def test_the_market_stats_are_described_by_their_schema(client, clients):
    from app.market import service as market_service

    await factories.asset(1, price="1", listed_at="2")
    await factories.asset(2, owner=factories.BOB, asset_type="Wine")
    await market_service.record_transaction(clients.redis, factories.transaction(1, price="2"))
    response = await client.get("/api/market/stats")
    assert response.status_code == 200, response.text
    assert_described_by(response.content, market_schemas.MarketStats)
    openapi = (await client.get("/schema/openapi.json")).json()
    stats = openapi["paths"]["/api/market/stats"]["get"]["responses"]["200"]["content"]["application/json"]
    assert stats["schema"] == {"$ref": "#/components/schemas/MarketStats"}
    detail = openapi["paths"]["/api/assets/{tokenId}"]["get"]["responses"]["200"]["content"]
    assert detail["application/json"]["schema"] == {"$ref": "#/components/schemas/AssetDetail"}
