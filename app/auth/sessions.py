"""Nonces, sessions, access and refresh tokens: issuing, rotating, revoking, and checking them.

Where state lives, and why:
- nonces: Redis only, `SET NX EX` to issue (value: the wallet) and `GETDEL` to consume, so a nonce is
  used once even when eight verifies race, and a flood of nonce requests writes nothing to MongoDB;
- sessions: MongoDB (`sessions`, hashes of refresh tokens only) is the truth; Redis keeps a cache of
  each session's validity (`auth:session:<sid>`: the wallet, or "revoked") that the authentication
  middleware reads on every request in the same round trip as its rate-limit counters. Revoking a
  session overwrites that entry, so every api process refuses its access tokens from the next request;
  a cache miss is filled from MongoDB with `SET NX`, which never overwrites a revocation;
- refresh: each refresh token is derived from the one before with the session's own secret, so the
  token just rotated away still refreshes for AUTH_REFRESH_REUSE_GRACE_S, answered with the same
  successor (two tabs at once); any other rotated token revokes the session.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from beanie import PydanticObjectId
from bson.errors import InvalidId
from redis.asyncio import Redis

from app.audit import service as audit_service
from app.auth import repository, siwe, tokens
from app.auth.documents import Session, User
from app.config import Settings
from app.lib.context import SYSTEM, RequestContext
from app.lib.errors import Forbidden, ServiceUnavailable, Unauthorized
from app.lib.params import checksum_address
from app.lib.timeutil import as_utc, utcnow

TOKEN_TYPE = "Bearer"
REFRESH_COOKIE = "dv_refresh"
REFRESH_COOKIE_PATH = "/api/auth"
REVOKED = "revoked"
MAX_ROTATED_HASHES = 1000  # ~10 days of 15-minute refreshes kept for reuse detection


def nonce_key(nonce: str) -> str:
    return f"auth:nonce:{nonce}"


def session_key(session_id: str) -> str:
    return f"auth:session:{session_id}"


def cache_ttl_s(settings: Settings) -> int:
    """How long Redis remembers a session's state or a role change: an access token's life + leeway."""
    return settings.auth.access_token_ttl_s + int(tokens.DEFAULT_LEEWAY.total_seconds()) + 30


# ---------------------------------------------------------------------------------------------- keys

_KEYRINGS: dict[tuple[Any, ...], tokens.KeyRing] = {}


def keyring(settings: Settings) -> tokens.KeyRing:
    """The JWT key ring of these settings: the signing key plus any verification-only keys."""
    auth = settings.auth
    secrets_by_kid = auth.hs256_secrets()
    cache_key = (auth.jwt_kid, tuple(sorted(secrets_by_kid.items())))
    ring = _KEYRINGS.get(cache_key)
    if ring is None:
        ring = _KEYRINGS[cache_key] = tokens.KeyRing.hs256(secrets_by_kid, signing_kid=auth.jwt_kid)
    return ring


def decode_bearer(settings: Settings, token: str) -> tokens.AccessClaims:
    """Verify an access token's signature and claims (no I/O), or 401 with the reason's code."""
    try:
        return tokens.decode_access_token(
            keyring(settings), token, issuer=settings.auth.jwt_issuer, audience=settings.auth.jwt_audience
        )
    except tokens.TokenRejected as exc:
        raise Unauthorized(exc.message, code=exc.code) from exc


# -------------------------------------------------------------------------------------------- nonces


@dataclass(frozen=True)
class NonceGrant:
    nonce: str
    expires_at: datetime
    domain: str
    uri: str
    chain_id: int


async def issue_nonce(redis: Redis, settings: Settings, wallet_address: str) -> NonceGrant:
    """A fresh single-use nonce for this wallet, kept in Redis until it expires or is used."""
    wallet = checksum_address(wallet_address)
    ttl = settings.auth.nonce_ttl_s
    for _ in range(3):
        nonce = siwe.new_nonce()
        if await redis.set(nonce_key(nonce), wallet, nx=True, ex=ttl):
            return NonceGrant(
                nonce=nonce,
                expires_at=utcnow() + timedelta(seconds=ttl),
                domain=settings.auth.domain,
                uri=settings.auth.uri,
                chain_id=settings.chain.chain_id,
            )
    raise ServiceUnavailable("could not issue a nonce", code="nonce_unavailable")  # 131-bit collisions


async def consume_nonce(redis: Redis, nonce: str) -> str | None:
    """Take a nonce out of the store (atomically: one caller gets it); the wallet it was issued to."""
    value = await redis.getdel(nonce_key(nonce))
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else value


# ------------------------------------------------------------------------------------------ sessions


@dataclass(frozen=True)
class TokenPair:
    """What a sign-in or a refresh gives: the access token (JSON) and the refresh token (cookie)."""

    user: User
    session_id: str
    access_token: str
    claims: tokens.AccessClaims
    refresh_token: str
    refresh_expires_at: datetime


async def start_session(
    redis: Redis,
    settings: Settings,
    user: User,
    *,
    ip_address: str | None,
    user_agent: str | None,
    now: datetime | None = None,
) -> TokenPair:
    """A new session for `user`: its refresh token (stored hashed) and a first access token."""
    if user.status != "active":
        raise Forbidden("this account is suspended", code="account_suspended")
    now = now or utcnow()
    refresh_token = tokens.new_refresh_token()
    session = Session(
        userId=user.id,
        walletAddress=user.walletAddress,
        token=tokens.hash_token(refresh_token),
        rotationKey=tokens.new_rotation_key(),
        createdAt=now,
        expiresAt=now + timedelta(seconds=settings.auth.refresh_token_ttl_s),
        ipAddress=ip_address,
        userAgent=(user_agent or "")[:512] or None,
    )
    await repository.insert_session(session)
    await _cache_session(redis, settings, str(session.id), user.walletAddress)
    return _token_pair(settings, user, session, refresh_token, now)


def _token_pair(
    settings: Settings, user: User, session: Session, refresh_token: str, now: datetime
) -> TokenPair:
    access_token, claims = tokens.issue_access_token(
        keyring(settings),
        subject=str(user.id),
        session_id=str(session.id),
        roles=list(user.roles),
        issuer=settings.auth.jwt_issuer,
        audience=settings.auth.jwt_audience,
        ttl=timedelta(seconds=settings.auth.access_token_ttl_s),
        now=now,
    )
    return TokenPair(
        user=user,
        session_id=str(session.id),
        access_token=access_token,
        claims=claims,
        refresh_token=refresh_token,
        refresh_expires_at=as_utc(session.expiresAt),
    )


# --------------------------------------------------------------------------------- refresh, logout


class RefreshReused(Unauthorized):
    """A refresh token that was already rotated away came back: the session is revoked."""

    code = "refresh_token_reused"

    def __init__(self, session: Session) -> None:
        super().__init__("this refresh token was already used; the session is revoked")
        self.session = session


async def refresh(
    redis: Redis,
    settings: Settings,
    refresh_token: str | None,
    *,
    now: datetime | None = None,
    context: RequestContext = SYSTEM,
) -> TokenPair:
    """Rotate a refresh token: a new access token and a new refresh token; reuse revokes the session."""
    if not refresh_token or len(refresh_token) > 256:
        raise Unauthorized("no refresh token", code="refresh_token_missing")
    token_hash = tokens.hash_token(refresh_token)
    now = now or utcnow()
    found, rotation_key = await repository.rotation_key_of(token_hash)
    if found:
        # A session from before rotation keys gets one with its first rotation.
        rotation_key = rotation_key or tokens.new_rotation_key()
        new_token = tokens.successor_refresh_token(rotation_key, refresh_token)
        # Conditional on the presented hash being the current one: of two concurrent refreshes, one
        # rotates and the other then finds its token just rotated away (the grace below).
        rotated = await repository.rotate_session_token(
            token_hash,
            new_hash=tokens.hash_token(new_token),
            rotation_key=rotation_key,
            now=now,
            keep_previous=MAX_ROTATED_HASHES,
        )
        if rotated is not None:
            return await _refreshed(redis, settings, rotated, new_token, now)

    reused = await repository.find_session_by_previous_token(token_hash)
    if reused is not None:
        successor = _grace_successor(settings, reused, refresh_token, now)
        if successor is not None:
            return await _refreshed(redis, settings, reused, successor, now)
        await revoke_session(redis, settings, str(reused.id), reason="refresh_token_reused")
        error = RefreshReused(reused)
        await audit_service.record(
            "auth.refresh_reuse",
            actor=reused.walletAddress,
            context=context,
            entity_type="session",
            entity_id=str(reused.id),
            success=False,
            reason=error.code,
        )
        raise error
    current = await repository.find_session_by_token(token_hash)
    if current is not None and not current.isValid:
        raise Unauthorized("the session was revoked", code="session_revoked")
    if current is not None:
        raise Unauthorized("the session has expired", code="session_expired")
    raise Unauthorized("the refresh token is not valid", code="invalid_refresh_token")


# Two tabs refreshing with one cookie: the second gets the very successor the first got (the same cookie,
# one session), not a rotation of its own, which would leave the shared cookie jar holding whichever
# answer came last, and that one refused as reused once the grace is over. After the grace, and for any
# older token, presenting it is reuse.
def _grace_successor(settings: Settings, session: Session, token: str, now: datetime) -> str | None:
    """The session's current refresh token if `token` is the one it replaced within the grace, else None."""
    grace = timedelta(seconds=settings.auth.refresh_reuse_grace_s)
    if not session.isValid or session.rotationKey is None or session.rotatedAt is None:
        return None
    if as_utc(session.expiresAt) <= now or as_utc(session.rotatedAt) + grace <= now:
        return None
    successor = tokens.successor_refresh_token(session.rotationKey, token)
    return successor if hmac.compare_digest(tokens.hash_token(successor), session.token) else None


