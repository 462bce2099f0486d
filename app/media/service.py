"""Media pipeline: upload policies, staging, promotion, renditions and the lifecycle sweep.

Nothing an uploader sends is trusted: a presigned POST's policy limits what S3 accepts, but some
stores (moto, s3rver) ignore policies, so every staged object is measured (HeadObject) and sniffed
again by the processing job before it is promoted into the asset's layout.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, BinaryIO, TypeVar

import structlog
from arq.constants import job_key_prefix, result_key_prefix
from arq.jobs import Job, JobStatus
from botocore.exceptions import ClientError
from pymongo.errors import ExecutionTimeout

from app.assets.documents import Asset, MediaFile
from app.audit import service as audit_service
from app.auth.documents import User
from app.lib import bucket as keys
from app.lib.clients import Clients
from app.lib.errors import (
    AppError,
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    UnsupportedMediaType,
)
from app.lib.queues import IMAGE_QUEUE
from app.lib.security import Principal, ensure_owner_or_admin
from app.lib.storage import Storage
from app.lib.timeutil import as_utc, utcnow
from app.media import imaging
from app.media.imaging import SNIFF_BYTES, UPLOAD_RULES, MediaRejected, UploadPurpose

log = structlog.get_logger(__name__)

PROCESS_JOB = "media.process"
AVATAR_JOB = "media.avatar"
SWEEP_JOB = "media.sweep"
# Direct uploads through the API are for small files; larger ones go straight to S3 (presigned).
DIRECT_UPLOAD_MAX_BYTES = 25 * 1024 * 1024
DIRECT_UPLOAD_MAX_FILES = 10
# Caps per asset that keep its document small: uploads in flight (staged, not yet expired), and uploads
# in all (renditions aside, rejected ones included, so rejected junk cannot grow it either).
MAX_STAGED_UPLOADS = 20
MAX_UPLOADS = 100
HASH_MAX_BYTES = 256 * 1024 * 1024  # bigger objects (videos) are stored without a sha256
PUBLIC_CACHE = "public, max-age=31536000, immutable"  # rendition keys change with their original
THUMBNAIL_CACHE = "public, max-age=300"  # thumbnail keys are fixed per asset; the primary can change
AVATAR_CACHE = THUMBNAIL_CACHE  # one key per user, replaced by each new avatar
# Avatar jobs queued or running per wallet: any signed-in user may ask for them, and each decodes an
# image on the image worker; beyond this the API answers 429 until one has finished.
AVATAR_JOBS_PER_WALLET = 3
# Avatar jobs queued or running in all: wallets cost nothing to make, and media.process shares the
# image queue, so an asset's processing waits behind at most this many avatars.
AVATAR_JOBS_IN_FLIGHT = 20
AVATAR_RETRY_AFTER_S = 10
_KIND = {"image": "image", "document": "document", "model": "model", "video": "video"}
# High-resolution keys made before they had a random part ({t}_highres_{stamp}.jpg) can be derived
# from the public preview key; processing replaces them.
_RANDOM_HIGHRES = re.compile(r"_highres-[0-9a-f]{32}_[^/_]+\.jpg$")
GUESSABLE_HIGHRES_PER_SWEEP = 100
_REJECTION_STATUS = {"too_large": 413}


@dataclass(frozen=True)
class IncomingFile:
    """One file of a direct upload, spooled by the framework."""

    filename: str
    content_type: str
    file: BinaryIO
    size: int


# ---- assets and who may touch their media --------------------------------------------------------


MAX_TOKEN_ID = 2**63 - 1  # MongoDB stores 8-byte integers; a larger id cannot name an asset


async def get_asset(token_id: int) -> Asset:
    asset = await Asset.find_one(Asset.tokenId == token_id) if 0 <= token_id <= MAX_TOKEN_ID else None
    if asset is None:
        raise NotFound(f"no asset with tokenId {token_id}", code="asset_not_found")
    return asset


async def asset_for_upload(principal: Principal | None, token_id: int) -> Asset:
    """The asset, if this caller may add media to it: its current owner or an admin."""
    asset = await get_asset(token_id)
    ensure_owner_or_admin(principal, asset.ownership.currentOwner)
    return asset


def _collection():
    return Asset.get_pymongo_collection()


def _doc(entry: MediaFile) -> dict[str, Any]:
    return entry.model_dump()


async def _put_file(
    token_id: int, entry: MediaFile, *, replaces: str | None = None, capped_at: datetime | None = None
) -> bool:
    """Record a file under its key (replacing any record of that key), then drop the record it replaces.

    In this order a crash in between leaves both records, never neither; the job re-run settles it.
    With `capped_at`, a new record is added only while the asset is under its upload caps (False if not).
    """
    doc = _doc(entry)
    updated = await _collection().update_one(
        {"tokenId": token_id, "media.files.key": entry.key},
        {"$set": {"media.files.$[file]": doc}},
        array_filters=[{"file.key": entry.key}],
    )
    if not updated.matched_count:
        room = _has_room(capped_at) if capped_at is not None else {}
        added = await _collection().update_one(
            {"tokenId": token_id, "media.files.key": {"$ne": entry.key}, **room},
            {"$push": {"media.files": doc}},
        )
        if capped_at is not None and not added.matched_count:
            return False
    if replaces and replaces != entry.key:
        await _collection().update_one({"tokenId": token_id}, {"$pull": {"media.files": {"key": replaces}}})
    return True


# ---- upload policies ----------------------------------------------------------------------------------


def check_declared(purpose: str, content_type: str, size: int) -> str:
    """The normalised content type if this purpose allows it at this size: else 415 or 413."""
    rule = UPLOAD_RULES[UploadPurpose(purpose)]
    normalized = imaging.normalize_content_type(content_type)
    if normalized not in rule.content_types:
        raise UnsupportedMediaType(
            f"{content_type!r} is not allowed for {purpose} uploads",
            code="unsupported_content_type",
            details={"allowed": sorted(rule.content_types)},
        )
    if size > rule.max_bytes:
        raise PayloadTooLarge(
            f"{size} bytes is over the {rule.max_bytes} allowed for {purpose} uploads",
            code="file_too_large",
            details={"maxBytes": rule.max_bytes},
        )
    return normalized


def _label(label: str | None, filename: str) -> str:
    stem = filename.rsplit("/", 1)[-1].rsplit("\\", 1)[-1].rsplit(".", 1)[0]
    return keys.slug(label or stem, default="file")


def _access(purpose: str, verification: bool) -> str:
    if purpose == "image" or verification:
        return "admin"  # originals and verification documents
    return "authenticated"


async def _stage(
    principal: Principal,
    request: Any,
    content_type: str,
    now: datetime,
) -> tuple[str, MediaFile]:
    """Check the caller may upload to the asset, then record the staged file it is about to send."""
    if request.tokenId is None:
        raise BadRequest(f"tokenId is required for {request.purpose} uploads", code="token_id_required")
    if request.category and request.purpose != "document":
        raise BadRequest("category applies to documents only", code="invalid_category")
    asset = await asset_for_upload(principal, request.tokenId)
    stamp = keys.timestamp_token(now)
    ext = keys.extension_for(content_type)
    label = _label(request.label, request.fileName)
    category = request.category or ("certificates" if request.purpose == "document" else None)
    if request.purpose == "model":
        category = "texture" if content_type.startswith("image/") else "model"
    entry = MediaFile(
        key=keys.temp_key(principal.wallet_address, asset.tokenId, request.purpose, stamp, ext),
        target=keys.final_key(request.purpose, asset.tokenId, label, stamp, content_type, request.category),
        contentType=content_type,
        status="staged",
        kind=_KIND[request.purpose],
        access=_access(request.purpose, request.verification),
        category=category,
        label=label,
        uploadedBy=principal.wallet_address,
        createdAt=now,
    )
    added = await _collection().update_one(
        {"tokenId": asset.tokenId, **_has_room(now)}, {"$push": {"media.files": _doc(entry)}}
    )
    if not added.matched_count:
        raise _upload_limit_reached()
    return entry.key, entry


def _upload_limit_reached() -> Conflict:
    return Conflict(
        f"the asset holds its limit of uploads: {MAX_STAGED_UPLOADS} in progress, {MAX_UPLOADS} in all",
        code="upload_limit_reached",
        details={"maxStaged": MAX_STAGED_UPLOADS, "maxUploads": MAX_UPLOADS},
    )


def _count_files(cond: dict[str, Any]) -> dict[str, Any]:
    return {"$size": {"$filter": {"input": {"$ifNull": ["$media.files", []]}, "as": "f", "cond": cond}}}


def _has_room(now: datetime) -> dict[str, Any]:
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
                {"$lt": [_count_files({"$and": [staged, live]}), MAX_STAGED_UPLOADS]},
                {"$lt": [_count_files({"$and": [upload, {"$or": [{"$not": [staged]}, live]}]}), MAX_UPLOADS]},
            ]
        }
    }


async def presign_upload(
    storage: Storage, principal: Principal, request: Any, *, now: datetime | None = None
) -> dict[str, Any]:
    """A presigned POST for one file, staged under the caller's temp/ until a job checks and promotes it."""
    now = now or utcnow()
    content_type = check_declared(request.purpose, request.contentType, request.contentLength)
    if request.contentLength > keys.MULTIPART_THRESHOLD:
        raise BadRequest(
            f"files over {keys.MULTIPART_THRESHOLD} bytes use a multipart upload",
            code="multipart_required",
            details={"endpoint": "/api/storage/multipart-uploads"},
        )
    max_bytes = UPLOAD_RULES[UploadPurpose(request.purpose)].max_bytes
    if request.purpose == "avatar":
        # Staged like every upload; only the avatar job (POST /api/users/me/avatar) makes it the avatar.
        ext = keys.extension_for(content_type)
        key = keys.avatar_temp_key(principal.wallet_address, keys.timestamp_token(now), ext)
    else:
        key, _ = await _stage(principal, request, content_type, now)
    return await storage.presigned_post(
        key, content_type=content_type, max_bytes=max_bytes, lifecycle="temp", now=now
    )


