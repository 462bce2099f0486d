"""What the platform's own work announces: media processed, metadata changed, rounds closed, once each."""

from __future__ import annotations

import json

from app.assets.documents import Asset, MediaFile
from app.events.documents import EventRecord
from app.lib import eventlog
from app.lib.timeutil import utcnow
from app.oracle import rounds
from tests import factories
from tests.conftest import drain_jobs
from tests.events.support import open_round_past_its_window, processed_photo


async def _log(clients, topics: list[str]) -> list[dict]:
    return (await eventlog.replay_page(clients.redis, "0-0", topics)).messages


async def test_processed_media_is_announced_once_for_the_state_it_left(client, clients, settings):
    login = await factories.owner_with_asset(settings, 7)
    await processed_photo(client, clients, settings, login)
    # A run that finds nothing to do, and a job run again on the same state, announce nothing more.
    await client.post("/api/assets/7/process-media", headers=login.headers)
    await drain_jobs(clients, settings)

    [processed] = await _log(clients, ["media"])
    assert processed["event"] == "media_processed" and processed["topic"] == "media"
    payload = processed["payload"]
    assert payload["tokenId"] == 7
    assert payload["outcomes"] == {"processed": 1}  # the primary image, its thumbnails made with it
    assert payload["files"]["image"] == 1 and payload["files"]["thumbnail"] == 6
    detail = (await client.get("/api/assets/7")).json()
    assert payload["thumbnailUrl"] == detail["media"]["thumbnailUrl"] and payload["thumbnailUrl"]
    # the stream is public: no file's key (originals and high resolution are not)
    assert "images/originals/" not in json.dumps(processed) and "_highres-" not in json.dumps(processed)
    assert [m["event"] for m in await _log(clients, ["asset:7"])] == ["media_processed"]


async def test_a_metadata_change_is_announced_once_per_version(client, clients, settings):
    owner = await factories.owner_with_asset(settings, 3)
    for version, condition in enumerate(["good", "fair"]):
        body = {"version": version, "metadata": {"condition": condition}}
        response = await client.patch("/api/assets/3/metadata", json=body, headers=owner.headers)
        assert response.status_code == 200, response.text
    stale = {"version": 0, "metadata": {"condition": "mint"}}
    assert (
        await client.patch("/api/assets/3/metadata", json=stale, headers=owner.headers)
    ).status_code == 409

    found = await _log(clients, ["asset:3"])
    assert [(m["event"], m["payload"]["version"]) for m in found] == [
        ("item_metadata_updated", 1),
        ("item_metadata_updated", 2),
    ]
    assert await EventRecord.find_all().count() == 2


async def test_a_closed_round_is_announced_with_its_answer(client, clients, settings):
    await factories.asset(9, asset_type="Art")
    now = utcnow()
    await open_round_past_its_window(settings, now, assetType="Art")

    await rounds.close_due(settings, now)
    await rounds.close_due(settings, now)  # nothing left to close: nothing more to announce

    records = await EventRecord.find_all().to_list()
    assert [(r.id, r.event, r.topics) for r in records] == [
        ("round:9-1", "oracle_round_closed", ["oracle", "asset:9"])
    ]
    assert records[0].payload["roundId"] == "9-1" and records[0].payload["tokenId"] == 9
    assert records[0].payload["status"] == "no_quorum"


async def test_media_back_in_a_state_announced_before_are_announced_again(client, clients, settings):
    from app.media import service as media_service

    await factories.owner_with_asset(settings, 8)
    image = MediaFile(key="images/originals/8/a.jpg", kind="image", status="processed")
    other = MediaFile(key="images/originals/8/b.jpg", kind="image", status="processed")
    for files in ([image], [image, other], [image]):  # A, then B, then A again
        await Asset.get_pymongo_collection().update_one(
            {"tokenId": 8}, {"$set": {"media.files": [f.model_dump() for f in files]}}
        )
        assert await media_service.announce_processed(clients, settings, {"tokenId": 8, "processed": 1})
        assert not await media_service.announce_processed(clients, settings, {"tokenId": 8})  # nothing new

    found = await _log(clients, ["asset:8"])
    assert [m["payload"]["files"] for m in found] == [{"image": 1}, {"image": 2}, {"image": 1}]