async def _refreshed(
    redis: Redis, settings: Settings, session: Session, refresh_token: str, now: datetime
) -> TokenPair:
    user = await repository.get_user(session.userId)
    if user is None or user.status != "active":
        await revoke_session(redis, settings, str(session.id), reason="account_inactive")
        raise Unauthorized("the account is not active", code="account_inactive")
    await _cache_session(redis, settings, str(session.id), user.walletAddress)
    return _token_pair(settings, user, session, refresh_token, now)


async def session_for_refresh_token(refresh_token: str | None) -> Session | None:
    """The session whose current refresh token this is (for logout without an access token)."""
    if not refresh_token or len(refresh_token) > 256:
        return None
    return await repository.find_session_by_token(tokens.hash_token(refresh_token))


async def logout(
    redis: Redis, settings: Settings, refresh_token: str | None, *, context: RequestContext
) -> str:
    """End the session of the caller's access token, or else of the refresh cookie; the session's id."""
    principal = context.principal
    session_id = principal.session_id if principal is not None else None
    wallet = principal.wallet_address if principal is not None else None
    if session_id is None:
        session = await session_for_refresh_token(refresh_token)
        if session is not None:
            session_id, wallet = str(session.id), session.walletAddress
    if session_id is None:  # nothing says which session to end
        if principal is None:
            raise Unauthorized("authentication required", code="authentication_required")
        raise Forbidden("an API key has no session to end", code="session_required")
    await revoke_session(redis, settings, session_id, reason="logout")
    await audit_service.record(
        "auth.logout", actor=wallet, context=context, entity_type="session", entity_id=session_id
    )
    return session_id