async def start_multipart(
    storage: Storage, principal: Principal, request: Any, *, now: datetime | None = None
) -> dict[str, Any]:
    """A multipart upload to a staged key, with a presigned URL for each part."""
    now = now or utcnow()
    content_type = check_declared(request.purpose, request.contentType, request.contentLength)
    if request.purpose == "avatar":
        raise BadRequest("avatars are small: use a presigned POST", code="multipart_not_allowed")
    key, _ = await _stage(principal, request, content_type, now)
    upload_id = await storage.create_multipart(key, content_type=content_type, lifecycle="temp")
    part_count = max(1, math.ceil(request.contentLength / keys.MULTIPART_PART_SIZE))
    return {
        "key": key,
        "uploadId": upload_id,
        "partSize": keys.MULTIPART_PART_SIZE,
        "parts": await storage.presigned_part_urls(key, upload_id, part_count),
        "expiresAt": now + timedelta(seconds=keys.PRESIGNED_POST_TTL_S),
    }


async def complete_multipart(
    storage: Storage, principal: Principal, key: str, upload_id: str
) -> dict[str, Any]:
    """Finish a multipart upload once the parts S3 holds add up to no more than the purpose allows."""
    token_id, entry = await _find_staged(key, storage.settings.mongodb.max_time_ms)
    if not principal.is_admin and (entry.uploadedBy or "").lower() != principal.wallet_address.lower():
        raise Forbidden("only the uploader may complete this upload", code="not_uploader")
    try:
        parts = await storage.uploaded_parts(key, upload_id)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
            raise
        raise NotFound("no multipart upload with that id", code="upload_not_found") from exc
    total = sum(int(p["Size"]) for p in parts)
    max_bytes = UPLOAD_RULES[UploadPurpose(_purpose(entry))].max_bytes
    if not parts or total > max_bytes:
        await storage.abort_multipart(key, upload_id)
        await _reject(storage, token_id, entry, "too_large" if parts else "empty_upload")
        if not parts:
            raise BadRequest("no parts were uploaded", code="empty_upload")
        raise PayloadTooLarge(
            f"{total} bytes is over the {max_bytes} allowed",
            code="file_too_large",
            details={"maxBytes": max_bytes},
        )
    await storage.complete_multipart(key, upload_id, sorted(parts, key=lambda p: p["PartNumber"]))
    return {"key": key, "size": total}


