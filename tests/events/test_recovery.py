"""Announcements survive a failure at any step: what a producer wrote is announced once, later, and
one event that cannot be published blocks no other."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from app.assets import announcing as asset_announcing
from app.assets.documents import Asset
from app.events import service as events_service
from app.events.documents import EventRecord
from app.lib import eventlog
from app.lib.channels import StreamBackend
from app.lib.timeutil import utcnow
from app.oracle import rounds
from tests import factories
from tests.events.support import open_round_past_its_window, processed_photo, publish


def _failing_once(monkeypatch):
    real = events_service.announce
    calls = {"n": 0}

    async def announce(events):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("the outbox is away")
        return await real(events)

    monkeypatch.setattr(events_service, "announce", announce)
    return calls


async def _log(clients, topics):
    return (await eventlog.replay_page(clients.redis, "0-0", topics)).messages


async def test_a_metadata_change_whose_announcement_failed_is_announced_by_the_sweep(
    client, clients, settings, monkeypatch
):
    owner = await factories.owner_with_asset(settings, 3)
    _failing_once(monkeypatch)
    body = {"version": 0, "metadata": {"condition": "good"}}
    response = await client.patch("/api/assets/3/metadata", json=body, headers=owner.headers)
    assert response.status_code == 200, response.text  # the change is made, whatever the outbox did
    assert await EventRecord.find_all().count() == 0
    assert len((await Asset.find_one(Asset.tokenId == 3)).pendingEvents) == 1

    monkeypatch.setattr(asset_announcing, "SWEEP_AFTER", timedelta(0))
    assert await asset_announcing.announce_pending(clients, settings) == 1
    assert await asset_announcing.announce_pending(clients, settings) == 0

    assert [(m["event"], m["payload"]["version"]) for m in await _log(clients, ["asset:3"])] == [
        ("item_metadata_updated", 1)
    ]
    assert (await Asset.find_one(Asset.tokenId == 3)).pendingEvents == []


async def test_a_round_whose_announcement_failed_is_announced_by_the_next_pass(
    client, clients, settings, monkeypatch
):
    await factories.asset(9, asset_type="Art")
    now = utcnow()
    await open_round_past_its_window(settings, now)
    _failing_once(monkeypatch)
    with pytest.raises(RuntimeError):  # the pass fails after the close is written
        await rounds.close_due(settings, now)
    closed = await rounds.round_repository.OracleRound.find_one({"key": "9-1"})
    assert closed.status == "no_quorum" and await EventRecord.find_all().count() == 0

    await rounds.close_due(settings, now)

    assert [r.id for r in await EventRecord.find_all().to_list()] == ["round:9-1"]


async def test_processed_media_whose_announcement_failed_are_announced_by_the_job_run_again(
    client, clients, settings, monkeypatch
):
    login = await factories.owner_with_asset(settings, 7)
    calls = _failing_once(monkeypatch)
    await processed_photo(client, clients, settings, login)

    assert calls["n"] == 2  # failed, then the job ran again and announced
    assert [m["event"] for m in await _log(clients, ["media"])] == ["media_processed"]


async def test_an_event_that_cannot_be_published_is_set_aside_and_the_others_go_on(
    client, clients, settings, monkeypatch
):
    await events_service.announce(
        [events_service.event(f"k{n}", "item_sold", ["sales"], {"n": n}) for n in range(3)]
    )
    real = eventlog.publish

    async def publish(redis, **fields):
        if fields["key"] == "k1":
            raise ValueError("cannot be published")
        return await real(redis, **fields)

    monkeypatch.setattr(eventlog, "publish", publish)
    for _ in range(events_service.MAX_PUBLISH_ATTEMPTS):
        await events_service.dispatch(clients, settings)

    assert [m["payload"]["n"] for m in await _log(clients, ["sales"])] == [0, 2]
    poison = await EventRecord.get("k1")
    assert poison.failedAt is not None and poison.publishAttempts == events_service.MAX_PUBLISH_ATTEMPTS
    assert await EventRecord.find(EventRecord.doneAt == None).count() == 0  # noqa: E711 - a query


async def test_redis_refusing_writes_sets_nothing_aside(client, clients, settings, monkeypatch):
    await events_service.announce(
        [events_service.event(f"k{n}", "item_sold", ["sales"], {"n": n}) for n in range(4)]
    )
    real = eventlog.publish
    refusing = {"on": True}

    async def publish(redis, **fields):
        if refusing["on"]:
            raise ResponseError("OOM command not allowed when used memory > 'maxmemory'")
        return await real(redis, **fields)

    monkeypatch.setattr(eventlog, "publish", publish)
    for _ in range(events_service.MAX_PUBLISH_ATTEMPTS + 1):
        with pytest.raises(ResponseError):
            await events_service.dispatch(clients, settings)
    refusing["on"] = False
    await events_service.dispatch(clients, settings)

    assert [m["payload"]["n"] for m in await _log(clients, ["sales"])] == [0, 1, 2, 3]
    assert await EventRecord.find(EventRecord.failedAt != None).count() == 0  # noqa: E711 - a query


async def test_a_process_reading_the_log_goes_on_after_redis_failed(client, clients, settings):
    from redis.asyncio import Redis

    backend = StreamBackend(redis=Redis.from_url(settings.redis.url), history=100, block_ms=50)
    await backend.subscribe(["sales"])
    real, failures = backend._read_after, {"n": 0}

    async def flaky(cursor):
        if failures["n"] < 2:
            failures["n"] += 1
            raise RedisConnectionError("Redis restarted")
        return await real(cursor)

    backend._read_after = flaky
    events = backend.stream_events()
    reading = asyncio.ensure_future(anext(events))
    published = await publish(clients.redis, "after", ["sales"], history=100)
    channel, body = await asyncio.wait_for(reading, 10)
    await events.aclose()
    await backend.on_shutdown()

    assert failures["n"] == 2 and channel == "sales" and json.loads(body)["id"] == published
