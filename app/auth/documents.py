"""Users and sessions (seed plan 2.2)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import pymongo
from beanie import Document, PydanticObjectId
from pydantic import BaseModel, Field
from pymongo import IndexModel

from app.lib.timeutil import utcnow

Role = Literal["user", "admin", "oracle"]
SESSION_RETENTION_S = 30 * 24 * 3600
# An ended session (logged out, revoked, reused, its account suspended) stays this long for the record:
# its refresh tokens are answered `session_revoked`, and a rotated one replayed is still audited as reuse.
# Once it is gone, its tokens are refused all the same, as unknown.
SESSION_ENDED_RETENTION_S = 7 * 24 * 3600


class NotificationPreferences(BaseModel):
    priceUpdates: bool = True
    transactions: bool = True
    marketEvents: bool = False
    emailNotifications: bool = False


class ProfileInfo(BaseModel):
    username: str | None = None
    email: str | None = None
    avatarUrl: str | None = None
    notificationPreferences: NotificationPreferences = Field(default_factory=NotificationPreferences)


class ApiKey(BaseModel):
    keyId: str
    key: str  # a hash of the secret; the secret itself is shown once and never stored
    name: str
    permissions: list[str] = Field(default_factory=list)
    createdAt: datetime = Field(default_factory=utcnow)
    expiresAt: datetime | None = None
    lastUsed: datetime | None = None
    revokedAt: datetime | None = None
    # Who granted the permissions: the grantor's wallet (None when made by an operator script), and
    # whether it was an admin granting them for this other wallet. Only such admin grants stand on their
    # own; any other key (keys stored before these fields included) is bounded by its owner's current
    # roles at every request (app/lib/security.py).
    grantedBy: str | None = None
    grantedByAdmin: bool = False


class User(Document):
    walletAddress: str
    nonce: str | None = None
    nonceExpiry: datetime | None = None
    createdAt: datetime = Field(default_factory=utcnow)
    lastLogin: datetime | None = None
    roles: list[Role] = Field(default_factory=lambda: ["user"])
    profileInfo: ProfileInfo = Field(default_factory=ProfileInfo)
    apiKeys: list[ApiKey] = Field(default_factory=list)
    status: Literal["active", "suspended"] = "active"

    class Settings:
        name = "users"
        indexes = [
            IndexModel([("walletAddress", pymongo.ASCENDING)], unique=True, name="walletAddress_unique"),
            IndexModel([("apiKeys.key", pymongo.ASCENDING)], name="apiKeys_key"),
            IndexModel([("nonce", pymongo.ASCENDING)], name="nonce"),
        ]


class Session(Document):
    userId: PydanticObjectId
    walletAddress: str
    token: str  # hash of the current refresh token
    previousTokens: list[str] = Field(
        default_factory=list
    )  # hashes already rotated away, for reuse detection
    createdAt: datetime = Field(default_factory=utcnow)
    expiresAt: datetime
    ipAddress: str | None = None
    userAgent: str | None = None
    isValid: bool = True
    revokedReason: str | None = None
    endedAt: datetime | None = None  # when it stopped being valid
    # Each refresh token is derived from the one before with this secret (tokens.successor_refresh_token),
    # and rotatedAt is when the current one replaced it: the grace for two refreshes at once.
    rotationKey: str | None = None
    rotatedAt: datetime | None = None

    class Settings:
        name = "sessions"
        indexes = [
            IndexModel([("token", pymongo.ASCENDING)], name="token"),
            IndexModel([("previousTokens", pymongo.ASCENDING)], name="previousTokens"),
            IndexModel([("userId", pymongo.ASCENDING)], name="userId"),
            # Sessions disappear 30 days after they expire, and ended ones 7 days after they ended.
            IndexModel(
                [("expiresAt", pymongo.ASCENDING)],
                expireAfterSeconds=SESSION_RETENTION_S,
                name="expiresAt_ttl",
            ),
            IndexModel(
                [("endedAt", pymongo.ASCENDING)],
                expireAfterSeconds=SESSION_ENDED_RETENTION_S,
                name="endedAt_ttl",
            ),
        ]
