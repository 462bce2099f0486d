"""Managing data sources over the API: who may, what a body may hold, and secrets that never come back."""

from app.lib.crypto import secret_box
from app.oracle.documents import DataSource
from tests import factories

SECRET = "Bearer tok-4f1c9e2a-never-shown"
HEADER_SECRET = "hdr-7d2b-never-shown"
BODY = {
    "name": "ames-sales",
    "type": "file",
    "kind": "sales",
    "url": "https://example.org/sales.csv",
    "format": "csv",
    "description": "County sales records",
    "configuration": {
        "refreshInterval": 86400,
        "mapping": {"price": "Sale_Price", "soldAt": "sold_at", "externalId": "id"},
        "defaults": {"currency": "USD", "assetType": "Real Estate"},
        "headers": {"X-Client": HEADER_SECRET},
        "authentication": {"header": "Authorization", "value": SECRET},
    },
}
ROUTES = "/api/oracle/data-sources"


async def test_an_admin_creates_reads_lists_changes_and_deletes_a_source(client, admin):
    created = await client.post(ROUTES, json=BODY, headers=admin.headers)
    assert created.status_code == 201, created.text
    source = created.json()
    assert (source["type"], source["kind"], source["format"]) == ("file", "sales", "csv")
    assert source["configuration"]["mapping"]["price"] == "Sale_Price"
    assert source["configuration"]["mapping"]["currency"] == "currency"  # unmapped: the field's own name
    assert source["status"]["isEnabled"] and source["status"]["nextFetchAt"]  # due at once

    path = f"{ROUTES}/{source['id']}"
    assert (await client.get(path, headers=admin.headers)).json() == source
    listed = (await client.get(ROUTES, headers=admin.headers)).json()
    assert [item["id"] for item in listed["items"]] == [source["id"]] and listed["nextCursor"] is None

    changed = await client.patch(
        path,
        json={
            "description": "Ames, Iowa",
            "configuration": {"refreshInterval": 3600, "authentication": None},
        },
        headers=admin.headers,
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["description"] == "Ames, Iowa"
    assert changed.json()["configuration"]["authentication"] is None
    assert changed.json()["configuration"]["refreshInterval"] == 3600

    assert (await client.delete(path, headers=admin.headers)).status_code == 204
    gone = await client.get(path, headers=admin.headers)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "source_not_found"


async def test_secrets_are_stored_encrypted_and_never_returned(client, admin, settings):
    created = await client.post(ROUTES, json=BODY, headers=admin.headers)
    path = f"{ROUTES}/{created.json()['id']}"
    answers = [
        created,
        await client.get(path, headers=admin.headers),
        await client.get(ROUTES, headers=admin.headers),
        await client.patch(path, json={"name": "ames"}, headers=admin.headers),
    ]
    for answer in answers:
        assert SECRET not in answer.text and HEADER_SECRET not in answer.text
    config = answers[1].json()["configuration"]
    assert config["headerNames"] == ["X-Client"]
    assert config["authentication"] == {"header": "Authorization"}

    raw = await DataSource.get_pymongo_collection().find_one({})
    stored = raw["configuration"]
    assert SECRET not in str(raw) and HEADER_SECRET not in str(raw)
    box = secret_box(settings)  # sealed with the origin they were given for
    assert box.open_for(stored["authentication"]["value"], "https://example.org:443") == SECRET
    assert box.open_for(stored["headers"]["X-Client"], "https://example.org:443") == HEADER_SECRET


async def test_only_admins_and_keys_with_datasources_write_may_manage_sources(client, settings, admin):
    user = await factories.login(settings)
    other_key = await factories.api_key(settings, permissions=["oracle:submit", "assets:write"])
    for who in (user, other_key):
        for method, path in (("post", ROUTES), ("get", ROUTES), ("get", f"{ROUTES}/{'0' * 24}")):
            refused = await client.request(
                method, path, json=BODY if method == "post" else None, headers=who.headers
            )
            assert refused.status_code == 403, refused.text
            assert refused.json()["error"]["code"] == "insufficient_permission"
    assert (await client.post(ROUTES, json=BODY)).status_code == 401
    key = await factories.api_key(settings, permissions=["datasources:write"])
    assert (await client.post(ROUTES, json=BODY, headers=key.headers)).status_code == 201
    assert await DataSource.get_pymongo_collection().count_documents({}) == 1


async def test_bodies_outside_the_contract_are_refused(client, admin):
    config = BODY["configuration"]
    for body in (
        {**BODY, "configuration": {**config, "defaults": {"currency": "EUR"}}},  # ETH or USD only
        {**BODY, "type": "api", "format": "csv"},  # an api source speaks JSON
        {**BODY, "type": "api", "format": "json", "url": "s3://data-sources/sales.csv"},
        {**BODY, "url": "ftp://example.org/sales.csv"},
        {**BODY, "url": "http://user:pw@example.org/x"},
        {**BODY, "kind": "listings"},
        {**BODY, "configuration": {**config, "refreshInterval": 5}},
        {**BODY, "configuration": {**config, "rowsPath": "data"}},  # api sources only
        {**BODY, "configuration": {**config, "headers": {"Bad Header": "x"}}},
        {**BODY, "configuration": {**config, "authentication": {"header": "X", "value": "a\r\nInjected: 1"}}},
        {**BODY, "unknown": True},
    ):
        refused = await client.post(ROUTES, json=body, headers=admin.headers)
        assert refused.status_code == 400, (body, refused.text)
        assert refused.json()["error"]["code"] == "validation_error"
    assert await DataSource.get_pymongo_collection().count_documents({}) == 0


async def test_names_are_unique_and_changes_must_fit_the_sources_type(client, admin):
    first = (await client.post(ROUTES, json=BODY, headers=admin.headers)).json()
    duplicate = await client.post(ROUTES, json=BODY, headers=admin.headers)
    assert duplicate.status_code == 409 and duplicate.json()["error"]["code"] == "duplicate_name"
    api = {"name": "eth-usd", "type": "api", "kind": "index", "url": "https://example.org/rates"}
    second = (await client.post(ROUTES, json=api, headers=admin.headers)).json()
    for path, patch, code in (
        (second["id"], {"name": "ames-sales"}, "duplicate_name"),
        (second["id"], {"url": "s3://data-sources/rates.json"}, "url_not_for_type"),
        (second["id"], {"format": "csv"}, "format_not_for_type"),
        (first["id"], {"configuration": {"pageParam": "page"}}, "field_not_for_type"),
    ):
        conflict = await client.patch(f"{ROUTES}/{path}", json=patch, headers=admin.headers)
        assert conflict.status_code == 409 and conflict.json()["error"]["code"] == code, conflict.text


async def test_lists_page_with_a_cursor_and_filter_by_kind_and_type(client, admin, settings):
    for n in range(5):
        await factories.data_source(settings, name=f"s{n}", url=f"https://example.org/{n}.csv")
    await factories.data_source(
        settings, name="rates", type="api", kind="index", format="json", url="https://x.org/r"
    )
    seen, cursor = [], None
    while True:
        params = {"limit": 2, "kind": "sales", **({"cursor": cursor} if cursor else {})}
        page = (await client.get(ROUTES, params=params, headers=admin.headers)).json()
        seen += [item["name"] for item in page["items"]]
        cursor = page["nextCursor"]
        if not cursor:
            break
    assert seen == ["s4", "s3", "s2", "s1", "s0"]
    apis = (await client.get(ROUTES, params={"type": "api"}, headers=admin.headers)).json()["items"]
    assert [item["name"] for item in apis] == ["rates"]
    bad = await client.get(ROUTES, params={"type": "stream"}, headers=admin.headers)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_type"


async def test_unknown_ids_are_404_whatever_their_shape(client, admin):
    for source_id in ("0" * 24, "not-an-id", "zz" * 12):
        for method in ("get", "delete", "patch"):
            answer = await client.request(
                method, f"{ROUTES}/{source_id}", json={} if method == "patch" else None, headers=admin.headers
            )
            assert answer.status_code == 404 and answer.json()["error"]["code"] == "source_not_found"
        refresh = await client.post(f"{ROUTES}/{source_id}/refresh", headers=admin.headers)
        assert refresh.status_code == 404
