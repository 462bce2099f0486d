"""Avatars: staged by a presigned POST, checked and re-encoded by the media.avatar job, then served."""

from __future__ import annotations

import io

import httpx
from PIL import Image

from app.assets.documents import Asset
from app.audit.documents import AuditLog
from app.auth.documents import User
from app.lib import bucket as keys
from app.lib.queues import IMAGE_QUEUE
from app.lib.timeutil import utcnow
from app.media import service
from tests import factories
from tests.conftest import drain_jobs
from tests.media import support

AVATAR_URL = "/api/users/me/avatar"


async def _stage(client, login, data: bytes, content_type: str = "image/jpeg", length: int | None = None):
    """Presign an avatar upload and POST `data` to S3 as a browser would; the staged key."""
    form = await support.presign(
        client,
        login,
        purpose="avatar",
        fileName="me.jpg",
        contentType=content_type,
        contentLength=length or len(data),
    )
    uploaded = await support.post_form(form, data, "me.jpg")
    assert uploaded.status_code in (200, 201, 204), uploaded.text
    return form["key"]


async def _promote(client, clients, settings, login, key: str) -> dict:
    """Ask for the promotion, run the job, and read its status the way an anonymous poller would."""
    queued = await client.post(AVATAR_URL, json={"key": key}, headers=login.headers)
    assert queued.status_code == 202, queued.text
    body = queued.json()
    assert body["statusUrl"] == f"/api/jobs/{body['jobId']}"
    worker = await drain_jobs(clients, settings)
    assert worker.jobs_failed == 0
    status = await client.get(body["statusUrl"])
    assert status.status_code == 200, status.text
    state = status.json()
    assert state["success"] is True
    assert "temp/" not in status.text and key not in status.text  # no private key in a public result
    return {**body, **state}


async def _avatar_url(wallet: str) -> str | None:
    user = await User.find_one(User.walletAddress == wallet)
    return user.profileInfo.avatarUrl


async def _set_avatar_url(wallet: str, url: str) -> None:
    await User.get_pymongo_collection().update_one(
        {"walletAddress": wallet}, {"$set": {"profileInfo.avatarUrl": url}}
    )


async def test_avatar_presign_stages_under_the_callers_temp_folder(client, settings):
    login = await factories.login(settings)
    form = await support.presign(
        client, login, purpose="avatar", fileName="me.png", contentType="image/png", contentLength=2000
    )
    assert set(form) == {"url", "fields", "key", "expiresAt"}
    assert form["key"].startswith(f"user-uploads/{login.wallet}/temp/avatar_") and form["key"].endswith(
        ".png"
    )
    assert keys.is_avatar_temp_key(form["key"]) and keys.is_temp_key(form["key"])
    conditions = support.policy(form)["conditions"]
    assert ["content-length-range", 1, 5 * 1024 * 1024] in conditions
    assert ["eq", "$key", form["key"]] in conditions
    assert "dv-lifecycle" in form["fields"]["tagging"]  # swept after 24 h like every staged upload


async def test_uploaded_avatar_is_promoted_without_gps_and_its_staged_object_is_gone(
    client, clients, settings
):
    login = await factories.login(settings)
    photo = support.photo((1200, 900))
    assert support.has_gps(photo)
    key = await _stage(client, login, photo)

    state = await _promote(client, clients, settings, login, key)
    assert state["jobId"].startswith(f"media.avatar:{login.wallet}:")
    result = state["result"]
    assert result["status"] == "done"
    target = keys.avatar_key(login.wallet)
    assert target == f"user-uploads/{login.wallet}/profile/avatar.jpg"
    assert result["avatarUrl"] == clients.storage.public_url(target)
    assert await _avatar_url(login.wallet) == result["avatarUrl"]

    stored = await clients.storage.read(target)
    assert stored[:3] == b"\xff\xd8\xff" and not support.has_gps(stored)
    with Image.open(io.BytesIO(stored)) as image:
        assert max(image.size) <= 800 and not image.getexif()
    assert await support.object_keys(clients, f"user-uploads/{login.wallet}/temp/") == []

    async with httpx.AsyncClient() as http:  # public, like the thumbnails
        served = await http.get(result["avatarUrl"])
    assert served.status_code == 200 and served.content == stored

    (entry,) = await AuditLog.find(AuditLog.action == "user.avatar.update").to_list()
    assert entry.success and entry.actor == login.wallet and entry.entityId == login.user_id
    assert entry.oldValue == {"avatarUrl": None} and entry.newValue["avatarUrl"] == result["avatarUrl"]

    # Asking again for the same upload hands back the same job; nothing runs twice.
    again = await client.post(AVATAR_URL, json={"key": key}, headers=login.headers)
    assert again.status_code == 202 and again.json()["jobId"] == state["jobId"]


