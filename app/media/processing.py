"""Processing an asset's media: promotion of staged uploads, renditions within a pixel budget, thumbnails
on the primary image, and the lifecycle sweep.

Nothing an uploader sends is trusted: a presigned POST's policy limits what S3 accepts, but some
stores (moto, s3rver) ignore policies, so every staged object is measured (HeadObject) and sniffed
again by the processing job before it is promoted into the asset's layout.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from datetime import datetime
from typing import Any

import structlog
from botocore.exceptions import ClientError

from app.assets import service as assets_service
from app.lib import bucket as keys
from app.lib.errors import NotFound
from app.lib.storage import Storage
from app.lib.timeutil import as_utc, utcnow
from app.media import imaging
from app.media.budget import PixelBudget, decode_in_budget
from app.media.imaging import SNIFF_BYTES, UPLOAD_RULES, MediaRejected, UploadPurpose

log = structlog.get_logger(__name__)

AssetMedia, MediaFile = assets_service.AssetMedia, assets_service.MediaFile  # the asset's media records

HASH_MAX_BYTES = 256 * 1024 * 1024  # bigger objects (videos) are stored without a sha256
PUBLIC_CACHE = "public, max-age=31536000, immutable"  # rendition keys change with their original
THUMBNAIL_CACHE = "public, max-age=300"  # thumbnail keys are fixed per asset; the primary can change
# High-resolution keys made before they had a random part ({t}_highres_{stamp}.jpg) can be derived
# from the public preview key; processing replaces them.
_RANDOM_HIGHRES = re.compile(r"_highres-[0-9a-f]{32}_[^/_]+\.jpg$")
GUESSABLE_HIGHRES_PER_SWEEP = 100
_PURPOSE_OF_KIND = {"image": "image", "document": "document", "model": "model", "video": "video"}


def purpose_of(entry: MediaFile) -> str:
    """The upload purpose a staged or stored original was made for."""
    return _PURPOSE_OF_KIND[entry.kind or ""]


def pending_keys(media: AssetMedia) -> list[str]:
    """What a processing run would work on: staged uploads and images not yet rendered."""
    return sorted(
        f.key for f in media.files if f.status == "staged" or (f.kind == "image" and f.status == "stored")
    )


async def reject(
    storage: Storage, token_id: int, entry: MediaFile, code: str, message: str | None = None
) -> None:
    """Delete the object and keep the record, marked rejected with why: it is never served."""
    await storage.delete([entry.key])
    await assets_service.reject_media_file(token_id, entry, code)
    log.warning("media.rejected", token_id=token_id, key=entry.key, code=code, detail=message)


async def sha256_of(storage: Storage, key: str, size: int, etag: str | None = None) -> str | None:
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
            await reject(storage, token_id, entry, "upload_expired")
            return "rejected"
        return "waiting"  # the browser has not finished uploading yet
    purpose = purpose_of(entry)
    claimed = imaging.normalize_content_type(entry.contentType or "")
    max_bytes = UPLOAD_RULES[UploadPurpose(purpose)].max_bytes
    if staged.size > max_bytes:  # refused before it costs a copy
        await reject(storage, token_id, entry, "too_large", f"{staged.size} bytes exceeds {max_bytes}")
        return "rejected"
    target = entry.target or entry.key
    try:
        await storage.copy(entry.key, target, content_type=claimed, if_match=staged.etag)
    except ClientError as exc:
        if not keys.is_precondition_failed(exc):
            raise
        await reject(storage, token_id, entry, "upload_changed", "the upload changed while it was checked")
        return "rejected"
    copied = await storage.head(target)
    if copied is None:  # deleted under us: the next run copies it again
        return "waiting"
    try:
        head = await storage.read(target, first=SNIFF_BYTES, if_match=copied.etag)
        content_type = imaging.check_upload(purpose, claimed, head, copied.size)
        if content_type == "application/json":  # one byte past the cap is enough to refuse it
            body = await storage.read(target, first=imaging.MAX_JSON_BYTES + 1, if_match=copied.etag)
            # In the worker a thread will do: nothing else waits on this event loop for an answer.
            await asyncio.to_thread(imaging.check_json, body)
    except MediaRejected as exc:
        if target != entry.key:
            await storage.delete([target])
        await reject(storage, token_id, entry, exc.code, exc.message)
        return "rejected"
    promoted = entry.model_copy(
        update={
            "key": target,
            "target": None,
            "size": copied.size,
            "contentType": content_type,
            "sha256": await sha256_of(storage, target, copied.size, copied.etag),
            "status": "stored",
        }
    )
    await assets_service.put_media_file(token_id, promoted, replaces=entry.key)
    await assets_service.index_media_key(token_id, promoted)
    if target != entry.key:
        await storage.delete([entry.key])
    return "promoted"


# ---- renditions ----------------------------------------------------------------------------------------


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


def _thumbnails(token_id: int, entry: MediaFile, processed: imaging.ProcessedImage):
    for size in keys.THUMBNAIL_SIZES:
        for ext in ("jpg", "webp"):
            image = processed.renditions[f"thumbnail-{size}.{ext}"]
            key = keys.thumbnail_key(token_id, size, ext)
            yield (_rendition(entry, "thumbnail", key, image, label=size), image.data, THUMBNAIL_CACHE)


async def _set_thumbnail(token_id: int) -> None:
    await assets_service.set_thumbnail(token_id, keys.thumbnail_key(token_id, "md", "jpg"))


async def render_image(
    storage: Storage, token_id: int, entry: MediaFile, *, primary: bool, budget: PixelBudget | None = None
) -> str:
    """Make an original's renditions (and the asset's thumbnails when it is the primary image)."""
    data = await storage.read(entry.key)
    try:
        processed, highres = await decode_in_budget(
            budget, data, imaging.MAX_PIXELS, imaging.render_with_highres
        )
    except MediaRejected as exc:
        await reject(storage, token_id, entry, exc.code, exc.message)
        return "rejected"
    stamp = keys.stamp_of(entry.key)
    recorded = await assets_service.recorded_highres_key(token_id, entry.key)
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
    outputs.append((_rendition(entry, "highres", highres_key, high), highres, "private"))
    if primary:
        outputs.extend(_thumbnails(token_id, entry, processed))
    for record, body, cache_control in outputs:
        await storage.put_bytes(
            record.key, body, record.contentType or "image/jpeg", cache_control=cache_control
        )
    for record, _, _ in outputs:
        replaced = stale if record.kind == "highres" else None
        await assets_service.put_media_file(token_id, record, replaces=replaced)
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
    await assets_service.put_media_file(token_id, done)
    if primary:
        await _set_thumbnail(token_id)
    return "processed"


def _guessable(highres_key: str) -> bool:
    """Whether a high-resolution key lacks its random part (made before keys had one)."""
    return not _RANDOM_HIGHRES.search(highres_key)


async def _rekey_guessable_highres(storage: Storage, token_id: int, media: AssetMedia) -> int:
    """Move high-resolution renditions whose key can be guessed to a random key; how many records moved.

    A server-side copy: the original may be archived by now, and nothing needs decoding again.
    """
    moved = 0
    for entry in [f for f in media.files if f.kind == "highres" and _guessable(f.key)]:
        if await storage.head(entry.key) is None:  # nothing left to move: the record names no object
            await assets_service.drop_media_file(token_id, entry.key)
            continue
        fresh = entry.model_copy(update={"key": keys.highres_key(token_id, keys.stamp_of(entry.key))})
        await storage.copy(entry.key, fresh.key)
        await assets_service.put_media_file(token_id, fresh, replaces=entry.key)
        await storage.delete([entry.key])
        moved += 1
    return moved


async def tokens_with_guessable_highres(limit: int = GUESSABLE_HIGHRES_PER_SWEEP) -> list[int]:
    """Assets that still hold a high-resolution key without its random part, oldest token first."""
    return await assets_service.tokens_with_highres_not_matching(_RANDOM_HIGHRES, limit)


def _primary_key(media: AssetMedia) -> str | None:
    """The asset's primary image: the first of imageKeys that is still live."""
    live = {f.key for f in media.files if f.kind == "image" and f.status in ("stored", "processed")}
    return next((key for key in media.imageKeys if key in live), None)


