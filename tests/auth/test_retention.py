"""What sign-in keeps and for how long: nonces expire in Redis, ended sessions leave through a TTL index."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from app.auth import sessions
from app.auth.documents import SESSION_ENDED_RETENTION_S, SESSION_RETENTION_S, Session
from app.lib.timeutil import as_utc, utcnow
from tests import factories


async def ttl_indexes(clients, settings) -> dict[str, tuple[list, int]]:
    info = await clients.mongo[settings.mongodb.database]["sessions"].index_information()
    return {
        name: (spec["key"], spec["expireAfterSeconds"])
        for name, spec in info.items()
        if "expireAfterSeconds" in spec
    }


async def test_an_unused_nonce_expires_in_redis(client, settings, clients):
    short = settings.model_copy(update={"auth": settings.auth.model_copy(update={"nonce_ttl_s": 1})})
    grant = await sessions.issue_nonce(clients.redis, short, factories.ALICE)
    assert 0 < await clients.redis.pttl(sessions.nonce_key(grant.nonce)) <= 1000

    await asyncio.sleep(1.1)

    assert await clients.redis.exists(sessions.nonce_key(grant.nonce)) == 0
    assert await sessions.consume_nonce(clients.redis, grant.nonce) is None


async def test_a_logout_stamps_the_session_ended_for_the_ttl_index_of_ended_sessions(
    client, settings, clients
):
    assert await ttl_indexes(clients, settings) == {
        "expiresAt_ttl": ([("expiresAt", 1)], SESSION_RETENTION_S),
        "endedAt_ttl": ([("endedAt", 1)], SESSION_ENDED_RETENTION_S),
    }
    assert SESSION_ENDED_RETENTION_S == 7 * 86400
    login = await factories.login(settings)
    session = await Session.get(login.session_id)
    assert session.endedAt is None  # a live session has no date the ended sessions' TTL would count from

    before = utcnow()
    assert (await client.post("/api/auth/logout", headers=login.headers)).status_code == 204

    session = await Session.get(login.session_id)
    assert session.isValid is False and session.revokedReason == "logout"
    assert before <= as_utc(session.endedAt) <= utcnow()


async def test_suspending_an_account_stamps_every_session_it_ends(client, settings):
    admin = await factories.login(settings, roles=("admin",))
    first = await factories.login(settings)
    second = await factories.login(settings, wallet=first.wallet)

    path = f"/api/auth/users/{first.wallet}/status"
    response = await client.put(path, json={"status": "suspended"}, headers=admin.headers)
    assert response.status_code == 200, response.text

    for login in (first, second):
        session = await Session.get(login.session_id)
        assert session.revokedReason is not None and session.isValid is False
        assert utcnow() - as_utc(session.endedAt) < timedelta(minutes=1)
    assert (await Session.get(admin.session_id)).endedAt is None