async def _find_staged(key: str, max_time_ms: int) -> tuple[int, MediaFile]:
    """The token and record of a staged asset upload, by its key; 404 when there is none."""
    query = staged_upload_query(key)
    try:
        doc = await _collection().find_one(query, {"tokenId": 1, "media.files": 1}, max_time_ms=max_time_ms)
    except ExecutionTimeout as exc:
        raise ServiceUnavailable("the upload lookup took too long", code="query_timeout") from exc
    files = (doc or {}).get("media", {}).get("files", [])
    found = next((f for f in files if f.get("key") == key and f.get("status") == "staged"), None)
    if doc is None or found is None:
        raise NotFound("no staged upload with that key", code="upload_not_found")
    return doc["tokenId"], MediaFile.model_validate(found)


def staged_upload_query(key: str) -> dict[str, Any]:
    """The filter that finds a staged asset upload by its key, within the token the key names (indexed)."""
    token_id = keys.temp_token_id(key)
    if token_id is None or token_id > MAX_TOKEN_ID:
        token_id = -1  # names no asset: the lookup finds nothing, through the same index
    return {"media.files.key": key, "tokenId": token_id}


def _purpose(entry: MediaFile) -> str:
    return {"image": "image", "document": "document", "model": "model", "video": "video"}[entry.kind or ""]


# ---- direct uploads through the API ------------------------------------------------------------------


async def store_direct(
    storage: Storage,
    principal: Principal,
    token_id: int,
    purpose: str,
    files: list[IncomingFile],
    *,
    category: str | None = None,
    verification: bool = False,
    now: datetime | None = None,
) -> list[MediaFile]:
    """Check every file (size, sniffed bytes), then store them all in the asset's layout."""
    now = now or utcnow()
    if not files:
        raise BadRequest("no files in the upload", code="no_files")
    if len(files) > DIRECT_UPLOAD_MAX_FILES:
        raise BadRequest(f"at most {DIRECT_UPLOAD_MAX_FILES} files per upload", code="too_many_files")
    await asset_for_upload(principal, token_id)
    accepted: list[tuple[IncomingFile, str, str]] = []
    for incoming in files:
        if incoming.size > DIRECT_UPLOAD_MAX_BYTES:
            raise PayloadTooLarge(
                f"{incoming.filename!r} is over {DIRECT_UPLOAD_MAX_BYTES} bytes: use a presigned upload",
                code="file_too_large",
                details={"maxBytes": DIRECT_UPLOAD_MAX_BYTES, "file": incoming.filename},
            )
        claimed = check_declared(purpose, incoming.content_type, incoming.size)
        incoming.file.seek(0)
        head = incoming.file.read(SNIFF_BYTES)
        try:
            sniffed = imaging.check_upload(purpose, claimed, head, incoming.size)
            incoming.file.seek(0)
            body = incoming.file.read()
            if sniffed == "application/json":
                await asyncio.to_thread(imaging.check_json, body)  # CPU work, kept off the event loop
        except MediaRejected as exc:
            status = PayloadTooLarge if exc.code == "too_large" else UnsupportedMediaType
            raise status(
                f"{incoming.filename!r}: {exc.message}", code=exc.code, details={"file": incoming.filename}
            ) from exc
        digest = hashlib.sha256()
        digest.update(body)
        accepted.append((incoming, sniffed, digest.hexdigest()))

    stored: list[MediaFile] = []
    labels: set[str] = set()
    for index, (incoming, content_type, sha256) in enumerate(accepted):
        stamp = keys.timestamp_token(now.replace(microsecond=(now.microsecond + index) % 1_000_000))
        label = _label(None, incoming.filename)
        if label in labels:
            label = f"{label}-{index + 1}"
        labels.add(label)
        key = keys.final_key(purpose, token_id, label, stamp, content_type, category)
        incoming.file.seek(0)
        if not await _collection().count_documents(
            {"tokenId": token_id, **_has_room(now)}, limit=1
        ):  # refused before it costs a write; the capped $push below settles a race
            raise _upload_limit_reached()
        await storage.put_fileobj(key, incoming.file, content_type)
        entry = MediaFile(
            key=key,
            contentType=content_type,
            size=incoming.size,
            sha256=sha256,
            status="stored",
            kind=_KIND[purpose],
            access=_access(purpose, verification),
            category=category if purpose == "document" else None,
            label=label,
            uploadedBy=principal.wallet_address,
            createdAt=now,
        )
        if not await _put_file(token_id, entry, capped_at=now):
            await storage.delete([key])
            raise _upload_limit_reached()
        await _index_key(token_id, entry)
        stored.append(entry)
    log.info("media.direct_upload", token_id=token_id, purpose=purpose, files=len(stored))
    return stored


