"""One connection's messages (app/lib/stream.py) on the real channels backend (app/lib/channels.py): a slow
connection holds at most its backlog, drops its oldest and is told how many; a process reads the log from
its first subscription on, says when it fell behind the log, and a resumed connection sends each event
once, whether it came through the replay or live."""

from __future__ import annotations

import asyncio
import json

from litestar.channels import ChannelsPlugin
from redis.asyncio import Redis

from app.lib import eventlog, stream
from app.lib.channels import FELL_BEHIND, CountingSubscriber, StreamBackend
from app.lib.events import event_id_key
from tests.events.support import publish


def _backend(settings, history: int = 100) -> StreamBackend:
    return StreamBackend(redis=Redis.from_url(settings.redis.url), history=history, block_ms=50)


def _plugin(settings, backlog: int | None = None) -> ChannelsPlugin:
    return ChannelsPlugin(
        backend=_backend(settings),
        arbitrary_channels_allowed=True,
        create_ws_route_handlers=False,
        subscriber_max_backlog=backlog,
        subscriber_backlog_strategy="dropleft",
        subscriber_class=CountingSubscriber,
    )


async def _next(messages, skip=("heartbeat",)):
    while True:
        message = await asyncio.wait_for(anext(messages), 10)
        if message.event not in skip:
            return json.loads(message.text)


async def test_a_full_backlog_drops_the_oldest_and_says_how_many(client, clients, settings):
    slot = stream.Slot(clients.redis, "192.0.2.1", settings)
    async with _plugin(settings, backlog=10) as plugin:
        messages = stream.messages(plugin, clients.redis, settings, ["sales"], None, slot)
        assert (await _next(messages))["event"] == "subscribed"
        ids = [await publish(clients.redis, f"slow{i}", ["sales"], n=i) for i in range(30)]
        await asyncio.sleep(1)  # all 30 reach the subscriber while nothing is read

        dropped = await _next(messages)
        kept = [await _next(messages) for _ in range(10)]
        await messages.aclose()

    assert dropped["event"] == "events_dropped" and dropped["id"] is None
    assert dropped["payload"]["count"] == 20
    assert [m["id"] for m in kept] == ids[20:]
    assert sorted(kept, key=lambda m: event_id_key(m["id"])) == kept


async def test_a_connection_is_sent_what_is_published_after_it_subscribed(client, clients, settings):
    before = await publish(clients.redis, "before", ["listings"])
    slot = stream.Slot(clients.redis, "192.0.2.2", settings)
    async with _plugin(settings) as plugin:
        messages = stream.messages(plugin, clients.redis, settings, ["listings"], None, slot)
        assert (await _next(messages))["event"] == "subscribed"
        after = await publish(clients.redis, "after", ["listings"])
        first = await _next(messages)
        await messages.aclose()

    assert before != after
    assert first["id"] == after


async def test_an_event_both_replayed_and_received_live_is_sent_once(client, clients, settings):
    seen = await publish(clients.redis, "seen", ["sales", "asset:5"])
    slot = stream.Slot(clients.redis, "192.0.2.3", settings)
    async with _plugin(settings) as plugin:
        messages = stream.messages(plugin, clients.redis, settings, ["sales", "asset:5"], seen, slot)
        assert (await _next(messages))["event"] == "subscribed"
        both = await publish(clients.redis, "both", ["sales", "asset:5"])  # live in both topics, and replayed
        await asyncio.sleep(0.5)
        replayed = await _next(messages)
        later = await publish(clients.redis, "later", ["sales", "asset:5"])
        live = await _next(messages)
        await messages.aclose()

    assert replayed["id"] == both and live["id"] == later


async def test_a_process_that_fell_behind_the_log_says_so_and_goes_on_from_what_is_kept(
    client, clients, settings
):
    backend = _backend(settings, history=5)
    await backend.subscribe(["sales"])  # reads from here on
    ids = [await publish(clients.redis, f"behind{n}", ["sales"], history=5, n=n) for n in range(8)]
    events = backend.stream_events()  # nobody read: the first three are trimmed away
    got = [await asyncio.wait_for(anext(events), 5) for _ in range(6)]
    await events.aclose()
    await backend.on_shutdown()

    assert got[0] == ("sales", FELL_BEHIND)
    assert [json.loads(body)["id"] for _, body in got[1:]] == ids[3:]


async def test_a_process_nobody_listened_to_starts_again_from_the_present(client, clients, settings):
    backend = _backend(settings)
    await backend.subscribe(["listings"])
    await backend.unsubscribe(["listings"])
    await publish(clients.redis, "idle0", ["listings"])  # while nobody listens
    await backend.subscribe(["listings"])
    later = await publish(clients.redis, "idle1", ["listings"])
    events = backend.stream_events()
    channel, body = await asyncio.wait_for(anext(events), 5)
    await events.aclose()
    await backend.on_shutdown()

    assert channel == "listings" and json.loads(body)["id"] == later


async def test_a_connection_stuck_sending_is_ended_and_gives_its_slot_back(
    client, clients, settings, monkeypatch
):
    monkeypatch.setattr(settings.stream, "heartbeat_s", 0.2)
    monkeypatch.setattr(settings.stream, "send_deadline_s", 0.5)
    slot = stream.Slot(clients.redis, "192.0.2.9", settings)
    await slot.take()

    async def stuck_client(plugin) -> None:
        messages = stream.messages(plugin, clients.redis, settings, ["sales"], None, slot)
        try:
            await anext(messages)  # subscribed
            await asyncio.sleep(30)  # as a send to a client that stopped reading: never asks for more
        finally:
            await messages.aclose()
            await slot.release()

    async with _plugin(settings) as plugin:
        connection = asyncio.create_task(stuck_client(plugin))
        done, _ = await asyncio.wait({connection}, timeout=5)

    assert done and connection.cancelled()
    assert await clients.redis.zcard(stream.SLOTS_PREFIX + "192.0.2.9") == 0


async def test_a_slow_server_is_not_taken_for_a_client_that_stopped_reading(
    client, clients, settings, monkeypatch
):
    monkeypatch.setattr(settings.stream, "heartbeat_s", 0.2)
    monkeypatch.setattr(settings.stream, "send_deadline_s", 0.5)
    since = await publish(clients.redis, "slow-server-0", ["sales"])
    later = await publish(clients.redis, "slow-server-1", ["sales"])
    replay_page = eventlog.replay_page

    async def slow_replay_page(*args, **kwargs):
        await asyncio.sleep(1.5)  # three deadlines of the stream's own work, the client waiting
        return await replay_page(*args, **kwargs)

    monkeypatch.setattr(eventlog, "replay_page", slow_replay_page)
    slot = stream.Slot(clients.redis, "192.0.2.10", settings)
    await slot.take()
    async with _plugin(settings) as plugin:
        messages = stream.messages(plugin, clients.redis, settings, ["sales"], since, slot)
        try:  # this task asks for each message itself: it is the one a stall would cancel
            async with asyncio.timeout(10):
                seen = [json.loads((await anext(messages)).text) for _ in range(2)]
            assert [seen[0]["event"], seen[1]["id"]] == ["subscribed", later]
        finally:
            await messages.aclose()
            await slot.release()
