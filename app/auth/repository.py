"""Every query of the auth domain's collections: `users` (API keys included) and `sessions`."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from beanie import PydanticObjectId
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from app.auth.documents import ApiKey, Session, User
from app.lib.timeutil import utcnow

# ------------------------------------------------------------------------------------------ users


async def get_user(user_id: PydanticObjectId) -> User | None:
    return await User.get(user_id)


async def find_user_by_wallet(wallet: str) -> User | None:
    return await User.find_one(User.walletAddress == wallet)


async def upsert_user_by_wallet(
    wallet: str, *, set_fields: dict[str, Any], defaults: dict[str, Any]
) -> User | None:
    """Set `set_fields` on the user of `wallet`, created from `defaults` if missing; None if it raced."""
    collection = User.get_pymongo_collection()
    for _ in range(3):  # an upsert racing another on a unique index may raise E11000: retry
        try:
            raw = await collection.find_one_and_update(
                {"walletAddress": wallet},
                {"$set": set_fields, "$setOnInsert": defaults},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            continue
        return User.model_validate(raw) if raw is not None else None
    return None


async def _update_user(user_id: PydanticObjectId, update: Mapping[str, Any]) -> User | None:
    raw = await User.get_pymongo_collection().find_one_and_update(
        {"_id": user_id}, update, return_document=ReturnDocument.AFTER
    )
    return User.model_validate(raw) if raw is not None else None


async def add_role(user_id: PydanticObjectId, role: str) -> User | None:
    """The user with `role` added (a no-op if held); None if there is no such user."""
    return await _update_user(user_id, {"$addToSet": {"roles": role}})


async def remove_role(user_id: PydanticObjectId, role: str) -> User | None:
    return await _update_user(user_id, {"$pull": {"roles": role}})


async def set_status(user_id: PydanticObjectId, status: str) -> User | None:
    return await _update_user(user_id, {"$set": {"status": status}})


async def set_avatar_url(user_filter: dict[str, Any], url: str | None) -> dict[str, Any] | None:
    """Set the user's avatar URL; the user's profile as it was before, or None if there is no such user."""
    return await User.get_pymongo_collection().find_one_and_update(
        user_filter,
        {"$set": {"profileInfo.avatarUrl": url}},
        {"profileInfo": 1},
        return_document=ReturnDocument.BEFORE,
    )


# --------------------------------------------------------------------------------------- API keys


async def api_keys_raw(user_id: PydanticObjectId) -> list[dict[str, Any]] | None:
    """The user's stored API keys as raw subdocuments; None if there is no such user."""
    raw = await User.get_pymongo_collection().find_one({"_id": user_id}, {"apiKeys": 1})
    return None if raw is None else raw.get("apiKeys", [])


async def drop_inactive_api_keys(user_id: PydanticObjectId, now: datetime) -> None:
    """Remove the user's revoked and expired keys (they keep the array bounded)."""
    await User.get_pymongo_collection().update_one(
        {"_id": user_id},
        {"$pull": {"apiKeys": {"$or": [{"revokedAt": {"$ne": None}}, {"expiresAt": {"$lte": now}}]}}},
    )


async def push_api_key(user_id: PydanticObjectId, record: ApiKey, *, expected_count: int) -> bool:
    """Append a key if the user still has `expected_count` keys (no lost update); True if it was added."""
    result = await User.get_pymongo_collection().update_one(
        {"_id": user_id, f"apiKeys.{expected_count}": {"$exists": False}},
        {"$push": {"apiKeys": record.model_dump()}},
    )
    return result.modified_count == 1


async def revoke_api_key(key_id: str, now: datetime, *, owner_id: PydanticObjectId | None) -> bool:
    """Mark a key revoked (only among `owner_id`'s keys unless None); True if it was not revoked yet."""
    owner_filter: dict[str, Any] = {} if owner_id is None else {"_id": owner_id}
    # arrayFilters rather than the positional `$`, which SecantusDB's findAndModify does not support.
    result = await User.get_pymongo_collection().update_one(
        {**owner_filter, "apiKeys": {"$elemMatch": {"keyId": key_id, "revokedAt": None}}},
        {"$set": {"apiKeys.$[key].revokedAt": now}},
        array_filters=[{"key.keyId": key_id, "key.revokedAt": None}],
    )
    return result.modified_count == 1