async def _index_key(token_id: int, entry: MediaFile) -> None:
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


# ---- processing --------------------------------------------------------------------------------------


def pending_keys(asset: Asset) -> list[str]:
    """What a processing run would work on: staged uploads and images not yet rendered."""
    return sorted(
        f.key
        for f in asset.media.files
        if f.status == "staged" or (f.kind == "image" and f.status == "stored")
    )


# Atomically move a (token, pending inputs) pair on to its next run, unless another caller already
# did: both then get the same new job id, which arq de-duplicates.
_NEXT_RUN = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current == tonumber(ARGV[1]) then
  current = current + 1
  redis.call('SET', KEYS[1], current, 'EX', ARGV[2])
end
return current
"""
# Outlives any result arq keeps (keep_result, an hour): a counter that expired and restarted at 0
# must not land on an id whose result is still kept.
PROCESS_RUN_TTL_S = 24 * 3600


def _run_counter(token_id: int, digest: str) -> str:
    return f"media:process:run:{token_id}:{digest}"


async def enqueue_processing(clients: Clients, token_id: int) -> tuple[str, int]:
    """Queue `media.process` for the asset: one job at a time per set of pending inputs.

    While a job for these inputs is queued or running, asking again returns that job. Once it has
    finished (whatever its result), arq keeps its result under its id and would refuse that id for an
    hour, so the next call moves on to a fresh run id: an upload that arrived after a run found it
    "waiting", or a run that failed all its tries, is never stuck behind the kept result.
    """
    asset = await get_asset(token_id)
    pending = pending_keys(asset)
    digest = hashlib.sha256("\n".join(pending).encode()).hexdigest()[:16]
    counter = _run_counter(token_id, digest)
    run = int(await clients.redis.get(counter) or 0)
    while True:
        job_id = f"{PROCESS_JOB}:{token_id}:{digest}:{run}"
        if (
            await clients.redis.enqueue_job(PROCESS_JOB, token_id, _job_id=job_id, _queue_name=IMAGE_QUEUE)
            is not None
        ):
            break
        if await Job(job_id, clients.redis, _queue_name=IMAGE_QUEUE).status() != JobStatus.complete:
            break  # queued, deferred or in progress: that run will see these inputs
        run = int(await clients.redis.eval(_NEXT_RUN, 1, counter, run, PROCESS_RUN_TTL_S))
    await clients.redis.expire(counter, PROCESS_RUN_TTL_S)
    return job_id, len(pending)


async def _reject(
    storage: Storage, token_id: int, entry: MediaFile, code: str, message: str | None = None
) -> None:
    """Delete the object and keep the record, marked rejected with why: it is never served."""
    await storage.delete([entry.key])
    rejected = entry.model_copy(update={"status": "rejected", "error": code})
    await _put_file(token_id, rejected)
    pulls = {"media.imageKeys": entry.key, "media.documentKeys": entry.key}
    await _collection().update_one({"tokenId": token_id}, {"$pull": pulls})
    log.warning("media.rejected", token_id=token_id, key=entry.key, code=code, detail=message)


async def _sha256_of(storage: Storage, key: str, size: int, etag: str | None = None) -> str | None:
    if size > HASH_MAX_BYTES:
        return None
    return await storage.sha256(key, if_match=etag)


async def promote(storage: Storage, token_id: int, entry: MediaFile, *, now: datetime) -> str:
    """Copy one staged upload into the asset's layout, then check the copy's real size and bytes.

    The uploader may write the staged key again while its form is valid, so the checks read the copy,
    which only the platform writes: what passed them is what is kept. The copy is also pinned to the
    ETag the HEAD saw; a store that refuses it because the upload changed rejects the upload.
    """
    staged = await storage.head(entry.key)
    if staged is None:
        if entry.createdAt and now - as_utc(entry.createdAt) > keys.TEMP_TTL:
            await _reject(storage, token_id, entry, "upload_expired")
            return "rejected"
        return "waiting"  # the browser has not finished uploading yet
    purpose = _purpose(entry)
    claimed = imaging.normalize_content_type(entry.contentType or "")
    max_bytes = UPLOAD_RULES[UploadPurpose(purpose)].max_bytes
    if staged.size > max_bytes:  # refused before it costs a copy
        await _reject(storage, token_id, entry, "too_large", f"{staged.size} bytes exceeds {max_bytes}")
        return "rejected"
    target = entry.target or entry.key
    try:
        await storage.copy(entry.key, target, content_type=claimed, if_match=staged.etag)
    except ClientError as exc:
        if not keys.is_precondition_failed(exc):
            raise
        await _reject(storage, token_id, entry, "upload_changed", "the upload changed while it was checked")
        return "rejected"
    copied = await storage.head(target)
    if copied is None:  # deleted under us: the next run copies it again
        return "waiting"
    try:
        head = await storage.read(target, first=SNIFF_BYTES, if_match=copied.etag)
        content_type = imaging.check_upload(purpose, claimed, head, copied.size)
        if content_type == "application/json":  # one byte past the cap is enough to refuse it
            body = await storage.read(target, first=imaging.MAX_JSON_BYTES + 1, if_match=copied.etag)
            await asyncio.to_thread(imaging.check_json, body)
    except MediaRejected as exc:
        if target != entry.key:
            await storage.delete([target])
        await _reject(storage, token_id, entry, exc.code, exc.message)
        return "rejected"
    promoted = entry.model_copy(
        update={
            "key": target,
            "target": None,
            "size": copied.size,
            "contentType": content_type,
            "sha256": await _sha256_of(storage, target, copied.size, copied.etag),
            "status": "stored",
        }
    )
    await _put_file(token_id, promoted, replaces=entry.key)
    await _index_key(token_id, promoted)
    if target != entry.key:
        await storage.delete([entry.key])
    return "promoted"


class PixelBudget:
    """Pixels one worker process holds decoded at once, over all its jobs; first come, first served.

    A decode peaks at about 8 bytes a pixel (an RGBA image and its flattened copy), so the budget
    bounds the worker's memory however many jobs it runs at a time.
    """

    def __init__(self, pixels: int) -> None:
        self.pixels = pixels
        self._held = 0
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    async def acquire(self, pixels: int) -> None:
        """Wait until `pixels` fit beside what is held and every earlier request has been served."""
        if pixels > self.pixels:
            raise MediaRejected(
                "image_too_large",
                f"{pixels} pixels is more than the {self.pixels} this worker decodes at once",
            )
        if not self._waiting and self._held + pixels <= self.pixels:
            self._held += pixels
            return
        granted = asyncio.get_running_loop().create_future()
        self._waiting.append((pixels, granted))
        try:
            await granted
        except asyncio.CancelledError:
            if not granted.cancelled():
                self.release(pixels)  # granted just as the job was cancelled
            elif (pixels, granted) in self._waiting:
                self._waiting.remove((pixels, granted))
                self._grant()  # the requests behind it may fit now
            raise

    def release(self, pixels: int) -> None:
        self._held -= pixels
        self._grant()

    def _grant(self) -> None:
        while self._waiting and self._held + self._waiting[0][0] <= self.pixels:
            pixels, granted = self._waiting.popleft()
            if not granted.done():  # done: its job was cancelled while it waited
                self._held += pixels
                granted.set_result(None)


_T = TypeVar("_T")


async def _decode_in_budget(
    budget: PixelBudget | None, data: bytes, max_pixels: int, decode: Callable[[bytes], _T]
) -> _T:
    """Run `decode(data)` in a thread while the image's pixels, read from its header, are held.

    They are given back when the thread ends, not when the job does: a cancelled job's thread decodes on.
    """
    pixels = imaging.header_pixels(data)
    if budget is None or pixels > max_pixels:  # over the cap: refused from its header, nothing decoded
        return await asyncio.to_thread(decode, data)
    await budget.acquire(pixels)
    work = asyncio.ensure_future(asyncio.to_thread(decode, data))

    def give_back(done: asyncio.Future[_T]) -> None:
        budget.release(pixels)
        if not done.cancelled():
            done.exception()  # retrieved, so a job cancelled meanwhile leaves no "never retrieved" log

    work.add_done_callback(give_back)
    return await asyncio.shield(work)


def _rendition(source: MediaFile, kind: str, key: str, image: imaging.EncodedImage, **extra: Any):
    return MediaFile(
        key=key,
        contentType=image.content_type,
        size=len(image.data),
        sha256=image.sha256,
        width=image.width,
        height=image.height,
        status="processed",
        kind=kind,
        access="authenticated" if kind == "highres" else "public",
        source=source.key,
        label=extra.get("label", source.label),
        createdAt=source.createdAt,
    )


async def render_image(
    storage: Storage, token_id: int, entry: MediaFile, *, primary: bool, budget: PixelBudget | None = None
) -> str:
    """Make an original's renditions (and the asset's thumbnails when it is the primary image)."""
    data = await storage.read(entry.key)
    try:
        processed, highres = await _decode_in_budget(
            budget, data, imaging.MAX_PIXELS, imaging.render_with_highres
        )
    except MediaRejected as exc:
        await _reject(storage, token_id, entry, exc.code, exc.message)
        return "rejected"
    stamp = keys.stamp_of(entry.key)
    recorded = await _recorded_highres_key(token_id, entry.key)
    reused = recorded is not None and not _guessable(recorded)
    highres_key = recorded if reused else keys.highres_key(token_id, stamp)
    stale = None if reused else recorded
    outputs: list[tuple[MediaFile, bytes, str]] = []
    for kind in ("preview", "watermarked"):
        image = processed.renditions[f"{kind}.jpg"]
        key = keys.processed_key(token_id, kind, stamp)
        outputs.append((_rendition(entry, kind, key, image), image.data, PUBLIC_CACHE))
    high = imaging.EncodedImage(
        highres, processed.width, processed.height, "image/jpeg", hashlib.sha256(highres).hexdigest()
    )
    outputs.append(
        (
            _rendition(entry, "highres", highres_key, high),
            highres,
            "private",
        )
    )
    if primary:
        outputs.extend(_thumbnails(token_id, entry, processed))
    for record, body, cache_control in outputs:
        await storage.put_bytes(
            record.key, body, record.contentType or "image/jpeg", cache_control=cache_control
        )
    for record, _, _ in outputs:
        await _put_file(token_id, record, replaces=stale if record.kind == "highres" else None)
    if stale:  # after its record is gone, so no one is handed a key that no longer exists
        await storage.delete([stale])
    done = entry.model_copy(
        update={
            "status": "processed",
            "error": None,
            "sha256": processed.sha256,
            "width": processed.width,
            "height": processed.height,
            "contentType": processed.content_type,
            "size": len(data),
        }
    )
    await _put_file(token_id, done)
    if primary:
        await _set_thumbnail(token_id)
    return "processed"


async def _recorded_highres_key(token_id: int, source: str) -> str | None:
    """The high-resolution key recorded for an original: a re-run rewrites it rather than adding one."""
    doc = await _collection().find_one({"tokenId": token_id}, {"media.files": 1})
    files = (doc or {}).get("media", {}).get("files", [])
    return next((f["key"] for f in files if f.get("kind") == "highres" and f.get("source") == source), None)


def _guessable(highres_key: str) -> bool:
    """Whether a high-resolution key lacks its random part (made before keys had one)."""
    return not _RANDOM_HIGHRES.search(highres_key)


async def _rekey_guessable_highres(storage: Storage, token_id: int) -> int:
    """Move high-resolution renditions whose key can be guessed to a random key; how many records moved.

    A server-side copy: the original may be archived by now, and nothing needs decoding again.
    """
    asset = await get_asset(token_id)
    moved = 0
    for entry in [f for f in asset.media.files if f.kind == "highres" and _guessable(f.key)]:
        if await storage.head(entry.key) is None:  # nothing left to move: the record names no object
            await _collection().update_one(
                {"tokenId": token_id}, {"$pull": {"media.files": {"key": entry.key}}}
            )
            continue
        fresh = entry.model_copy(update={"key": keys.highres_key(token_id, keys.stamp_of(entry.key))})
        await storage.copy(entry.key, fresh.key)
        await _put_file(token_id, fresh, replaces=entry.key)
        await storage.delete([entry.key])
        moved += 1
    return moved


async def tokens_with_guessable_highres(limit: int = GUESSABLE_HIGHRES_PER_SWEEP) -> list[int]:
    """Assets that still hold a high-resolution key without its random part, oldest token first."""
    query = {"media.files": {"$elemMatch": {"kind": "highres", "key": {"$not": _RANDOM_HIGHRES}}}}
    cursor = _collection().find(query, {"tokenId": 1}).sort("tokenId", 1).limit(limit)
    return [doc["tokenId"] async for doc in cursor]


def _thumbnails(token_id: int, entry: MediaFile, processed: imaging.ProcessedImage):
    for size in keys.THUMBNAIL_SIZES:
        for ext in ("jpg", "webp"):
            image = processed.renditions[f"thumbnail-{size}.{ext}"]
            key = keys.thumbnail_key(token_id, size, ext)
            yield (_rendition(entry, "thumbnail", key, image, label=size), image.data, THUMBNAIL_CACHE)


async def _set_thumbnail(token_id: int) -> None:
    await _collection().update_one(
        {"tokenId": token_id}, {"$set": {"media.thumbnailUrl": keys.thumbnail_key(token_id, "md", "jpg")}}
    )


def _primary_key(asset: Asset) -> str | None:
    """The asset's primary image: the first of imageKeys that is still live."""
    live = {f.key for f in asset.media.files if f.kind == "image" and f.status in ("stored", "processed")}
    return next((key for key in asset.media.imageKeys if key in live), None)


