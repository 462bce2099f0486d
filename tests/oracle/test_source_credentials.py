"""A source's credentials belong to the origin they were given for: moving the source elsewhere cannot
carry them along, and credentials never ride in the URL, where they would be stored and shown in clear."""

from app.audit.documents import AuditLog
from app.oracle.documents import DataSource
from tests import factories
from tests.oracle.conftest import Reply
from tests.oracle.test_refresh import ROUTES, refresh, source

SECRET = "Bearer admin-only-4b7e"
HEADER_SECRET = "hdr-admin-only-91c3"
CSV = b"externalId,price,soldAt,currency,assetType\nA,1,2024-01-01,ETH,Art\n"


async def _admins_source(settings, source_server) -> dict:
    source_server.routes["/data.csv"] = Reply(body=CSV)
    return await factories.data_source(
        settings,
        name="vendor",
        url=source_server.url("/data.csv"),
        configuration={
            "headers": {"X-Client": HEADER_SECRET},
            "authentication": {"header": "Authorization", "value": SECRET},
        },
    )


def _sent_to(source_server, port: int) -> list[dict[str, str]]:
    return [seen.headers for seen in source_server.seen if seen.headers.get("host") == f"127.0.0.1:{port}"]


async def test_a_url_moved_to_another_origin_drops_the_stored_credentials(
    client, clients, local_settings, admin, source_server
):
    vendor = await _admins_source(local_settings, source_server)
    key = await factories.api_key(local_settings, permissions=["datasources:write"])
    path = f"{ROUTES}/{vendor['id']}"

    same_origin = await client.patch(
        path, json={"url": source_server.url("/data.csv?v=2")}, headers=key.headers
    )
    assert same_origin.json()["configuration"]["headerNames"] == ["X-Client"]  # same origin: kept

    moved = await client.patch(
        path, json={"url": source_server.url("/data.csv", other=True)}, headers=key.headers
    )
    assert moved.status_code == 200, moved.text
    config = moved.json()["configuration"]
    assert config["headerNames"] == [] and config["authentication"] is None
    raw = await DataSource.get_pymongo_collection().find_one({"name": "vendor"})
    assert raw["configuration"]["headers"] == {} and raw["configuration"]["authentication"] is None

    job = await refresh(client, clients, local_settings, admin, vendor["id"])
    assert job["success"] is True, job
    stolen = _sent_to(source_server, source_server.other_port)
    assert stolen and all("authorization" not in h and "x-client" not in h for h in stolen)


async def test_credentials_given_with_the_new_url_are_sent_to_it(
    client, clients, local_settings, admin, source_server
):
    vendor = await _admins_source(local_settings, source_server)
    moved = await client.patch(
        f"{ROUTES}/{vendor['id']}",
        json={
            "url": source_server.url("/data.csv", other=True),
            "configuration": {"authentication": {"header": "Authorization", "value": "Bearer new"}},
        },
        headers=admin.headers,
    )
    config = moved.json()["configuration"]
    assert config["authentication"] == {"header": "Authorization"} and config["headerNames"] == []
    assert (await refresh(client, clients, local_settings, admin, vendor["id"]))["success"] is True
    [sent] = _sent_to(source_server, source_server.other_port)
    assert sent["authorization"] == "Bearer new" and "x-client" not in sent


async def test_credentials_sealed_for_one_origin_are_never_sent_to_another(
    client, clients, local_settings, admin, source_server
):
    """Whatever moves the URL (a write that bypasses the API, an old document), the sealed origin rules."""
    vendor = await _admins_source(local_settings, source_server)
    await DataSource.get_pymongo_collection().update_one(
        {"name": "vendor"}, {"$set": {"url": source_server.url("/data.csv", other=True)}}
    )
    job = await refresh(client, clients, local_settings, admin, vendor["id"])
    assert (job["success"], job["error"]) == (False, "credentials_origin_mismatch")
    status = (await source(client, admin, vendor["id"]))["status"]
    assert status["lastError"] == "credentials_origin_mismatch" and status["errorCount"] == 1
    assert all("authorization" not in seen.headers for seen in source_server.seen)
    assert SECRET not in (status["lastErrorMessage"] or "")


async def test_credentials_in_the_query_string_are_refused(client, admin):
    body = {"name": "q", "type": "file", "kind": "sales", "format": "csv"}
    for url in (
        "https://example.org/sales.csv?api_key=abc",
        "https://example.org/sales.csv?format=csv&Access_Token=abc",
        "https://example.org/sales.csv?X-Amz-Signature=abc",
        "https://example.org/sales.csv?PASSWORD=x",
        "https://example.org/sales.csv?client_secret=x",
    ):
        refused = await client.post(ROUTES, json={**body, "url": url}, headers=admin.headers)
        assert refused.status_code == 400, (url, refused.text)
        assert refused.json()["error"]["code"] == "credentials_in_url"
        assert "abc" not in refused.text
    created = await client.post(
        ROUTES, json={**body, "url": "https://example.org/s.csv?format=csv&monkey=1"}, headers=admin.headers
    )
    assert created.status_code == 201, created.text
    patched = await client.patch(
        f"{ROUTES}/{created.json()['id']}",
        json={"url": "https://example.org/s.csv?token=abc"},
        headers=admin.headers,
    )
    assert patched.status_code == 400 and patched.json()["error"]["code"] == "credentials_in_url"
    stored = await DataSource.get_pymongo_collection().find_one({"name": "q"})
    assert stored["url"] == "https://example.org/s.csv?format=csv&monkey=1"


async def test_the_audit_trail_records_each_change_of_a_source_without_its_credentials(
    client, local_settings, source_server
):
    vendor = await _admins_source(local_settings, source_server)
    key = await factories.api_key(local_settings, permissions=["datasources:write"])
    path = f"{ROUTES}/{vendor['id']}"
    stored = await DataSource.get_pymongo_collection().find_one({"name": "vendor"})
    sealed = [
        stored["configuration"]["headers"]["X-Client"],
        stored["configuration"]["authentication"]["value"],
    ]
    assert (await client.patch(path, json={"description": "v2"}, headers=key.headers)).status_code == 200
    assert (await client.delete(path, headers=key.headers)).status_code == 204

    entries = await AuditLog.find(AuditLog.entityId == vendor["id"]).sort("+timestamp").to_list()
    assert [(e.action, e.entityType) for e in entries] == [
        ("oracle.datasource.create", "dataSource"),
        ("oracle.datasource.update", "dataSource"),
        ("oracle.datasource.delete", "dataSource"),
    ]
    create, update, delete = entries
    assert create.oldValue is None and create.newValue["name"] == "vendor"
    assert not update.oldValue["description"] and update.newValue["description"] == "v2"
    assert delete.oldValue["description"] == "v2" and delete.newValue is None
    for entry in entries:  # neither the secrets nor their sealed forms: only the header names
        shown = entry.newValue or entry.oldValue
        assert shown["configuration"]["headerNames"] == ["X-Client"]
        assert shown["configuration"]["authentication"] == {"header": "Authorization"}
        text = str(entry.model_dump())
        assert all(str(secret) not in text for secret in [SECRET, HEADER_SECRET, *sealed])