async def test_rerunning_the_avatar_job_writes_and_audits_nothing_new(client, clients, settings):
    login = await factories.login(settings)
    key = keys.avatar_temp_key(login.wallet, keys.timestamp_token(utcnow()), "jpg")
    photo = support.photo((640, 480))
    first_url = None
    for _ in range(2):  # arq runs a job at least once: a run that died before deleting the upload
        await clients.storage.put_bytes(key, photo, "image/jpeg")
        result = await service.promote_avatar(clients.storage, login.wallet, key)
        assert result["status"] == "done"
        first_url = first_url or result["avatarUrl"]
        assert result["avatarUrl"] == first_url
    assert await support.object_keys(clients, f"user-uploads/{login.wallet}/") == [
        keys.avatar_key(login.wallet)
    ]
    assert await AuditLog.find(AuditLog.action == "user.avatar.update").count() == 1
    gone = await service.promote_avatar(clients.storage, login.wallet, key)
    assert gone == {"status": "missing", "reason": "upload_not_found"}


async def test_a_pdf_posted_as_jpeg_is_rejected_deleted_and_never_the_avatar(client, clients, settings):
    login = await factories.login(settings)
    await _set_avatar_url(login.wallet, "https://cdn.example/previous.jpg")
    key = await _stage(client, login, support.PDF, "image/jpeg")

    state = await _promote(client, clients, settings, login, key)
    assert state["result"]["status"] == "rejected"
    assert state["result"]["reason"] == "unsupported_format"
    assert await _avatar_url(login.wallet) == "https://cdn.example/previous.jpg"
    assert await support.object_keys(clients, f"user-uploads/{login.wallet}/") == []
    (entry,) = await AuditLog.find(AuditLog.action == "user.avatar.update").to_list()
    assert entry.success is False and entry.reason == "unsupported_format"


async def test_an_oversize_avatar_that_got_past_the_policy_is_rejected(client, clients, settings):
    login = await factories.login(settings)
    # moto does not enforce the policy's content-length-range: 5 MB + 1 byte gets in.
    oversize = support.photo((64, 64), gps=False).ljust(5 * 1024 * 1024 + 1, b"\x00")
    key = await _stage(client, login, oversize, "image/jpeg", length=10_000)
    assert (await clients.storage.head(key)).size == len(oversize)

    state = await _promote(client, clients, settings, login, key)
    assert state["result"]["status"] == "rejected" and state["result"]["reason"] == "too_large"
    assert await _avatar_url(login.wallet) is None
    assert await support.object_keys(clients, f"user-uploads/{login.wallet}/") == []


async def test_a_bomb_avatar_fails_cleanly_and_the_next_avatar_still_works(client, clients, settings):
    login = await factories.login(settings)
    bomb_key = await _stage(client, login, support.png_bomb(), "image/png")
    state = await _promote(client, clients, settings, login, bomb_key)
    assert state["result"]["status"] == "rejected"
    assert state["result"]["reason"] == "decompression_bomb"
    assert await _avatar_url(login.wallet) is None

    good_key = await _stage(client, login, support.photo((300, 300)))
    state = await _promote(client, clients, settings, login, good_key)
    assert state["result"]["status"] == "done"
    assert await _avatar_url(login.wallet) == state["result"]["avatarUrl"]


async def test_promoting_an_avatar_checks_who_and_what(client, clients, settings):
    owner = await factories.login(settings)
    key = await _stage(client, owner, support.photo((100, 100)))

    stranger = await factories.login(settings)
    refused = await client.post(AVATAR_URL, json={"key": key}, headers=stranger.headers)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "not_owner"
    admin = await factories.login(settings, roles=("admin",))
    assert (await client.post(AVATAR_URL, json={"key": key}, headers=admin.headers)).status_code == 403
    anonymous = await client.post(AVATAR_URL, json={"key": key})
    assert anonymous.status_code == 401

    for bad, code in (
        (keys.avatar_key(owner.wallet), "invalid_upload_key"),
        ("images/originals/7/7_primary_20250101T000000000000Z.jpg", "invalid_upload_key"),
        (f"user-uploads/{owner.wallet}/temp/7_image_20250101T000000000000Z.jpg", "not_an_avatar_upload"),
        (f"user-uploads/{owner.wallet}/temp/avatar_x/../../profile/avatar.jpg", "not_an_avatar_upload"),
    ):
        response = await client.post(AVATAR_URL, json={"key": bad}, headers=owner.headers)
        assert response.status_code == 400 and response.json()["error"]["code"] == code, bad
    not_uploaded = keys.avatar_temp_key(owner.wallet, "20250101T000000000000Z", "jpg")
    missing = await client.post(AVATAR_URL, json={"key": not_uploaded}, headers=owner.headers)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "upload_not_found"
    assert (await client.post(AVATAR_URL, json={}, headers=owner.headers)).status_code == 400
    # Nothing was queued by any of the refusals.
    assert (await drain_jobs(clients, settings)).jobs_complete == 0
    assert key in await support.object_keys(clients)


