"""The sweeper aborts multipart uploads never completed, which stores ignoring lifecycle rules keep."""

from __future__ import annotations

from datetime import timedelta

import httpx

from app.assets.documents import Asset
from app.lib.timeutil import utcnow
from app.media import jobs
from tests import factories
from tests.media import support


async def open_uploads(clients) -> list[str]:
    return [key async for key, _, _ in clients.storage.multipart_uploads("user-uploads/")]


async def test_a_multipart_upload_never_completed_is_aborted_after_24_hours(client, clients, settings):
    login = await factories.owner_with_asset(settings, 7)
    started = await support.start_multipart(client, login, fileName="big.jpg", contentLength=1024)
    assert started.status_code == 201, started.text
    upload = started.json()
    async with httpx.AsyncClient() as http:
        assert (await http.put(upload["parts"][0]["url"], content=b"part")).status_code == 200
    ctx = {"clients": clients, "settings": settings}

    assert await jobs.sweep(ctx, now=utcnow() + timedelta(hours=23)) == {"temp": 0, "cache": 0}
    assert await open_uploads(clients) == [upload["key"]]

    assert await jobs.sweep(ctx, now=utcnow() + timedelta(hours=25)) == {"temp": 1, "cache": 0}
    assert await open_uploads(clients) == []
    assert (await Asset.find_one(Asset.tokenId == 7)).media.files == []  # its staged record goes too
    completed = await support.complete_multipart(client, login.headers, upload)
    assert completed.status_code == 404 and completed.json()["error"]["code"] == "upload_not_found"
