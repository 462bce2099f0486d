"""Users, sign-in, roles and account status: the auth domain's rules, and what other domains may call.

Sessions and tokens are in app/auth/sessions.py, API keys and their cache in app/auth/api_keys.py.
Roles travel in the access token, overridden by `auth:roles:<uid>` (written on every role change, kept
as long as an access token lives) so that a grant or a revocation applies at once, not after 15
minutes; a role change or a suspension also stops the cached principals of the user's API keys.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta

from beanie import PydanticObjectId
from bson.errors import InvalidId
from eth_utils import is_address, to_checksum_address
from redis.asyncio import Redis
from web3 import AsyncWeb3

from app.audit import service as audit_service
from app.auth import api_keys, repository, sessions, siwe
from app.auth.api_keys import create_api_key
from app.auth.documents import ApiKey, User
from app.auth.sessions import TokenPair, start_session
from app.config import RateLimitRule, Settings
from app.lib.context import RequestContext
from app.lib.errors import (
    AppError,
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    ServiceUnavailable,
    Unauthorized,
)
from app.lib.params import checksum_address
from app.lib.ratelimit import FAILURES_GROUP
from app.lib.security import Principal
from app.lib.timeutil import utcnow

ROLES = ("user", "admin", "oracle")
FAILED_SIGN_IN_MARKER = "auth:audit:sign_in:"


def roles_key(user_id: str) -> str:
    return f"auth:roles:{user_id}"


# ------------------------------------------------------------------------------------------ users


async def find_user_by_wallet(wallet_address: str) -> User | None:
    """The user of an EIP-55 wallet address, or None."""
    return await repository.find_user_by_wallet(wallet_address)


async def get_user_by_wallet(wallet_address: str) -> User:
    """The user of a wallet (any case, checksum checked), or 400/404."""
    wallet = checksum_address(wallet_address)
    user = await repository.find_user_by_wallet(wallet)
    if user is None:
        raise NotFound(f"no user with wallet {wallet}", code="user_not_found")
    return user


async def set_avatar_url(user_id_or_wallet: str | PydanticObjectId, url: str | None) -> str | None:
    """Make `url` the user's avatar (a user id or a 0x wallet address); the URL it replaces, or 404."""
    if isinstance(user_id_or_wallet, str) and user_id_or_wallet.startswith("0x"):
        user_filter: dict[str, object] = {"walletAddress": checksum_address(user_id_or_wallet)}
    else:
        try:
            user_filter = {"_id": PydanticObjectId(user_id_or_wallet)}
        except (InvalidId, TypeError) as exc:
            raise NotFound(f"no user {user_id_or_wallet!r}", code="user_not_found") from exc
    before = await repository.set_avatar_url(user_filter, url)
    if before is None:
        raise NotFound(f"no user {user_id_or_wallet!r}", code="user_not_found")
    return (before.get("profileInfo") or {}).get("avatarUrl")


async def upsert_user(settings: Settings, wallet: str, *, now: datetime | None = None) -> User:
    """The user of this wallet, created on first sign-in; `lastLogin` set, admin granted per ADMIN_WALLETS."""
    now = now or utcnow()
    defaults = User(walletAddress=wallet).model_dump(exclude={"id", "revision_id", "lastLogin"})
    user = await repository.upsert_user_by_wallet(wallet, set_fields={"lastLogin": now}, defaults=defaults)
    if user is None:
        raise Conflict("the user could not be created", code="user_conflict")
    admins = {to_checksum_address(a) for a in settings.admin_wallets if is_address(a)}
    if wallet in admins and "admin" not in user.roles:
        user = await repository.add_role(user.id, "admin") or user
    return user


# ---------------------------------------------------------------------------------------- sign-in


# What a refused sign-in answers with (401), besides a malformed body.
SIGN_IN_REFUSALS = sorted({*siwe.REJECTION_CODES, "nonce_invalid"} - {"chain_unavailable"})


def _siwe_error(exc: siwe.SiweRejected) -> Unauthorized | ServiceUnavailable:
    if exc.code == "chain_unavailable":
        return ServiceUnavailable(exc.message, code="chain_unavailable")
    return Unauthorized(exc.message, code=exc.code)


async def sign_in(
    redis: Redis,
    web3: AsyncWeb3 | None,
    settings: Settings,
    *,
    wallet_address: str,
    message: str,
    signature: str,
    context: RequestContext,
) -> TokenPair:
    """Verify a SIWE sign-in strictly (EIP-4361, its nonce consumed), upsert its user and open a session;
    audited (refusals once per window)."""
    try:
        wallet = checksum_address(wallet_address)
        try:
            # The ABNF parser takes ~5 ms for a usual message and up to ~0.2 s at the size limits: off the
            # event loop, so that one sign-in does not stall every other request of this process.
            msg = await asyncio.to_thread(siwe.parse_message, message)
            issued_to = await sessions.consume_nonce(redis, msg.nonce)
            if issued_to is None:
                raise Unauthorized(
                    "the nonce was not issued, has expired or was already used", code="nonce_invalid"
                )
            if issued_to != wallet:
                raise Unauthorized("the nonce was issued for another wallet", code="nonce_mismatch")
            siwe.verify_message_fields(
                msg,
                expected_domain=settings.auth.domain,
                expected_uri=settings.auth.uri,
                expected_chain_id=settings.chain.chain_id,
                expected_address=wallet,
                expected_nonce=msg.nonce,
                now=utcnow(),
                clock_skew=timedelta(seconds=settings.auth.clock_skew_s),
            )
            await siwe.verify_signature(message, signature, wallet, w3=web3)
        except siwe.SiweRejected as exc:
            raise _siwe_error(exc) from exc
        user = await upsert_user(settings, wallet)
        pair = await start_session(
            redis, settings, user, ip_address=context.ip, user_agent=context.user_agent
        )
    except AppError as exc:
        await _audit_failed_sign_in(redis, settings, context, wallet_address, exc.code)
        raise
    await audit_service.record(
        "auth.sign_in",
        actor=pair.user.walletAddress,
        context=context,
        entity_type="session",
        entity_id=pair.session_id,
        new={"roles": list(pair.user.roles)},
    )
    return pair


