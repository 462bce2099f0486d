"""Route guards over assets, for every domain whose routes name an asset by its tokenId."""

from __future__ import annotations

from litestar.connection import ASGIConnection

from app.assets import service
from app.auth.guards import owner_or_admin


async def _asset_owner(connection: ASGIConnection) -> str | None:
    raw = await service.get_raw(connection.path_params["tokenId"], {"ownership.currentOwner": 1})
    return (raw.get("ownership") or {}).get("currentOwner")


# The route's {tokenId} asset belongs to the caller, or the caller is an admin.
owns_asset = owner_or_admin(_asset_owner)
