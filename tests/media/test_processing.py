"""The media.process job: renditions without EXIF/GPS, bombs, idempotent and concurrent runs, retries."""

from __future__ import annotations

import asyncio

from arq import Retry
from botocore.exceptions import ClientError

from app.assets.documents import Asset
from app.media import jobs, service
from tests import factories
from tests.conftest import drain_jobs
from tests.media import support


async def _upload_images(client, login, token_id: int, *files: tuple[str, bytes, str]):
    response = await client.post(
        f"/api/assets/{token_id}/images",
        files=[("files", f) for f in files],
        headers=login.headers,
    )
    assert response.status_code == 201, response.text
    return response.json()


async def test_renditions_carry_no_exif_or_gps_and_originals_keep_theirs(client, clients, settings):
    login = await factories.owner_with_asset(settings, 7)
    photo = support.photo()
    assert support.has_gps(photo)
    await _upload_images(client, login, 7, ("primary.jpg", photo, "image/jpeg"))
    await drain_jobs(clients, settings)

    asset = await Asset.find_one(Asset.tokenId == 7)
    kinds = {}
    for entry in asset.media.files:
        kinds.setdefault(entry.kind, []).append(entry)
    assert len(kinds["thumbnail"]) == 6 and len(kinds["preview"]) == 1 and len(kinds["watermarked"]) == 1
    (original,) = kinds["image"]
    for entry in asset.media.files:
        data = await clients.storage.read(entry.key)
        if entry.kind == "image":
            assert support.has_gps(data)  # admin-only original, as uploaded
        else:
            assert not support.has_gps(data), entry.key
            assert entry.source == original.key and len(entry.sha256) == 64
    (highres,) = kinds["highres"]
    assert (highres.width, highres.height) == (1200, 900)


async def test_a_bomb_fails_its_file_and_the_next_image_is_still_processed(client, clients, settings):
    login = await factories.owner_with_asset(settings, 8)
    bomb = support.png_bomb()
    await _upload_images(
        client,
        login,
        8,
        ("bomb.png", bomb, "image/png"),
        ("detail1.jpg", support.photo((800, 600)), "image/jpeg"),
    )
    worker = await drain_jobs(clients, settings)
    assert worker.jobs_failed == 0

    asset = await Asset.find_one(Asset.tokenId == 8)
    images = {f.label: f for f in asset.media.files if f.kind == "image"}
    assert images["bomb"].status == "rejected" and images["bomb"].error == "decompression_bomb"
    assert images["detail1"].status == "processed"
    assert images["bomb"].key not in await support.object_keys(clients)
    # The bomb was the primary image; the thumbnails moved to the next one.
    assert asset.media.imageKeys == [images["detail1"].key]
    thumbs = [f for f in asset.media.files if f.kind == "thumbnail"]
    assert len(thumbs) == 6 and {t.source for t in thumbs} == {images["detail1"].key}


async def test_rerunning_the_job_gives_the_same_keys_and_no_duplicates(client, clients, settings):
    login = await factories.owner_with_asset(settings, 7)
    await _upload_images(
        client,
        login,
        7,
        ("primary.jpg", support.photo(), "image/jpeg"),
        ("angle1.jpg", support.photo((600, 800)), "image/jpeg"),
    )
    await drain_jobs(clients, settings)
    first = await Asset.find_one(Asset.tokenId == 7)
    first_keys = sorted(f.key for f in first.media.files)
    first_objects = await support.object_keys(clients)

    # As after a worker crash: the job runs again on the same input (arq runs jobs at least once).
    await Asset.get_pymongo_collection().update_one(
        {"tokenId": 7}, {"$set": {"media.files.$[f].status": "stored"}}, array_filters=[{"f.kind": "image"}]
    )
    result = await service.process_asset_media(clients.storage, 7)
    assert result["processed"] == 2
    again = await Asset.find_one(Asset.tokenId == 7)
    assert sorted(f.key for f in again.media.files) == first_keys
    assert len(again.media.files) == len(first.media.files) == 2 + 2 * 3 + 6
    assert await support.object_keys(clients) == first_objects
    assert again.media.imageKeys == first.media.imageKeys

    # The same pending inputs map to the same job id, so the API does not queue it twice.
    ids = {
        (await client.post("/api/assets/7/process-media", headers=login.headers)).json()["jobId"]
        for _ in range(3)
    }
    assert len(ids) == 1


async def test_concurrent_runs_for_one_asset_do_not_corrupt_it(client, clients, settings):
    login = await factories.owner_with_asset(settings, 7)
    await _upload_images(
        client,
        login,
        7,
        *[(f"img{i}.jpg", support.photo((500 + i * 10, 400)), "image/jpeg") for i in range(3)],
    )
    ctx = {"clients": clients, "settings": settings, "job_try": 1}
    outcomes = await asyncio.gather(*(jobs.process_media(ctx, 7) for _ in range(3)), return_exceptions=True)
    # One run holds the asset's lock; the others are told to come back later (Retry), not run alongside.
    assert sum(isinstance(o, dict) for o in outcomes) >= 1
    assert all(isinstance(o, dict | Retry) for o in outcomes)
    for outcome in outcomes:
        if isinstance(outcome, Retry):
            await jobs.process_media(ctx, 7)
    asset = await Asset.find_one(Asset.tokenId == 7)
    keys = [f.key for f in asset.media.files]
    assert len(keys) == len(set(keys)) == 3 + 3 * 3 + 6
    assert all(f.status == "processed" for f in asset.media.files)
    await drain_jobs(clients, settings)  # the job queued by the upload finds nothing left to do
    assert len((await Asset.find_one(Asset.tokenId == 7)).media.files) == len(keys)


