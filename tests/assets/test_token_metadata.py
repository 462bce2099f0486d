"""GET /api/metadata/{tokenId}: an AssetToken's tokenURI, OpenSea's metadata standard made of the public
detail alone, and no view counted."""

from datetime import UTC, datetime

from app.assets import token_metadata, views
from app.assets.documents import AssetMedia, AssetMetadata, MediaFile
from tests import factories
from tests.assets.test_public_views import CERTIFICATE_KEY, DOCUMENTATION_KEY, LEAKS, hostile_asset

CREATED = datetime(1968, 5, 1, tzinfo=UTC)
ORIGINAL = "images/originals/7/7_primary_20250101.jpg"
PREVIEW = "images/processed/7/7_preview_20250101.jpg"
HIGHRES = "images/processed/7/7_highres-0123456789abcdef0123456789abcdef_20250101.jpg"
VERIFICATION_DOCUMENT = "documents/7/verification/7_report_20250101.pdf"


def thumbnail(size: str, ext: str) -> MediaFile:
    content_type = "image/jpeg" if ext == "jpg" else "image/webp"
    key = f"images/thumbnails/7/7_thumb_{size}.{ext}"
    return MediaFile(
        key=key, kind="thumbnail", label=size, status="processed", access="public", contentType=content_type
    )


def processed_media() -> AssetMedia:
    """What processing leaves: the original (admin), its renditions, thumbnails, and documents."""
    renditions = [
        MediaFile(key=PREVIEW, kind="preview", source=ORIGINAL, status="processed", access="public"),
        MediaFile(key=HIGHRES, kind="highres", source=ORIGINAL, status="processed", access="authenticated"),
    ]
    document = MediaFile(
        key=VERIFICATION_DOCUMENT, kind="document", category="certificates", status="stored", access="admin"
    )
    return AssetMedia(
        thumbnailUrl=thumbnail("md", "jpg").key,
        imageKeys=[ORIGINAL],
        files=[
            MediaFile(key=ORIGINAL, kind="image", label="primary", status="processed", access="admin"),
            *renditions,
            *(thumbnail(size, ext) for size in ("sm", "md", "lg") for ext in ("jpg", "webp")),
            document,
        ],
    )


async def test_the_metadata_has_the_opensea_shape(client):
    metadata = AssetMetadata(
        creator="Omega",
        condition="Excellent",
        dimensions="40 mm",
        materials=["Steel", "Sapphire"],
        creationDate=CREATED,
        customAttributes={
            "Movement": "Automatic",
            "Jewels": 17,
            "Diameter": 40.5,
            "Box and papers": True,
            "Services": ["2001", "2015"],
            "Parts": {"dial": "original"},  # an object is no trait
            "Reference": None,
        },
    )
    await factories.asset(
        5, asset_type="Watch", name="Speedmaster", description="Pre-moon.", metadata=metadata
    )
    response = await client.get("/api/metadata/5")
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "max-age=60, public"
    assert '{"trait_type":"Jewels","value":17}' in response.text  # an integer stays one
    assert response.json() == {
        "name": "Speedmaster",
        "description": "Pre-moon.",
        "external_url": "http://localhost:8000/api/assets/5",
        "attributes": [
            {"trait_type": "Asset Type", "value": "Watch"},
            {"trait_type": "Creator", "value": "Omega"},
            {"trait_type": "Condition", "value": "Excellent"},
            {"trait_type": "Dimensions", "value": "40 mm"},
            {"trait_type": "Material", "value": "Steel"},
            {"trait_type": "Material", "value": "Sapphire"},
            {"trait_type": "Creation Date", "value": int(CREATED.timestamp()), "display_type": "date"},
            {"trait_type": "Movement", "value": "Automatic"},
            {"trait_type": "Jewels", "value": 17},
            {"trait_type": "Diameter", "value": 40.5},
            {"trait_type": "Box and papers", "value": "true"},
            {"trait_type": "Services", "value": "2001"},
            {"trait_type": "Services", "value": "2015"},
        ],
    }


async def test_a_bare_asset_has_its_type_and_no_image(client):
    await factories.asset(6)
    for _ in range(2):  # a cache miss, then a hit
        body = (await client.get("/api/metadata/6")).json()
        assert body == {
            "name": "Asset 6",
            "description": "",
            "external_url": "http://localhost:8000/api/assets/6",
            "attributes": [{"trait_type": "Asset Type", "value": "Art"}],
        }


async def test_the_image_is_the_largest_public_thumbnail(client, clients):
    await factories.asset(7, media=processed_media())
    response = await client.get("/api/metadata/7")
    assert response.status_code == 200, response.text
    image = response.json()["image"]
    assert image == clients.storage.public_url("images/thumbnails/7/7_thumb_lg.jpg")
    assert image.startswith(("http://", "https://"))
    anonymous = (await client.get("/api/assets/7")).json()["media"]
    assert image == anonymous["thumbnails"]["lg"]["jpeg"]  # what the public detail shows
    for private in (ORIGINAL, HIGHRES, VERIFICATION_DOCUMENT, "X-Amz-Signature"):
        assert private not in response.text, private


async def test_without_thumbnails_the_image_is_the_public_preview(client, clients):
    media = processed_media()
    media.files = [f for f in media.files if f.kind != "thumbnail"]
    await factories.asset(7, media=media)
    image = (await client.get("/api/metadata/7")).json()["image"]
    assert image == clients.storage.public_url(PREVIEW)


async def test_private_fields_never_appear_whoever_asks(client, settings):
    owner, admin = await hostile_asset(client, settings)
    for headers in ({}, owner.headers, admin.headers, {}):
        response = await client.get("/api/metadata/1", headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"name", "description", "external_url", "attributes"}
        assert {"trait_type": "Condition", "value": "Good"} in body["attributes"]
        for leak in (*LEAKS, CERTIFICATE_KEY, DOCUMENTATION_KEY, admin.wallet):
            assert leak not in response.text, leak


async def test_an_unknown_token_is_404(client):
    for token_id in ("999", str(2**63), "-1"):
        response = await client.get(f"/api/metadata/{token_id}")
        assert response.status_code == 404, (token_id, response.text)
        assert response.json()["error"]["code"] == "asset_not_found"
        assert "cache-control" not in response.headers


async def test_reading_the_metadata_counts_no_view(client, clients):
    await factories.asset(1, views=41)
    for _ in range(3):
        assert (await client.get("/api/metadata/1")).status_code == 200
    assert await clients.redis.get(views.pending_keys([1])[0]) is None
    assert (await client.get("/api/assets/1")).json()["stats"]["viewCount"] == 42  # the detail's own view


def test_external_urls_follow_the_configured_token_uri_base(settings):
    chain = settings.chain.model_copy(update={"metadata_base_uri": "https://api.example.com/api/metadata/"})
    assert token_metadata.api_base(settings.model_copy(update={"chain": chain})) == "https://api.example.com"
    assert token_metadata.api_base(settings) == settings.auth.uri
