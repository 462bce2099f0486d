"""Sign-in with Ethereum, sessions, roles and API keys: the auth domain's logic, without HTTP objects.

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
  successor (two tabs at once); any other rotated token revokes the session;
- roles: in the access token, overridden by `auth:roles:<uid>` (written on every role change, kept as
  long as an access token lives) so that a grant or a revocation applies at once, not after 15 minutes;
- API keys: MongoDB (`users.apiKeys`, hashes only) is the truth; a key's permissions are bounded by its
  owner's current roles unless an admin granted them for that wallet (`grantedByAdmin`, see
  app/lib/security.py).
  Redis caches each key's principal (`auth:apikey:<sha256 of the key>`, at most API_KEY_CACHE_TTL and
  never past the key's expiry), its owner's roles included, stamped with the key's generation
  (`auth:apikey:gen:<key id>`). The middleware reads both in its one round trip and uses the entry only
  if the stamps agree. Whatever changes what a key may do (revocation, a role change or suspension of
  its owner) writes MongoDB first, then bumps the generation and deletes the entry: every process
  refuses the old entry at once, and a refill that read MongoDB before the change carries the old
  stamp, so it cannot bring a revoked key (or a revoked role's permission) back.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import msgspec
from beanie import PydanticObjectId
from bson.errors import InvalidId
from eth_utils import is_address, to_checksum_address
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError
from redis.asyncio import Redis
from web3 import AsyncWeb3

from app.auth import siwe, tokens
from app.auth.documents import ApiKey, Session, User
from app.config import Settings
from app.lib.errors import BadRequest, Conflict, Forbidden, NotFound, ServiceUnavailable, Unauthorized
from app.lib.params import checksum_address
from app.lib.security import KNOWN_PERMISSIONS, Principal, roles_grant
from app.lib.timeutil import as_utc, client_time, utcnow

ROLES = ("user", "admin", "oracle")
TOKEN_TYPE = "Bearer"
REFRESH_COOKIE = "dv_refresh"
REFRESH_COOKIE_PATH = "/api/auth"
API_KEY_HEADER = "X-API-Key"
REVOKED = "revoked"
MAX_ROTATED_HASHES = 1000  # ~10 days of 15-minute refreshes kept for reuse detection
API_KEY_LAST_USED_RESOLUTION = timedelta(seconds=60)  # lastUsed is written at most once a minute per key
API_KEY_CACHE_TTL = timedelta(seconds=60)
# Far longer than any entry stamped with an older generation can live (a refill slower than the cache
# TTL is not cached), so an expired counter can never make such an entry current again.
API_KEY_GENERATION_TTL = timedelta(days=1)


def nonce_key(nonce: str) -> str:
    return f"auth:nonce:{nonce}"


def session_key(session_id: str) -> str:
    return f"auth:session:{session_id}"


def roles_key(user_id: str) -> str:
    return f"auth:roles:{user_id}"


def api_key_cache_key(key_hash: str) -> str:
    return f"auth:apikey:{key_hash}"


def api_key_generation_key(key_id: str) -> str:
    return f"auth:apikey:gen:{key_id}"


def api_key_used_key(key_id: str) -> str:
    return f"auth:apikey:used:{key_id}"


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


# ------------------------------------------------------------------------------------------ sign-in


@dataclass(frozen=True)
class TokenPair:
    """What a sign-in or a refresh gives: the access token (JSON) and the refresh token (cookie)."""

    user: User
    session_id: str
    access_token: str
    claims: tokens.AccessClaims
    refresh_token: str
    refresh_expires_at: datetime


def _siwe_error(exc: siwe.SiweRejected) -> Unauthorized | ServiceUnavailable:
    if exc.code == "chain_unavailable":
        return ServiceUnavailable(exc.message, code="chain_unavailable")
    return Unauthorized(exc.message, code=exc.code)


async def verify_sign_in_message(
    redis: Redis,
    web3: AsyncWeb3 | None,
    settings: Settings,
    *,
    wallet_address: str,
    message: str,
    signature: str,
    now: datetime | None = None,
) -> str:
    """Check an EIP-4361 sign-in strictly and consume its nonce; the EIP-55 wallet, or 400/401/503."""
    wallet = checksum_address(wallet_address)
    try:
        # The ABNF parser takes ~5 ms for a usual message and up to ~0.2 s at the size limits: off the
        # event loop, so that one sign-in does not stall every other request of this process.
        msg = await asyncio.to_thread(siwe.parse_message, message)
    except siwe.SiweRejected as exc:
        raise _siwe_error(exc) from exc
    issued_to = await consume_nonce(redis, msg.nonce)
    if issued_to is None:
        raise Unauthorized("the nonce was not issued, has expired or was already used", code="nonce_invalid")
    if issued_to != wallet:
        raise Unauthorized("the nonce was issued for another wallet", code="nonce_mismatch")
    try:
        siwe.verify_message_fields(
            msg,
            expected_domain=settings.auth.domain,
            expected_uri=settings.auth.uri,
            expected_chain_id=settings.chain.chain_id,
            expected_address=wallet,
            expected_nonce=msg.nonce,
            now=now or utcnow(),
            clock_skew=timedelta(seconds=settings.auth.clock_skew_s),
        )
        await siwe.verify_signature(message, signature, wallet, w3=web3)
    except siwe.SiweRejected as exc:
        raise _siwe_error(exc) from exc
    return wallet


async def upsert_user(settings: Settings, wallet: str, *, now: datetime | None = None) -> User:
    """The user of this wallet, created on first sign-in; `lastLogin` set, admin granted per ADMIN_WALLETS."""
    now = now or utcnow()
    defaults = User(walletAddress=wallet).model_dump(exclude={"id", "revision_id", "lastLogin"})
    collection = User.get_pymongo_collection()
    raw = None
    for _ in range(3):  # an upsert racing another on a unique index may raise E11000: retry
        try:
            raw = await collection.find_one_and_update(
                {"walletAddress": wallet},
                {"$set": {"lastLogin": now}, "$setOnInsert": defaults},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
            break
        except DuplicateKeyError:
            continue
    if raw is None:
        raise Conflict("the user could not be created", code="user_conflict")
    admins = {to_checksum_address(a) for a in settings.admin_wallets if is_address(a)}
    if wallet in admins and "admin" not in raw.get("roles", []):
        raw = await collection.find_one_and_update(
            {"_id": raw["_id"]}, {"$addToSet": {"roles": "admin"}}, return_document=ReturnDocument.AFTER
        )
    return User.model_validate(raw)


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
    await session.insert()
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


async def sign_in(
    redis: Redis,
    web3: AsyncWeb3 | None,
    settings: Settings,
    *,
    wallet_address: str,
    message: str,
    signature: str,
    ip_address: str | None,
    user_agent: str | None,
) -> TokenPair:
    """Verify a SIWE sign-in, upsert its user and open a session."""
    wallet = await verify_sign_in_message(
        redis, web3, settings, wallet_address=wallet_address, message=message, signature=signature
    )
    user = await upsert_user(settings, wallet)
    return await start_session(redis, settings, user, ip_address=ip_address, user_agent=user_agent)


# --------------------------------------------------------------------------------- refresh, logout


class RefreshReused(Unauthorized):
    """A refresh token that was already rotated away came back: the session is revoked."""

    code = "refresh_token_reused"

    def __init__(self, session: Session) -> None:
        super().__init__("this refresh token was already used; the session is revoked")
        self.session = session


async def refresh(
    redis: Redis, settings: Settings, refresh_token: str | None, *, now: datetime | None = None
) -> TokenPair:
    """Rotate a refresh token: a new access token and a new refresh token; reuse revokes the session."""
    if not refresh_token or len(refresh_token) > 256:
        raise Unauthorized("no refresh token", code="refresh_token_missing")
    token_hash = tokens.hash_token(refresh_token)
    now = now or utcnow()
    sessions = Session.get_pymongo_collection()
    current = await sessions.find_one({"token": token_hash}, {"rotationKey": 1})
    if current is not None:
        # A session from before rotation keys gets one with its first rotation.
        rotation_key = current.get("rotationKey") or tokens.new_rotation_key()
        new_token = tokens.successor_refresh_token(rotation_key, refresh_token)
        # Conditional on the presented hash being the current one: of two concurrent refreshes, one
        # rotates and the other then finds its token just rotated away (the grace below).
        raw = await sessions.find_one_and_update(
            {"token": token_hash, "isValid": True, "expiresAt": {"$gt": now}},
            {
                "$set": {
                    "token": tokens.hash_token(new_token),
                    "rotationKey": rotation_key,
                    "rotatedAt": now,
                },
                "$push": {"previousTokens": {"$each": [token_hash], "$slice": -MAX_ROTATED_HASHES}},
            },
            return_document=ReturnDocument.AFTER,
        )
        if raw is not None:
            return await _refreshed(redis, settings, Session.model_validate(raw), new_token, now)

    reused = await Session.find_one(Session.previousTokens == token_hash)
    if reused is not None:
        successor = _grace_successor(settings, reused, refresh_token, now)
        if successor is not None:
            return await _refreshed(redis, settings, reused, successor, now)
        await revoke_session(redis, settings, str(reused.id), reason="refresh_token_reused")
        raise RefreshReused(reused)
    current = await Session.find_one(Session.token == token_hash)
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
    user = await User.get(session.userId)
    if user is None or user.status != "active":
        await revoke_session(redis, settings, str(session.id), reason="account_inactive")
        raise Unauthorized("the account is not active", code="account_inactive")
    await _cache_session(redis, settings, str(session.id), user.walletAddress)
    return _token_pair(settings, user, session, refresh_token, now)


async def session_for_refresh_token(refresh_token: str | None) -> Session | None:
    """The session whose current refresh token this is (for logout without an access token)."""
    if not refresh_token or len(refresh_token) > 256:
        return None
    return await Session.find_one(Session.token == tokens.hash_token(refresh_token))


async def revoke_session(redis: Redis, settings: Settings, session_id: str, *, reason: str) -> bool:
    """Invalidate a session in MongoDB, then in the Redis cache every api process reads; False if unknown."""
    try:
        oid = PydanticObjectId(session_id)
    except (InvalidId, TypeError):
        return False
    result = await Session.get_pymongo_collection().update_one(
        {"_id": oid, "isValid": True}, {"$set": {"isValid": False, "revokedReason": reason}}
    )
    # A plain SET (not NX): it must overwrite a cached "valid" entry.
    await redis.set(session_key(session_id), REVOKED, ex=cache_ttl_s(settings))
    return result.modified_count == 1


async def _cache_session(redis: Redis, settings: Settings, session_id: str, wallet: str) -> None:
    # NX: never overwrite a revocation written by a concurrent logout.
    await redis.set(session_key(session_id), wallet, nx=True, ex=cache_ttl_s(settings))


async def session_wallet(redis: Redis, settings: Settings, session_id: str) -> str | None:
    """The wallet of a valid session, read from MongoDB on a cache miss (then cached); None if not valid."""
    try:
        oid = PydanticObjectId(session_id)
    except (InvalidId, TypeError):
        return None
    raw = await Session.get_pymongo_collection().find_one(
        {"_id": oid}, {"walletAddress": 1, "isValid": 1, "expiresAt": 1}
    )
    if raw is None or not raw.get("isValid") or as_utc(raw["expiresAt"]) <= utcnow():
        await redis.set(session_key(session_id), REVOKED, nx=True, ex=cache_ttl_s(settings))
        return None
    await _cache_session(redis, settings, session_id, raw["walletAddress"])
    return raw["walletAddress"]


# ----------------------------------------------------------------------------------------- roles


async def get_user_by_wallet(wallet_address: str) -> User:
    wallet = checksum_address(wallet_address)
    user = await User.find_one(User.walletAddress == wallet)
    if user is None:
        raise NotFound(f"no user with wallet {wallet}", code="user_not_found")
    return user


async def change_role(
    redis: Redis, settings: Settings, wallet_address: str, role: str, *, grant: bool, actor: Principal
) -> tuple[User, list[str], list[str]]:
    """Grant or revoke a role; effective at once in every api process. Returns (user, old, new roles)."""
    if role not in ROLES:
        raise BadRequest(f"unknown role {role!r}; roles are {', '.join(ROLES)}", code="unknown_role")
    user = await get_user_by_wallet(wallet_address)
    if not grant and role == "admin" and str(user.id) == actor.user_id:
        raise Conflict("an admin cannot revoke their own admin role", code="cannot_revoke_own_admin")
    update = {"$addToSet": {"roles": role}} if grant else {"$pull": {"roles": role}}
    raw = await User.get_pymongo_collection().find_one_and_update(
        {"_id": user.id}, update, return_document=ReturnDocument.AFTER
    )
    if raw is None:
        raise NotFound(f"no user with wallet {user.walletAddress}", code="user_not_found")
    updated = User.model_validate(raw)
    pipe = redis.pipeline(transaction=False)
    pipe.set(roles_key(str(user.id)), ",".join(sorted(updated.roles)), ex=cache_ttl_s(settings))
    _queue_api_key_invalidation(pipe, updated.apiKeys)
    await pipe.execute()
    return updated, list(user.roles), list(updated.roles)


async def set_user_status(
    redis: Redis, settings: Settings, wallet_address: str, status: str, *, actor: Principal
) -> tuple[User, str]:
    """Suspend or reactivate a user; a suspension ends their sessions and stops their API keys at once.

    Returns (the updated user, the old status).
    """
    if status not in ("active", "suspended"):
        raise BadRequest("status is 'active' or 'suspended'", code="invalid_status")
    user = await get_user_by_wallet(wallet_address)
    if status == "suspended" and str(user.id) == actor.user_id:
        raise Conflict("an admin cannot suspend their own account", code="cannot_suspend_self")
    raw = await User.get_pymongo_collection().find_one_and_update(
        {"_id": user.id}, {"$set": {"status": status}}, return_document=ReturnDocument.AFTER
    )
    if raw is None:
        raise NotFound(f"no user with wallet {user.walletAddress}", code="user_not_found")
    updated = User.model_validate(raw)
    if status == "suspended":
        sessions = Session.get_pymongo_collection()
        session_ids = [
            str(doc["_id"]) async for doc in sessions.find({"userId": user.id, "isValid": True}, {"_id": 1})
        ]
        await sessions.update_many(
            {"userId": user.id, "isValid": True},
            {"$set": {"isValid": False, "revokedReason": "account_suspended"}},
        )
    else:
        session_ids = []
    pipe = redis.pipeline(transaction=False)
    for session_id in session_ids:
        pipe.set(session_key(session_id), REVOKED, ex=cache_ttl_s(settings))
    _queue_api_key_invalidation(pipe, updated.apiKeys)
    await pipe.execute()
    return updated, user.status


# -------------------------------------------------------------------------------------- API keys


async def create_api_key(
    settings: Settings,
    owner: User,
    *,
    name: str,
    permissions: Sequence[str],
    expires_at: datetime | None,
    created_by_admin: bool,
    granted_by: str | None = None,
) -> tuple[ApiKey, str]:
    """A new API key for `owner`: (the stored record, the key itself — shown once, never stored).

    A key owner may only grant what their roles allow, and the key keeps only what their roles still
    allow at each request; an admin may scope a key for another wallet to any known permission (e.g. an
    `oracle:submit` key for an oracle operator's wallet), and that grant stands on its own.
    `granted_by`: the creator's wallet; None with `created_by_admin` for operator scripts acting as admin.
    An admin's key for their own wallet is self-granted: it shrinks if they lose the admin role.
    """
    now = utcnow()
    unknown = sorted(set(permissions) - KNOWN_PERMISSIONS)
    if unknown:
        raise BadRequest(f"unknown permissions: {', '.join(unknown)}", code="unknown_permission")
    if granted_by is not None:
        granted_by = to_checksum_address(granted_by)
    elif not created_by_admin:
        granted_by = owner.walletAddress
    admin_grant = created_by_admin and granted_by != owner.walletAddress
    if not admin_grant:
        roles = frozenset(owner.roles)
        denied = sorted(p for p in set(permissions) if not roles_grant(roles, p))
        if denied:
            raise Forbidden(f"your roles do not grant: {', '.join(denied)}", code="permission_not_grantable")
    if expires_at is not None:
        expires_at = client_time(expires_at, "expiresAt")
        if expires_at <= now:
            raise BadRequest("expiresAt must be in the future", code="invalid_expiry")
    key = tokens.new_api_key()
    key_id, _ = tokens.split_api_key(key)
    record = ApiKey(
        keyId=key_id,
        key=tokens.hash_api_key(key),
        name=name,
        permissions=sorted(set(permissions)),
        createdAt=now,
        expiresAt=expires_at,
        grantedBy=granted_by,
        grantedByAdmin=admin_grant,
    )
    collection = User.get_pymongo_collection()
    limit = settings.auth.max_api_keys_per_user
    for _ in range(5):
        raw = await collection.find_one({"_id": owner.id}, {"apiKeys": 1})
        if raw is None:
            raise NotFound("the key owner no longer exists", code="user_not_found")
        keys = raw.get("apiKeys", [])
        if sum(1 for k in keys if _key_active(k, now)) >= limit:
            raise Conflict(f"at most {limit} active API keys per user", code="too_many_api_keys")
        if len(keys) >= 4 * limit:  # keep the array bounded: drop revoked and expired keys first
            await collection.update_one(
                {"_id": owner.id},
                {"$pull": {"apiKeys": {"$or": [{"revokedAt": {"$ne": None}}, {"expiresAt": {"$lte": now}}]}}},
            )
            continue
        # Conditional on the array's length not having changed since it was read (no lost update).
        result = await collection.update_one(
            {"_id": owner.id, f"apiKeys.{len(keys)}": {"$exists": False}},
            {"$push": {"apiKeys": record.model_dump()}},
        )
        if result.modified_count == 1:
            return record, key
    raise Conflict("the API keys changed concurrently; retry", code="api_key_conflict")


def _key_active(raw: dict[str, Any], now: datetime) -> bool:
    expires = raw.get("expiresAt")
    return raw.get("revokedAt") is None and (expires is None or as_utc(expires) > now)


async def list_api_keys(owner: User) -> list[ApiKey]:
    fresh = await User.get(owner.id)
    return list(fresh.apiKeys) if fresh else []


async def revoke_api_key(redis: Redis, principal: Principal, key_id: str) -> tuple[User, ApiKey]:
    """Revoke one key: its owner or an admin may; from the next request on it is refused (401)."""
    owner_filter: dict[str, Any] = {} if principal.is_admin else {"_id": PydanticObjectId(principal.user_id)}
    query = {**owner_filter, "apiKeys.keyId": key_id}
    now = utcnow()
    collection = User.get_pymongo_collection()
    # arrayFilters rather than the positional `$`, which SecantusDB's findAndModify does not support.
    result = await collection.update_one(
        {**owner_filter, "apiKeys": {"$elemMatch": {"keyId": key_id, "revokedAt": None}}},
        {"$set": {"apiKeys.$[key].revokedAt": now}},
        array_filters=[{"key.keyId": key_id, "key.revokedAt": None}],
    )
    raw = await collection.find_one(query)
    if raw is None:
        raise NotFound(f"no API key {key_id!r}", code="api_key_not_found")
    user = User.model_validate(raw)
    record = next(k for k in user.apiKeys if k.keyId == key_id)
    # Also when it was already revoked: a retry after a failed invalidation must still clear the cache.
    pipe = redis.pipeline(transaction=False)
    _queue_api_key_invalidation(pipe, [record])
    await pipe.execute()
    if result.modified_count != 1:
        raise Conflict(f"API key {key_id!r} is already revoked", code="api_key_revoked")
    return user, record


class CachedApiKey(msgspec.Struct, frozen=True):
    """What the cache holds for one API key: its owner's principal data, as of `generation`."""

    user_id: str
    wallet: str
    roles: tuple[str, ...]
    key_id: str
    permissions: tuple[str, ...]
    expires_at: float | None  # POSIX seconds
    status: str
    generation: int
    # Required, so that an entry of the shape before it (which had no grant) is a miss, not a self-grant
    # guess: it is refilled from MongoDB.
    granted_by_admin: bool


_CACHED_API_KEY = msgspec.json.Decoder(CachedApiKey)


def _queue_api_key_invalidation(pipe: Any, records: Iterable[ApiKey]) -> None:
    """Add to `pipe`: bump each key's generation (stale entries stop counting) and drop its entry."""
    ttl = int(API_KEY_GENERATION_TTL.total_seconds())
    for record in records:
        pipe.incr(api_key_generation_key(record.keyId))
        pipe.expire(api_key_generation_key(record.keyId), ttl)
        pipe.delete(api_key_cache_key(record.key))


def parse_api_key(key: str) -> str:
    """The public id of an X-API-Key value of our shape, or 401 invalid_api_key."""
    try:
        key_id, _ = tokens.split_api_key(key)
    except tokens.TokenRejected as exc:
        raise Unauthorized(exc.message, code=exc.code) from exc
    return key_id


def as_generation(value: bytes | str | int | None) -> int:
    return int(value) if value is not None else 0


def _check_api_key(entry: CachedApiKey, now: float) -> Principal:
    if entry.expires_at is not None and entry.expires_at <= now:
        raise Unauthorized("the API key has expired", code="api_key_expired")
    if entry.status != "active":
        raise Unauthorized("the key's account is not active", code="account_inactive")
    return Principal(
        user_id=entry.user_id,
        wallet_address=entry.wallet,
        roles=frozenset(entry.roles),
        kind="api_key",
        api_key_id=entry.key_id,
        key_permissions=frozenset(entry.permissions),
        key_granted_by_admin=entry.granted_by_admin,
    )


def api_key_from_cache(
    cached: bytes | str | None, generation: bytes | str | int | None, key_id: str
) -> Principal | None:
    """The principal of a cache entry that is still current, None on a miss; 401 if the key has expired.

    `cached` and `generation` are what Redis holds at api_key_cache_key(hash) and
    api_key_generation_key(key_id), read together.
    """
    if cached is None:
        return None
    try:
        entry = _CACHED_API_KEY.decode(cached)
    except msgspec.DecodeError:  # an entry of another shape (an older release): a miss
        return None
    if entry.generation != as_generation(generation) or entry.key_id != key_id:
        return None
    return _check_api_key(entry, utcnow().timestamp())


async def load_api_key(key: str, *, generation: int) -> tuple[CachedApiKey, datetime | None]:
    """Look a key up in MongoDB: (its cache entry stamped with `generation`, its lastUsed), or 401.

    Refuses unknown, revoked and expired keys and keys of inactive accounts. `generation` must have been
    read from Redis before this lookup (see the module docstring).
    """
    key_id = parse_api_key(key)
    raw = await User.get_pymongo_collection().find_one(
        {"apiKeys.key": tokens.hash_api_key(key)},
        {"walletAddress": 1, "roles": 1, "status": 1, "apiKeys": 1},
    )
    record = next((k for k in (raw or {}).get("apiKeys", []) if k.get("keyId") == key_id), None)
    if raw is None or record is None or not tokens.verify_api_key(key, record.get("key", "")):
        raise Unauthorized("the API key is not valid", code="invalid_api_key")
    if record.get("revokedAt") is not None:
        raise Unauthorized("the API key was revoked", code="api_key_revoked")
    expires_at = record.get("expiresAt")
    entry = CachedApiKey(
        user_id=str(raw["_id"]),
        wallet=raw["walletAddress"],
        roles=tuple(sorted(raw.get("roles", []))),
        key_id=key_id,
        permissions=tuple(record.get("permissions", [])),
        expires_at=as_utc(expires_at).timestamp() if expires_at is not None else None,
        status=raw.get("status", "active"),
        generation=generation,
        granted_by_admin=record.get("grantedByAdmin") is True,  # absent (older keys): self-granted
    )
    _check_api_key(entry, utcnow().timestamp())
    last_used = record.get("lastUsed")
    return entry, as_utc(last_used) if last_used is not None else None


async def cache_api_key(redis: Redis, key: str, entry: CachedApiKey) -> None:
    """Remember a looked-up key for API_KEY_CACHE_TTL, never past its expiry."""
    ttl_s = API_KEY_CACHE_TTL.total_seconds()
    if entry.expires_at is not None:
        ttl_s = min(ttl_s, entry.expires_at - utcnow().timestamp())
    if ttl_s > 0.001:
        await redis.set(
            api_key_cache_key(tokens.hash_api_key(key)), msgspec.json.encode(entry), px=int(ttl_s * 1000)
        )


async def authenticate_api_key(redis: Redis, key: str, *, generation: int | None = None) -> Principal:
    """The principal an X-API-Key header stands for, from MongoDB (then cached), or 401.

    `generation`: the key's generation as read from Redis along with the cache miss; read here if None.
    """
    key_id = parse_api_key(key)
    if generation is None:
        generation = as_generation(await redis.get(api_key_generation_key(key_id)))
    started = time.monotonic()
    entry, last_used = await load_api_key(key, generation=generation)
    if time.monotonic() - started < API_KEY_CACHE_TTL.total_seconds():
        await cache_api_key(redis, key, entry)
    if last_used is None or last_used < utcnow() - API_KEY_LAST_USED_RESOLUTION:
        await record_api_key_use(redis, entry.user_id, key_id)
    return _check_api_key(entry, utcnow().timestamp())


async def record_api_key_use(redis: Redis, user_id: str, key_id: str) -> bool:
    """Set a key's lastUsed to now, at most once a minute per key across processes; True if written."""
    marker = int(API_KEY_LAST_USED_RESOLUTION.total_seconds())
    if not await redis.set(api_key_used_key(key_id), "1", nx=True, ex=marker):
        return False
    try:
        oid = PydanticObjectId(user_id)
    except (InvalidId, TypeError):
        return False
    await User.get_pymongo_collection().update_one(
        {"_id": oid},
        {"$set": {"apiKeys.$[key].lastUsed": utcnow()}},
        array_filters=[{"key.keyId": key_id}],
    )
    return True


# --------------------------------------------------------------------------------- access tokens


def decode_bearer(settings: Settings, token: str) -> tokens.AccessClaims:
    """Verify an access token's signature and claims (no I/O), or 401 with the reason's code."""
    try:
        return tokens.decode_access_token(
            keyring(settings), token, issuer=settings.auth.jwt_issuer, audience=settings.auth.jwt_audience
        )
    except tokens.TokenRejected as exc:
        raise Unauthorized(exc.message, code=exc.code) from exc
