"""Sign-In with Ethereum, sessions, roles and API keys over HTTP (/api/auth)."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, post, put
from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie
from litestar.handlers.base import BaseRouteHandler
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT

from app.audit import service as audit_service
from app.auth import schemas, service
from app.lib.context import request_context
from app.lib.deps import ClientsDep, SettingsDep
from app.lib.errors import AppError, Forbidden
from app.lib.security import Principal, current_principal, requires_roles

AUTH_LIMITS = {"rate_limit": "auth"}
REFRESH_COOKIE_DOC = [
    Cookie(
        key=service.REFRESH_COOKIE,
        path=service.REFRESH_COOKIE_PATH,
        httponly=True,
        secure=True,
        samesite="strict",
        description="The refresh token (opaque, rotated on every refresh); sent back only to /api/auth.",
        documentation_only=True,
    )
]
OPEN_AUTH = {"anonymous": True, "rate_limit": "auth"}


def requires_session(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """A guard: a signed-in wallet, not an API key (keys cannot mint or manage keys)."""
    if current_principal(connection).kind != "user":
        raise Forbidden("this needs a signed-in wallet, not an API key", code="session_required")


def _refresh_cookie(settings: Any, pair: service.TokenPair) -> Cookie:
    return Cookie(
        key=service.REFRESH_COOKIE,
        value=pair.refresh_token,
        path=service.REFRESH_COOKIE_PATH,
        max_age=settings.auth.refresh_token_ttl_s,
        httponly=True,
        secure=settings.auth.cookie_secure,
        samesite="strict",
    )


def _clear_cookie(settings: Any) -> Cookie:
    return Cookie(
        key=service.REFRESH_COOKIE,
        value="",
        path=service.REFRESH_COOKIE_PATH,
        max_age=0,
        httponly=True,
        secure=settings.auth.cookie_secure,
        samesite="strict",
    )


def _origin(request: Request) -> dict[str, str | None]:
    return {
        "ip_address": request.client.host if request.client else None,
        "user_agent": request.headers.get("user-agent"),
    }


class AuthController(Controller):
    path = "/api/auth"
    tags = ["auth"]

    @get("/nonce", opt=OPEN_AUTH, cache=False)
    async def nonce(
        self,
        clients: ClientsDep,
        settings: SettingsDep,
        wallet_address: Annotated[str, QueryParameter(name="walletAddress", max_length=64)],
    ) -> schemas.NonceResponse:
        """A single-use nonce to put in the EIP-4361 message, with the domain, uri and chain id to sign."""
        grant = await service.issue_nonce(clients.redis, settings, wallet_address)
        return schemas.NonceResponse(
            nonce=grant.nonce,
            expires_at=grant.expires_at,
            domain=grant.domain,
            uri=grant.uri,
            chain_id=grant.chain_id,
        )

    @post("/verify", opt=OPEN_AUTH, status_code=HTTP_200_OK, response_cookies=REFRESH_COOKIE_DOC)
    async def verify(
        self,
        request: Request,
        clients: ClientsDep,
        settings: SettingsDep,
        data: JSONBody[schemas.SignInRequest],
    ) -> Response[schemas.TokenResponse]:
        """Sign in: verify the signed EIP-4361 message; returns an access token, sets the refresh cookie."""
        try:
            pair = await service.sign_in(
                clients.redis,
                clients.web3,
                settings,
                wallet_address=data.wallet_address,
                message=data.message,
                signature=data.signature,
                **_origin(request),
            )
        except AppError as exc:
            await audit_service.record(
                "auth.sign_in",
                actor=data.wallet_address,
                context=request_context(request),
                entity_type="user",
                success=False,
                reason=exc.code,
            )
            raise
        await audit_service.record(
            "auth.sign_in",
            actor=pair.user.walletAddress,
            context=request_context(request),
            entity_type="session",
            entity_id=pair.session_id,
            new={"roles": list(pair.user.roles)},
        )
        body = schemas.TokenResponse(
            access_token=pair.access_token,
            token_type=service.TOKEN_TYPE,
            expires_in=settings.auth.access_token_ttl_s,
            user=schemas.UserOut.of(pair.user),
        )
        return Response(
            body, cookies=[_refresh_cookie(settings, pair)], headers={"Cache-Control": "no-store"}
        )

    @post("/refresh", opt=OPEN_AUTH, status_code=HTTP_200_OK, response_cookies=REFRESH_COOKIE_DOC)
    async def refresh(
        self, request: Request, clients: ClientsDep, settings: SettingsDep
    ) -> Response[schemas.RefreshResponse]:
        """Rotate the refresh cookie and get a new access token; a reused refresh token ends the session."""
        try:
            pair = await service.refresh(clients.redis, settings, request.cookies.get(service.REFRESH_COOKIE))
        except service.RefreshReused as exc:
            await audit_service.record(
                "auth.refresh_reuse",
                actor=exc.session.walletAddress,
                context=request_context(request),
                entity_type="session",
                entity_id=str(exc.session.id),
                success=False,
                reason=exc.code,
            )
            raise
        body = schemas.RefreshResponse(
            access_token=pair.access_token,
            token_type=service.TOKEN_TYPE,
            expires_in=settings.auth.access_token_ttl_s,
        )
        return Response(
            body, cookies=[_refresh_cookie(settings, pair)], headers={"Cache-Control": "no-store"}
        )

    @post("/logout", opt=OPEN_AUTH, status_code=HTTP_204_NO_CONTENT)
    async def logout(self, request: Request, clients: ClientsDep, settings: SettingsDep) -> Response[None]:
        """End the session of the access token (or else of the refresh cookie); its tokens stop working."""
        principal: Principal | None = request.user
        session_id = principal.session_id if principal is not None else None
        wallet = principal.wallet_address if principal is not None else None
        if session_id is None:
            session = await service.session_for_refresh_token(request.cookies.get(service.REFRESH_COOKIE))
            if session is not None:
                session_id, wallet = str(session.id), session.walletAddress
        if session_id is None:
            current_principal(request)  # 401: nothing says which session to end
            raise Forbidden("an API key has no session to end", code="session_required")
        await service.revoke_session(clients.redis, settings, session_id, reason="logout")
        await audit_service.record(
            "auth.logout",
            principal=principal,
            actor=wallet,
            context=request_context(request),
            entity_type="session",
            entity_id=session_id,
        )
        return Response(None, status_code=HTTP_204_NO_CONTENT, cookies=[_clear_cookie(settings)])

    @get("/me", cache=False)
    async def me(self, request: Request) -> schemas.PrincipalOut:
        """The current principal: wallet, roles, and the permissions they grant."""
        return schemas.PrincipalOut.of(current_principal(request))

    @get("/users/{walletAddress:str}", guards=[requires_roles("admin")], cache=False)
    async def get_user(self, walletAddress: FromPath[str]) -> schemas.UserOut:
        """A user by wallet (admins)."""
        return schemas.UserOut.of(await service.get_user_by_wallet(walletAddress))

    @post("/users/{walletAddress:str}/roles", guards=[requires_roles("admin")], status_code=HTTP_200_OK)
    async def grant_role(
        self,
        request: Request,
        clients: ClientsDep,
        settings: SettingsDep,
        walletAddress: FromPath[str],
        data: JSONBody[schemas.RoleRequest],
    ) -> schemas.UserOut:
        """Grant a role (user, admin, oracle) to a wallet (admins); effective at once."""
        return await self._change_role(request, clients, settings, walletAddress, data.role, grant=True)

    @delete(
        "/users/{walletAddress:str}/roles/{role:str}",
        guards=[requires_roles("admin")],
        status_code=HTTP_200_OK,
    )
    async def revoke_role(
        self,
        request: Request,
        clients: ClientsDep,
        settings: SettingsDep,
        walletAddress: FromPath[str],
        role: FromPath[str],
    ) -> schemas.UserOut:
        """Revoke a role from a wallet (admins); effective at once."""
        return await self._change_role(request, clients, settings, walletAddress, role, grant=False)

    async def _change_role(
        self, request: Request, clients: Any, settings: Any, wallet_address: str, role: str, *, grant: bool
    ) -> schemas.UserOut:
        principal = current_principal(request)
        user, old, new = await service.change_role(
            clients.redis, settings, wallet_address, role, grant=grant, actor=principal
        )
        await audit_service.record(
            "auth.role.grant" if grant else "auth.role.revoke",
            principal=principal,
            context=request_context(request),
            entity_type="user",
            entity_id=user.walletAddress,
            old={"roles": old},
            new={"roles": new},
        )
        return schemas.UserOut.of(user)

    @put("/users/{walletAddress:str}/status", guards=[requires_roles("admin")], status_code=HTTP_200_OK)
    async def set_user_status(
        self,
        request: Request,
        clients: ClientsDep,
        settings: SettingsDep,
        walletAddress: FromPath[str],
        data: JSONBody[schemas.StatusRequest],
    ) -> schemas.UserOut:
        """Suspend or reactivate a wallet (admins); a suspension ends its sessions and API keys at once."""
        principal = current_principal(request)
        user, old = await service.set_user_status(
            clients.redis, settings, walletAddress, data.status, actor=principal
        )
        await audit_service.record(
            "auth.user.status",
            principal=principal,
            context=request_context(request),
            entity_type="user",
            entity_id=user.walletAddress,
            old={"status": old},
            new={"status": user.status},
        )
        return schemas.UserOut.of(user)

    @post("/api-keys", guards=[requires_session], opt=AUTH_LIMITS, status_code=HTTP_201_CREATED)
    async def create_api_key(
        self, request: Request, settings: SettingsDep, data: JSONBody[schemas.ApiKeyCreate]
    ) -> schemas.ApiKeyCreated:
        """Create an API key (shown once), bounded by its owner's roles unless an admin made it for them."""
        principal = current_principal(request)
        if data.wallet_address is not None and not principal.is_admin:
            raise Forbidden("only admins create keys for another wallet", code="insufficient_role")
        owner = await service.get_user_by_wallet(data.wallet_address or principal.wallet_address)
        record, key = await service.create_api_key(
            settings,
            owner,
            name=data.name,
            permissions=data.permissions,
            expires_at=data.expires_at,
            created_by_admin=principal.is_admin,
            granted_by=principal.wallet_address,
        )
        await audit_service.record(
            "auth.api_key.create",
            principal=principal,
            context=request_context(request),
            entity_type="apiKey",
            entity_id=record.keyId,
            new={
                "owner": owner.walletAddress,
                "name": record.name,
                "permissions": record.permissions,
                "grantedByAdmin": record.grantedByAdmin,
            },
        )
        out = schemas.ApiKeyOut.of(record)
        return schemas.ApiKeyCreated(**{f: getattr(out, f) for f in out.__struct_fields__}, key=key)

    @get("/api-keys", guards=[requires_session], cache=False)
    async def list_api_keys(
        self,
        request: Request,
        wallet_address: Annotated[str | None, QueryParameter(name="walletAddress", max_length=64)] = None,
    ) -> list[schemas.ApiKeyOut]:
        """Your API keys, without secrets (admins may list another wallet's)."""
        principal = current_principal(request)
        if wallet_address is not None and not principal.is_admin:
            raise Forbidden("only admins list another wallet's keys", code="insufficient_role")
        owner = await service.get_user_by_wallet(wallet_address or principal.wallet_address)
        return [schemas.ApiKeyOut.of(k) for k in await service.list_api_keys(owner)]

    @delete(
        "/api-keys/{keyId:str}", guards=[requires_session], opt=AUTH_LIMITS, status_code=HTTP_204_NO_CONTENT
    )
    async def revoke_api_key(self, request: Request, clients: ClientsDep, keyId: FromPath[str]) -> None:
        """Revoke an API key (its owner or an admin); refused from the next request on."""
        principal = current_principal(request)
        owner, record = await service.revoke_api_key(clients.redis, principal, keyId)
        await audit_service.record(
            "auth.api_key.revoke",
            principal=principal,
            context=request_context(request),
            entity_type="apiKey",
            entity_id=record.keyId,
            old={"owner": owner.walletAddress, "name": record.name, "permissions": record.permissions},
        )