async def revoke_session(redis: Redis, settings: Settings, session_id: str, *, reason: str) -> bool:
    """Invalidate a session in MongoDB, then in the Redis cache every api process reads; False if unknown."""
    try:
        oid = PydanticObjectId(session_id)
    except (InvalidId, TypeError):
        return False
    revoked = await repository.invalidate_session(oid, reason)
    # A plain SET (not NX): it must overwrite a cached "valid" entry.
    await redis.set(session_key(session_id), REVOKED, ex=cache_ttl_s(settings))
    return revoked


def queue_revocations(pipe: Any, settings: Settings, session_ids: Iterable[str]) -> None:
    """Add to a Redis pipeline: mark each session revoked in the cache every api process reads."""
    for session_id in session_ids:
        pipe.set(session_key(session_id), REVOKED, ex=cache_ttl_s(settings))


async def _cache_session(redis: Redis, settings: Settings, session_id: str, wallet: str) -> None:
    # NX: never overwrite a revocation written by a concurrent logout.
    await redis.set(session_key(session_id), wallet, nx=True, ex=cache_ttl_s(settings))


async def session_wallet(redis: Redis, settings: Settings, session_id: str) -> str | None:
    """The wallet of a valid session, read from MongoDB on a cache miss (then cached); None if not valid."""
    try:
        oid = PydanticObjectId(session_id)
    except (InvalidId, TypeError):
        return None
    raw = await repository.session_state(oid)
    if raw is None or not raw.get("isValid") or as_utc(raw["expiresAt"]) <= utcnow():
        await redis.set(session_key(session_id), REVOKED, nx=True, ex=cache_ttl_s(settings))
        return None
    await _cache_session(redis, settings, session_id, raw["walletAddress"])
    return raw["walletAddress"]