async def test_transient_s3_errors_are_retried(client, clients, settings, monkeypatch):
    login = await factories.owner_with_asset(settings, 7)
    await _upload_images(client, login, 7, ("primary.jpg", support.photo((300, 200)), "image/jpeg"))
    real_put = clients.storage.put_bytes
    failures = {"left": 1}

    async def flaky_put(*args, **kwargs):
        if failures["left"]:
            failures["left"] -= 1
            raise ClientError({"Error": {"Code": "SlowDown", "Message": "slow down"}}, "PutObject")
        return await real_put(*args, **kwargs)

    monkeypatch.setattr(clients.storage, "put_bytes", flaky_put)
    ctx = {"clients": clients, "settings": settings, "job_try": 1}
    try:
        await jobs.process_media(ctx, 7)
    except Retry as retry:
        assert retry.defer_score is not None
    else:
        raise AssertionError("a throttled S3 call must ask arq to retry")
    result = await jobs.process_media({**ctx, "job_try": 2}, 7)
    assert result["processed"] == 1


async def _process(client, login, token_id: int) -> dict:
    response = await client.post(f"/api/assets/{token_id}/process-media", headers=login.headers)
    assert response.status_code == 202, response.text
    return response.json()


async def _job(client, login, queued: dict) -> dict:
    return (await client.get(queued["statusUrl"], headers=login.headers)).json()


async def test_process_media_called_before_the_upload_runs_again_after_it(client, clients, settings):
    login = await factories.owner_with_asset(settings, 7)
    photo = support.photo((640, 480))
    form = await support.presign(
        client, login, **support.upload_body(fileName="early.jpg", contentLength=len(photo))
    )
    early = await _process(client, login, 7)
    await drain_jobs(clients, settings)
    status = await _job(client, login, early)
    assert status["status"] == "complete" and status["result"]["waiting"] == 1, status

    uploaded = await support.post_form(form, photo, "early.jpg")
    assert uploaded.status_code in (200, 201, 204), uploaded.text
    # Same pending inputs as before, but that job is finished: this call must queue a fresh run.
    late = await _process(client, login, 7)
    assert late["jobId"] != early["jobId"] and late["pending"] == early["pending"] == 1
    assert (await drain_jobs(clients, settings)).jobs_complete == 1
    status = await _job(client, login, late)
    assert status["status"] == "complete" and status["result"]["processed"] == 1, status

    asset = await Asset.find_one(Asset.tokenId == 7)
    (original,) = [f for f in asset.media.files if f.kind == "image"]
    assert original.status == "processed" and original.key.startswith("images/originals/7/7_early_")
    stored = await support.object_keys(clients)
    assert form["key"] not in stored and "images/thumbnails/7/7_thumb_md.jpg" in stored


async def test_process_media_runs_again_after_a_job_that_failed_all_its_tries(
    client, clients, settings, monkeypatch
):
    login = await factories.owner_with_asset(settings, 7)
    await _upload_images(client, login, 7, ("primary.jpg", support.photo((300, 200)), "image/jpeg"))
    real = service.process_asset_media

    async def broken(*args, **kwargs):
        raise RuntimeError("worker bug")

    monkeypatch.setattr(service, "process_asset_media", broken)
    failed = await _process(client, login, 7)  # the upload queued this very job already
    worker = await drain_jobs(clients, settings)
    assert worker.jobs_failed == 1 and worker.jobs_complete == 0
    status = await _job(client, login, failed)
    assert status["status"] == "complete" and status["success"] is False, status

    monkeypatch.setattr(service, "process_asset_media", real)
    again = await _process(client, login, 7)
    assert again["jobId"] != failed["jobId"] and again["pending"] == 1
    assert (await drain_jobs(clients, settings)).jobs_complete == 1
    assert (await _job(client, login, again))["result"]["processed"] == 1
    asset = await Asset.find_one(Asset.tokenId == 7)
    assert [f.status for f in asset.media.files if f.kind == "image"] == ["processed"]


async def test_process_media_returns_the_queued_or_running_job_instead_of_a_second_one(
    client, clients, settings, monkeypatch
):
    login = await factories.owner_with_asset(settings, 7)
    await _upload_images(client, login, 7, ("primary.jpg", support.photo((300, 200)), "image/jpeg"))
    queued = [await _process(client, login, 7) for _ in range(3)]
    assert len({q["jobId"] for q in queued}) == 1  # the upload's own job, still queued
    assert (await _job(client, login, queued[0]))["status"] == "queued"

    started, release = asyncio.Event(), asyncio.Event()
    real = service.process_asset_media

    async def held(*args, **kwargs):
        started.set()
        await release.wait()
        return await real(*args, **kwargs)

    monkeypatch.setattr(service, "process_asset_media", held)
    worker = asyncio.create_task(drain_jobs(clients, settings))
    try:
        await asyncio.wait_for(started.wait(), timeout=10)
        running = await _process(client, login, 7)
        assert running["jobId"] == queued[0]["jobId"]
        assert (await _job(client, login, running))["status"] == "in_progress"
    finally:
        release.set()
        done = await worker
    assert done.jobs_complete == 1  # one run, not two
    assert (await _job(client, login, queued[0]))["result"]["processed"] == 1
