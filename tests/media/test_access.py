"""Access classes of seed 3.2.3 per role: public renditions, presigned private files, admin originals."""

from __future__ import annotations

import httpx

from app.assets.documents import Asset
from app.assets.media_view import media_view
from tests import factories
from tests.conftest import drain_jobs
from tests.media import support


async def _asset_with_media(client, clients, settings):
    owner = await factories.owner_with_asset(settings, 7)
    images = await client.post(
        "/api/assets/7/images",
        files=[("files", ("primary.jpg", support.photo((640, 480)), "image/jpeg"))],
        headers=owner.headers,
    )
    assert images.status_code == 201
    for category, verification, name in (
        ("certificates", "false", "appraisal.pdf"),
        ("legal", "true", "kyc.pdf"),
    ):
        response = await client.post(
            "/api/assets/7/documents",
            data={"category": category, "verification": verification},
            files=[("files", (name, support.PDF, "application/pdf"))],
            headers=owner.headers,
        )
        assert response.status_code == 201
    await drain_jobs(clients, settings)
    return owner, await Asset.find_one(Asset.tokenId == 7)


async def test_media_view_per_role(client, clients, settings):
    owner, asset = await _asset_with_media(client, clients, settings)
    original = next(f for f in asset.media.files if f.kind == "image")
    admin = await factories.login(settings, roles=("admin",))
    stranger = await factories.login(settings)

    def principal(login):
        from app.lib.security import Principal

        roles = frozenset({"admin"}) if login is admin else frozenset({"user"})
        return Principal(user_id=login.user_id, wallet_address=login.wallet, roles=roles)

    anonymous = await media_view(asset, None, clients.storage, settings)
    assert set(anonymous["thumbnails"]) == {"sm", "md", "lg"}
    assert anonymous["thumbnailUrl"].endswith("images/thumbnails/7/7_thumb_md.jpg")
    (image,) = anonymous["images"]
    assert set(image) == {"label", "width", "height", "previewUrl", "watermarkedUrl"}
    assert "documents" not in anonymous and "uploads" not in anonymous
    assert original.key not in str(anonymous) and "originals" not in str(anonymous)
    assert "X-Amz-Signature" not in str(anonymous)  # public URLs, nothing signed

    user = await media_view(asset, principal(stranger), clients.storage, settings)
    (image,) = user["images"]
    assert "X-Amz-Signature" in image["highResUrl"] and "X-Amz-Expires=300" in image["highResUrl"]
    assert [d["label"] for d in user["documents"]] == ["appraisal"]  # the verification document is hidden
    assert original.key not in str(user) and "uploads" not in user

    own = await media_view(asset, principal(owner), clients.storage, settings)
    assert original.key not in str(own)  # the seed keeps originals admin-only, owners included
    assert [d["label"] for d in own["documents"]] == ["appraisal"] and "uploads" in own

    full = await media_view(asset, principal(admin), clients.storage, settings)
    (image,) = full["images"]
    assert image["originalKey"] == original.key and "X-Amz-Signature" in image["originalUrl"]
    assert sorted((d["label"], d["verification"]) for d in full["documents"]) == [
        ("appraisal", False),
        ("kyc", True),
    ]


async def test_urls_work_for_their_class_and_no_further(client, clients, settings):
    owner, asset = await _asset_with_media(client, clients, settings)
    from app.lib.security import Principal

    viewer = Principal(user_id="u", wallet_address=owner.wallet, roles=frozenset({"user"}))
    view = await media_view(asset, viewer, clients.storage, settings)
    async with httpx.AsyncClient() as http:
        thumb = await http.get(view["thumbnailUrl"])
        assert thumb.status_code == 200 and thumb.content[:3] == b"\xff\xd8\xff"
        high = await http.get(view["images"][0]["highResUrl"])
        assert high.status_code == 200 and not support.has_gps(high.content)
        doc = await http.get(view["documents"][0]["url"])
        assert doc.content.startswith(b"%PDF-")


async def test_asset_detail_never_shows_original_keys_to_anonymous_callers(client, clients, settings):
    _, asset = await _asset_with_media(client, clients, settings)
    original = next(f for f in asset.media.files if f.kind == "image")
    anonymous = await client.get("/api/assets/7")
    assert anonymous.status_code == 200, anonymous.text
    assert original.key not in anonymous.text and "images/originals" not in anonymous.text
    assert anonymous.json()["media"]["thumbnailUrl"]
    admin = await factories.login(settings, roles=("admin",))
    detail = await client.get("/api/assets/7", headers=admin.headers)
    assert original.key in detail.text
