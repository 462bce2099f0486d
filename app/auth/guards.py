"""Who is calling, and what they may do: the principal, route guards and the owner-or-admin check.

Every route requires an authenticated principal unless it opts in with `opt={"anonymous": True}`;
on such routes `request.user` is the principal when credentials were sent, else None.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from app.lib.errors import Forbidden, Unauthorized

ANONYMOUS = "anonymous"

# What each role may do; API keys carry their own explicit permissions instead.
ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "user": frozenset({"media:write"}),
    "oracle": frozenset({"oracle:submit"}),
    "admin": frozenset({"*"}),
}
KNOWN_PERMISSIONS = frozenset(
    {"oracle:submit", "assets:write", "media:write", "market:read", "datasources:write", "webhooks:write"}
)


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: a signed-in wallet (JWT) or an API key acting for its owner."""

    user_id: str
    wallet_address: str
    roles: frozenset[str]
    kind: Literal["user", "api_key"] = "user"
    session_id: str | None = None
    api_key_id: str | None = None
    key_permissions: frozenset[str] = field(default_factory=frozenset)

    @property
    def is_admin(self) -> bool:
        # An API key acts only within its own permissions, even when its owner is an admin.
        return self.kind == "user" and "admin" in self.roles

    def has_role(self, role: str) -> bool:
        return role in self.roles

    def can(self, permission: str) -> bool:
        if self.kind == "api_key":
            return permission in self.key_permissions or "*" in self.key_permissions
        granted = frozenset().union(*(ROLE_PERMISSIONS.get(role, frozenset()) for role in self.roles))
        return "*" in granted or permission in granted


def current_principal(connection: ASGIConnection) -> Principal:
    """The caller, or 401 when the request carried no valid credentials."""
    user = connection.scope.get("user")
    if not isinstance(user, Principal):
        raise Unauthorized("authentication required", code="authentication_required")
    return user


def requires_roles(*roles: str):
    """A guard: the caller holds at least one of these roles (API keys never hold roles)."""

    def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        principal = current_principal(connection)
        if principal.kind != "user" or not any(principal.has_role(role) for role in roles):
            raise Forbidden(f"requires role: {' or '.join(roles)}", code="insufficient_role")

    return guard


def requires_permission(permission: str):
    """A guard: the caller (an admin, a role that grants it, or an API key scoped to it) may do this."""

    def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        if not current_principal(connection).can(permission):
            raise Forbidden(f"requires permission {permission}", code="insufficient_permission")

    return guard


def ensure_owner_or_admin(principal: Principal | None, owner_address: str | None) -> Principal:
    """Object-level access: only the object's owner wallet or an admin passes."""
    if principal is None:
        raise Unauthorized("authentication required", code="authentication_required")
    if principal.is_admin:
        return principal
    if owner_address and principal.wallet_address.lower() == owner_address.lower():
        return principal
    raise Forbidden("only the owner or an admin may do this", code="not_owner")