async def find_key_owner(key_id: str, *, owner_id: PydanticObjectId | None) -> User | None:
    """The user holding the key `key_id` (only if it is `owner_id`, unless None)."""
    owner_filter: dict[str, Any] = {} if owner_id is None else {"_id": owner_id}
    raw = await User.get_pymongo_collection().find_one({**owner_filter, "apiKeys.keyId": key_id})
    return User.model_validate(raw) if raw is not None else None


async def find_by_api_key_hash(key_hash: str) -> dict[str, Any] | None:
    """The owner of the key with this hash: wallet, roles, status and keys (raw, for the hot path)."""
    return await User.get_pymongo_collection().find_one(
        {"apiKeys.key": key_hash},
        {"walletAddress": 1, "roles": 1, "status": 1, "apiKeys": 1},
    )


async def set_api_key_last_used(user_id: PydanticObjectId, key_id: str, when: datetime) -> None:
    await User.get_pymongo_collection().update_one(
        {"_id": user_id},
        {"$set": {"apiKeys.$[key].lastUsed": when}},
        array_filters=[{"key.keyId": key_id}],
    )


# --------------------------------------------------------------------------------------- sessions


async def insert_session(session: Session) -> None:
    await session.insert()


async def find_session_by_token(token_hash: str) -> Session | None:
    """The session whose current refresh token has this hash."""
    return await Session.find_one(Session.token == token_hash)


async def find_session_by_previous_token(token_hash: str) -> Session | None:
    """The session that rotated a refresh token with this hash away."""
    return await Session.find_one(Session.previousTokens == token_hash)


async def rotation_key_of(token_hash: str) -> tuple[bool, str | None]:
    """Whether a session's current refresh token has this hash, and that session's rotation key."""
    raw = await Session.get_pymongo_collection().find_one({"token": token_hash}, {"rotationKey": 1})
    return (False, None) if raw is None else (True, raw.get("rotationKey"))


async def rotate_session_token(
    token_hash: str,
    *,
    new_hash: str,
    rotation_key: str,
    now: datetime,
    keep_previous: int,
) -> Session | None:
    """Replace a valid, unexpired session's current token hash (only if it still is `token_hash`).

    The old hash joins the last `keep_previous` rotated-away ones; None when nothing matched.
    """
    raw = await Session.get_pymongo_collection().find_one_and_update(
        {"token": token_hash, "isValid": True, "expiresAt": {"$gt": now}},
        {
            "$set": {"token": new_hash, "rotationKey": rotation_key, "rotatedAt": now},
            "$push": {"previousTokens": {"$each": [token_hash], "$slice": -keep_previous}},
        },
        return_document=ReturnDocument.AFTER,
    )
    return Session.model_validate(raw) if raw is not None else None


def _ended(reason: str) -> dict[str, Any]:
    # endedAt starts the countdown of the sessions' TTL index for ended ones.
    return {"$set": {"isValid": False, "revokedReason": reason, "endedAt": utcnow()}}


async def invalidate_session(session_id: PydanticObjectId, reason: str) -> bool:
    """Mark a valid session invalid; True if it was valid."""
    result = await Session.get_pymongo_collection().update_one(
        {"_id": session_id, "isValid": True}, _ended(reason)
    )
    return result.modified_count == 1


async def session_state(session_id: PydanticObjectId) -> dict[str, Any] | None:
    """A session's wallet, validity and expiry (raw), for the authentication of a cache miss."""
    return await Session.get_pymongo_collection().find_one(
        {"_id": session_id}, {"walletAddress": 1, "isValid": 1, "expiresAt": 1}
    )


async def invalidate_user_sessions(user_id: PydanticObjectId, reason: str) -> list[str]:
    """Mark every valid session of the user invalid; the ids of those sessions."""
    sessions = Session.get_pymongo_collection()
    session_ids = [
        str(doc["_id"]) async for doc in sessions.find({"userId": user_id, "isValid": True}, {"_id": 1})
    ]
    await sessions.update_many({"userId": user_id, "isValid": True}, _ended(reason))
    return session_ids
