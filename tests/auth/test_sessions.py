"""Access tokens at the API, refresh rotation with reuse detection, logout, and key rotation."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from datetime import timedelta

import httpx
import jwt
import pytest
from litestar import Litestar
from pydantic import SecretStr

from app.audit.documents import AuditLog
from app.auth import sessions, tokens
from app.auth.documents import Session
from app.lib.timeutil import as_utc
from app.main import create_app
from tests import factories


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def forge(
    settings, login, *, secret: str | None = None, kid: str | None = None, alg: str = "HS256", **claims
):
    now = int(time.time())
    payload = {
        "iss": settings.auth.jwt_issuer,
        "aud": settings.auth.jwt_audience,
        "sub": login.user_id,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": "forged",
        "sid": login.session_id,
        "roles": ["admin"],
        "typ": "access",
    }
    payload.update(claims)
    key = secret if secret is not None else settings.auth.jwt_secret.get_secret_value()
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid or settings.auth.jwt_kid})


def unsigned(settings, login) -> str:
    def b64(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    now = int(time.time())
    header = {"alg": "none", "typ": "JWT", "kid": settings.auth.jwt_kid}
    body = {
        "iss": settings.auth.jwt_issuer,
        "aud": settings.auth.jwt_audience,
        "sub": login.user_id,
        "iat": now,
        "exp": now + 600,
        "jti": "x",
        "sid": login.session_id,
        "roles": ["admin"],
        "typ": "access",
    }
    return f"{b64(header)}.{b64(body)}."


async def me(client, headers):
    return await client.get("/api/auth/me", headers=headers)


def code(response) -> str:
    return response.json()["error"]["code"]


# --- access tokens ---------------------------------------------------------------------------------------


async def test_the_access_token_carries_the_required_claims_and_a_kid(client, settings):
    login = await factories.login(settings, roles=("user", "oracle"))
    header = jwt.get_unverified_header(login.access_token)
    assert header["alg"] == "HS256" and header["kid"] == settings.auth.jwt_kid
    claims = jwt.decode(login.access_token, options={"verify_signature": False})
    assert {"iss", "aud", "sub", "exp", "iat", "jti", "sid", "roles"} <= set(claims)
    assert claims["exp"] - claims["iat"] == 15 * 60
    assert claims["sid"] == login.session_id and claims["sub"] == login.user_id
    assert claims["roles"] == ["user", "oracle"]


async def test_an_honest_hand_made_token_is_accepted(client, settings):
    # the forging helper itself is sound: with our secret and claims it passes
    login = await factories.login(settings)
    assert (await me(client, bearer(forge(settings, login, roles=["user"])))).status_code == 200


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda s, lg: forge(s, lg, secret="another-secret-that-is-long-enough-0123456789"), "invalid_token"),
        (
            lambda s, lg: forge(s, lg, exp=int(time.time()) - 3600, iat=int(time.time()) - 4000),
            "token_expired",
        ),
        (lambda s, lg: forge(s, lg, aud="another-api"), "invalid_audience"),
        (lambda s, lg: forge(s, lg, iss="someone-else"), "invalid_issuer"),
        (lambda s, lg: forge(s, lg, kid="k-unknown"), "unknown_key"),
        (lambda s, lg: forge(s, lg, typ="refresh"), "wrong_token_type"),
        (lambda s, lg: forge(s, lg, alg="HS512"), "invalid_token"),
        (lambda s, lg: unsigned(s, lg), "invalid_token"),
        (
            lambda s, lg: lg.access_token[:-4] + ("AAAA" if not lg.access_token.endswith("AAAA") else "BBBB"),
            "invalid_token",
        ),
    ],
    ids=[
        "forged",
        "expired",
        "wrong audience",
        "wrong issuer",
        "unknown kid",
        "wrong typ",
        "other alg",
        "alg none",
        "tampered",
    ],
)
async def test_a_bad_access_token_is_401_with_its_reason(client, settings, make, expected):
    login = await factories.login(settings)
    response = await me(client, bearer(make(settings, login)))
    assert response.status_code == 401, response.text
    assert code(response) == expected


async def test_a_token_for_an_unknown_session_is_refused(client, settings):
    login = await factories.login(settings)
    token = forge(settings, login, sid="0123456789abcdef01234567", roles=["user"])
    response = await me(client, bearer(token))
    assert response.status_code == 401
    assert code(response) == "session_revoked"


async def test_a_verification_only_key_is_accepted_during_a_rotation(client, settings, clients):
    old_secret = "the-previous-signing-secret-0123456789abcdef"
    rotated = settings.model_copy(
        update={
            "auth": settings.auth.model_copy(
                update={
                    "jwt_kid": "k2",
                    "jwt_secret": settings.auth.jwt_secret,
                    "jwt_verify_keys": {"k1-old": SecretStr(old_secret)},
                }
            )
        }
    )
    app: Litestar = create_app(rotated)
    app.state.clients = clients  # same databases; no second lifespan
    login = await factories.login(rotated)
    assert jwt.get_unverified_header(login.access_token)["kid"] == "k2"  # only the current key signs
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as other:
        assert (await me(other, login.headers)).status_code == 200
        old = forge(rotated, login, secret=old_secret, kid="k1-old", roles=["user"])
        assert (await me(other, bearer(old))).status_code == 200
        wrong = forge(rotated, login, secret=old_secret, kid="k2", roles=["user"])
        assert code(await me(other, bearer(wrong))) == "invalid_token"


# --- refresh -------------------------------------------------------------------------------------------


async def signed_in(client, settings) -> tuple[str, str]:
    """Sign in over HTTP; (access token, refresh token) — the client keeps the cookie too."""
    response = await factories.siwe_sign_in(client, settings)
    assert response.status_code == 200, response.text
    return response.json()["accessToken"], client.cookies[sessions.REFRESH_COOKIE]


async def test_refresh_rotates_the_cookie_and_issues_a_new_access_token(client, settings):
    access, first = await signed_in(client, settings)
    response = await client.post("/api/auth/refresh")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["tokenType"] == "Bearer" and body["accessToken"] != access
    second = client.cookies[sessions.REFRESH_COOKIE]
    assert second != first
    assert "httponly" in response.headers["set-cookie"].lower()
    assert (await me(client, bearer(body["accessToken"]))).status_code == 200
    old_sid = jwt.decode(access, options={"verify_signature": False})["sid"]
    assert jwt.decode(body["accessToken"], options={"verify_signature": False})["sid"] == old_sid


async def test_reusing_a_rotated_refresh_token_revokes_the_whole_session(client, settings):
    access, first = await signed_in(client, settings)
    assert (await client.post("/api/auth/refresh")).status_code == 200
    fresh_access = (await client.post("/api/auth/refresh")).json()["accessToken"]
    # an attacker replays the first refresh token
    client.cookies.clear()
    reuse = await client.post("/api/auth/refresh", cookies={sessions.REFRESH_COOKIE: first})
    assert reuse.status_code == 401
    assert code(reuse) == "refresh_token_reused"
    # every token of the session is dead now: old and new access tokens, the latest refresh token
    for token in (access, fresh_access):
        response = await me(client, bearer(token))
        assert response.status_code == 401 and code(response) == "session_revoked"
    session = await Session.find_one({})
    assert session.isValid is False and session.revokedReason == "refresh_token_reused"
    entry = await AuditLog.find_one(AuditLog.action == "auth.refresh_reuse")
    assert entry is not None and entry.entityId == str(session.id) and entry.ipAddress == "127.0.0.1"


async def refresh_with(client, token: str):
    """A refresh presenting exactly this cookie (the client keeps no cookie of its own)."""
    client.cookies.clear()
    try:
        return await client.post("/api/auth/refresh", cookies={sessions.REFRESH_COOKIE: token})
    finally:
        client.cookies.clear()


async def test_two_tabs_refreshing_with_one_cookie_both_succeed_and_the_session_lives(client, settings):
    await signed_in(client, settings)
    token = client.cookies[sessions.REFRESH_COOKIE]
    client.cookies.clear()
    responses = await asyncio.gather(
        *(client.post("/api/auth/refresh", cookies={sessions.REFRESH_COOKIE: token}) for _ in range(2))
    )
    assert [r.status_code for r in responses] == [200, 200], [r.text for r in responses]
    # one successor for both: whichever answer the shared cookie jar keeps, it is the current token
    cookies = {r.cookies[sessions.REFRESH_COOKIE] for r in responses}
    assert len(cookies) == 1 and token not in cookies
    for response in responses:
        assert (await me(client, bearer(response.json()["accessToken"]))).status_code == 200
    session = await Session.find_one({})
    assert session.isValid is True
    (successor,) = cookies
    later = await refresh_with(client, successor)
    assert later.status_code == 200, later.text
    assert (await me(client, bearer(later.json()["accessToken"]))).status_code == 200


async def test_two_tabs_refreshing_a_session_from_before_rotation_keys_both_succeed(
    client, settings, clients
):
    await signed_in(client, settings)
    token = client.cookies[sessions.REFRESH_COOKIE]
    client.cookies.clear()
    await Session.get_pymongo_collection().update_many({}, {"$unset": {"rotationKey": "", "rotatedAt": ""}})
    responses = await asyncio.gather(
        *(client.post("/api/auth/refresh", cookies={sessions.REFRESH_COOKIE: token}) for _ in range(3))
    )
    assert [r.status_code for r in responses] == [200, 200, 200], [r.text for r in responses]
    assert len({r.cookies[sessions.REFRESH_COOKIE] for r in responses}) == 1
    assert (await Session.find_one({})).isValid is True


async def test_a_rotated_refresh_token_replayed_after_the_grace_revokes_the_session(
    client, settings, clients
):
    access, first = await signed_in(client, settings)
    rotated = await refresh_with(client, first)
    assert rotated.status_code == 200
    # the grace is over (another api process whose grace is nil sees the replay)
    no_grace = settings.model_copy(
        update={"auth": settings.auth.model_copy(update={"refresh_reuse_grace_s": 0})}
    )
    other_app = create_app(no_grace)
    other_app.state.clients = clients
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=other_app), base_url="http://localhost:8000"
    ) as other:
        replay = await refresh_with(other, first)
        assert replay.status_code == 401 and code(replay) == "refresh_token_reused"
        current = await refresh_with(other, rotated.cookies[sessions.REFRESH_COOKIE])
        assert current.status_code == 401  # the whole session is gone, the latest token too
    for token in (access, rotated.json()["accessToken"]):
        response = await me(client, bearer(token))
        assert response.status_code == 401 and code(response) == "session_revoked"
    session = await Session.find_one({})
    assert session.isValid is False and session.revokedReason == "refresh_token_reused"


async def test_the_grace_ends_on_the_clock(client, settings, clients):
    _, first = await signed_in(client, settings)
    pair = await sessions.refresh(clients.redis, settings, first)
    grace = timedelta(seconds=settings.auth.refresh_reuse_grace_s)
    session = await Session.find_one({})
    within = await sessions.refresh(clients.redis, settings, first, now=as_utc(session.rotatedAt) + grace / 2)
    assert within.refresh_token == pair.refresh_token
    with pytest.raises(sessions.RefreshReused):
        await sessions.refresh(clients.redis, settings, first, now=as_utc(session.rotatedAt) + grace)
    assert (await Session.find_one({})).isValid is False


async def test_a_stolen_old_token_does_not_give_its_successor():
    key_a, key_b = tokens.new_rotation_key(), tokens.new_rotation_key()
    token = tokens.new_refresh_token()
    successor = tokens.successor_refresh_token(key_a, token)
    assert successor == tokens.successor_refresh_token(key_a, token)
    assert successor != tokens.successor_refresh_token(key_b, token)
    assert len(successor) == 43 and successor != token


async def test_refresh_without_or_with_a_bad_cookie_is_401(client):
    missing = await client.post("/api/auth/refresh")
    assert missing.status_code == 401 and code(missing) == "refresh_token_missing"
    bad = await client.post("/api/auth/refresh", cookies={sessions.REFRESH_COOKIE: "nonsense"})
    assert bad.status_code == 401 and code(bad) == "invalid_refresh_token"


async def test_the_refresh_cookie_is_not_an_access_token(client, settings):
    _, refresh_token = await signed_in(client, settings)
    response = await me(client, bearer(refresh_token))
    assert response.status_code == 401 and code(response) == "invalid_token"


async def test_refresh_picks_up_role_changes(client, settings, clients):
    access, _ = await signed_in(client, settings)
    sub = jwt.decode(access, options={"verify_signature": False})["sub"]
    await clients.mongo[settings.mongodb.database]["users"].update_one(
        {"_id": (await Session.find_one({})).userId}, {"$addToSet": {"roles": "oracle"}}
    )
    body = (await client.post("/api/auth/refresh")).json()
    claims = jwt.decode(body["accessToken"], options={"verify_signature": False})
    assert claims["sub"] == sub and sorted(claims["roles"]) == ["oracle", "user"]


# --- logout --------------------------------------------------------------------------------------------


async def test_logout_ends_the_session_at_once(client, settings):
    access, _ = await signed_in(client, settings)
    assert (await me(client, bearer(access))).status_code == 200
    response = await client.post("/api/auth/logout", headers=bearer(access))
    assert response.status_code == 204
    assert "max-age=0" in response.headers["set-cookie"].lower()
    after = await me(client, bearer(access))
    assert after.status_code == 401 and code(after) == "session_revoked"
    session = await Session.find_one({})
    assert session.isValid is False and session.revokedReason == "logout"
    assert await AuditLog.find_one(AuditLog.action == "auth.logout", AuditLog.entityId == str(session.id))


async def test_after_logout_the_refresh_token_is_refused(client, settings):
    access, refresh_token = await signed_in(client, settings)
    assert (await client.post("/api/auth/logout", headers=bearer(access))).status_code == 204
    response = await client.post("/api/auth/refresh", cookies={sessions.REFRESH_COOKIE: refresh_token})
    assert response.status_code == 401 and code(response) == "session_revoked"


async def test_logout_with_only_the_refresh_cookie_works(client, settings):
    access, _ = await signed_in(client, settings)
    assert (await client.post("/api/auth/logout")).status_code == 204
    assert code(await me(client, bearer(access))) == "session_revoked"


async def test_logout_without_credentials_is_401(client):
    response = await client.post("/api/auth/logout")
    assert response.status_code == 401 and code(response) == "authentication_required"


async def test_logout_in_one_api_process_is_seen_by_another(client, settings, clients):
    # A second app (another api process) shares Redis and MongoDB, not memory.
    other_app = create_app(settings)
    other_app.state.clients = clients
    access, _ = await signed_in(client, settings)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=other_app), base_url="http://test"
    ) as other:
        assert (await me(other, bearer(access))).status_code == 200
        assert (await client.post("/api/auth/logout", headers=bearer(access))).status_code == 204
        response = await me(other, bearer(access))
        assert response.status_code == 401 and code(response) == "session_revoked"


async def test_expired_sessions_go_away_through_a_ttl_index(client, settings, clients):
    info = await clients.mongo[settings.mongodb.database]["sessions"].index_information()
    assert any(spec["key"] == [("expiresAt", 1)] and "expireAfterSeconds" in spec for spec in info.values())