async def process_asset_media(
    storage: Storage, token_id: int, *, now: datetime | None = None, budget: PixelBudget | None = None
) -> dict[str, Any]:
    """Promote staged uploads, render stored images, and keep the thumbnails on the primary image."""
    now = now or utcnow()
    asset = await Asset.find_one(Asset.tokenId == token_id)
    if asset is None:
        return {"tokenId": token_id, "status": "asset_not_found"}
    counts: dict[str, int] = {}

    def count(outcome: str) -> None:
        counts[outcome] = counts.get(outcome, 0) + 1

    for entry in [f for f in asset.media.files if f.status == "staged"]:
        count(await promote(storage, token_id, entry, now=now))

    if moved := await _rekey_guessable_highres(storage, token_id):
        counts["rekeyed"] = moved

    asset = await get_asset(token_id)
    primary = _primary_key(asset)
    for entry in [f for f in asset.media.files if f.kind == "image" and f.status == "stored"]:
        count(await render_image(storage, token_id, entry, primary=entry.key == primary, budget=budget))

    # A rejected primary hands the thumbnails to the next image; an unchanged one costs nothing.
    asset = await get_asset(token_id)
    primary = _primary_key(asset)
    thumbs = {f.source for f in asset.media.files if f.kind == "thumbnail" and f.status == "processed"}
    if primary is not None and thumbs != {primary}:
        entry = next(f for f in asset.media.files if f.key == primary)
        data = await storage.read(primary)
        try:
            processed = await _decode_in_budget(budget, data, imaging.MAX_PIXELS, imaging.render_variants)
        except MediaRejected as exc:
            await _reject(storage, token_id, entry, exc.code, exc.message)
        else:
            for record, body, cache_control in _thumbnails(token_id, entry, processed):
                await storage.put_bytes(
                    record.key, body, record.contentType or "", cache_control=cache_control
                )
                await _put_file(token_id, record)
            await _set_thumbnail(token_id)
            count("thumbnails")
    elif primary is None and thumbs:
        await _drop_thumbnails(storage, token_id)
    log.info("media.processed", token_id=token_id, **counts)
    return {"tokenId": token_id, "status": "done", **counts}