async def test_a_wallet_gets_429_past_its_avatar_jobs_in_flight_until_one_is_done(client, clients, settings):
    login = await factories.login(settings)
    cap = service.AVATAR_JOBS_PER_WALLET
    staged = [await _stage(client, login, support.photo((64, 64), gps=False)) for _ in range(cap + 2)]

    queued = [await client.post(AVATAR_URL, json={"key": key}, headers=login.headers) for key in staged[:cap]]
    assert [response.status_code for response in queued] == [202] * cap
    waiting = await client.get(queued[0].json()["statusUrl"])  # found on the image queue
    assert waiting.status_code == 200 and waiting.json()["status"] == "queued"
    again = await client.post(AVATAR_URL, json={"key": staged[0]}, headers=login.headers)
    assert again.status_code == 202 and again.json()["jobId"] == queued[0].json()["jobId"]  # no new slot
    for key in staged[cap:]:
        refused = await client.post(AVATAR_URL, json={"key": key}, headers=login.headers)
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "too_many_avatar_jobs"
        assert refused.json()["error"]["details"]["limit"] == cap
        assert int(refused.headers["Retry-After"]) > 0
    other = await factories.login(settings)  # the cap is per wallet
    other_key = await _stage(client, other, support.photo((64, 64), gps=False))
    assert (await client.post(AVATAR_URL, json={"key": other_key}, headers=other.headers)).status_code == 202

    drained = await drain_jobs(clients, settings)
    assert drained.jobs_complete == cap + 1 and drained.jobs_failed == 0
    for key in staged[cap:]:  # the finished jobs gave their slots back
        assert (await client.post(AVATAR_URL, json={"key": key}, headers=login.headers)).status_code == 202


async def test_past_the_avatar_jobs_in_flight_for_everyone_a_new_wallet_gets_429_and_assets_still_process(
    client, clients, settings
):
    owner = await factories.owner_with_asset(settings, 7)
    cap = service.AVATAR_JOBS_IN_FLIGHT
    photo = support.photo((64, 64), gps=False)

    async def staged_avatar(login) -> str:  # what the browser's presigned POST leaves behind
        key = keys.avatar_temp_key(login.wallet, keys.timestamp_token(utcnow()), "jpg")
        await clients.storage.put_bytes(key, photo, "image/jpeg")
        return key

    for _ in range(cap):  # a throwaway wallet each, all from one attacker
        login = await factories.login(settings)
        queued = await client.post(
            AVATAR_URL, json={"key": await staged_avatar(login)}, headers=login.headers
        )
        assert queued.status_code == 202, queued.text
    late = await factories.login(settings)
    late_key = await staged_avatar(late)
    refused = await client.post(AVATAR_URL, json={"key": late_key}, headers=late.headers)
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "avatar_queue_full"
    assert refused.json()["error"]["details"]["limit"] == cap
    assert int(refused.headers["Retry-After"]) > 0
    assert await clients.redis.zcard(f"media:avatar:jobs:{late.wallet}") == 0  # no wallet slot spent

    uploaded = await client.post(
        "/api/assets/7/images",
        files=[("files", ("primary.jpg", support.photo((320, 240)), "image/jpeg"))],
        headers=owner.headers,
    )
    assert uploaded.status_code == 201, uploaded.text
    assert await clients.redis.zcard(IMAGE_QUEUE) == cap + 1  # behind `cap` avatars at most
    drained = await drain_jobs(clients, settings)
    assert drained.jobs_complete == cap + 1 and drained.jobs_failed == 0
    asset = await Asset.find_one(Asset.tokenId == 7)
    assert [f.status for f in asset.media.files if f.kind == "image"] == ["processed"]
    again = await client.post(AVATAR_URL, json={"key": late_key}, headers=late.headers)
    assert again.status_code == 202, again.text  # the finished jobs gave their slots back


def test_only_the_re_encoded_avatar_is_public():
    (statement,) = keys.public_read_policy("bucket")["Statement"]
    assert "arn:aws:s3:::bucket/user-uploads/*/profile/avatar.jpg" in statement["Resource"]
    assert not any("temp" in resource for resource in statement["Resource"])
