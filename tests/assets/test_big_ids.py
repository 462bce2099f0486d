"""Token ids run to 2^63-1 (MongoDB's 8-byte integers), which PyMongo reads back as `Int64`."""

from tests import factories


async def test_the_largest_token_ids_are_created_listed_and_read(client, settings):
    admin = await factories.login(settings, roles=("user", "admin"))
    for token_id in (2**31, 2**63 - 1):
        body = {"tokenId": token_id, "contractAddress": "0x" + "0" * 40, "name": "Big", "assetType": "Art"}
        created = await client.post("/api/assets", json=body, headers=admin.headers)
        assert created.status_code == 201, created.text
        assert created.json()["tokenId"] == token_id
        read = await client.get(f"/api/assets/{token_id}")
        assert read.status_code == 200 and read.json()["tokenId"] == token_id
    listed = await client.get("/api/assets", params={"sort": "createdAt"})
    assert listed.status_code == 200, listed.text
    assert [item["tokenId"] for item in listed.json()["items"]] == [2**31, 2**63 - 1]
    stats = await client.get("/api/market/stats")
    assert stats.status_code == 200, stats.text
