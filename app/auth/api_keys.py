"""API keys: creating, listing and revoking them, and authenticating them through their Redis cache.

MongoDB (`users.apiKeys`, hashes only) is the truth; a key's permissions are bounded by its owner's
current roles unless an admin granted them for that wallet (`grantedByAdmin`, see app/lib/security.py).
Redis caches each key's principal (`auth:apikey:<sha256 of the key>`, at most API_KEY_CACHE_TTL and
never past the key's expiry), its owner's roles included, stamped with the key's generation
(`auth:apikey:gen:<key id>`). The middleware reads both in its one round trip and uses the entry only
if the stamps agree. Whatever changes what a key may do (revocation, a role change or suspension of
its owner) writes MongoDB first, then bumps the generation and deletes the entry: every process
refuses the old entry at once, and a refill that read MongoDB before the change carries the old
stamp, so it cannot bring a revoked key (or a revoked role's permission) back.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import msgspec
from beanie import PydanticObjectId
from bson.errors import InvalidId
from eth_utils import to_checksum_address
from redis.asyncio import Redis

from app.audit import service as audit_service
from app.auth import repository, tokens
from app.auth.documents import ApiKey, User
from app.config import Settings
from app.lib.context import RequestContext
from app.lib.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from app.lib.security import KNOWN_PERMISSIONS, Principal, roles_grant
from app.lib.timeutil import as_utc, client_time, utcnow

API_KEY_HEADER = "X-API-Key"
API_KEY_LAST_USED_RESOLUTION = timedelta(seconds=60)  # lastUsed is written at most once a minute per key
API_KEY_CACHE_TTL = timedelta(seconds=60)
# Far longer than any entry stamped with an older generation can live (a refill slower than the cache
# TTL is not cached), so an expired counter can never make such an entry current again.
API_KEY_GENERATION_TTL = timedelta(days=1)


def api_key_cache_key(key_hash: str) -> str:
    return f"auth:apikey:{key_hash}"


def api_key_generation_key(key_id: str) -> str:
    return f"auth:apikey:gen:{key_id}"


def api_key_used_key(key_id: str) -> str:
    return f"auth:apikey:used:{key_id}"


# -------------------------------------------------------------------------------- create, list, revoke


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
    limit = settings.auth.max_api_keys_per_user
    for _ in range(5):
        keys = await repository.api_keys_raw(owner.id)
        if keys is None:
            raise NotFound("the key owner no longer exists", code="user_not_found")
        if sum(1 for k in keys if _key_active(k, now)) >= limit:
            raise Conflict(f"at most {limit} active API keys per user", code="too_many_api_keys")
        if len(keys) >= 4 * limit:  # keep the array bounded: drop revoked and expired keys first
            await repository.drop_inactive_api_keys(owner.id, now)
            continue
        if await repository.push_api_key(owner.id, record, expected_count=len(keys)):
            return record, key
    raise Conflict("the API keys changed concurrently; retry", code="api_key_conflict")


def _key_active(raw: dict[str, Any], now: datetime) -> bool:
    expires = raw.get("expiresAt")
    return raw.get("revokedAt") is None and (expires is None or as_utc(expires) > now)


async def list_api_keys(owner: User) -> list[ApiKey]:
    fresh = await repository.get_user(owner.id)
    return list(fresh.apiKeys) if fresh else []


async def revoke_api_key(redis: Redis, key_id: str, *, context: RequestContext) -> tuple[User, ApiKey]:
    """Revoke one key: its owner or an admin may; from the next request on it is refused (401)."""
    principal = context.principal
    if principal is None:
        raise Unauthorized("authentication required", code="authentication_required")
    # Someone else's key is as unknown to the caller as a key that does not exist.
    owner_id = None if principal.is_admin else PydanticObjectId(principal.user_id)
    revoked = await repository.revoke_api_key(key_id, utcnow(), owner_id=owner_id)
    user = await repository.find_key_owner(key_id, owner_id=owner_id)
    if user is None:
        raise NotFound(f"no API key {key_id!r}", code="api_key_not_found")
    record = next(k for k in user.apiKeys if k.keyId == key_id)
    # Also when it was already revoked: a retry after a failed invalidation must still clear the cache.
    pipe = redis.pipeline(transaction=False)
    queue_invalidation(pipe, [record])
    await pipe.execute()
    if not revoked:
        raise Conflict(f"API key {key_id!r} is already revoked", code="api_key_revoked")
    await audit_service.record(
        "auth.api_key.revoke",
        context=context,
        entity_type="apiKey",
        entity_id=record.keyId,
        old={"owner": user.walletAddress, "name": record.name, "permissions": record.permissions},
    )
    return user, record


# ------------------------------------------------------------------------------------------ the cache


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


def queue_invalidation(pipe: Any, records: Iterable[ApiKey]) -> None:
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
    raw = await repository.find_by_api_key_hash(tokens.hash_api_key(key))
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
    await repository.set_api_key_last_used(oid, key_id, utcnow())
    return True