async def _drop_thumbnails(storage: Storage, token_id: int) -> None:
    stale = [keys.thumbnail_key(token_id, s, e) for s in keys.THUMBNAIL_SIZES for e in ("jpg", "webp")]
    await storage.delete(stale)
    await _collection().update_one(
        {"tokenId": token_id},
        {"$pull": {"media.files": {"kind": "thumbnail"}}, "$set": {"media.thumbnailUrl": None}},
    )


# ---- lifecycle -----------------------------------------------------------------------------------------


async def sweep_expired(storage: Storage, *, now: datetime | None = None) -> dict[str, int]:
    """Delete temp uploads older than 24 h and cache objects older than 7 days (seed 3.2.4)."""
    now = now or utcnow()
    expired: list[str] = []
    async for obj in storage.list("user-uploads/"):
        if keys.is_temp_key(obj.key) and now - as_utc(obj.last_modified) > keys.TEMP_TTL:
            expired.append(obj.key)
    temp = len(expired)
    async for obj in storage.list("images/processed/"):
        if keys.is_cache_key(obj.key) and now - as_utc(obj.last_modified) > keys.CACHE_TTL:
            expired.append(obj.key)
    await storage.delete(expired)
    # Staged records whose upload never came (or was just swept) would otherwise wait forever.
    cutoff = now - keys.TEMP_TTL
    await _collection().update_many(
        {"media.files": {"$elemMatch": {"status": "staged", "createdAt": {"$lt": cutoff}}}},
        {"$pull": {"media.files": {"status": "staged", "createdAt": {"$lt": cutoff}}}},
    )
    if expired:
        log.info("media.swept", temp=temp, cache=len(expired) - temp)
    return {"temp": temp, "cache": len(expired) - temp}


