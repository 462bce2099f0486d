"""The fan-out: one delivery per active subscription and event whose topics meet, through the right topic,
with the stream's message as its body, made once however often the events are handed over."""

import json

from bson import ObjectId

from app.lib.events import message
from app.lib.queues import WEBHOOK_QUEUE
from app.webhooks import delivery, repository, service
from app.webhooks.documents import WebhookDelivery, WebhookSubscription
from tests.webhooks.conftest import event, subscribe

URL = "http://93.184.215.14/hooks"


async def stored() -> list[dict]:
    return (
        await WebhookDelivery.get_pymongo_collection().find({}, sort=[("eventId", 1), ("topic", 1)]).to_list()
    )


async def test_each_matching_subscription_gets_one_delivery_through_its_first_matching_topic(
    client, clients, settings, owner
):
    sales = await subscribe(client, owner, URL, ["sales"])
    token = await subscribe(client, owner, URL, ["asset:42", "transfers"])
    disabled = await subscribe(client, owner, URL, ["sales", "media"])
    await repository.disable(ObjectId(disabled["id"]), "gone", disabled["createdAt"])
    events = [
        event(1, ["sales", "asset:42"]),
        event(2, ["transfers"], "item_transferred"),
        event(3, ["oracle"]),
    ]

    assert await service.fan_out(clients, settings, events) == 3
    found = {(str(d["webhookId"]), d["eventId"]): d for d in await stored()}
    assert set(found) == {
        (sales["id"], events[0]["id"]),
        (token["id"], events[0]["id"]),
        (token["id"], events[1]["id"]),
    }
    assert found[(token["id"], events[0]["id"])]["topic"] == "asset:42"  # the subscription's first that met
    assert found[(sales["id"], events[0]["id"])]["topic"] == "sales"
    first = found[(token["id"], events[0]["id"])]
    expected = message(events[0]["id"], "item_sold", "asset:42", events[0]["payload"], events[0]["sentAt"])
    assert json.loads(first["body"]) == expected
    assert expected["sentAt"] == "2024-12-05T06:26:40Z"
    assert (first["status"], first["attempts"], first["eventKey"]) == ("pending", 0, "test:1")
    queued = await clients.redis.zrange(WEBHOOK_QUEUE, 0, -1)
    assert sorted(q.decode() for q in queued) == sorted(delivery.job_id(d["_id"], 1) for d in found.values())


async def test_handing_the_same_events_over_again_creates_and_queues_nothing(
    client, clients, settings, owner
):
    await subscribe(client, owner, URL, ["sales"])
    events = [event(n, ["sales"]) for n in range(5)]
    assert await service.fan_out(clients, settings, events) == 5
    bodies = {d["eventId"]: d["body"] for d in await stored()}

    assert await service.fan_out(clients, settings, [*events, event(5, ["sales"])]) == 1
    assert await service.fan_out(clients, settings, events) == 0
    again = await stored()
    assert len(again) == 6 and all(bodies[d["eventId"]] == d["body"] for d in again if d["eventId"] in bodies)
    assert await clients.redis.zcard(WEBHOOK_QUEUE) == 6


async def test_a_large_batch_meets_many_subscriptions_in_one_pass(client, clients, settings, monkeypatch):
    await WebhookSubscription.get_pymongo_collection().insert_many(
        [
            {"owner": f"0x{n:040x}", "url": URL, "topics": [f"asset:{n}", "sales"], "status": "active"}
            for n in range(300)
        ]
    )
    queries = []
    original = repository.active_for_topics

    async def counted(topics):
        queries.append(len(topics))
        return await original(topics)

    monkeypatch.setattr(repository, "active_for_topics", counted)
    events = [event(n, [f"asset:{n}", "transfers"], "item_transferred") for n in range(400)]
    assert await service.fan_out(clients, settings, events) == 300  # asset:0..299 each meet one subscription
    assert queries == [401]  # one lookup for the batch
    assert await service.fan_out(clients, settings, [event(1000, ["sales"])]) == 300


async def test_no_events_or_no_subscribers_make_no_deliveries(client, clients, settings, owner):
    assert await service.fan_out(clients, settings, []) == 0
    await subscribe(client, owner, URL, ["media"])
    assert await service.fan_out(clients, settings, [event(1, ["sales"])]) == 0
    assert await stored() == []
