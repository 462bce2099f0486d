"""One connection's messages (app/lib/stream.py) on the real channels backend: a slow connection holds
at most its backlog, drops its oldest and is told how many; a channel is read from its subscription on;
a resumed connection sends each event once, whether it came through the log or live."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

from litestar.channels import ChannelsPlugin

from app.lib import eventlog, stream
from app.lib.channels import FELL_BEHIND, CountingSubscriber, StreamBackend
from app.lib.events import event_id_key


async def _next(messages, skip=("heartbeat",)):
    while True:
        message = await asyncio.wait_for(anext(messages), 10)
        if message.event not in skip:
            return json.loads(message.text)


async def test_a_full_backlog_drops_the_oldest_and_says_how_many(client, clients, settings):
    from redis.asyncio import Redis

    backend = StreamBackend(redis=Redis.from_url(settings.redis.url), history=100, block_ms=50)
    plugin = ChannelsPlugin(
        backend=backend,
        arbitrary_channels_allowed=True,
        create_ws_route_handlers=False,
        subscriber_max_backlog=10,
        subscriber_backlog_strategy="dropleft",
        subscriber_class=CountingSubscriber,
    )
    slot = stream.Slot(clients.redis, "192.0.2.1", settings)
    async with plugin:
        messages = stream.messages(plugin, clients.redis, settings, ["sales"], None, slot)
        assert (await _next(messages))["event"] == "subscribed"
        # old history in the channel is not sent as new: only what is published from now on
        ids = []
        for i in range(30):
            ids.append(
                await eventlog.publish(
                    clients.redis,
                    key=f"slow{i}",
                    event="item_sold",
                    topics=["sales"],
                    payload={"n": i},
                    sent_at=datetime.now(UTC),
                    history=1000,
                )
            )
        await asyncio.sleep(1)  # all 30 reach the subscriber while nothing is read

        dropped = await _next(messages)
        kept = [await _next(messages) for _ in range(10)]
        await messages.aclose()

    assert dropped["event"] == "events_dropped" and dropped["id"] is None
    assert dropped["payload"]["count"] == 20
    assert [m["id"] for m in kept] == ids[20:]
    assert sorted(kept, key=lambda m: event_id_key(m["id"])) == kept


async def test_a_channel_is_read_from_the_moment_it_is_subscribed(client, clients, settings):
    from redis.asyncio import Redis

    before = await eventlog.publish(
        clients.redis,
        key="before",
        event="item_listed",
        topics=["listings"],
        payload={},
        sent_at=datetime.now(UTC),
        history=100,
    )
    backend = StreamBackend(redis=Redis.from_url(settings.redis.url), history=100, block_ms=50)
    plugin = ChannelsPlugin(
        backend=backend,
        arbitrary_channels_allowed=True,
        create_ws_route_handlers=False,
        subscriber_class=CountingSubscriber,
    )
    slot = stream.Slot(clients.redis, "192.0.2.2", settings)
    async with plugin:
        messages = stream.messages(plugin, clients.redis, settings, ["listings"], None, slot)
        assert (await _next(messages))["event"] == "subscribed"
        after = await eventlog.publish(
            clients.redis,
            key="after",
            event="item_listed",
            topics=["listings"],
            payload={},
            sent_at=datetime.now(UTC),
            history=100,
        )
        first = await _next(messages)
        await messages.aclose()

    assert before != after
    assert first["id"] == after


async def test_an_event_both_replayed_and_received_live_is_sent_once(client, clients, settings):
    from redis.asyncio import Redis

    async def publish(key: str) -> str:
        return await eventlog.publish(
            clients.redis,
            key=key,
            event="item_sold",
            topics=["sales", "asset:5"],
            payload={},
            sent_at=datetime.now(UTC),
            history=100,
        )

    seen = await publish("seen")
    backend = StreamBackend(redis=Redis.from_url(settings.redis.url), history=100, block_ms=50)
    plugin = ChannelsPlugin(
        backend=backend,
        arbitrary_channels_allowed=True,
        create_ws_route_handlers=False,
        subscriber_class=CountingSubscriber,
    )
    slot = stream.Slot(clients.redis, "192.0.2.3", settings)
    async with plugin:
        messages = stream.messages(plugin, clients.redis, settings, ["sales", "asset:5"], seen, slot)
        assert (await _next(messages))["event"] == "subscribed"
        both = await publish("both")  # live in both topics' channels, and in the log the replay reads
        await asyncio.sleep(0.5)
        replayed = await _next(messages)
        later = await publish("later")
        live = await _next(messages)
        await messages.aclose()

    assert replayed["id"] == both and live["id"] == later


async def test_a_process_that_fell_behind_the_log_says_so_and_goes_on_from_what_is_kept(
    client, clients, settings
):
    from redis.asyncio import Redis

    async def publish(n: int) -> str:
        return await eventlog.publish(
            clients.redis,
            key=f"behind{n}",
            event="item_sold",
            topics=["sales"],
            payload={"n": n},
            sent_at=datetime.now(UTC),
            history=5,
        )

    backend = StreamBackend(redis=Redis.from_url(settings.redis.url), history=5, block_ms=50)
    await backend.subscribe(["sales"])  # reads from here on
    ids = [await publish(n) for n in range(8)]  # nobody read: the first three are trimmed away
    events = backend.stream_events()
    got = [await asyncio.wait_for(anext(events), 5) for _ in range(6)]
    await events.aclose()
    await backend.on_shutdown()

    assert got[0] == ("sales", FELL_BEHIND)
    assert [json.loads(body)["id"] for _, body in got[1:]] == ids[3:]


async def test_a_process_nobody_listened_to_starts_again_from_the_present(client, clients, settings):
    from redis.asyncio import Redis

    async def publish(n: int) -> str:
        return await eventlog.publish(
            clients.redis,
            key=f"idle{n}",
            event="item_listed",
            topics=["listings"],
            payload={"n": n},
            sent_at=datetime.now(UTC),
            history=100,
        )

    backend = StreamBackend(redis=Redis.from_url(settings.redis.url), history=100, block_ms=50)
    await backend.subscribe(["listings"])
    await backend.unsubscribe(["listings"])
    await publish(0)  # while nobody listens
    await backend.subscribe(["listings"])
    later = await publish(1)
    events = backend.stream_events()
    channel, body = await asyncio.wait_for(anext(events), 5)
    await events.aclose()
    await backend.on_shutdown()

    assert channel == "listings" and json.loads(body)["id"] == later