# ---- avatars -------------------------------------------------------------------------------------------


def avatar_job_id(wallet: str, key: str) -> str:
    """One job per wallet and staged upload: asking twice gives the same job."""
    return f"{AVATAR_JOB}:{wallet}:{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def check_staged_avatar(principal: Principal, key: str) -> None:
    """The key must be a staged avatar in the caller's own temp folder (admins included)."""
    owner = keys.temp_owner(key)
    if owner is None:
        raise BadRequest("key is not a staged upload", code="invalid_upload_key")
    if owner != principal.wallet_address:
        raise Forbidden("the upload is not in your folder", code="not_owner")
    if not keys.is_avatar_temp_key(key):
        raise BadRequest("key is not a staged avatar upload", code="not_an_avatar_upload")


# Reserve a slot for job ARGV[1] in every sorted set of KEYS (scored by when it was reserved), all or
# none: 0 once it holds them, else the index of the first set that holds its cap ARGV[6 + k] of live
# slots already. A slot is live while arq keeps its job key (queued, deferred, running or waiting to
# retry); before its job is queued, for ARGV[3] ms after it was reserved unless the job has a result
# already. It reads keys it cannot declare in KEYS: arq needs a single Redis anyway.
_RESERVE_SLOTS = """
local job_id, now, grace = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
for k = 1, #KEYS do
  local slots = redis.call('ZRANGE', KEYS[k], 0, -1, 'WITHSCORES')
  for i = 1, #slots, 2 do
    local job, reserved = slots[i], tonumber(slots[i + 1])
    if redis.call('EXISTS', ARGV[5] .. job) == 0
        and (reserved < now - grace or redis.call('EXISTS', ARGV[6] .. job) == 1) then
      redis.call('ZREM', KEYS[k], job)
    end
  end
end
for k = 1, #KEYS do
  if not redis.call('ZSCORE', KEYS[k], job_id)
      and redis.call('ZCARD', KEYS[k]) >= tonumber(ARGV[6 + k]) then
    return k
  end
end
for k = 1, #KEYS do
  redis.call('ZADD', KEYS[k], 'NX', now, job_id)
  redis.call('EXPIRE', KEYS[k], ARGV[4])
end
return 0
"""
_SLOT_GRACE_MS = 60_000
_SLOTS_TTL_S = 24 * 3600  # as long as arq keeps a queued job's key


async def _reserve_avatar_slot(clients: Clients, wallet: str, job_id: str) -> None:
    """Count the job against the wallet's avatar jobs in flight and everyone's; 429 past either cap."""
    full = await clients.redis.eval(
        _RESERVE_SLOTS,
        2,
        f"media:avatar:jobs:{wallet}",
        "media:avatar:jobs",
        job_id,
        int(time.time() * 1000),
        _SLOT_GRACE_MS,
        _SLOTS_TTL_S,
        job_key_prefix,
        result_key_prefix,
        AVATAR_JOBS_PER_WALLET,
        AVATAR_JOBS_IN_FLIGHT,
    )
    if full == 1:
        raise _avatar_jobs_busy(
            f"{AVATAR_JOBS_PER_WALLET} of your avatar jobs are queued or running; retry once one is done",
            "too_many_avatar_jobs",
            AVATAR_JOBS_PER_WALLET,
        )
    if full == 2:
        raise _avatar_jobs_busy(
            f"{AVATAR_JOBS_IN_FLIGHT} avatar jobs are queued or running for all users; retry shortly",
            "avatar_queue_full",
            AVATAR_JOBS_IN_FLIGHT,
        )


