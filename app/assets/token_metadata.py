"""An asset's token metadata in OpenSea's metadata standard: what the AssetToken's `tokenURI(id)` serves.

Marketplaces and indexers fetch it anonymously and often. So it is made from the anonymous detail's own
parts, the public static part (detail.py's allow-lists, cached as the detail caches it) and the public
media (media_view.py), never from the document itself, and it counts no view.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urljoin

import msgspec

from app.assets import detail, repository
from app.assets.media_view import live_media_view
from app.assets.token_schemas import UNSET, TokenMetadata, Trait
from app.config import Settings
from app.lib.errors import NotFound
from app.lib.params import bounded_query
from app.lib.timeutil import as_utc

METADATA_ROUTE = "/api/metadata/"  # the tokenURI base ends with it; the decimal token id follows
ASSET_TYPE_TRAIT = "Asset Type"
# The public metadata shown as traits, in this order, by the names marketplaces show.
TEXT_TRAITS = (
    ("creator", "Creator"),
    ("condition", "Condition"),
    ("dimensions", "Dimensions"),
    ("assetLocation", "Location"),
)
MATERIAL_TRAIT = "Material"  # one trait per material
DATE_TRAITS = (("creationDate", "Creation Date"), ("acquisitionDate", "Acquisition Date"))
# The best public image first: the thumbnails are renditions of the primary image, the largest first.
THUMBNAILS = ("lg", "md", "sm")
IMAGE_FORMATS = ("jpeg", "webp")


class _PublicMetadata(msgspec.Struct):
    creator: str | None = None
    condition: str | None = None
    dimensions: str | None = None
    assetLocation: str | None = None
    materials: list[str] = []
    creationDate: datetime | None = None
    acquisitionDate: datetime | None = None
    customAttributes: dict[str, Any] = {}


class _PublicStatic(msgspec.Struct):
    """The fields read here of the public static part (detail.static_detail)."""

    name: str | None = None
    description: str = ""
    assetType: str | None = None
    metadata: _PublicMetadata = msgspec.field(default_factory=_PublicMetadata)


async def token_metadata(clients, settings: Settings, token_id: int) -> TokenMetadata:
    """The token metadata of the asset `token_id` (a stored id: reading.known_token); 404 without one."""
    static, live = await _public_parts(clients.redis, token_id)
    public = msgspec.json.decode(static, type=_PublicStatic)
    media = await live_media_view(live, None, clients.storage, settings)
    base = api_base(settings)
    image = best_image(media)
    return TokenMetadata(
        name=public.name or "",
        description=public.description,
        image=urljoin(f"{base}/", image) if image else UNSET,  # public URLs are absolute already
        external_url=f"{base}/api/assets/{token_id}",
        attributes=traits(public),
    )


async def _public_parts(redis, token_id: int) -> tuple[bytes, dict[str, Any]]:
    """The public static part (from the detail's cache, or made and cached) and the live part, read as the
    detail reads them, without touching its view counters."""
    cached = await detail.cached(redis, token_id)
    async with bounded_query():
        live = await repository.find(token_id, repository.LIVE_PROJECTION if cached is not None else None)
        if live is None:
            raise NotFound(f"no asset with tokenId {token_id}", code="asset_not_found")
        if cached is not None and detail.is_current(cached, live):
            detail.hit()
            return cached, live
        detail.miss()
        doc = live if cached is None else await repository.find(token_id)
    if doc is None:
        raise NotFound(f"no asset with tokenId {token_id}", code="asset_not_found")
    static = detail.static_detail(doc)
    await detail.store(redis, token_id, static)
    return static, doc


def api_base(settings: Settings) -> str:
    """This API's public base URL: the configured tokenURI base's, else AUTH_URI (its default base)."""
    configured = settings.chain.metadata_base_uri
    if configured and configured.endswith(METADATA_ROUTE):
        return configured.removesuffix(METADATA_ROUTE)
    return settings.auth.uri.rstrip("/")


def best_image(media: dict[str, Any]) -> str | None:
    """The largest public thumbnail, else the first public preview, of an anonymous caller's media view."""
    thumbnails = media.get("thumbnails") or {}
    for size in THUMBNAILS:
        for fmt in IMAGE_FORMATS:
            url = (thumbnails.get(size) or {}).get(fmt)
            if url:
                return url
    return next((image["previewUrl"] for image in media.get("images") or [] if image.get("previewUrl")), None)


def traits(public: _PublicStatic) -> list[Trait]:
    """The asset type, the public metadata that is set, and one trait per custom attribute value."""
    metadata = public.metadata
    found = [Trait(trait_type=ASSET_TYPE_TRAIT, value=public.assetType)] if public.assetType else []
    for field, name in TEXT_TRAITS:
        value = getattr(metadata, field)
        if value:
            found.append(Trait(trait_type=name, value=value))
    found += [Trait(trait_type=MATERIAL_TRAIT, value=material) for material in metadata.materials if material]
    for field, name in DATE_TRAITS:
        when = getattr(metadata, field)
        if when is not None:
            found.append(Trait(trait_type=name, value=int(as_utc(when).timestamp()), display_type="date"))
    for key, value in metadata.customAttributes.items():
        values = value if isinstance(value, list) else [value]  # a list: the trait takes each value
        found += [Trait(trait_type=key, value=v) for v in map(trait_value, values) if v is not None]
    return found


def trait_value(value: Any) -> str | float | None:
    """A custom attribute's value as a trait's: text and numbers as they are, booleans as text; None for
    null, objects and nested lists, which no trait can show."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return value
    return None
