"""Uploads: presigned POSTs and multipart uploads staged for the processing job, direct uploads through the
API, and the caps that keep an asset's media records small.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import BinaryIO

import structlog
from botocore.exceptions import ClientError

from app.assets import service as assets_service
from app.lib import bucket as keys
from app.lib.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    UnsupportedMediaType,
)
from app.lib.security import Principal, ensure_owner_or_admin
from app.lib.storage import Storage
from app.lib.timeutil import utcnow
from app.media import imaging, processing, schemas
from app.media.imaging import SNIFF_BYTES, UPLOAD_RULES, MediaRejected, UploadPurpose

log = structlog.get_logger(__name__)

MediaFile = assets_service.MediaFile

# Direct uploads through the API are for small files; larger ones go straight to S3 (presigned).
DIRECT_UPLOAD_MAX_BYTES = 25 * 1024 * 1024
DIRECT_UPLOAD_MAX_FILES = 10
# Caps per asset that keep its document small: uploads in flight (staged, not yet expired), and uploads
# in all (renditions aside, rejected ones included, so rejected junk cannot grow it either).
MAX_STAGED_UPLOADS = 20
MAX_UPLOADS = 100
CAPS = assets_service.UploadCaps(max_staged=MAX_STAGED_UPLOADS, max_uploads=MAX_UPLOADS)
# Processes that check JSON documents for the API: the check holds the GIL for its whole run (regex,
# translate, json.loads on up to 5 MB), so in a thread of the API it would still stall the event loop.
JSON_CHECK_PROCESSES = 2
_KIND = {"image": "image", "document": "document", "model": "model", "video": "video"}


@dataclass(frozen=True)
class IncomingFile:
    """One file of a direct upload, spooled by the framework."""

    filename: str
    content_type: str
    file: BinaryIO
    size: int


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


def _upload_limit_reached() -> Conflict:
    return Conflict(
        f"the asset holds its limit of uploads: {MAX_STAGED_UPLOADS} in progress, {MAX_UPLOADS} in all",
        code="upload_limit_reached",
        details={"maxStaged": MAX_STAGED_UPLOADS, "maxUploads": MAX_UPLOADS},
    )


async def _stage(
    principal: Principal, request: schemas.UploadRequest, content_type: str, now: datetime
) -> MediaFile:
    """Check the caller may upload to the asset, then record the staged file it is about to send."""
    if request.token_id is None:
        raise BadRequest(f"tokenId is required for {request.purpose} uploads", code="token_id_required")
    if request.category and request.purpose != "document":
        raise BadRequest("category applies to documents only", code="invalid_category")
    token_id = request.token_id
    # The asset is named in the body, not the route, so no route guard has checked its owner.
    ensure_owner_or_admin(principal, await assets_service.owner_of(token_id))
    stamp = keys.timestamp_token(now)
    ext = keys.extension_for(content_type)
    label = _label(request.label, request.file_name)
    category = request.category or ("certificates" if request.purpose == "document" else None)
    if request.purpose == "model":
        category = "texture" if content_type.startswith("image/") else "model"
    entry = MediaFile(
        key=keys.temp_key(principal.wallet_address, token_id, request.purpose, stamp, ext),
        target=keys.final_key(request.purpose, token_id, label, stamp, content_type, request.category),
        contentType=content_type,
        status="staged",
        kind=_KIND[request.purpose],
        access=_access(request.purpose, request.verification),
        category=category,
        label=label,
        uploadedBy=principal.wallet_address,
        createdAt=now,
    )
    if not await assets_service.add_media_file_if_room(token_id, entry, CAPS, now):
        raise _upload_limit_reached()
    return entry


async def presign_upload(
    storage: Storage, principal: Principal, request: schemas.UploadRequest, *, now: datetime | None = None
) -> schemas.PresignedPost:
    """A presigned POST for one file, staged under the caller's temp/ until a job checks and promotes it."""
    now = now or utcnow()
    content_type = check_declared(request.purpose, request.content_type, request.content_length)
    if request.content_length > keys.MULTIPART_THRESHOLD:
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
        key = (await _stage(principal, request, content_type, now)).key
    form = await storage.presigned_post(
        key, content_type=content_type, max_bytes=max_bytes, lifecycle="temp", now=now
    )
    return schemas.PresignedPost(
        url=form["url"], fields=form["fields"], key=form["key"], expires_at=form["expiresAt"]
    )


async def start_multipart(
    storage: Storage, principal: Principal, request: schemas.UploadRequest, *, now: datetime | None = None
) -> schemas.MultipartUpload:
    """A multipart upload to a staged key, with a presigned URL for each part."""
    now = now or utcnow()
    content_type = check_declared(request.purpose, request.content_type, request.content_length)
    if request.purpose == "avatar":
        raise BadRequest("avatars are small: use a presigned POST", code="multipart_not_allowed")
    key = (await _stage(principal, request, content_type, now)).key
    upload_id = await storage.create_multipart(key, content_type=content_type, lifecycle="temp")
    part_count = max(1, math.ceil(request.content_length / keys.MULTIPART_PART_SIZE))
    parts = await storage.presigned_part_urls(key, upload_id, part_count)
    return schemas.MultipartUpload(
        key=key,
        upload_id=upload_id,
        part_size=keys.MULTIPART_PART_SIZE,
        parts=[schemas.MultipartPart(part_number=p["partNumber"], url=p["url"]) for p in parts],
        expires_at=now + timedelta(seconds=keys.PRESIGNED_POST_TTL_S),
    )


