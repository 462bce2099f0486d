"""The audit trail: one call records who did what to which entity, from where; and its archive."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.audit import repository
from app.audit.documents import AuditLog
from app.audit.retention import archive_expired as archive_expired
from app.lib.context import SYSTEM, RequestContext
from app.lib.security import Principal

# The `as` import above is a public name of this module: the archive job reaches app/audit/retention.py
# through it.

log = structlog.get_logger(__name__)


def _actor(principal: Principal | None, actor: str | None) -> tuple[str | None, str]:
    if principal is None:
        return actor, "system" if actor == "system" else "anonymous"
    if principal.api_key_id:
        return f"{principal.wallet_address}/{principal.api_key_id}", principal.kind
    return principal.wallet_address, principal.kind


async def record(
    action: str,
    *,
    context: RequestContext = SYSTEM,
    principal: Principal | None = None,
    actor: str | None = None,
    entity_type: str | None = None,
    entity_id: str | None = None,
    old: dict[str, Any] | None = None,
    new: dict[str, Any] | None = None,
    success: bool = True,
    reason: str | None = None,
) -> AuditLog:
    """Write one audit entry: who is `principal`, else a bare `actor` (the wallet signing in, "system"),
    else the context's principal. An explicit actor wins over whatever credentials the request carried."""
    actor_name, actor_type = _actor(principal or (None if actor else context.principal), actor)
    entry = AuditLog(
        action=action,
        actor=actor_name,
        actorType=actor_type,
        entityType=entity_type,
        entityId=entity_id,
        oldValue=old,
        newValue=new,
        success=success,
        reason=reason,
        ipAddress=context.ip,
        userAgent=context.user_agent,
        requestId=context.request_id,
    )
    await repository.insert(entry)
    log.info("audit.recorded", action=action, actor=actor_name, entity_id=entity_id, success=success)
    return entry


async def record_change(
    action: str,
    entity_type: str,
    doc: dict[str, Any],
    view: Callable[[dict[str, Any]], dict[str, Any]],
    *,
    principal: Principal,
    context: RequestContext,
    old: dict[str, Any] | None,
    new: dict[str, Any] | None,
) -> AuditLog:
    """Record a change to the document `doc` (by its `_id`): its state before and after, each as `view`
    shows it, so what a domain keeps secret (a webhook's secret, a source's credentials) stays out."""
    return await record(
        action,
        principal=principal,
        context=context,
        entity_type=entity_type,
        entity_id=str(doc["_id"]),
        old=view(old) if old is not None else None,
        new=view(new) if new is not None else None,
    )


async def record_once(redis: Redis, marker: str, window_s: int, action: str, **entry: Any) -> AuditLog | None:
    """`record(action, **entry)` unless an entry with this `marker` was recorded in the last `window_s`.

    For events an attacker can repeat at will (refused credentials, failed sign-ins): a flood writes one
    entry per marker and window. The marker is a Redis `SET NX EX`; when Redis cannot set it, nothing is
    written (the refusal itself stands either way).
    """
    try:
        first = await redis.set(marker, "1", nx=True, ex=window_s)
    except RedisError:
        log.warning("audit.marker_failed", action=action, reason=entry.get("reason"), exc_info=True)
        return None
    return await record(action, **entry) if first else None
