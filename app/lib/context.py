"""Who acts, and from where: what a request hands its services for the audit trail (never the Request)."""

from __future__ import annotations

from dataclasses import dataclass

from litestar.connection import ASGIConnection

from app.lib.security import Principal

USER_AGENT_MAX_CHARS = 512


@dataclass(frozen=True, slots=True)
class RequestContext:
    """The actor of a request (None when anonymous), its ip, user agent and request id."""

    principal: Principal | None = None
    ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None


SYSTEM = RequestContext()  # jobs and scripts: no request, the actor is named explicitly


def request_context(connection: ASGIConnection) -> RequestContext:
    """The context of a request; a handler dependency (`context`), built once per request."""
    user = connection.scope.get("user")
    client = connection.client
    return RequestContext(
        principal=user if isinstance(user, Principal) else None,
        ip=client.host if client else None,
        user_agent=(connection.headers.get("user-agent") or "")[:USER_AGENT_MAX_CHARS] or None,
        request_id=connection.scope.get("state", {}).get("request_id"),
    )