async def complete_multipart(
    storage: Storage, principal: Principal, key: str, upload_id: str
) -> schemas.CompletedUpload:
    """Finish a multipart upload once the parts S3 holds add up to no more than the purpose allows."""
    found = await assets_service.find_staged_upload(key, storage.settings.mongodb.max_time_ms)
    if found is None:
        raise NotFound("no staged upload with that key", code="upload_not_found")
    token_id, entry = found
    # Not the asset's owner: the one who started this upload (the route names no asset to guard).
    if not principal.is_admin and (entry.uploadedBy or "").lower() != principal.wallet_address.lower():
        raise Forbidden("only the uploader may complete this upload", code="not_uploader")
    try:
        parts = await storage.uploaded_parts(key, upload_id)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
            raise
        raise NotFound("no multipart upload with that id", code="upload_not_found") from exc
    total = sum(int(p["Size"]) for p in parts)
    max_bytes = UPLOAD_RULES[UploadPurpose(processing.purpose_of(entry))].max_bytes
    if not parts or total > max_bytes:
        await storage.abort_multipart(key, upload_id)
        await processing.reject(storage, token_id, entry, "too_large" if parts else "empty_upload")
        if not parts:
            # The request is well formed; the upload it names is in no state to complete.
            raise Conflict("no parts were uploaded", code="empty_upload")
        raise PayloadTooLarge(
            f"{total} bytes is over the {max_bytes} allowed",
            code="file_too_large",
            details={"maxBytes": max_bytes},
        )
    await storage.complete_multipart(key, upload_id, sorted(parts, key=lambda p: p["PartNumber"]))
    return schemas.CompletedUpload(key=key, size=total)


# ---- direct uploads through the API ------------------------------------------------------------------


_json_checks: ProcessPoolExecutor | None = None


def _json_check_pool() -> ProcessPoolExecutor:
    """The process pool for JSON checks, made on first use (spawned: it inherits no threads or sockets)."""
    global _json_checks
    if _json_checks is None:
        context = multiprocessing.get_context("spawn")
        _json_checks = ProcessPoolExecutor(JSON_CHECK_PROCESSES, mp_context=context)
    return _json_checks


async def check_json_document(body: bytes) -> None:
    """`imaging.check_json` in another process, so the API's event loop keeps answering meanwhile."""
    global _json_checks
    for attempt in (1, 2):
        pool = _json_check_pool()
        try:
            await asyncio.get_running_loop().run_in_executor(pool, imaging.check_json, body)
            return
        except BrokenProcessPool as exc:  # a checker died (killed, out of memory): start anew, once
            if _json_checks is pool:
                _json_checks = None
            pool.shutdown(wait=False, cancel_futures=True)
            log.error("media.json_check.pool_broken", error=str(exc), attempt=attempt)
            if attempt == 2:
                raise ServiceUnavailable(
                    "the document check failed; retry", code="document_check_failed"
                ) from exc


async def close_json_checks() -> None:
    """Stop the JSON check processes, if any were started (the API's shutdown)."""
    global _json_checks
    pool, _json_checks = _json_checks, None
    if pool is not None:
        await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)


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
    """Check every file (size, sniffed bytes), then store them all in the asset's layout.

    The route's guard has checked that the caller owns the asset (or is an admin).
    """
    now = now or utcnow()
    if not files:
        raise BadRequest("no files in the upload", code="no_files")
    if len(files) > DIRECT_UPLOAD_MAX_FILES:
        raise BadRequest(f"at most {DIRECT_UPLOAD_MAX_FILES} files per upload", code="too_many_files")
    await assets_service.owner_of(token_id)  # 404 when there is no such asset (an admin's guard passes)
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
                await check_json_document(body)
        except MediaRejected as exc:
            status = PayloadTooLarge if exc.code == "too_large" else UnsupportedMediaType
            raise status(
                f"{incoming.filename!r}: {exc.message}", code=exc.code, details={"file": incoming.filename}
            ) from exc
        accepted.append((incoming, sniffed, hashlib.sha256(body).hexdigest()))

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
        if not await assets_service.has_upload_room(token_id, CAPS, now):
            raise _upload_limit_reached()  # refused before it costs a write; the capped $push settles a race
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
        if not await assets_service.put_media_file(token_id, entry, caps=CAPS, now=now):
            await storage.delete([key])
            raise _upload_limit_reached()
        await assets_service.index_media_key(token_id, entry)
        stored.append(entry)
    log.info("media.direct_upload", token_id=token_id, purpose=purpose, files=len(stored))
    return stored
