"""Direct uploads through the API: several files, sniffed bytes (415), size caps (413)."""

from __future__ import annotations

import asyncio
import gc
import time

from app.assets.documents import Asset
from app.media import imaging, uploads
from tests import factories
from tests.media import support


async def _document(client, login, category: str, name: str, data: bytes, content_type: str):
    """POST one file to asset 7's documents in `category`."""
    return await client.post(
        "/api/assets/7/documents",
        data={"category": category},
        files=[("files", (name, data, content_type))],
        headers=login.headers,
    )


async def test_images_are_stored_as_originals_and_queued(client, clients, settings):
    login = await factories.owner_with_asset(settings, 7)
    response = await client.post(
        "/api/assets/7/images",
        files=[
            ("files", ("primary.jpg", support.photo((300, 200)), "image/jpeg")),
            ("files", ("angle1.jpg", support.photo((200, 300)), "image/jpeg")),
        ],
        headers=login.headers,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert [f["label"] for f in body["files"]] == ["primary", "angle1"]
    assert "key" not in str(body["files"])  # originals are admin-only: no keys for the uploader
    assert body["jobId"].startswith("media.process:7:")
    asset = await Asset.find_one(Asset.tokenId == 7)
    assert [k.split("_")[1] for k in asset.media.imageKeys] == ["primary", "angle1"]
    assert all(k.startswith("images/originals/7/7_") for k in asset.media.imageKeys)
    assert await support.object_keys(clients, "images/originals/") == sorted(asset.media.imageKeys)


async def test_bytes_that_do_not_match_the_claimed_type_are_415(client, clients, settings):
    login = await factories.owner_with_asset(settings, 7)
    png_as_jpeg = support.photo((50, 50))
    pdf_as_jpeg = await client.post(
        "/api/assets/7/images", files=[("files", ("x.jpg", support.PDF, "image/jpeg"))], headers=login.headers
    )
    assert pdf_as_jpeg.status_code == 415 and pdf_as_jpeg.json()["error"]["code"] == "unsupported_format"
    jpeg_as_png = await client.post(
        "/api/assets/7/images", files=[("files", ("x.png", png_as_jpeg, "image/png"))], headers=login.headers
    )
    assert jpeg_as_png.status_code == 415 and jpeg_as_png.json()["error"]["code"] == "type_mismatch"
    svg = await client.post(
        "/api/assets/7/images",
        files=[("files", ("x.svg", b"<svg/>", "image/svg+xml"))],
        headers=login.headers,
    )
    assert svg.status_code == 415
    # One bad file refuses the whole upload: nothing was stored.
    mixed = await client.post(
        "/api/assets/7/images",
        files=[
            ("files", ("ok.jpg", png_as_jpeg, "image/jpeg")),
            ("files", ("bad.jpg", support.PDF, "image/jpeg")),
        ],
        headers=login.headers,
    )
    assert mixed.status_code == 415
    assert await support.object_keys(clients) == []


async def test_bodies_over_the_cap_are_413(client, settings):
    login = await factories.owner_with_asset(settings, 7)
    too_big_file = b"\xff\xd8\xff\xe0" + b"\x00" * (25 * 1024 * 1024 + 1)
    one = await client.post(
        "/api/assets/7/images",
        files=[("files", ("big.jpg", too_big_file, "image/jpeg"))],
        headers=login.headers,
    )
    assert one.status_code == 413 and one.json()["error"]["code"] == "file_too_large"
    whole = await client.post(
        "/api/assets/7/images",
        files=[("files", (f"{i}.jpg", too_big_file[: 20 * 1024 * 1024], "image/jpeg")) for i in range(4)],
        headers=login.headers,
    )
    assert whole.status_code == 413


async def test_documents_by_category_and_json_is_validated(client, clients, settings):
    login = await factories.owner_with_asset(settings, 7)
    certificate = await _document(
        client, login, "certificates", "authenticity.pdf", support.PDF, "application/pdf"
    )
    assert certificate.status_code == 201, certificate.text
    metadata = await _document(
        client, login, "metadata", "extended_metadata.json", b'{"edition": 1}', "application/json"
    )
    assert metadata.status_code == 201, metadata.text
    broken = await _document(client, login, "metadata", "m.json", b'{"edition": ', "application/json")
    assert broken.status_code == 415 and broken.json()["error"]["code"] == "invalid_json"
    bad_category = await _document(client, login, "secrets", "a.pdf", support.PDF, "application/pdf")
    assert bad_category.status_code == 400
    stored = await support.object_keys(clients, "documents/")
    assert [k.rsplit("_", 1)[0] for k in stored] == [
        "documents/7/certificates/7_authenticity",
        "documents/7/metadata/7_extended-metadata",
    ]


# A health answer slower than this means the event loop was held: one check of a near-cap document
# holds the GIL for about 0.2 s (regex, translate, json.loads), so a check in a thread of the API
# shows as that; in a process of its own the health answers stay under 50 ms.
HEALTH_MAX_S = 0.1


def _near_cap_json() -> bytes:
    """Valid JSON just under the cap that the check works hard on: brackets enough to be scanned for depth,
    and a long string of escaped quotes."""
    head, tail = b"[" + b"[]," * 300 + b'"', b'"]'
    return head + b'\\"' * ((imaging.MAX_JSON_BYTES - len(head) - len(tail)) // 2) + tail


async def test_a_hostile_json_document_is_refused_while_health_keeps_answering(client, settings):
    login = await factories.owner_with_asset(settings, 7)
    heavy = _near_cap_json()
    assert len(heavy) <= imaging.MAX_JSON_BYTES and imaging.is_json(heavy)
    hostile = b"[" * 300 + b'"' + b'\\"' * (512 * 1024)  # 1 MB: once minutes of regex on the event loop
    documents = [(f"m{n}.json", heavy) for n in range(5)] + [("metadata.json", hostile)]
    upload = asyncio.create_task(
        client.post(
            "/api/assets/7/documents",
            data={"category": "metadata"},
            files=[("files", (name, body, "application/json")) for name, body in documents],
            headers=login.headers,
        )
    )
    waits = []
    gc.disable()  # a full collection of this process's heap pauses it for 0.2 s or more on its own
    try:
        while not upload.done():
            asked = time.monotonic()
            health = await client.get("/api/system/health")
            assert health.status_code == 200
            waits.append(time.monotonic() - asked)
        refused = await upload
    finally:
        gc.enable()

    assert refused.status_code == 415 and refused.json()["error"]["code"] == "json_too_deep", refused.text
    assert refused.json()["error"]["details"] == {"file": "metadata.json"}  # the five before it passed
    assert len(waits) >= 20, waits  # answered all along the six checks
    assert max(waits) < HEALTH_MAX_S, sorted(waits)[-5:]
    too_big = await _document(
        client,
        login,
        "metadata",
        "big.json",
        b"[" + b"0," * imaging.MAX_JSON_BYTES + b"0]",
        "application/json",
    )
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "too_large"


async def test_a_json_check_process_that_died_is_replaced(client, settings):
    login = await factories.owner_with_asset(settings, 7)
    await uploads.check_json_document(b"{}")  # the pool's processes are up
    for process in list(uploads._json_check_pool()._processes.values()):
        process.kill()
        process.join()
    accepted = await _document(client, login, "metadata", "m.json", b'{"edition": 2}', "application/json")
    assert accepted.status_code == 201, accepted.text
    refused = await _document(client, login, "metadata", "m.json", b'{"edition": ', "application/json")
    assert refused.status_code == 415 and refused.json()["error"]["code"] == "invalid_json"


async def test_a_utf16_json_document_hiding_its_depth_is_refused(client, clients, settings):
    login = await factories.owner_with_asset(settings, 7)
    # U+5C41 is the bytes `41 5C` in UTF-16LE: a byte scan reads its closing quote as escaped.
    for depth in (300, 90_000):
        hostile = ('["\u5c41",' + "[" * depth + "]" * depth + "]").encode("utf-16-le")
        refused = await _document(client, login, "metadata", "metadata.json", hostile, "application/json")
        assert refused.status_code == 415, refused.text
        assert refused.json()["error"]["code"] == "json_not_utf8"
    assert await support.object_keys(clients, "documents/") == []


async def test_only_the_owner_or_an_admin_uploads(client, settings):
    await factories.owner_with_asset(settings, 7)
    stranger = await factories.login(settings)
    files = [("files", ("a.jpg", support.photo((40, 40)), "image/jpeg"))]
    refused = await client.post("/api/assets/7/images", files=files, headers=stranger.headers)
    assert refused.status_code == 403
    assert (await client.post("/api/assets/7/images", files=files)).status_code == 401
    assert (await client.post("/api/assets/7/process-media", headers=stranger.headers)).status_code == 403
    admin = await factories.login(settings, roles=("admin",))
    assert (await client.post("/api/assets/7/images", files=files, headers=admin.headers)).status_code == 201