def _avatar_jobs_busy(message: str, code: str, limit: int) -> AppError:
    return AppError(
        message,
        status_code=429,
        code=code,
        details={"limit": limit, "retryAfter": AVATAR_RETRY_AFTER_S},
        headers={"Retry-After": str(AVATAR_RETRY_AFTER_S)},
    )


async def enqueue_avatar(clients: Clients, principal: Principal, key: str) -> str:
    """Queue `media.avatar` for the caller's staged avatar; 404 if nothing was uploaded, 429 past the cap."""
    check_staged_avatar(principal, key)
    wallet = principal.wallet_address
    job_id = avatar_job_id(wallet, key)
    # Asked before: hand that job back, whether queued, running or done (a done job deleted the upload).
    if await Job(job_id, clients.redis, _queue_name=IMAGE_QUEUE).status() != JobStatus.not_found:
        return job_id
    if await clients.storage.head(key) is None:
        raise NotFound("nothing was uploaded under that key", code="upload_not_found")
    await _reserve_avatar_slot(clients, wallet, job_id)
    await clients.redis.enqueue_job(
        AVATAR_JOB, wallet, key, principal.kind, principal.api_key_id, _job_id=job_id, _queue_name=IMAGE_QUEUE
    )
    return job_id


def _avatar_principal(user: User, kind: str, api_key_id: str | None) -> Principal:
    return Principal(
        user_id=str(user.id),
        wallet_address=user.walletAddress,
        roles=frozenset(user.roles),
        kind="api_key" if kind == "api_key" else "user",
        api_key_id=api_key_id,
    )


async def promote_avatar(
    storage: Storage,
    wallet: str,
    key: str,
    *,
    kind: str = "user",
    api_key_id: str | None = None,
    budget: PixelBudget | None = None,
) -> dict[str, Any]:
    """Check a staged avatar's real size and bytes, re-encode it without metadata, and make it the avatar.

    The result is public (job status is readable anonymously): it names no private key.
    """
    if keys.temp_owner(key) != wallet or not keys.is_avatar_temp_key(key):
        return {"status": "rejected", "reason": "invalid_upload_key"}
    stored = await storage.head(key)
    if stored is None:  # never uploaded, or a run before this one finished with it
        return {"status": "missing", "reason": "upload_not_found"}
    user = await User.find_one(User.walletAddress == wallet)
    if user is None:
        await storage.delete([key])
        return {"status": "rejected", "reason": "user_not_found"}
    principal = _avatar_principal(user, kind, api_key_id)
    old = {"avatarUrl": user.profileInfo.avatarUrl}
    rule = UPLOAD_RULES[UploadPurpose.AVATAR]
    try:
        head = await storage.read(key, first=SNIFF_BYTES)
        imaging.check_upload(UploadPurpose.AVATAR, stored.content_type or "", head, stored.size)
        data = await storage.read(key)
        if len(data) > rule.max_bytes:  # replaced between the HEAD and the GET
            raise MediaRejected("too_large", f"{len(data)} bytes exceeds the {rule.max_bytes} allowed")
        # Under the avatar's own pixel cap, checked from the header before any pixel is decoded.
        avatar = await _decode_in_budget(budget, data, imaging.AVATAR_MAX_PIXELS, imaging.render_avatar)
    except MediaRejected as exc:
        await storage.delete([key])
        log.warning("media.avatar.rejected", wallet=wallet, code=exc.code, detail=exc.message)
        await audit_service.record(
            "user.avatar.update",
            principal=principal,
            entity_type="user",
            entity_id=str(user.id),
            old=old,
            new=None,
            success=False,
            reason=exc.code,
        )
        return {"status": "rejected", "reason": exc.code, "message": exc.message}

    target = keys.avatar_key(wallet)
    url = storage.public_url(target)
    current = await storage.head(target)
    unchanged = (
        current is not None and current.metadata.get("sha256") == avatar.sha256 and old["avatarUrl"] == url
    )
    if not unchanged:  # a re-run (or the same picture again) writes and audits nothing new
        await storage.put_bytes(
            target, avatar.data, "image/jpeg", cache_control=AVATAR_CACHE, metadata={"sha256": avatar.sha256}
        )
        await User.get_pymongo_collection().update_one(
            {"_id": user.id}, {"$set": {"profileInfo.avatarUrl": url}}
        )
        await audit_service.record(
            "user.avatar.update",
            principal=principal,
            entity_type="user",
            entity_id=str(user.id),
            old=old,
            new={"avatarUrl": url, "sha256": avatar.sha256, "width": avatar.width, "height": avatar.height},
        )
    await storage.delete([key])
    log.info("media.avatar.updated", wallet=wallet, unchanged=unchanged)
    return {
        "status": "done",
        "avatarUrl": url,
        "width": avatar.width,
        "height": avatar.height,
        "sha256": avatar.sha256,
    }
