"""Sign-In with Ethereum, sessions, roles and API keys over HTTP (/api/auth)."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Request, Response, delete, get, post, put
from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie
from litestar.handlers.base import BaseRouteHandler
from litestar.params import FromPath, JSONBody, PathParameter, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT

from app.auth import api_keys, schemas, service, sessions
from app.auth.sessions import REFRESH_COOKIE, REFRESH_COOKIE_PATH, TOKEN_TYPE, TokenPair
from app.config import Settings
from app.lib.deps import ClientsDep, ContextDep, SettingsDep
from app.lib.errors import Forbidden
from app.lib.openapi import links, raises
from app.lib.params import ADDRESS, WalletPath, one_of
from app.lib.security import BEARER_SCHEME, REFRESH_COOKIE_SCHEME, current_principal, requires_roles

AUTH_LIMITS = {"rate_limit": "auth"}
REFRESH_COOKIE_DOC = [
    Cookie(
        key=REFRESH_COOKIE,
        path=REFRESH_COOKIE_PATH,
        httponly=True,
        secure=True,
        samesite="strict",
        description="The refresh token (opaque, rotated on every refresh); sent back only to /api/auth.",
        documentation_only=True,
    )
]
OPEN_AUTH = {"anonymous": True, "rate_limit": "auth"}
USER_ERRORS = {400: ["invalid_wallet_address"], 404: ["user_not_found"]}
SIGN_IN_ERRORS = {
    400: ["invalid_wallet_address"],
    401: service.SIGN_IN_REFUSALS,
    403: ["account_suspended"],
    409: ["user_conflict"],
    503: ["chain_unavailable"],
}
REFRESH_REFUSALS = [
    "account_inactive",
    "invalid_refresh_token",
    "refresh_token_missing",
    "refresh_token_reused",
    "session_expired",
    "session_revoked",
]
# Refresh takes the refresh cookie; logout ends the session of the access token, or else of the cookie.
REFRESH_AUTH = {**OPEN_AUTH, "security": [{REFRESH_COOKIE_SCHEME: []}]}
LOGOUT_AUTH = {**OPEN_AUTH, "security": [{BEARER_SCHEME: []}, {REFRESH_COOKIE_SCHEME: []}]}


def requires_session(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """A guard: a signed-in wallet, not an API key (keys cannot mint or manage keys)."""
    if current_principal(connection).kind != "user":
        raise Forbidden("this needs a signed-in wallet, not an API key", code="session_required")


requires_session.credentials = (BEARER_SCHEME,)
requires_session.errors = {401: ("authentication_required",), 403: ("session_required",)}


def _refresh_cookie(settings: Settings, pair: TokenPair) -> Cookie:
    return Cookie(
        key=REFRESH_COOKIE,
        value=pair.refresh_token,
        path=REFRESH_COOKIE_PATH,
        max_age=settings.auth.refresh_token_ttl_s,
        httponly=True,
        secure=settings.auth.cookie_secure,
        samesite="strict",
    )


def _clear_cookie(settings: Settings) -> Cookie:
    return Cookie(
        key=REFRESH_COOKIE,
        value="",
        path=REFRESH_COOKIE_PATH,
        max_age=0,
        httponly=True,
        secure=settings.auth.cookie_secure,
        samesite="strict",
    )


class AuthController(Controller):
    path = "/api/auth"
    tags = ["auth"]

    @get(
        "/nonce",
        opt={**OPEN_AUTH, **raises({400: ["invalid_wallet_address"], 503: ["nonce_unavailable"]})},
        cache=False,
    )
    async def nonce(
        self,
        clients: ClientsDep,
        settings: SettingsDep,
        wallet_address: Annotated[
            str, QueryParameter(name="walletAddress", max_length=64, schema_extra={"pattern": ADDRESS})
        ],
    ) -> schemas.NonceResponse:
        """A single-use nonce to put in the EIP-4361 message, with the domain, uri and chain id to sign."""
        grant = await sessions.issue_nonce(clients.redis, settings, wallet_address)
        return schemas.NonceResponse(
            nonce=grant.nonce,
            expires_at=grant.expires_at,
            domain=grant.domain,
            uri=grant.uri,
            chain_id=grant.chain_id,
        )

    @post(
        "/verify",
        opt={**OPEN_AUTH, **raises(SIGN_IN_ERRORS)},
        status_code=HTTP_200_OK,
        response_cookies=REFRESH_COOKIE_DOC,
    )
    async def verify(
        self,
        clients: ClientsDep,
        settings: SettingsDep,
        context: ContextDep,
        data: JSONBody[schemas.SignInRequest],
    ) -> Response[schemas.TokenResponse]:
        """Sign in: verify the signed EIP-4361 message; returns an access token, sets the refresh cookie."""
        pair = await service.sign_in(
            clients.redis,
            clients.web3,
            settings,
            wallet_address=data.wallet_address,
            message=data.message,
            signature=data.signature,
            context=context,
        )
        body = schemas.TokenResponse(
            access_token=pair.access_token,
            token_type=TOKEN_TYPE,
            expires_in=settings.auth.access_token_ttl_s,
            user=schemas.UserOut.of(pair.user),
        )
        return Response(
            body, cookies=[_refresh_cookie(settings, pair)], headers={"Cache-Control": "no-store"}
        )

    @post(
        "/refresh",
        opt={**REFRESH_AUTH, **raises({401: REFRESH_REFUSALS})},
        status_code=HTTP_200_OK,
        response_cookies=REFRESH_COOKIE_DOC,
    )
    async def refresh(
        self, request: Request, clients: ClientsDep, settings: SettingsDep, context: ContextDep
    ) -> Response[schemas.RefreshResponse]:
        """Rotate the refresh cookie and get a new access token; a reused refresh token ends the session."""
        pair = await sessions.refresh(
            clients.redis, settings, request.cookies.get(REFRESH_COOKIE), context=context
        )
        body = schemas.RefreshResponse(
            access_token=pair.access_token,
            token_type=TOKEN_TYPE,
            expires_in=settings.auth.access_token_ttl_s,
        )
        return Response(
            body, cookies=[_refresh_cookie(settings, pair)], headers={"Cache-Control": "no-store"}
        )

    @post(
        "/logout",
        opt={**LOGOUT_AUTH, **raises({401: ["authentication_required"], 403: ["session_required"]})},
        status_code=HTTP_204_NO_CONTENT,
    )
    async def logout(
        self, request: Request, clients: ClientsDep, settings: SettingsDep, context: ContextDep
    ) -> Response[None]:
        """End the session of the access token (or else of the refresh cookie); its tokens stop working."""
        await sessions.logout(clients.redis, settings, request.cookies.get(REFRESH_COOKIE), context=context)
        return Response(None, status_code=HTTP_204_NO_CONTENT, cookies=[_clear_cookie(settings)])

    @get("/me", cache=False)
    async def me(self, request: Request) -> schemas.PrincipalOut:
        """The current principal: wallet, roles, and the permissions they grant."""
        return schemas.PrincipalOut.of(current_principal(request))

    @get("/users/{walletAddress:str}", guards=[requires_roles("admin")], cache=False, opt=raises(USER_ERRORS))
    async def get_user(self, walletAddress: WalletPath) -> schemas.UserOut:
        """A user by wallet (admins)."""
        return schemas.UserOut.of(await service.get_user_by_wallet(walletAddress))

    @post(
        "/users/{walletAddress:str}/roles",
        guards=[requires_roles("admin")],
        status_code=HTTP_200_OK,
        opt=raises(USER_ERRORS),
    )
    async def grant_role(
        self,
        clients: ClientsDep,
        settings: SettingsDep,
        context: ContextDep,
        walletAddress: WalletPath,
        data: JSONBody[schemas.RoleRequest],
    ) -> schemas.UserOut:
        """Grant a role (user, admin, oracle) to a wallet (admins); effective at once."""
        user = await service.change_role(
            clients.redis, settings, walletAddress, data.role, grant=True, context=context
        )
        return schemas.UserOut.of(user)

    @delete(
        "/users/{walletAddress:str}/roles/{role:str}",
        guards=[requires_roles("admin")],
        status_code=HTTP_200_OK,
        opt=raises(
            {**USER_ERRORS, 400: ["invalid_wallet_address", "unknown_role"], 409: ["cannot_revoke_own_admin"]}
        ),
    )
    async def revoke_role(
        self,
        clients: ClientsDep,
        settings: SettingsDep,
        context: ContextDep,
        walletAddress: WalletPath,
        role: Annotated[str, PathParameter(schema_extra=one_of(service.ROLES))],
    ) -> schemas.UserOut:
        """Revoke a role from a wallet (admins); effective at once."""
        user = await service.change_role(
            clients.redis, settings, walletAddress, role, grant=False, context=context
        )
        return schemas.UserOut.of(user)

    @put(
        "/users/{walletAddress:str}/status",
        guards=[requires_roles("admin")],
        status_code=HTTP_200_OK,
        opt=raises({**USER_ERRORS, 409: ["cannot_suspend_self"]}),
    )
    async def set_user_status(
        self,
        clients: ClientsDep,
        settings: SettingsDep,
        context: ContextDep,
        walletAddress: WalletPath,
        data: JSONBody[schemas.StatusRequest],
    ) -> schemas.UserOut:
        """Suspend or reactivate a wallet (admins); a suspension ends its sessions and API keys at once."""
        user = await service.set_user_status(
            clients.redis, settings, walletAddress, data.status, context=context
        )
        return schemas.UserOut.of(user)

    @post(
        "/api-keys",
        guards=[requires_session],
        opt={
            **AUTH_LIMITS,
            **raises(
                {
                    400: [
                        "invalid_expiry",
                        "invalid_wallet_address",
                        "timestamp_out_of_range",
                        "unknown_permission",
                    ],
                    403: ["insufficient_role", "permission_not_grantable"],
                    404: ["user_not_found"],
                    409: ["api_key_conflict", "too_many_api_keys"],
                }
            ),
            **links(201, revoke_api_key={"keyId": "$response.body#/id"}),
        },
        status_code=HTTP_201_CREATED,
    )
    async def create_api_key(
        self, settings: SettingsDep, context: ContextDep, data: JSONBody[schemas.ApiKeyCreate]
    ) -> schemas.ApiKeyCreated:
        """Create an API key (shown once), bounded by its owner's roles unless an admin made it for them."""
        record, key = await service.create_api_key_for(
            settings,
            context=context,
            wallet_address=data.wallet_address,
            name=data.name,
            permissions=data.permissions,
            expires_at=data.expires_at,
        )
        return schemas.ApiKeyCreated.of(record, key)

    @get(
        "/api-keys",
        guards=[requires_session],
        cache=False,
        opt=raises({**USER_ERRORS, 403: ["insufficient_role"]}),
    )
    async def list_api_keys(
        self,
        context: ContextDep,
        wallet_address: Annotated[
            str | None,
            QueryParameter(
                name="walletAddress",
                description="another wallet's keys (admins)",
                max_length=64,
                schema_extra={"pattern": ADDRESS},
            ),
        ] = None,
    ) -> list[schemas.ApiKeyOut]:
        """Your API keys, without secrets (admins may list another wallet's)."""
        keys = await service.list_api_keys_for(context=context, wallet_address=wallet_address)
        return [schemas.ApiKeyOut.of(k) for k in keys]

    @delete(
        "/api-keys/{keyId:str}",
        guards=[requires_session],
        opt={**AUTH_LIMITS, **raises({404: ["api_key_not_found"], 409: ["api_key_revoked"]})},
        status_code=HTTP_204_NO_CONTENT,
    )
    async def revoke_api_key(self, clients: ClientsDep, context: ContextDep, keyId: FromPath[str]) -> None:
        """Revoke an API key (its owner or an admin); refused from the next request on."""
        await api_keys.revoke_api_key(clients.redis, keyId, context=context)
