"""Sign-in over HTTP: nonce, verify (every refusal with its code), users, audit, ERC-1271 on anvil."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from app.audit.documents import AuditLog
from app.auth import service, sessions
from app.auth.documents import Session, User
from app.lib.timeutil import utcnow
from tests import factories
from tests.auth.chain import deploy_wallet

VECTORS_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "vectors" / "siwe"


def vectors(name: str) -> list[Any]:
    path = VECTORS_DIR / name
    if not path.is_file():
        return [pytest.param(None, None, marks=pytest.mark.skip(reason=f"no vectors at {path}"))]
    return [pytest.param(key, value, id=key) for key, value in json.loads(path.read_text()).items()]


async def nonce_for(client, address: str) -> str:
    response = await client.get("/api/auth/nonce", params={"walletAddress": address})
    assert response.status_code == 200, response.text
    return response.json()["nonce"]


async def verify(client, address: str, text: str, signature: str):
    return await client.post(
        "/api/auth/verify", json={"walletAddress": address, "signature": signature, "message": text}
    )


async def message_for(client, settings, account, **overrides) -> str:
    """A sign-in message for `account` with a nonce the server just issued to it."""
    nonce = await nonce_for(client, account.address)
    return factories.siwe_message(settings, account.address, nonce, **overrides)


def error_code(response) -> str:
    return response.json()["error"]["code"]


# --- nonce ---------------------------------------------------------------------------------------------


async def test_nonce_is_random_alphanumeric_short_lived_and_kept_in_redis(client, settings, clients):
    account = factories.new_account()
    response = await client.get("/api/auth/nonce", params={"walletAddress": account.address.lower()})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"nonce", "expiresAt", "domain", "uri", "chainId"}
    assert re.fullmatch(r"[A-Za-z0-9]{16,}", body["nonce"])  # 22 chars of 62 ≈ 131 bits
    assert body["domain"] == settings.auth.domain
    assert body["uri"] == settings.auth.uri
    assert body["chainId"] == settings.chain.chain_id
    key = sessions.nonce_key(body["nonce"])
    assert (await clients.redis.get(key)).decode() == account.address  # stored as EIP-55
    assert 0 < await clients.redis.ttl(key) <= settings.auth.nonce_ttl_s
    other = (await client.get("/api/auth/nonce", params={"walletAddress": account.address})).json()
    assert other["nonce"] != body["nonce"]
    assert await User.count() == 0  # nothing in MongoDB until a sign-in succeeds


@pytest.mark.parametrize(
    "wallet", ["nope", "0x123", "0x" + "g" * 40, "0x71C7656EC7ab88b098defB751B7401B5f6d8976f"]
)
async def test_nonce_for_something_that_is_not_an_address_is_400(client, wallet):
    response = await client.get("/api/auth/nonce", params={"walletAddress": wallet})
    assert response.status_code == 400
    assert error_code(response) == "invalid_wallet_address"


async def test_nonce_without_a_wallet_is_400(client):
    response = await client.get("/api/auth/nonce")
    assert response.status_code == 400
    assert error_code(response) == "validation_error"


# --- the happy path --------------------------------------------------------------------------------------


async def test_sign_in_issues_tokens_sets_the_cookie_and_creates_the_user(client, settings):
    account = factories.new_account()
    response = await factories.siwe_sign_in(client, settings, account)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["tokenType"] == "Bearer"
    assert body["expiresIn"] == 15 * 60
    assert body["user"]["walletAddress"] == account.address
    assert body["user"]["roles"] == ["user"]

    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{sessions.REFRESH_COOKIE}=")
    assert "HttpOnly" in cookie
    assert "samesite=strict" in cookie.lower()
    assert "Path=/api/auth" in cookie
    assert "Secure" not in cookie  # the test settings turn it off (plain http); on by default
    assert response.headers["cache-control"] == "no-store"

    me = await client.get("/api/auth/me", headers={"Authorization": f"Bearer {body['accessToken']}"})
    assert me.status_code == 200
    assert me.json()["walletAddress"] == account.address

    user = await User.find_one(User.walletAddress == account.address)
    assert user.roles == ["user"] and user.createdAt and user.lastLogin
    session = await Session.find_one(Session.userId == user.id)
    assert session.ipAddress == "127.0.0.1"
    refresh_token = cookie.split(";")[0].split("=", 1)[1]
    raw = json.dumps(await Session.get_pymongo_collection().find_one({"_id": session.id}), default=str)
    assert refresh_token not in raw and body["accessToken"] not in raw  # only hashes are stored


async def test_a_second_sign_in_keeps_the_user_and_updates_last_login(client, settings):
    account = factories.new_account()
    assert (await factories.siwe_sign_in(client, settings, account)).status_code == 200
    first = await User.find_one(User.walletAddress == account.address)
    assert (await factories.siwe_sign_in(client, settings, account)).status_code == 200
    second = await User.find_one(User.walletAddress == account.address)
    assert second.id == first.id and second.createdAt == first.createdAt
    assert second.lastLogin >= first.lastLogin
    assert await User.count() == 1
    assert await Session.count() == 2


async def test_admin_wallets_get_the_admin_role_at_sign_in(client, settings):
    account = factories.new_account()
    admin_settings = settings.model_copy(update={"admin_wallets": [account.address.lower()]})
    user = await service.upsert_user(admin_settings, account.address)
    assert sorted(user.roles) == ["admin", "user"]
    plain = await service.upsert_user(settings, factories.new_account().address)
    assert plain.roles == ["user"]


async def test_sign_in_and_failed_sign_in_are_audited(client, settings):
    account = factories.new_account()
    assert (await factories.siwe_sign_in(client, settings, account)).status_code == 200
    text = await message_for(client, settings, account)
    assert (
        await verify(client, account.address, text, factories.sign(factories.new_account(), text))
    ).status_code == 401
    entries = await AuditLog.find(AuditLog.action == "auth.sign_in").sort("timestamp").to_list()
    assert [(e.success, e.reason) for e in entries] == [(True, None), (False, "invalid_signature")]
    assert all(e.actor == account.address and e.ipAddress == "127.0.0.1" for e in entries)
    assert entries[0].userAgent


async def test_a_sign_in_is_audited_as_the_wallet_signing_in_whatever_bearer_token_the_request_carries(
    client, settings
):
    alice, bob = factories.new_account(), factories.new_account()
    signed_in = await factories.siwe_sign_in(client, settings, alice)
    bearer = {"Authorization": f"Bearer {signed_in.json()['accessToken']}"}
    for signer in (bob, factories.new_account()):  # bob's own signature, then somebody else's
        nonce = await nonce_for(client, bob.address)
        text = factories.siwe_message(settings, bob.address, nonce)
        body = {"walletAddress": bob.address, "signature": factories.sign(signer, text), "message": text}
        await client.post("/api/auth/verify", json=body, headers=bearer)
    entries = await AuditLog.find({"action": "auth.sign_in", "actor": {"$ne": alice.address}}).to_list()
    assert sorted((e.success, e.actor, e.actorType) for e in entries) == [
        (False, bob.address, "anonymous"),
        (True, bob.address, "anonymous"),
    ]
    assert await AuditLog.find({"action": "auth.sign_in", "actor": alice.address}).count() == 1


async def test_a_flood_of_failed_sign_ins_writes_one_audit_entry_per_ip_and_reason(client, settings, clients):
    # An attacker replays garbage at /verify: each refusal must not cost a MongoDB write.
    account = factories.new_account()
    text = factories.siwe_message(settings, account.address, "NeverIssued0123456789")
    signature = factories.sign(account, text)
    for _ in range(10):
        response = await verify(client, account.address, text, signature)
        assert response.status_code == 401 and error_code(response) == "nonce_invalid"
    failed = await AuditLog.find({"action": "auth.sign_in", "success": False}).to_list()
    assert [(e.reason, e.ipAddress, e.actor) for e in failed] == [
        ("nonce_invalid", "127.0.0.1", account.address)
    ]
    # another reason from the same IP is recorded once too, and a success always is
    for _ in range(3):
        bad = await verify(client, account.address, "x" * 5000, signature)
        assert bad.status_code == 401 and error_code(bad) == "message_too_long"
    assert (await factories.siwe_sign_in(client, settings, account)).status_code == 200
    assert (await factories.siwe_sign_in(client, settings, account)).status_code == 200
    entries = await AuditLog.find(AuditLog.action == "auth.sign_in").sort("timestamp").to_list()
    assert [(e.success, e.reason) for e in entries] == [
        (False, "nonce_invalid"),
        (False, "message_too_long"),
        (True, None),
        (True, None),
    ]
    # the next window records again
    await clients.redis.delete(*[k async for k in clients.redis.scan_iter("auth:audit:sign_in:*")])
    assert (await verify(client, account.address, text, signature)).status_code == 401
    assert await AuditLog.find({"action": "auth.sign_in", "success": False}).count() == 3


# --- replay and races --------------------------------------------------------------------------------------


async def test_a_used_message_cannot_be_replayed(client, settings):
    account = factories.new_account()
    text = await message_for(client, settings, account)
    signature = factories.sign(account, text)
    assert (await verify(client, account.address, text, signature)).status_code == 200
    replay = await verify(client, account.address, text, signature)
    assert replay.status_code == 401
    assert error_code(replay) == "nonce_invalid"


async def test_eight_concurrent_verifies_of_one_message_give_exactly_one_success(client, settings):
    account = factories.new_account()
    text = await message_for(client, settings, account)
    signature = factories.sign(account, text)
    responses = await asyncio.gather(*(verify(client, account.address, text, signature) for _ in range(8)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [401] * 7
    assert {error_code(r) for r in responses if r.status_code == 401} == {"nonce_invalid"}
    assert await Session.count() == 1


async def test_a_nonce_that_was_never_issued_is_refused(client, settings):
    account = factories.new_account()
    text = factories.siwe_message(settings, account.address, "NeverIssued0123456789")
    response = await verify(client, account.address, text, factories.sign(account, text))
    assert response.status_code == 401
    assert error_code(response) == "nonce_invalid"


async def test_an_expired_nonce_is_refused(client, settings, clients):
    account = factories.new_account()
    nonce = await nonce_for(client, account.address)
    await clients.redis.pexpire(sessions.nonce_key(nonce), 1)
    await asyncio.sleep(0.01)
    text = factories.siwe_message(settings, account.address, nonce)
    response = await verify(client, account.address, text, factories.sign(account, text))
    assert error_code(response) == "nonce_invalid"


async def test_a_nonce_issued_for_another_wallet_is_refused(client, settings):
    account, other = factories.new_account(), factories.new_account()
    nonce = await nonce_for(client, other.address)
    text = factories.siwe_message(settings, account.address, nonce)
    response = await verify(client, account.address, text, factories.sign(account, text))
    assert response.status_code == 401
    assert error_code(response) == "nonce_mismatch"


# --- each field check ------------------------------------------------------------------------------------


def _past(seconds: int):
    return utcnow() - timedelta(seconds=seconds)


def _future(seconds: int):
    return utcnow() + timedelta(seconds=seconds)


FIELD_CASES = {
    "wrong domain": ({"domain": "evil.example"}, "domain_mismatch"),
    "wrong uri": ({"uri": "https://evil.example"}, "uri_mismatch"),
    "wrong chain": ({"chain_id": 1}, "chain_mismatch"),
    "expired": ({"issued_at": _past(600), "expiration_time": _past(300)}, "expired"),
    "not yet valid": ({"not_before": _future(600), "expiration_time": _future(900)}, "not_yet_valid"),
    "issued in the future": (
        {"issued_at": _future(600), "expiration_time": _future(900)},
        "issued_in_future",
    ),
}


@pytest.mark.parametrize("case", list(FIELD_CASES))
async def test_a_message_failing_a_field_check_is_401_with_its_code(client, settings, case):
    overrides, code = FIELD_CASES[case]
    account = factories.new_account()
    text = await message_for(client, settings, account, **overrides)
    response = await verify(client, account.address, text, factories.sign(account, text))
    assert response.status_code == 401, response.text
    assert error_code(response) == code


async def test_a_message_for_another_address_is_refused(client, settings):
    account, other = factories.new_account(), factories.new_account()
    nonce = await nonce_for(client, account.address)
    text = factories.siwe_message(settings, other.address, nonce)
    response = await verify(client, account.address, text, factories.sign(other, text))
    assert response.status_code == 401
    assert error_code(response) == "address_mismatch"


async def test_a_signature_by_another_key_is_refused(client, settings):
    account = factories.new_account()
    text = await message_for(client, settings, account)
    response = await verify(client, account.address, text, factories.sign(factories.new_account(), text))
    assert response.status_code == 401
    assert error_code(response) == "invalid_signature"


@pytest.mark.parametrize("signature", ["0x", "0xzz", "nothex", "0x" + "00" * 65])
async def test_a_garbage_signature_is_401_not_500(client, settings, signature):
    account = factories.new_account()
    text = await message_for(client, settings, account)
    response = await verify(client, account.address, text, signature)
    assert response.status_code == 401
    assert error_code(response) == "invalid_signature"


async def test_a_message_with_a_line_break_injected_is_refused(client, settings):
    account = factories.new_account()
    text = (await message_for(client, settings, account)).replace(
        "Sign in to DynamicVault.", "Sign in\r\nURI: https://evil.example"
    )
    response = await verify(client, account.address, text, factories.sign(account, text))
    assert response.status_code == 401
    assert error_code(response) == "malformed_message"


async def test_an_oversize_message_is_refused(client, settings):
    account = factories.new_account()
    text = "x" * 5000
    response = await verify(client, account.address, text, factories.sign(account, text))
    assert response.status_code == 401
    assert error_code(response) == "message_too_long"


# --- malformed bodies ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b"{not json", b'{"walletAddress": "0x', b"\xff\xfe", b""],
    ids=["broken", "truncated", "not utf-8", "empty"],
)
async def test_malformed_json_is_400(client, body):
    response = await client.post(
        "/api/auth/verify", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert error_code(response) == ("validation_error" if body == b"" else "malformed_json")


@pytest.mark.parametrize("body", [[], "text", 42, None, [{"walletAddress": "0x"}]], ids=str)
async def test_a_body_that_is_not_an_object_is_400(client, body):
    response = await client.post("/api/auth/verify", json=body)
    assert response.status_code == 400, response.text
    assert error_code(response) == "validation_error"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"walletAddress": "0x71C7656EC7ab88b098defB751B7401B5f6d8976F", "message": "m"},
        {"walletAddress": 1, "signature": "0x", "message": "m"},
        {"walletAddress": "0x71C7656EC7ab88b098defB751B7401B5f6d8976F", "signature": "0x", "message": ["m"]},
        {"walletAddress": "0x" + "1" * 5000, "signature": "0x", "message": "m"},
        {
            "walletAddress": "0x71C7656EC7ab88b098defB751B7401B5f6d8976F",
            "signature": "0x",
            "message": "m",
            "x": 1,
        },
    ],
    ids=["empty", "missing", "wrong type", "message list", "oversize", "unknown field"],
)
async def test_a_body_with_missing_or_wrong_fields_is_400(client, body):
    response = await client.post("/api/auth/verify", json=body)
    assert response.status_code == 400, response.text
    assert error_code(response) == "validation_error"


async def test_a_wallet_address_that_is_not_an_address_is_400(client):
    response = await client.post(
        "/api/auth/verify", json={"walletAddress": "0x1234", "signature": "0x00", "message": "m"}
    )
    assert response.status_code == 400
    assert error_code(response) == "invalid_wallet_address"


# --- conformance vectors through the API: their nonces were never issued here, so all are refused ---


@pytest.mark.parametrize(("name", "text"), vectors("parsing_negative.json"))
async def test_parsing_negative_vector_is_refused_by_the_api(client, name, text):
    address = "0xe5A12547fe4E872D192E3eCecb76F2Ce1aeA4946"
    response = await verify(client, address, text, "0x" + "11" * 65)
    assert response.status_code in (400, 401), response.text
    assert response.status_code == 400 or error_code(response) in {"malformed_message", "field_too_long"}


def _vector_text(fields: dict[str, Any]) -> str:
    text = f"{fields['domain']} wants you to sign in with your Ethereum account:\n{fields['address']}\n\n"
    if fields.get("statement"):
        text += f"{fields['statement']}\n"
    lines = [f"URI: {fields['uri']}", f"Version: {fields['version']}", f"Chain ID: {fields['chainId']}"]
    lines += [f"Nonce: {fields['nonce']}", f"Issued At: {fields['issuedAt']}"]
    for key, label in (
        ("expirationTime", "Expiration Time"),
        ("notBefore", "Not Before"),
        ("requestId", "Request ID"),
    ):
        if key in fields:
            lines.append(f"{label}: {fields[key]}")
    if fields.get("resources"):
        lines.append("Resources:" + "".join(f"\n- {r}" for r in fields["resources"]))
    return text + "\n" + "\n".join(lines)


@pytest.mark.parametrize(
    ("name", "vector"), vectors("verification_negative.json") + vectors("verification_positive.json")
)
async def test_verification_vector_is_refused_by_the_api(client, name, vector):
    response = await verify(client, vector["address"], _vector_text(vector), vector["signature"])
    assert response.status_code == 401, response.text
    # Parsed first, then the nonce: a never-issued nonce, unless the message does not even parse.
    assert error_code(response) in {"nonce_invalid", "malformed_message"}


# --- ERC-1271 contract wallets on the configured chain (anvil) ---------------------------------------------


async def test_a_contract_wallet_signs_in_through_erc1271(client, settings, clients):
    if clients.web3 is None:
        pytest.skip("no chain configured")
    owner = factories.new_account()
    wallet = await deploy_wallet(clients.web3, owner.address)
    nonce = await nonce_for(client, wallet)
    text = factories.siwe_message(settings, wallet, nonce)
    response = await verify(client, wallet, text, factories.sign(owner, text))
    assert response.status_code == 200, response.text
    assert response.json()["user"]["walletAddress"] == wallet

    intruder = factories.new_account()
    nonce = await nonce_for(client, wallet)
    text = factories.siwe_message(settings, wallet, nonce)
    refused = await verify(client, wallet, text, factories.sign(intruder, text))
    assert refused.status_code == 401
    assert error_code(refused) == "invalid_signature"