async def _audit_failed_sign_in(
    redis: Redis, settings: Settings, context: RequestContext, wallet_address: str, reason: str
) -> None:
    # Once per (ip, reason) and window, as the middleware does for refused credentials: a flood of
    # bad verifies must not cost a MongoDB write each. Successes are always recorded.
    await audit_service.record_once(
        redis,
        f"{FAILED_SIGN_IN_MARKER}{context.ip or 'unknown'}:{reason}",
        settings.auth.rate_limits.get(FAILURES_GROUP, RateLimitRule()).window_s,
        "auth.sign_in",
        actor=wallet_address,
        context=context,
        entity_type="user",
        success=False,
        reason=reason,
    )


# ---------------------------------------------------------------------------------- roles, status


async def change_role(
    redis: Redis,
    settings: Settings,
    wallet_address: str,
    role: str,
    *,
    grant: bool,
    context: RequestContext,
) -> User:
    """Grant or revoke a role (audited); effective at once in every api process."""
    if role not in ROLES:
        raise BadRequest(f"unknown role {role!r}; roles are {', '.join(ROLES)}", code="unknown_role")
    user = await get_user_by_wallet(wallet_address)
    actor = context.principal
    if not grant and role == "admin" and actor is not None and str(user.id) == actor.user_id:
        raise Conflict("an admin cannot revoke their own admin role", code="cannot_revoke_own_admin")
    updated = await (repository.add_role if grant else repository.remove_role)(user.id, role)
    if updated is None:
        raise NotFound(f"no user with wallet {user.walletAddress}", code="user_not_found")
    pipe = redis.pipeline(transaction=False)
    pipe.set(roles_key(str(user.id)), ",".join(sorted(updated.roles)), ex=sessions.cache_ttl_s(settings))
    api_keys.queue_invalidation(pipe, updated.apiKeys)
    await pipe.execute()
    await audit_service.record(
        "auth.role.grant" if grant else "auth.role.revoke",
        context=context,
        entity_type="user",
        entity_id=updated.walletAddress,
        old={"roles": list(user.roles)},
        new={"roles": list(updated.roles)},
    )
    return updated


async def set_user_status(
    redis: Redis, settings: Settings, wallet_address: str, status: str, *, context: RequestContext
) -> User:
    """Suspend or reactivate a user (audited); a suspension ends their sessions and keys at once."""
    if status not in ("active", "suspended"):
        raise BadRequest("status is 'active' or 'suspended'", code="invalid_status")
    user = await get_user_by_wallet(wallet_address)
    actor = context.principal
    if status == "suspended" and actor is not None and str(user.id) == actor.user_id:
        raise Conflict("an admin cannot suspend their own account", code="cannot_suspend_self")
    updated = await repository.set_status(user.id, status)
    if updated is None:
        raise NotFound(f"no user with wallet {user.walletAddress}", code="user_not_found")
    ended = (
        await repository.invalidate_user_sessions(user.id, "account_suspended")
        if status == "suspended"
        else []
    )
    pipe = redis.pipeline(transaction=False)
    sessions.queue_revocations(pipe, settings, ended)
    api_keys.queue_invalidation(pipe, updated.apiKeys)
    await pipe.execute()
    await audit_service.record(
        "auth.user.status",
        context=context,
        entity_type="user",
        entity_id=updated.walletAddress,
        old={"status": user.status},
        new={"status": updated.status},
    )
    return updated


# --------------------------------------------------------------------------------- keys of a user


async def create_api_key_for(
    settings: Settings,
    *,
    context: RequestContext,
    wallet_address: str | None,
    name: str,
    permissions: Sequence[str],
    expires_at: datetime | None,
) -> tuple[ApiKey, str]:
    """A new key for the caller, or (admins) for `wallet_address`; audited. (record, the key shown once)."""
    principal, owner = await _keys_owner(
        context, wallet_address, "only admins create keys for another wallet"
    )
    record, key = await create_api_key(
        settings,
        owner,
        name=name,
        permissions=permissions,
        expires_at=expires_at,
        created_by_admin=principal.is_admin,
        granted_by=principal.wallet_address,
    )
    await audit_service.record(
        "auth.api_key.create",
        context=context,
        entity_type="apiKey",
        entity_id=record.keyId,
        new={
            "owner": owner.walletAddress,
            "name": record.name,
            "permissions": record.permissions,
            "grantedByAdmin": record.grantedByAdmin,
        },
    )
    return record, key


async def list_api_keys_for(*, context: RequestContext, wallet_address: str | None) -> list[ApiKey]:
    """The caller's keys, or (admins) those of `wallet_address`."""
    _, owner = await _keys_owner(context, wallet_address, "only admins list another wallet's keys")
    return await api_keys.list_api_keys(owner)


async def _keys_owner(
    context: RequestContext, wallet_address: str | None, refusal: str
) -> tuple[Principal, User]:
    """The caller and the user whose keys it acts on: its own, or (admins only) `wallet_address`'s."""
    principal = context.principal
    if principal is None:
        raise Unauthorized("authentication required", code="authentication_required")
    if wallet_address is not None and not principal.is_admin:
        raise Forbidden(refusal, code="insufficient_role")
    owner = principal.wallet_address if wallet_address is None else wallet_address
    return principal, await get_user_by_wallet(owner)
