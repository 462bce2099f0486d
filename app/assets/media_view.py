"""Who sees which media of an asset: the access classes of seed plan 3.2.3, applied per caller.

- public (everyone, signed in or not): thumbnails, previews and watermarked previews, as public URLs;
- authenticated (any principal): high-resolution images (metadata stripped), documents, videos and
  models, as presigned GETs that expire after a few minutes;
- admin only: original uploads (as uploaded, metadata intact) and verification documents.

The asset's owner is an authenticated user for these classes: the seed makes originals admin-only and
this keeps it so (an owner who needs an original back asks an admin). The owner and admins also see
the state of their uploads (staged, rejected and why), without any original key.

`asset.media` itself (imageKeys, files...) holds original keys: serialize an asset's media only
through `media_view`, never directly.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from app.assets.documents import AssetMedia, Ownership
from app.config import Settings
from app.lib.bucket import THUMBNAIL_SIZES
from app.lib.security import Principal
from app.lib.storage import Storage

PUBLIC, AUTHENTICATED, ADMIN = "public", "authenticated", "admin"
_LEVELS = {PUBLIC: 0, AUTHENTICATED: 1, ADMIN: 2}
# The class of a kind of file never falls below this, whatever a record says.
_FLOOR = {"image": ADMIN, "highres": AUTHENTICATED, "document": AUTHENTICATED}
_FORMATS = {"image/jpeg": "jpeg", "image/webp": "webp"}


def caller_level(principal: Principal | None) -> str:
    """The highest access class a caller holds."""
    if principal is None:
        return PUBLIC
    return ADMIN if principal.is_admin else AUTHENTICATED


def file_class(entry: Any) -> str:
    """The access class of one media record: its own, raised to its kind's floor."""
    own = entry.access if entry.access in _LEVELS else ADMIN
    floor = _FLOOR.get(entry.kind or "", PUBLIC)
    return own if _LEVELS[own] >= _LEVELS[floor] else floor


def may_read(principal: Principal | None, entry: Any) -> bool:
    return _LEVELS[caller_level(principal)] >= _LEVELS[file_class(entry)]


def _is_owner(principal: Principal | None, asset: Any) -> bool:
    owner = asset.ownership.currentOwner
    return bool(principal and owner and principal.wallet_address.lower() == owner.lower())


async def live_media_view(
    live: dict[str, Any], principal: Principal | None, storage: Storage, settings: Settings
) -> dict:
    """`media_view` of an asset read as a raw projection (its `media` and `ownership`)."""
    asset = SimpleNamespace(
        media=AssetMedia.model_validate(live.get("media") or {}),
        ownership=Ownership.model_validate(live.get("ownership") or {}),
    )
    return await media_view(asset, principal, storage, settings)


async def media_view(asset: Any, principal: Principal | None, storage: Storage, settings: Settings) -> dict:
    """The asset's media as this caller may see it: public URLs, presigned GETs, or nothing."""
    level = caller_level(principal)
    is_admin = level == ADMIN
    live = [f for f in asset.media.files if f.status in ("stored", "processed")]

    thumbnails: dict[str, dict[str, str]] = {}
    renditions: dict[str, dict[str, Any]] = {}
    for entry in live:
        if entry.kind == "thumbnail" and entry.label in THUMBNAIL_SIZES and may_read(principal, entry):
            fmt = _FORMATS.get(entry.contentType or "", "jpeg")
            thumbnails.setdefault(entry.label, {})[fmt] = storage.public_url(entry.key)
        elif entry.source and entry.kind in ("preview", "watermarked", "highres"):
            renditions.setdefault(entry.source, {})[entry.kind] = entry

    images = []
    for entry in live:
        if entry.kind != "image" or entry.status != "processed":
            continue
        derived = renditions.get(entry.key, {})
        item: dict[str, Any] = {"label": entry.label, "width": entry.width, "height": entry.height}
        for kind, field in (("preview", "previewUrl"), ("watermarked", "watermarkedUrl")):
            rendition = derived.get(kind)
            if rendition is not None and may_read(principal, rendition):
                item[field] = storage.public_url(rendition.key)
        highres = derived.get("highres")
        if highres is not None and may_read(principal, highres):
            item["highResUrl"] = await storage.presigned_get(highres.key)
        if is_admin:
            item["originalKey"] = entry.key
            item["originalUrl"] = await storage.presigned_get(entry.key)
            item["sha256"] = entry.sha256
            item["contentType"] = entry.contentType
        if "previewUrl" in item or is_admin:
            images.append(item)

    documents, videos, models = [], [], []
    for entry in live:
        if entry.kind not in ("document", "video", "model") or not may_read(principal, entry):
            continue
        item = {
            "category": entry.category,
            "label": entry.label,
            "contentType": entry.contentType,
            "size": entry.size,
            "sha256": entry.sha256,
            "url": await storage.presigned_get(entry.key),
        }
        if entry.kind == "document":
            item["verification"] = file_class(entry) == ADMIN
            documents.append(item)
        else:
            (videos if entry.kind == "video" else models).append(item)

    md = thumbnails.get("md", {}).get("jpeg")
    view: dict[str, Any] = {
        "thumbnailUrl": md,
        "thumbnails": thumbnails,
        "images": images,
    }
    if level != PUBLIC:
        view["documents"] = documents
        view["videos"] = videos
        view["models"] = models
    if is_admin or _is_owner(principal, asset):
        view["uploads"] = [
            {
                "kind": f.kind,
                "label": f.label,
                "category": f.category,
                "status": f.status,
                "error": f.error,
                "contentType": f.contentType,
                "size": f.size,
                **({"key": f.key} if is_admin else {}),
            }
            for f in asset.media.files
            if f.status in ("staged", "rejected") or (f.kind == "image" and f.status == "stored")
        ]
    return view
