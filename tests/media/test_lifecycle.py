"""Lifecycle (seed 3.2.4): bucket rules at start-up, and the sweeper with a controlled clock."""

from __future__ import annotations

from datetime import timedelta

from app.assets.documents import Asset
from app.lib import bucket as keys
from app.lib.timeutil import utcnow
from app.media import jobs
from tests import factories
from tests.media import support


async def test_bucket_has_the_lifecycle_rules_and_public_policy(client, clients):
    config = await clients.storage.client.get_bucket_lifecycle_configuration(Bucket=clients.storage.bucket)
    rules = {rule["ID"]: rule for rule in config["Rules"]}
    assert rules["temp-uploads-expire"]["Expiration"]["Days"] == 1
    assert rules["temp-uploads-expire"]["Filter"]["Tag"] == {"Key": keys.LIFECYCLE_TAG, "Value": "temp"}
    assert rules["processing-cache-expire"]["Expiration"]["Days"] == 7
    assert rules["user-uploads-abort-multipart"]["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == 1
    if "originals-archive" in rules:  # stores that refuse the transition still get the rest
        assert rules["originals-archive"]["Transitions"][0]["Days"] == 90


async def test_sweeper_deletes_expired_temp_and_cache_objects_only(client, clients, settings):
    login = await factories.owner_with_asset(settings, 7)
    form = await support.presign(client, login, **support.upload_body(fileName="p.jpg", contentLength=100))
    await support.post_form(form, support.photo((40, 40)))
    cache = keys.cache_key(7, "scratch")
    await clients.storage.put_bytes(cache, b"x", "application/octet-stream", lifecycle="cache")
    kept = keys.thumbnail_key(7, "sm", "jpg")
    await clients.storage.put_bytes(kept, b"x", "image/jpeg")
    ctx = {"clients": clients, "settings": settings}

    assert await jobs.sweep(ctx, now=utcnow() + timedelta(hours=23)) == {"temp": 0, "cache": 0}
    assert await jobs.sweep(ctx, now=utcnow() + timedelta(hours=25)) == {"temp": 1, "cache": 0}
    assert form["key"] not in await support.object_keys(clients)
    # The staged record whose upload expired is dropped, so processing does not wait for it.
    assert (await Asset.find_one(Asset.tokenId == 7)).media.files == []
    assert await jobs.sweep(ctx, now=utcnow() + timedelta(days=8)) == {"temp": 0, "cache": 1}
    assert await support.object_keys(clients) == [kept]