async def _media(token_id: int) -> AssetMedia:
    media = await assets_service.media_records_of(token_id)
    if media is None:  # removed during the run
        raise NotFound(f"no asset with tokenId {token_id}", code="asset_not_found")
    return media


async def process_asset_media(
    storage: Storage, token_id: int, *, now: datetime | None = None, budget: PixelBudget | None = None
) -> dict[str, Any]:
    """Promote staged uploads, render stored images, and keep the thumbnails on the primary image."""
    now = now or utcnow()
    media = await assets_service.media_records_of(token_id)
    if media is None:
        return {"tokenId": token_id, "status": "asset_not_found"}
    counts: dict[str, int] = {}

    def count(outcome: str) -> None:
        counts[outcome] = counts.get(outcome, 0) + 1

    for entry in [f for f in media.files if f.status == "staged"]:
        count(await promote(storage, token_id, entry, now=now))

    if moved := await _rekey_guessable_highres(storage, token_id, await _media(token_id)):
        counts["rekeyed"] = moved

    media = await _media(token_id)
    primary = _primary_key(media)
    for entry in [f for f in media.files if f.kind == "image" and f.status == "stored"]:
        count(await render_image(storage, token_id, entry, primary=entry.key == primary, budget=budget))

    # A rejected primary hands the thumbnails to the next image; an unchanged one costs nothing.
    media = await _media(token_id)
    primary = _primary_key(media)
    thumbs = {f.source for f in media.files if f.kind == "thumbnail" and f.status == "processed"}
    if primary is not None and thumbs != {primary}:
        entry = next(f for f in media.files if f.key == primary)
        data = await storage.read(primary)
        try:
            processed = await decode_in_budget(budget, data, imaging.MAX_PIXELS, imaging.render_variants)
        except MediaRejected as exc:
            await reject(storage, token_id, entry, exc.code, exc.message)
        else:
            for record, body, cache_control in _thumbnails(token_id, entry, processed):
                await storage.put_bytes(
                    record.key, body, record.contentType or "", cache_control=cache_control
                )
                await assets_service.put_media_file(token_id, record)
            await _set_thumbnail(token_id)
            count("thumbnails")
    elif primary is None and thumbs:
        stale = [keys.thumbnail_key(token_id, s, e) for s in keys.THUMBNAIL_SIZES for e in ("jpg", "webp")]
        await storage.delete(stale)
        await assets_service.drop_thumbnails(token_id)
    log.info("media.processed", token_id=token_id, **counts)
    return {"tokenId": token_id, "status": "done", **counts}


