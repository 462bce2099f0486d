"""Every query and update of the assets' media records: the `media` part of each asset (files, key lists,
thumbnail), on the media domain's behalf.

The media domain decides what is recorded; this module is the only code that writes those records, and
the media domain reaches it through the assets service.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo.errors import ExecutionTimeout

from app.assets.documents import Asset, AssetMedia, MediaFile
from app.lib import bucket as keys
from app.lib.errors import ServiceUnavailable
from app.lib.params import MAX_INT64


@dataclass(frozen=True, slots=True)
class UploadCaps:
    """Uploads an asset may hold: in flight (staged, not yet expired), and in all (renditions aside)."""

    max_staged: int
    max_uploads: int


def _collection():
    return Asset.get_pymongo_collection()


def _doc(entry: MediaFile) -> dict[str, Any]:
    return entry.model_dump()


def _count_files(cond: dict[str, Any]) -> dict[str, Any]:
    return {"$size": {"$filter": {"input": {"$ifNull": ["$media.files", []]}, "as": "f", "cond": cond}}}


def _has_room(caps: UploadCaps, now: datetime) -> dict[str, Any]:
    """A filter that holds while the asset is under both upload caps, expired staged records aside.

    It is part of the `$push`'s own filter, so concurrent presigns cannot overshoot a cap. A staged
    record expires with its temp object, TEMP_TTL after it was made; the sweeper then drops it.
    """
    staged = {"$eq": ["$$f.status", "staged"]}
    live = {"$gt": ["$$f.createdAt", now - keys.TEMP_TTL]}
    upload = {"$eq": [{"$ifNull": ["$$f.source", None]}, None]}
    return {
        "$expr": {
            "$and": [
                {"$lt": [_count_files({"$and": [staged, live]}), caps.max_staged]},
                {
                    "$lt": [
                        _count_files({"$and": [upload, {"$or": [{"$not": [staged]}, live]}]}),
                        caps.max_uploads,
                    ]
                },
            ]
        }
    }


# ---- reads ------------------------------------------------------------------------------------------


async def media_of(token_id: int) -> AssetMedia | None:
    """The asset's media records, or None when there is no such asset."""
    if not 0 <= token_id <= MAX_INT64:
        return None
    doc = await _collection().find_one({"tokenId": token_id}, {"media": 1})
    return None if doc is None else AssetMedia.model_validate(doc.get("media") or {})


async def has_upload_room(token_id: int, caps: UploadCaps, now: datetime) -> bool:
    """Whether the asset is under its upload caps (a count, before an upload costs a write)."""
    return bool(await _collection().count_documents({"tokenId": token_id, **_has_room(caps, now)}, limit=1))


def staged_upload_query(key: str) -> dict[str, Any]:
    """The filter that finds a staged asset upload by its key, within the token the key names (indexed)."""
    token_id = keys.temp_token_id(key)
    if token_id is None or token_id > MAX_INT64:
        token_id = -1  # names no asset: the lookup finds nothing, through the same index
    return {"media.files.key": key, "tokenId": token_id}


async def find_staged_upload(key: str, max_time_ms: int) -> tuple[int, MediaFile] | None:
    """The token and record of a staged asset upload, by its key; None when there is none."""
    try:
        doc = await _collection().find_one(
            staged_upload_query(key), {"tokenId": 1, "media.files": 1}, max_time_ms=max_time_ms
        )
    except ExecutionTimeout as exc:
        raise ServiceUnavailable("the upload lookup took too long", code="query_timeout") from exc
    files = (doc or {}).get("media", {}).get("files", [])
    found = next((f for f in files if f.get("key") == key and f.get("status") == "staged"), None)
    if doc is None or found is None:
        return None
    return doc["tokenId"], MediaFile.model_validate(found)


async def recorded_highres_key(token_id: int, source: str) -> str | None:
    """The high-resolution key recorded for an original: a re-run rewrites it rather than adding one."""
    doc = await _collection().find_one({"tokenId": token_id}, {"media.files": 1})
    files = (doc or {}).get("media", {}).get("files", [])
    return next((f["key"] for f in files if f.get("kind") == "highres" and f.get("source") == source), None)


