"""Deliveries to a real receiver on 127.0.0.1: signed bodies it verifies, retries with backoff and the same
webhook-id, a subscription disabled by 410 or by failures in a row, skipped and timed-out attempts, the
compare-and-set claim and the sweeper."""

import asyncio
import json
from datetime import timedelta

import pytest
from bson import ObjectId
from standardwebhooks.webhooks import Webhook

from app.lib.queues import WEBHOOK_QUEUE
from app.lib.timeutil import utcnow
from app.webhooks import delivery, service
from app.webhooks.documents import WebhookDelivery, WebhookSubscription
from tests.conftest import drain_jobs
from tests.webhooks.conftest import ROUTES, Answer, event, subscribe


async def the_delivery() -> dict:
    found = await WebhookDelivery.get_pymongo_collection().find({}).to_list()
    assert len(found) == 1
    return found[0]


async def hook_state(client, login, webhook_id: str) -> dict:
    return (await client.get(f"{ROUTES}/{webhook_id}", headers=login.headers)).json()


async def test_a_delivery_is_signed_per_standard_webhooks_and_verifies(
    client, clients, local, owner, receiver
):
    hook = await subscribe(client, owner, receiver.url(), ["sales"])
    sent = event(1, ["sales", "asset:42"], tokenId=42, price="2.5")
    assert await service.fan_out(clients, local, [sent]) == 1
    await drain_jobs(clients, local)

    [got] = receiver.received
    assert got.path == "/hooks"
    assert got.headers["content-type"] == "application/json"
    assert got.headers["user-agent"].startswith("DynamicVault-Webhooks/")
    assert got.headers["webhook-id"] == sent["id"]
    verified = Webhook(hook["secret"]).verify(got.body, got.headers)
    assert verified == {
        "id": sent["id"],
        "event": "item_sold",
        "topic": "sales",
        "payload": {"tokenId": 42, "price": "2.5"},
        "sentAt": "2024-12-05T06:26:40Z",
    }
    with pytest.raises(Exception, match="signature"):
        Webhook(hook["secret"]).verify(got.body + b" ", got.headers)  # one byte more: refused

    done = await the_delivery()
    assert (done["status"], done["attempts"], done["lastStatusCode"]) == ("delivered", 1, 200)
    assert bytes(done["body"]) == got.body
    listed = (await client.get(f"{ROUTES}/{hook['id']}/deliveries", headers=owner.headers)).json()["items"]
    assert [(d["status"], d["eventId"], d["topic"], d["attempts"]) for d in listed] == [
        ("delivered", sent["id"], "sales", 1)
    ]
    assert listed[0]["deliveredAt"] and "body" not in listed[0]
    state = await hook_state(client, owner, hook["id"])
    assert state["lastSuccessAt"] and state["lastDeliveryAt"] and state["consecutiveFailures"] == 0


async def test_a_failed_attempt_is_retried_with_backoff_and_the_same_id_and_bytes(
    client, clients, local, owner, receiver
):
    hook = await subscribe(client, owner, receiver.url(), ["sales"])
    receiver.answers += [Answer(500, b"<html>boom</html>"), Answer(503), Answer(200)]
    await service.fan_out(clients, local, [event(7, ["sales"])])
    await drain_jobs(clients, local)

    assert len(receiver.received) == 3
    assert {r.headers["webhook-id"] for r in receiver.received} == {"1733380000000-7"}
    assert len({r.body for r in receiver.received}) == 1
    for got in receiver.received:
        Webhook(hook["secret"]).verify(got.body, got.headers)
    gaps = [b.at - a.at for a, b in zip(receiver.received, receiver.received[1:], strict=False)]
    base = local.webhook.backoff_base_s
    assert gaps[0] >= base * 0.9 and gaps[1] >= base * 4 * 0.9  # 30 s, then 2 min, scaled down

    done = await the_delivery()
    assert (done["status"], done["attempts"], done["lastError"]) == ("delivered", 3, None)
    state = await hook_state(client, owner, hook["id"])
    assert state["consecutiveFailures"] == 0 and state["status"] == "active"


async def test_attempts_end_as_failed_after_the_last_one_with_the_status_alone(
    client, clients, local, owner, receiver, monkeypatch
):
    monkeypatch.setattr(local.webhook, "max_attempts", 2)
    hook = await subscribe(client, owner, receiver.url(), ["sales"])
    receiver.answers += [Answer(500, b'{"internal": "token=SECRET-123"}')] * 3
    await service.fan_out(clients, local, [event(1, ["sales"])])
    await drain_jobs(clients, local)

    assert len(receiver.received) == 2
    done = await the_delivery()
    assert (done["status"], done["attempts"], done["lastStatusCode"]) == ("failed", 2, 500)
    assert done["lastError"] == "HTTP 500"  # never what the receiver answered: it may be anything
    state = await hook_state(client, owner, hook["id"])
    assert (state["consecutiveFailures"], state["lastStatusCode"], state["status"]) == (2, 500, "active")