# ---- lifecycle -----------------------------------------------------------------------------------------


async def sweep_expired(storage: Storage, *, now: datetime | None = None) -> dict[str, int]:
    """Delete temp uploads older than 24 h (multipart ones never completed included) and cache objects
    older than 7 days (seed 3.2.4)."""
    now = now or utcnow()
    temp = [
        obj.key
        async for obj in storage.list("user-uploads/")
        if keys.is_temp_key(obj.key) and now - as_utc(obj.last_modified) > keys.TEMP_TTL
    ]
    cache = [
        obj.key
        async for obj in storage.list("images/processed/")
        if keys.is_cache_key(obj.key) and now - as_utc(obj.last_modified) > keys.CACHE_TTL
    ]
    await storage.delete(temp + cache)
    # The parts of an upload never completed are no object: listing objects never finds them. Its age
    # counts from the later of its key's stamp and the store's word (moto answers a fixed day of 2010).
    abandoned = 0
    async for key, upload_id, initiated in storage.multipart_uploads("user-uploads/"):
        started = max(as_utc(initiated), keys.stamped_at(key) or as_utc(initiated))
        if keys.is_temp_key(key) and now - started > keys.TEMP_TTL:
            await storage.abort_multipart(key, upload_id)
            abandoned += 1
    # Staged records whose upload never came (or was just swept) would otherwise wait forever.
    await assets_service.drop_staged_uploads_before(now - keys.TEMP_TTL)
    if temp or cache or abandoned:
        log.info("media.swept", temp=len(temp), multipart=abandoned, cache=len(cache))
    return {"temp": len(temp) + abandoned, "cache": len(cache)}