async def tokens_with_highres_not_matching(pattern: re.Pattern[str], limit: int) -> list[int]:
    """Assets holding a high-resolution record whose key does not match `pattern`, oldest token first."""
    query = {"media.files": {"$elemMatch": {"kind": "highres", "key": {"$not": pattern}}}}
    cursor = _collection().find(query, {"tokenId": 1}).sort("tokenId", 1).limit(limit)
    return [doc["tokenId"] async for doc in cursor]


# ---- writes -----------------------------------------------------------------------------------------


async def add_media_file_if_room(token_id: int, entry: MediaFile, caps: UploadCaps, now: datetime) -> bool:
    """Add a record while the asset is under its upload caps; False when it is not (or there is no asset)."""
    added = await _collection().update_one(
        {"tokenId": token_id, **_has_room(caps, now)}, {"$push": {"media.files": _doc(entry)}}
    )
    return bool(added.matched_count)


async def put_media_file(
    token_id: int,
    entry: MediaFile,
    *,
    replaces: str | None = None,
    caps: UploadCaps | None = None,
    now: datetime | None = None,
) -> bool:
    """Record a file under its key (replacing any record of that key), then drop the record it replaces.

    In this order a crash in between leaves both records, never neither; the job re-run settles it.
    With `caps`, a new record is added only while the asset is under them at `now` (False if not).
    """
    doc = _doc(entry)
    updated = await _collection().update_one(
        {"tokenId": token_id, "media.files.key": entry.key},
        {"$set": {"media.files.$[file]": doc}},
        array_filters=[{"file.key": entry.key}],
    )
    if not updated.matched_count:
        room = _has_room(caps, now) if caps is not None and now is not None else {}
        added = await _collection().update_one(
            {"tokenId": token_id, "media.files.key": {"$ne": entry.key}, **room},
            {"$push": {"media.files": doc}},
        )
        if caps is not None and not added.matched_count:
            return False
    if replaces and replaces != entry.key:
        await drop_media_file(token_id, replaces)
    return True


async def drop_media_file(token_id: int, key: str) -> None:
    """Drop the asset's record of `key`."""
    await _collection().update_one({"tokenId": token_id}, {"$pull": {"media.files": {"key": key}}})


async def index_media_key(token_id: int, entry: MediaFile) -> None:
    """Keep the seed's media fields (imageKeys, documentKeys, videoKey, modelKey) in step with files."""
    if entry.kind == "image":
        update: dict[str, Any] = {"$addToSet": {"media.imageKeys": entry.key}}
    elif entry.kind == "document":
        update = {"$addToSet": {"media.documentKeys": entry.key}}
    elif entry.kind == "video":
        update = {"$set": {"media.videoKey": entry.key}}
    elif entry.kind == "model" and entry.category == "model":
        update = {"$set": {"media.modelKey": entry.key}}
    else:
        return
    await _collection().update_one({"tokenId": token_id}, update)


async def reject_media_file(token_id: int, entry: MediaFile, code: str) -> None:
    """Keep the record, marked rejected with why, and take its key out of the key lists: never served."""
    await put_media_file(token_id, entry.model_copy(update={"status": "rejected", "error": code}))
    pulls = {"media.imageKeys": entry.key, "media.documentKeys": entry.key}
    await _collection().update_one({"tokenId": token_id}, {"$pull": pulls})


async def set_thumbnail(token_id: int, url: str) -> None:
    """Point the asset's thumbnail at `url`."""
    await _collection().update_one({"tokenId": token_id}, {"$set": {"media.thumbnailUrl": url}})


async def drop_thumbnails(token_id: int) -> None:
    """Drop the asset's thumbnail records and its thumbnail."""
    await _collection().update_one(
        {"tokenId": token_id},
        {"$pull": {"media.files": {"kind": "thumbnail"}}, "$set": {"media.thumbnailUrl": None}},
    )


async def drop_staged_uploads_before(cutoff: datetime) -> None:
    """Drop the staged records made before `cutoff`, on every asset."""
    await _collection().update_many(
        {"media.files": {"$elemMatch": {"status": "staged", "createdAt": {"$lt": cutoff}}}},
        {"$pull": {"media.files": {"status": "staged", "createdAt": {"$lt": cutoff}}}},
    )