async def test_410_gone_disables_the_subscription_at_once(client, clients, local, owner, receiver):
    hook = await subscribe(client, owner, receiver.url(), ["sales"])
    receiver.answers.append(Answer(410))
    await service.fan_out(clients, local, [event(1, ["sales"])])
    await drain_jobs(clients, local)

    assert len(receiver.received) == 1
    assert (await the_delivery())["status"] == "failed"
    state = await hook_state(client, owner, hook["id"])
    assert (state["status"], state["disabledReason"]) == ("disabled", "gone") and state["disabledAt"]
    assert await service.fan_out(clients, local, [event(2, ["sales"])]) == 0  # no longer subscribed


async def test_consecutive_failures_disable_the_subscription(
    client, clients, local, owner, receiver, monkeypatch
):
    monkeypatch.setattr(local.webhook, "disable_after_failures", 3)
    monkeypatch.setattr(local.webhook, "max_attempts", 10)
    hook = await subscribe(client, owner, receiver.url(), ["sales"])
    receiver.answers += [Answer(500)] * 10
    await service.fan_out(clients, local, [event(1, ["sales"])])
    await drain_jobs(clients, local)

    assert len(receiver.received) == 3  # the fourth attempt, already queued, is skipped
    state = await hook_state(client, owner, hook["id"])
    assert (state["status"], state["disabledReason"], state["consecutiveFailures"]) == (
        "disabled",
        "consecutive_failures",
        3,
    )
    assert state["lastError"] == "HTTP 500" and state["lastStatusCode"] == 500
    done = await the_delivery()
    assert (done["status"], done["attempts"]) == ("skipped", 3)
    assert done["lastError"] == "the subscription is disabled"


async def test_a_success_resets_the_count_of_failures(client, clients, local, owner, receiver, monkeypatch):
    monkeypatch.setattr(local.webhook, "disable_after_failures", 3)
    hook = await subscribe(client, owner, receiver.url(), ["sales"])
    receiver.answers += [Answer(500), Answer(500), Answer(200), Answer(500), Answer(500), Answer(200)]
    await service.fan_out(clients, local, [event(1, ["sales"])])
    await drain_jobs(clients, local)
    await service.fan_out(clients, local, [event(2, ["sales"])])
    await drain_jobs(clients, local)

    assert len(receiver.received) == 6
    state = await hook_state(client, owner, hook["id"])
    assert (state["status"], state["consecutiveFailures"]) == ("active", 0)


async def test_deliveries_of_a_deleted_subscription_are_skipped(client, clients, local, owner, receiver):
    hook = await subscribe(client, owner, receiver.url(), ["sales"])
    await service.fan_out(clients, local, [event(1, ["sales"])])
    assert (await client.delete(f"{ROUTES}/{hook['id']}", headers=owner.headers)).status_code == 204
    assert (await the_delivery())["status"] == "skipped"
    await drain_jobs(clients, local)

    assert receiver.received == []
    done = await the_delivery()
    assert (done["status"], done["attempts"], done["lastError"]) == (
        "skipped",
        0,
        "the subscription was deleted",
    )


async def test_a_delivery_whose_subscription_went_away_before_its_job_is_skipped(
    client, clients, local, owner, receiver
):
    hook = await subscribe(client, owner, receiver.url(), ["sales"])
    await service.fan_out(clients, local, [event(1, ["sales"])])
    await WebhookSubscription.get_pymongo_collection().delete_one({"_id": ObjectId(hook["id"])})
    outcome = await service.deliver(clients, local, str((await the_delivery())["_id"]))

    assert outcome == {"outcome": "skipped"} and receiver.received == []
    assert (await the_delivery())["status"] == "skipped"


async def test_each_attempt_has_its_own_timeout(client, clients, local, owner, receiver, monkeypatch):
    monkeypatch.setattr(local.webhook, "timeout_s", 0.5)
    monkeypatch.setattr(local.webhook, "max_attempts", 1)
    await subscribe(client, owner, receiver.url(), ["sales"])
    receiver.answers.append(Answer(200, delay_s=2.0))
    await service.fan_out(clients, local, [event(1, ["sales"])])
    started = asyncio.get_running_loop().time()
    await drain_jobs(clients, local)

    assert asyncio.get_running_loop().time() - started < 1.8
    done = await the_delivery()
    assert (done["status"], done["attempts"]) == ("failed", 1)
    assert done["lastError"].startswith("fetch_timeout") and done["lastStatusCode"] is None


