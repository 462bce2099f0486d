"""Managing webhooks over the API: who may, what a body may hold, which URLs are refused, and a secret that
is shown once and kept sealed."""

import asyncio
import base64

import pytest
from bson import ObjectId

from app.audit.documents import AuditLog
from app.lib.crypto import secret_box
from app.webhooks.documents import WebhookSubscription
from tests import factories
from tests.webhooks.conftest import ROUTES, subscribe

PUBLIC_URL = "http://93.184.215.14/hooks"  # a public address: allowed without resolving a name


def code(response) -> str:
    return response.json()["error"]["code"]


async def test_an_owner_creates_reads_lists_and_deletes_a_webhook(client, owner):
    created = await subscribe(client, owner, PUBLIC_URL, ["sales", "asset:42", "sales"], description="shop")
    assert created["topics"] == ["sales", "asset:42"]  # distinct, in the order given
    assert (created["status"], created["owner"], created["description"]) == ("active", owner.wallet, "shop")
    assert created["consecutiveFailures"] == 0 and created["disabledReason"] is None

    path = f"{ROUTES}/{created['id']}"
    read = (await client.get(path, headers=owner.headers)).json()
    assert read == {k: v for k, v in created.items() if k != "secret"}
    listed = (await client.get(ROUTES, headers=owner.headers)).json()
    assert [item["id"] for item in listed["items"]] == [created["id"]] and listed["nextCursor"] is None
    deliveries = (await client.get(f"{path}/deliveries", headers=owner.headers)).json()
    assert deliveries == {"items": [], "nextCursor": None, "limit": 20}

    assert (await client.delete(path, headers=owner.headers)).status_code == 204
    gone = await client.get(path, headers=owner.headers)
    assert gone.status_code == 404 and code(gone) == "webhook_not_found"


async def test_the_secret_is_shown_once_and_stored_encrypted(client, owner, settings):
    created = await subscribe(client, owner, PUBLIC_URL, ["sales"])
    secret = created["secret"]
    assert secret.startswith("whsec_") and len(base64.b64decode(secret.removeprefix("whsec_"))) == 32

    read = (await client.get(f"{ROUTES}/{created['id']}", headers=owner.headers)).json()
    listed = (await client.get(ROUTES, headers=owner.headers)).json()["items"][0]
    assert "secret" not in read and "secret" not in listed

    raw = await WebhookSubscription.get_pymongo_collection().find_one({"_id": ObjectId(created["id"])})
    assert secret not in str(raw) and secret.removeprefix("whsec_") not in str(raw)
    assert secret_box(settings).open(raw["secret"]) == secret


async def test_another_callers_webhook_does_not_exist_for_them_but_an_admin_sees_it(client, owner, settings):
    created = await subscribe(client, owner, PUBLIC_URL, ["sales"])
    stranger = await factories.login(settings)
    path = f"{ROUTES}/{created['id']}"
    for method, target in [("GET", path), ("DELETE", path), ("GET", f"{path}/deliveries")]:
        response = await client.request(method, target, headers=stranger.headers)
        assert response.status_code == 404 and code(response) == "webhook_not_found", (method, target)
    assert (await client.get(ROUTES, headers=stranger.headers)).json()["items"] == []
    mine = await subscribe(client, stranger, PUBLIC_URL, ["media"])

    admin = await factories.login(settings, roles=("user", "admin"))
    listed = (await client.get(ROUTES, headers=admin.headers)).json()["items"]
    assert [item["id"] for item in listed] == [mine["id"], created["id"]]  # everyone's, newest first
    assert (await client.get(path, headers=admin.headers)).status_code == 200
    assert (await client.delete(path, headers=admin.headers)).status_code == 204
    assert (await client.get(path, headers=owner.headers)).status_code == 404


async def test_api_keys_need_the_webhooks_permission_and_act_for_their_owner(client, owner, settings):
    created = await subscribe(client, owner, PUBLIC_URL, ["sales"])
    minted = await client.post(
        "/api/auth/api-keys", json={"name": "hooks", "permissions": ["webhooks:write"]}, headers=owner.headers
    )
    assert minted.status_code == 201, minted.text  # a user's role grants it
    key = {"X-API-Key": minted.json()["key"]}
    listed = (await client.get(ROUTES, headers=key)).json()["items"]
    assert [item["id"] for item in listed] == [created["id"]]

    other = await factories.api_key(settings, permissions=["media:write"])
    refused = await client.get(ROUTES, headers=other.headers)
    assert refused.status_code == 403 and code(refused) == "insufficient_permission"
    anonymous = await client.get(ROUTES)
    assert anonymous.status_code == 401


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"url": PUBLIC_URL, "topics": ["nope"]}, "invalid_topics"),
        ({"url": PUBLIC_URL, "topics": []}, "invalid_topics"),
        ({"url": PUBLIC_URL, "topics": [" sales"]}, "invalid_topics"),
        ({"url": PUBLIC_URL, "topics": ["asset:01"]}, "invalid_topics"),
        ({"url": PUBLIC_URL, "topics": ["asset:9223372036854775808"]}, "invalid_topics"),
        ({"url": PUBLIC_URL, "topics": [f"asset:{n}" for n in range(21)]}, "invalid_topics"),
        ({"url": "file:///etc/passwd", "topics": ["sales"]}, "invalid_url"),
        ({"url": "ftp://93.184.215.14/x", "topics": ["sales"]}, "invalid_url"),
        ({"url": "http://user:pw@93.184.215.14/x", "topics": ["sales"]}, "invalid_url"),
        ({"url": "http://93.184.215.14:0/x", "topics": ["sales"]}, "invalid_url"),
        ({"url": "http://93.184.215.14/" + "a" * 2048, "topics": ["sales"]}, "invalid_url"),
        ({"url": PUBLIC_URL, "topics": ["sales"], "secret": "mine"}, "validation_error"),
        ({"url": PUBLIC_URL, "topics": "sales"}, "validation_error"),
    ],
)
async def test_a_bad_body_is_refused_with_its_code(client, owner, body, expected):
    response = await client.post(ROUTES, json=body, headers=owner.headers)
    assert response.status_code == 400 and code(response) == expected, response.text
    assert await WebhookSubscription.get_pymongo_collection().count_documents({}) == 0


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hooks",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/hooks",
        "http://localhost:9000/hooks",
        "https://no-such-host.invalid/hooks",
    ],
)
async def test_urls_the_platform_does_not_reach_are_refused(client, owner, url):
    response = await client.post(ROUTES, json={"url": url, "topics": ["sales"]}, headers=owner.headers)
    assert response.status_code == 409 and code(response) == "url_not_allowed", response.text
    assert await WebhookSubscription.get_pymongo_collection().count_documents({}) == 0


