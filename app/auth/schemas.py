"""Request and response bodies of the auth API (camelCase on the wire)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from app.auth.documents import ApiKey, User
from app.lib.params import ADDRESS
from app.lib.schemas import RequestBody, Schema, Timestamp
from app.lib.security import KNOWN_PERMISSIONS, Principal

# Bounds on what the parsers below get to see; the SIWE checks have tighter ones of their own.
Address = Annotated[
    str,
    msgspec.Meta(
        max_length=64,
        examples=["0x71C7656EC7ab88b098defB751B7401B5f6d8976F"],
        extra_json_schema={"pattern": ADDRESS},
    ),
]
Signature = Annotated[str, msgspec.Meta(max_length=2 + 2 * 2048)]
SiweText = Annotated[str, msgspec.Meta(max_length=8192, description="The EIP-4361 message, as signed")]
KeyName = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Permission = Annotated[
    str, msgspec.Meta(max_length=64, extra_json_schema={"enum": sorted(KNOWN_PERMISSIONS)})
]
RoleName = Literal["user", "admin", "oracle"]


class NonceResponse(Schema):
    nonce: str
    expires_at: datetime
    domain: str
    uri: str
    chain_id: int


class SignInRequest(RequestBody):
    wallet_address: Address
    signature: Signature
    message: SiweText


class UserOut(Schema):
    id: str
    wallet_address: str
    roles: list[str]
    created_at: datetime
    last_login: datetime | None
    status: str

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(
            id=str(user.id),
            wallet_address=user.walletAddress,
            roles=list(user.roles),
            created_at=user.createdAt,
            last_login=user.lastLogin,
            status=user.status,
        )


class TokenResponse(Schema):
    access_token: str
    token_type: str
    expires_in: int
    user: UserOut


class RefreshResponse(Schema):
    access_token: str
    token_type: str
    expires_in: int


class PrincipalOut(Schema):
    user_id: str
    wallet_address: str
    roles: list[str]
    kind: str
    permissions: list[str]
    session_id: str | None = None
    api_key_id: str | None = None

    @classmethod
    def of(cls, principal: Principal) -> PrincipalOut:
        return cls(
            user_id=principal.user_id,
            wallet_address=principal.wallet_address,
            roles=sorted(principal.roles),
            kind=principal.kind,
            session_id=principal.session_id,
            api_key_id=principal.api_key_id,
            permissions=sorted(p for p in KNOWN_PERMISSIONS if principal.can(p)),
        )


class RoleRequest(RequestBody):
    role: RoleName


class StatusRequest(RequestBody):
    status: Literal["active", "suspended"]


class ApiKeyCreate(RequestBody):
    name: KeyName
    permissions: Annotated[list[Permission], msgspec.Meta(max_length=16)]
    expires_at: Timestamp | None = None
    wallet_address: Address | None = msgspec.field(default=None)  # an admin creating a key for another wallet


class ApiKeyOut(Schema):
    id: str
    name: str
    permissions: list[str]
    created_at: datetime
    expires_at: datetime | None
    last_used: datetime | None
    revoked_at: datetime | None
    granted_by: str | None = msgspec.field(default=None)
    granted_by_admin: bool = msgspec.field(default=False)

    @classmethod
    def of(cls, record: ApiKey) -> ApiKeyOut:
        return cls(
            id=record.keyId,
            name=record.name,
            permissions=list(record.permissions),
            created_at=record.createdAt,
            expires_at=record.expiresAt,
            last_used=record.lastUsed,
            revoked_at=record.revokedAt,
            granted_by=record.grantedBy,
            granted_by_admin=record.grantedByAdmin,
        )


class ApiKeyCreated(ApiKeyOut, kw_only=True):
    key: str  # shown once: only its hash is stored

    @classmethod
    def of(cls, record: ApiKey, key: str) -> ApiKeyCreated:  # type: ignore[override]
        out = ApiKeyOut.of(record)
        return cls(**{f: getattr(out, f) for f in out.__struct_fields__}, key=key)