async def test_the_address_is_checked_again_at_every_delivery(
    client, clients, local, owner, receiver, monkeypatch
):
    await subscribe(client, owner, receiver.url(), ["sales"])
    monkeypatch.setattr(local.outbound, "allow_private", False)
    await service.fan_out(clients, local, [event(1, ["sales"])])
    await service.deliver(clients, local, str((await the_delivery())["_id"]))

    assert receiver.received == []
    done = await the_delivery()
    assert done["lastError"].startswith("address_refused") and done["status"] == "pending"


async def test_two_workers_never_send_the_same_attempt(client, clients, local, owner, receiver):
    await subscribe(client, owner, receiver.url(), ["sales"])
    receiver.answers.append(Answer(200, delay_s=0.3))
    await service.fan_out(clients, local, [event(1, ["sales"])])
    delivery_id = str((await the_delivery())["_id"])

    outcomes = await asyncio.gather(*(service.deliver(clients, local, delivery_id) for _ in range(3)))
    assert sorted(o["outcome"] for o in outcomes) == ["delivered", "not_claimed", "not_claimed"]
    assert len(receiver.received) == 1


async def test_the_sweeper_queues_again_what_lost_its_job(client, clients, local, owner, receiver):
    await subscribe(client, owner, receiver.url(), ["sales"])
    await service.fan_out(clients, local, [event(1, ["sales"]), event(2, ["sales"])])
    await clients.redis.delete(WEBHOOK_QUEUE)  # the jobs are lost
    assert await service.sweep(clients, local) == {"requeued": 0, "failed": 0}  # not overdue yet

    collection = WebhookDelivery.get_pymongo_collection()
    pending, sending = await collection.find({}, sort=[("eventId", 1)]).to_list()
    long_ago = utcnow() - timedelta(minutes=5)
    await collection.update_one({"_id": pending["_id"]}, {"$set": {"nextAttemptAt": long_ago}})
    await collection.update_one(  # an attempt whose worker died mid-way
        {"_id": sending["_id"]},
        {"$set": {"status": "sending", "attempts": 1, "claim": "dead", "leaseUntil": long_ago}},
    )
    assert await service.sweep(clients, local) == {"requeued": 2, "failed": 0}
    assert await service.sweep(clients, local) == {"requeued": 0, "failed": 0}  # their jobs are queued
    await drain_jobs(clients, local)

    assert sorted(r.headers["webhook-id"] for r in receiver.received) == [
        "1733380000000-1",
        "1733380000000-2",
    ]
    found = {d["eventId"]: d for d in await collection.find({}).to_list()}
    assert (found["1733380000000-1"]["status"], found["1733380000000-1"]["attempts"]) == ("delivered", 1)
    assert (found["1733380000000-2"]["status"], found["1733380000000-2"]["attempts"]) == ("delivered", 2)


async def test_the_sweeper_fails_a_lost_last_attempt(client, clients, local, owner, receiver):
    await subscribe(client, owner, receiver.url(), ["sales"])
    await service.fan_out(clients, local, [event(1, ["sales"])])
    await clients.redis.delete(WEBHOOK_QUEUE)
    collection = WebhookDelivery.get_pymongo_collection()
    attempts, long_ago = local.webhook.max_attempts, utcnow() - timedelta(minutes=5)
    await collection.update_one(
        {}, {"$set": {"status": "sending", "attempts": attempts, "claim": "dead", "leaseUntil": long_ago}}
    )
    assert await service.sweep(clients, local) == {"requeued": 0, "failed": 1}
    done = await the_delivery()
    assert (done["status"], done["lastError"]) == ("failed", "the last attempt was interrupted")
    assert receiver.received == []


def test_backoff_grows_four_times_per_attempt_up_to_the_cap(settings):
    base, cap = settings.webhook.backoff_base_s, settings.webhook.backoff_max_s
    for n, expected in [(1, base), (2, base * 4), (3, base * 16), (9, cap), (50, cap)]:
        delay = delivery.backoff_s(settings, n)
        assert min(expected, cap) * 0.9 <= delay <= min(expected, cap) * 1.1, (n, delay)
    assert (
        json.dumps(delivery.job_id(ObjectId("0" * 24), 3)) == '"webhooks.deliver:000000000000000000000000:3"'
    )