async def test_allowing_private_addresses_never_allows_metadata_ones(client, owner, local):
    assert (await subscribe(client, owner, "http://127.0.0.1:8080/hooks", ["sales"]))["status"] == "active"
    metadata = await client.post(
        ROUTES, json={"url": "http://169.254.169.254/", "topics": ["sales"]}, headers=owner.headers
    )
    assert metadata.status_code == 409 and code(metadata) == "url_not_allowed"


async def test_networks_allowed_for_data_sources_are_not_allowed_for_webhooks(
    client, owner, settings, monkeypatch
):
    # OUTBOUND_ALLOWED_NETWORKS lets admins' data sources reach a host inside the VPC; any signed-in
    # user may add a webhook, so it must not reach there.
    monkeypatch.setattr(settings.outbound, "allowed_networks", "127.0.0.0/8")
    refused = await client.post(
        ROUTES, json={"url": "http://127.0.0.1:8080/hooks", "topics": ["sales"]}, headers=owner.headers
    )
    assert refused.status_code == 409 and code(refused) == "url_not_allowed"


async def test_concurrent_creations_cannot_pass_the_limit_together(client, owner, settings, monkeypatch):
    monkeypatch.setattr(settings.webhook, "max_per_owner", 3)
    body = {"url": PUBLIC_URL, "topics": ["sales"]}
    answers = await asyncio.gather(
        *(client.post(ROUTES, json=body, headers=owner.headers) for _ in range(12))
    )

    assert sum(1 for a in answers if a.status_code == 201) == 3  # those under the limit all go through
    assert {a.json()["error"]["code"] for a in answers if a.status_code != 201} == {"too_many_webhooks"}
    assert await WebhookSubscription.get_pymongo_collection().count_documents({}) <= 3


async def test_an_owner_has_at_most_the_configured_number_of_webhooks(client, owner, settings, monkeypatch):
    monkeypatch.setattr(settings.webhook, "max_per_owner", 2)
    for _ in range(2):
        await subscribe(client, owner, PUBLIC_URL, ["sales"])
    refused = await client.post(ROUTES, json={"url": PUBLIC_URL, "topics": ["sales"]}, headers=owner.headers)
    assert refused.status_code == 409 and code(refused) == "too_many_webhooks"
    other = await factories.login(settings)
    await subscribe(client, other, PUBLIC_URL, ["sales"])  # the limit is per owner


async def test_lists_are_keyset_paged_and_ids_that_cannot_exist_are_404(client, owner):
    made = [(await subscribe(client, owner, PUBLIC_URL, ["sales"]))["id"] for _ in range(3)]
    first = (await client.get(ROUTES, params={"limit": 2}, headers=owner.headers)).json()
    second = (
        await client.get(ROUTES, params={"limit": 2, "cursor": first["nextCursor"]}, headers=owner.headers)
    ).json()
    assert [i["id"] for i in first["items"] + second["items"]] == made[::-1] and second["nextCursor"] is None

    for bad in ("nothex", "0" * 24, "g" * 24):
        response = await client.get(f"{ROUTES}/{bad}", headers=owner.headers)
        assert response.status_code == 404 and code(response) == "webhook_not_found"
    status = await client.get(f"{ROUTES}/{made[0]}/deliveries?status=lost", headers=owner.headers)
    assert status.status_code == 400 and code(status) == "invalid_status"
    cursor = await client.get(ROUTES, params={"cursor": "forged.cursor"}, headers=owner.headers)
    assert cursor.status_code == 400 and code(cursor) == "invalid_cursor"


async def test_the_audit_trail_records_a_webhooks_creation_and_deletion_without_its_secret(client, owner):
    created = await subscribe(client, owner, PUBLIC_URL, ["sales"])
    assert (await client.delete(f"{ROUTES}/{created['id']}", headers=owner.headers)).status_code == 204

    entries = await AuditLog.find(AuditLog.entityId == created["id"]).sort("+timestamp").to_list()
    assert [(e.action, e.entityType, e.actor) for e in entries] == [
        ("webhook.create", "webhook", owner.wallet),
        ("webhook.delete", "webhook", owner.wallet),
    ]
    shown = {"owner": owner.wallet, "url": PUBLIC_URL, "topics": ["sales"]}
    assert (entries[0].oldValue, entries[0].newValue) == (None, shown)
    assert (entries[1].oldValue, entries[1].newValue) == (shown, None)
    secret = created["secret"].removeprefix("whsec_")
    assert all(secret not in str(e) for e in entries)
