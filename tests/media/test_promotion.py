"""Promotion of staged uploads: bytes swapped after the check are never kept; hashing is streamed."""

from __future__ import annotations

import hashlib
import os
import tracemalloc

from botocore.exceptions import ClientError

from app.assets.documents import Asset
from app.media import imaging, processing, service
from tests import factories
from tests.media import support

HOSTILE = b"<html><script>fetch('/api/auth/me').then(r => r.text()).then(alert)</script></html>"


async def _staged_pdf(client, settings) -> tuple[dict, object]:
    login = await factories.owner_with_asset(settings, 7)
    form = await support.upload(
        client,
        login,
        support.PDF,
        purpose="document",
        fileName="appraisal.pdf",
        contentType="application/pdf",
    )
    return form, login


def _swap_before_copy(monkeypatch, storage, form: dict, seen: dict) -> None:
    """Have the uploader post the same form again, with other bytes, just before the job copies."""
    real_copy = storage.copy

    async def copy(source, destination, **kwargs):
        seen.update(kwargs, checked=await storage.head(source))
        assert (await support.post_form(form, HOSTILE)).status_code in (200, 201, 204)
        return await real_copy(source, destination, **kwargs)

    monkeypatch.setattr(storage, "copy", copy)


async def _objects_holding(clients, data: bytes) -> list[str]:
    return [key for key in await support.object_keys(clients) if await clients.storage.read(key) == data]


async def test_bytes_swapped_between_the_check_and_the_copy_are_never_promoted(
    client, clients, settings, monkeypatch
):
    form, _ = await _staged_pdf(client, settings)
    seen: dict = {}
    _swap_before_copy(monkeypatch, clients.storage, form, seen)

    result = await service.process_asset_media(clients.storage, 7)

    assert result.get("rejected") == 1 and "promoted" not in result, result
    (entry,) = (await Asset.find_one(Asset.tokenId == 7)).media.files
    assert entry.status == "rejected" and entry.error == "unsupported_format"
    assert await _objects_holding(clients, HOSTILE) == []
    assert not [key for key in await support.object_keys(clients) if key.startswith("documents/")]
    # The copy was pinned to the ETag of the bytes the HEAD measured (the PDF), for stores that honour it.
    assert seen["if_match"] == seen["checked"].etag == f'"{hashlib.md5(support.PDF).hexdigest()}"'


async def test_a_store_that_honours_the_pinned_copy_gets_the_swap_rejected_as_changed(
    client, clients, settings, monkeypatch
):
    form, _ = await _staged_pdf(client, settings)
    s3 = clients.storage.client
    real_copy_object = s3.copy_object

    async def copy_object(**kwargs):
        # moto ignores CopySourceIfMatch; AWS S3 and MinIO answer 412 when the source's ETag moved on.
        assert (await support.post_form(form, HOSTILE)).status_code in (200, 201, 204)
        source = kwargs["CopySource"]
        current = await s3.head_object(Bucket=source["Bucket"], Key=source["Key"])
        if kwargs.get("CopySourceIfMatch") and kwargs["CopySourceIfMatch"] != current["ETag"]:
            raise ClientError({"Error": {"Code": "PreconditionFailed", "Message": "If-Match"}}, "CopyObject")
        return await real_copy_object(**kwargs)

    monkeypatch.setattr(s3, "copy_object", copy_object)
    result = await service.process_asset_media(clients.storage, 7)

    assert result.get("rejected") == 1, result
    (entry,) = (await Asset.find_one(Asset.tokenId == 7)).media.files
    assert entry.status == "rejected" and entry.error == "upload_changed"
    assert await support.object_keys(clients) == []


async def test_a_valid_upload_is_still_promoted_with_the_hash_of_its_bytes(client, clients, settings):
    await _staged_pdf(client, settings)
    result = await service.process_asset_media(clients.storage, 7)
    assert result["promoted"] == 1, result
    (entry,) = (await Asset.find_one(Asset.tokenId == 7)).media.files
    assert entry.status == "stored" and entry.key.startswith("documents/7/certificates/7_appraisal_")
    assert entry.sha256 == hashlib.sha256(support.PDF).hexdigest() and entry.size == len(support.PDF)
    assert await clients.storage.read(entry.key) == support.PDF


async def test_hashing_a_large_object_streams_it(clients):
    size = 48 * 1024 * 1024
    data = os.urandom(size)
    await clients.storage.put_bytes("documents/7/certificates/7_big_x.pdf", data, "application/pdf")
    expected = hashlib.sha256(data).hexdigest()
    del data

    tracemalloc.start()
    try:
        digest = await processing.sha256_of(clients.storage, "documents/7/certificates/7_big_x.pdf", size)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert digest == expected
    assert peak < 8 * 1024 * 1024, peak  # a few 1 MiB chunks in flight, not the 48 MiB object


async def test_staged_json_is_checked_on_the_copy_and_refused_when_broken_or_too_big(
    client, clients, settings
):
    login = await factories.owner_with_asset(settings, 7)
    big = b'{"a": "' + b"x" * imaging.MAX_JSON_BYTES + b'"}'
    for name, data in (("broken", b'{"provenance": [1, 2'), ("big", big), ("fine", b'{"provenance": []}')):
        form = await support.presign(
            client,
            login,
            purpose="document",
            tokenId=7,
            category="metadata",
            fileName=f"{name}.json",
            contentType="application/json",
            contentLength=100,
        )
        assert (await support.post_form(form, data)).status_code in (200, 201, 204)

    result = await service.process_asset_media(clients.storage, 7)

    assert result == {"tokenId": 7, "status": "done", "rejected": 2, "promoted": 1}, result
    files = {f.label: f for f in (await Asset.find_one(Asset.tokenId == 7)).media.files}
    assert (files["broken"].status, files["broken"].error) == ("rejected", "invalid_json")
    assert (files["big"].status, files["big"].error) == ("rejected", "too_large")
    assert files["fine"].status == "stored" and files["fine"].contentType == "application/json"
    assert await support.object_keys(clients) == [files["fine"].key]
