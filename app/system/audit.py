"""The audit trail: one call records who did what to which entity, from where; and its retention."""

from __future__ import annotations

from typing import Any

import pymongo
import structlog
from litestar.connection import ASGIConnection
from pymongo import IndexModel

from app.auth.guards import Principal
from app.system.documents import AuditLog

log = structlog.get_logger(__name__)
RETENTION_INDEX = "timestamp"


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


async def apply_retention(retention_days: int) -> None:
    """Make the timestamp index a TTL of `retention_days`: MongoDB deletes older entries on its own.

    An existing index gets the new TTL in place (collMod), so changing AUDIT_RETENTION_DAYS applies to
    every entry already kept. Entries that must outlive it are to be archived before this deletes them.
    """
    seconds = retention_days * 24 * 3600
    collection = AuditLog.get_pymongo_collection()
    current = (await collection.index_information()).get(RETENTION_INDEX)
    if current is None:
        await collection.create_indexes(
            [
                IndexModel(
                    [("timestamp", pymongo.DESCENDING)], name=RETENTION_INDEX, expireAfterSeconds=seconds
                )
            ]
        )
    elif current.get("expireAfterSeconds") != seconds:
        await collection.database.command(
            {"collMod": collection.name, "index": {"name": RETENTION_INDEX, "expireAfterSeconds": seconds}}
        )
    log.info("audit.retention", days=retention_days)
