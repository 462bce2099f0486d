"""Who is calling, and what they may do: the principal, permissions, route guards, the owner-or-admin check.

Every route requires an authenticated principal unless it opts in with `opt={"anonymous": True}`;
on such routes `request.user` is the principal when credentials were sent, else None.

What an API key may do is its own permissions, bounded by who granted them:
- self-granted (the owner made the key, an admin's key for their own wallet included, and every key
  stored before the grant was recorded): only what the owner's CURRENT roles also grant, so a key never
  carries more than its owner may do right now (a revoked role takes its permissions off the owner's keys
  at once, a role granted again gives them back);
- admin-granted (an admin made the key for another wallet): the permissions stand on their own, as the
  admin's decision, whatever the owner's roles; an admin or the owner revokes the key to end them.
Either way a key never holds roles (`requires_roles` refuses it) and stops with its owner's suspension.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from app.lib.errors import Forbidden, Unauthorized

ANONYMOUS = "anonymous"

# The credentials (OpenAPI security schemes) a route may take.
BEARER_SCHEME, API_KEY_SCHEME, REFRESH_COOKIE_SCHEME, OPERATOR_SCHEME = (
    "BearerToken",
    "ApiKey",
    "RefreshCookie",
    "OperatorToken",
)

# Probes, scrapers and the document itself: no user credentials are read below these paths (operators
# send METRICS_TOKEN, see app/lib/observability.py).
OPEN_PREFIXES = ("/schema", "/metrics", "/api/system/")

# What sent credentials can be refused with, on every route that reads them (app/auth/middleware.py).
CREDENTIAL_ERRORS: dict[int, tuple[str, ...]] = {
    400: ("ambiguous_credentials",),
    401: (
        "account_inactive",
        "api_key_expired",
        "api_key_revoked",
        "invalid_api_key",
        "invalid_audience",
        "invalid_authorization_header",
        "invalid_issuer",
        "invalid_token",
        "session_revoked",
        "token_expired",
        "unknown_key",
        "wrong_token_type",
    ),
    429: ("rate_limited",),
}


def is_open_path(path: str) -> bool:
    """Whether `path` is below one of OPEN_PREFIXES (where user credentials are not read)."""
    return any(
        path == p.rstrip("/") or path.startswith(p if p.endswith("/") else p + "/") for p in OPEN_PREFIXES
    )


# What each role may do; API keys carry their own explicit permissions (see the module docstring).
ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    # A user writes only what they own: each such route also carries an owner_or_admin guard (webhooks:
    # a user's webhooks are their own, and another's answer 404 - app/webhooks/service.py).
    "user": frozenset({"media:write", "assets:metadata", "webhooks:write"}),
    "oracle": frozenset({"oracle:submit"}),
    "admin": frozenset({"*"}),
}
KNOWN_PERMISSIONS = frozenset(
    {
        "oracle:submit",
        "assets:write",
        "assets:metadata",
        "media:write",
        "market:read",
        "datasources:write",
        "oracle:manage",
        "webhooks:write",
    }
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
    # The key's permissions were granted by an admin for this (another) wallet: not bounded by `roles`.
    key_granted_by_admin: bool = False

    @property
    def is_admin(self) -> bool:
        # An API key acts only within its own permissions, even when its owner is an admin.
        return self.kind == "user" and "admin" in self.roles

    def has_role(self, role: str) -> bool:
        return role in self.roles

    def can(self, permission: str) -> bool:
        if self.kind == "api_key":
            if permission not in self.key_permissions and "*" not in self.key_permissions:
                return False
            # A self-granted key is bounded by its owner's current roles (the owner's, not the key's).
            return self.key_granted_by_admin or roles_grant(self.roles, permission)
        return roles_grant(self.roles, permission)


def roles_grant(roles: frozenset[str], permission: str) -> bool:
    """Whether these roles allow `permission` (admin allows everything)."""
    for role in roles:
        granted = ROLE_PERMISSIONS.get(role, frozenset())
        if "*" in granted or permission in granted:
            return True
    return False


def principal_of(connection: ASGIConnection) -> Principal | None:
    """The caller, or None on an open route called without credentials."""
    user = connection.scope.get("user")
    return user if isinstance(user, Principal) else None


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

    guard.access_rule = f"role:{'|'.join(roles)}"
    guard.credentials = (BEARER_SCHEME,)  # API keys never hold roles
    guard.errors = {401: ("authentication_required",), 403: ("insufficient_role",)}
    return guard


def requires_permission(permission: str):
    """A guard: the caller (an admin, a role that grants it, or an API key scoped to it) may do this."""

    def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        ensure_permission(current_principal(connection), permission)

    guard.access_rule = f"permission:{permission}"
    guard.errors = {401: ("authentication_required",), 403: ("insufficient_permission",)}
    return guard


def ensure_permission(principal: Principal, permission: str) -> Principal:
    """The caller may do `permission`, or 403 `insufficient_permission`."""
    if not principal.can(permission):
        raise Forbidden(f"requires permission {permission}", code="insufficient_permission")
    return principal


def owner_or_admin(
    owner_of: Callable[[Any], Awaitable[str | None]], *, path_param: str, missing: str = "not_found"
):
    """A guard for object-level access, declared on the route: only the owner wallet or an admin passes.

    `owner_of` reads the owner wallet of the object that the route's `path_param` names (and raises 404
    `missing` when there is none). tests/auth/test_route_access.py fails for any mutating per-object
    route without such a guard.
    """

    async def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        principal = current_principal(connection)
        if not principal.is_admin:
            ensure_owner_or_admin(principal, await owner_of(connection.path_params[path_param]))

    guard.access_rule = "owner_or_admin"
    guard.errors = {401: ("authentication_required",), 403: ("not_owner",), 404: (missing,)}
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
