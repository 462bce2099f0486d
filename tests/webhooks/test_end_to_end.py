"""From a producer to a receiver: a change made over the API reaches a subscribed URL, signed, as the
very message the stream sends."""

from __future__ import annotations

import json

from standardwebhooks.webhooks import Webhook

from app.lib import eventlog
from tests import factories
from tests.conftest import drain_jobs
from tests.webhooks.conftest import subscribe


async def test_a_metadata_change_reaches_a_subscribed_receiver_as_the_streams_message(
    client, clients, local, owner, receiver
):
    asset_owner = await factories.owner_with_asset(local, 42)
    hook = await subscribe(client, owner, receiver.url(), ["listings", "asset:42"])
    other = await subscribe(client, owner, receiver.url("/other"), ["sales"])  # another topic: nothing

    body = {"version": 0, "metadata": {"condition": "restored"}}
    response = await client.patch("/api/assets/42/metadata", json=body, headers=asset_owner.headers)
    assert response.status_code == 200, response.text
    await drain_jobs(clients, local)

    [got] = receiver.received
    assert got.path == "/hooks"
    delivered = Webhook(hook["secret"]).verify(got.body, got.headers)
    [streamed] = (await eventlog.replay_page(clients.redis, "0-0", ["asset:42"])).messages
    assert delivered == streamed == json.loads(got.body)
    assert got.headers["webhook-id"] == streamed["id"]
    assert streamed["event"] == "item_metadata_updated" and streamed["payload"]["version"] == 1
    deliveries = (await client.get(f"/api/webhooks/{hook['id']}/deliveries", headers=owner.headers)).json()
    assert [(d["status"], d["eventId"]) for d in deliveries["items"]] == [("delivered", streamed["id"])]
    none = (await client.get(f"/api/webhooks/{other['id']}/deliveries", headers=owner.headers)).json()
    assert none["items"] == []
