"""The audit trail: one call records who did what to which entity, from where."""

from __future__ import annotations

from typing import Any

import structlog
from litestar.connection import ASGIConnection

from app.auth.guards import Principal
from app.system.documents import AuditLog

log = structlog.get_logger(__name__)


def request_origin(connection: ASGIConnection | None) -> dict[str, str | None]:
    """The ip, user agent and request id of a request, for the audit trail."""
    if connection is None:
        return {"ipAddress": None, "userAgent": None, "requestId": None}
    client = connection.client
    return {
        "ipAddress": client.host if client else None,
        "userAgent": (connection.headers.get("user-agent") or "")[:512] or None,
        "requestId": connection.scope.get("state", {}).get("request_id"),
    }


async def record(
    action: str,
    *,
    principal: Principal | None = None,
    actor: str | None = None,
    connection: ASGIConnection | None = None,
    entity_type: str | None = None,
    entity_id: str | None = None,
    old: dict[str, Any] | None = None,
    new: dict[str, Any] | None = None,
    success: bool = True,
    reason: str | None = None,
) -> AuditLog:
    """Write one audit entry; `principal` (or a bare `actor` such as "system") says who."""
    if principal is not None:
        actor_name = principal.wallet_address
        actor_type = principal.kind
        if principal.api_key_id:
            actor_name = f"{principal.wallet_address}/{principal.api_key_id}"
    else:
        actor_name, actor_type = actor, "system" if actor == "system" else "anonymous"
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
        **request_origin(connection),
    )
    await entry.insert()
    log.info("audit.recorded", action=action, actor=actor_name, entity_id=entity_id, success=success)
    return entry
