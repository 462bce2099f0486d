"""Caps on an asset's media records: a hostile owner cannot grow the asset document without bound."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import bson

from app.assets import media_records
from app.assets.documents import Asset
from app.lib import bucket as keys
from app.lib.timeutil import utcnow
from app.media import jobs, service
from tests import factories
from tests.media import support

URL = "/api/storage/presigned-url"


def _body(token_id: int = 7, n: int = 0, **extra) -> dict:
    return {
        "purpose": "image",
        "tokenId": token_id,
        "fileName": f"junk-{n}.jpg",
        "contentType": "image/jpeg",
        "contentLength": 1000,
        **extra,
    }


async def _document_bytes(token_id: int) -> int:
    return len(bson.encode(await Asset.get_pymongo_collection().find_one({"tokenId": token_id})))


async def test_presigning_in_a_loop_is_refused_at_the_cap_and_the_document_stays_small(client, settings):
    owner = await factories.owner_with_asset(settings, 7)
    statuses = []
    for n in range(service.MAX_STAGED_UPLOADS + 15):
        response = await client.post(URL, json=_body(n=n, label="x" * 64), headers=owner.headers)
        statuses.append(response.status_code)
        if response.status_code != 201:
            error = response.json()["error"]
            assert response.status_code == 409 and error["code"] == "upload_limit_reached", response.text
            assert error["details"] == {
                "maxStaged": service.MAX_STAGED_UPLOADS,
                "maxUploads": service.MAX_UPLOADS,
            }
    assert statuses == [201] * service.MAX_STAGED_UPLOADS + [409] * 15
    multipart = await client.post(
        "/api/storage/multipart-uploads",
        json=_body(n=99, purpose="video", contentType="video/mp4"),
        headers=owner.headers,
    )
    assert multipart.status_code == 409 and multipart.json()["error"]["code"] == "upload_limit_reached"

    asset = await Asset.find_one(Asset.tokenId == 7)
    assert len(asset.media.files) == service.MAX_STAGED_UPLOADS
    assert await _document_bytes(7) < 16 * 1024
    detail = await client.get("/api/assets/7")
    assert detail.status_code == 200 and len(detail.content) < 16 * 1024


async def test_concurrent_presigns_do_not_overshoot_the_cap(client, settings):
    owner = await factories.owner_with_asset(settings, 7)
    for n in range(service.MAX_STAGED_UPLOADS - 3):
        assert (await client.post(URL, json=_body(n=n), headers=owner.headers)).status_code == 201
    responses = await asyncio.gather(
        *(client.post(URL, json=_body(n=100 + n), headers=owner.headers) for n in range(12))
    )
    assert sorted(r.status_code for r in responses) == [201] * 3 + [409] * 9
    asset = await Asset.find_one(Asset.tokenId == 7)
    assert len([f for f in asset.media.files if f.status == "staged"]) == service.MAX_STAGED_UPLOADS


async def test_uploads_in_all_are_capped_rejected_ones_included(client, settings):
    owner = await factories.owner_with_asset(settings, 7)
    now = utcnow()
    # An owner who uploaded junk again and again: every attempt left a rejected record behind.
    junk = [
        {
            "key": f"images/originals/7/7_junk-{n}_x.jpg",
            "status": "rejected",
            "error": "unsupported_format",
            "kind": "image",
            "createdAt": now,
        }
        for n in range(service.MAX_UPLOADS - 2)
    ]
    rendition = {
        "key": "images/processed/7/7_preview_x.jpg",
        "status": "processed",
        "kind": "preview",
        "source": junk[0]["key"],
        "createdAt": now,
    }
    await Asset.get_pymongo_collection().update_one(
        {"tokenId": 7}, {"$set": {"media.files": [*junk, rendition]}}
    )
    responses = await asyncio.gather(
        *(client.post(URL, json=_body(n=n), headers=owner.headers) for n in range(6))
    )
    assert sorted(r.status_code for r in responses) == [201] * 2 + [409] * 4
    asset = await Asset.find_one(Asset.tokenId == 7)
    assert len([f for f in asset.media.files if f.source is None]) == service.MAX_UPLOADS


async def test_expired_staged_records_do_not_hold_the_cap_and_the_sweeper_drops_them(
    client, clients, settings
):
    owner = await factories.owner_with_asset(settings, 7)
    old = utcnow() - keys.TEMP_TTL - timedelta(minutes=1)
    # Presigned a day ago and never uploaded.
    stale = [
        {
            "key": f"user-uploads/{owner.wallet}/temp/7_image_{n}.jpg",
            "status": "staged",
            "kind": "image",
            "createdAt": old,
        }
        for n in range(service.MAX_STAGED_UPLOADS)
    ]
    await Asset.get_pymongo_collection().update_one({"tokenId": 7}, {"$set": {"media.files": stale}})
    fresh = await client.post(URL, json=_body(), headers=owner.headers)
    assert fresh.status_code == 201, fresh.text

    await jobs.sweep({"clients": clients, "settings": settings})
    asset = await Asset.find_one(Asset.tokenId == 7)
    assert [f.key for f in asset.media.files] == [fresh.json()["key"]]


class _RecordingCollection:
    """The assets collection, noting every find_one the service sends through it."""

    def __init__(self, collection) -> None:
        self._collection = collection
        self.finds: list[tuple[dict, dict]] = []

    def __getattr__(self, name):
        return getattr(self._collection, name)

    async def find_one(self, query, *args, **kwargs):
        self.finds.append((query, kwargs))
        return await self._collection.find_one(query, *args, **kwargs)


async def test_completing_a_multipart_upload_finds_it_through_an_index_within_a_time_limit(
    client, settings, monkeypatch
):
    owner = await factories.owner_with_asset(settings, 7)
    for token_id in range(8, 12):  # other assets with staged uploads of their own
        await factories.asset(token_id, owner.wallet)
        assert (await client.post(URL, json=_body(token_id), headers=owner.headers)).status_code == 201
    started = await client.post(
        "/api/storage/multipart-uploads",
        json=_body(purpose="video", contentType="video/mp4", fileName="v.mp4"),
        headers=owner.headers,
    )
    assert started.status_code == 201, started.text
    upload = started.json()
    recording = _RecordingCollection(Asset.get_pymongo_collection())
    monkeypatch.setattr(media_records, "_collection", lambda: recording)

    done = await client.post(
        "/api/storage/multipart-uploads/complete",
        json={"key": upload["key"], "uploadId": upload["uploadId"]},
        headers=owner.headers,
    )
    assert done.status_code == 409 and done.json()["error"]["code"] == "empty_upload"  # no part was sent
    ((query, kwargs),) = [(q, k) for q, k in recording.finds if "media.files.key" in str(q)]
    assert kwargs["max_time_ms"] == settings.mongodb.max_time_ms
    assert query["tokenId"] == 7  # scoped to the token the key names
    plan = await Asset.get_pymongo_collection().find(query).explain()
    winning = plan["queryPlanner"]["winningPlan"]
    assert winning["inputStage"]["stage"] == "IXSCAN", winning
    assert winning["inputStage"]["indexName"] == "mediaFileKey_tokenId"

    # Keys that name no staged upload: 404, through the same index, never a scan.
    for key in (f"user-uploads/{owner.wallet}/temp/avatar_20250101T000000000000Z.jpg", "images/x.jpg"):
        missing = await client.post(
            "/api/storage/multipart-uploads/complete",
            json={"key": key, "uploadId": "u"},
            headers=owner.headers,
        )
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "upload_not_found"
        assert "IXSCAN" in str(
            (await Asset.get_pymongo_collection().find(media_records.staged_upload_query(key)).explain())[
                "queryPlanner"
            ]
        )


async def test_direct_uploads_are_capped_too_and_a_refused_one_leaves_no_object(client, clients, settings):
    owner = await factories.owner_with_asset(settings, 7)
    filler = [
        {
            "key": f"images/originals/7/7_junk-{n}_x.jpg",
            "status": "rejected",
            "kind": "image",
            "createdAt": utcnow(),
        }
        for n in range(service.MAX_UPLOADS - 1)
    ]
    await Asset.get_pymongo_collection().update_one({"tokenId": 7}, {"$set": {"media.files": filler}})
    photo = support.photo((60, 40))
    last = await client.post(
        "/api/assets/7/images", files=[("files", ("last.jpg", photo, "image/jpeg"))], headers=owner.headers
    )
    assert last.status_code == 201, last.text

    over = await client.post(
        "/api/assets/7/images",
        files=[("files", ("over.jpg", photo, "image/jpeg")), ("files", ("more.jpg", photo, "image/jpeg"))],
        headers=owner.headers,
    )
    assert over.status_code == 409 and over.json()["error"]["code"] == "upload_limit_reached", over.text
    asset = await Asset.find_one(Asset.tokenId == 7)
    assert len(asset.media.files) == service.MAX_UPLOADS
    assert [
        k for k in await support.object_keys(clients, "images/originals/") if "over" in k or "more" in k
    ] == []
