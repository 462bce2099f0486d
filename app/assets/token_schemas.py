"""The token metadata an AssetToken's `tokenURI(id)` points at, in OpenSea's metadata standard.

Its field names are the standard's own (snake_case), not the API's camelCase: marketplaces and indexers
read them by those names (https://docs.opensea.io/docs/metadata-standards).
"""

from __future__ import annotations

import msgspec

from app.lib.schemas import Schema

Unset = msgspec.UnsetType
UNSET = msgspec.UNSET


class Trait(Schema, rename=None, kw_only=True):
    """One attribute of the token: text or a number; `display_type` "date" marks Unix seconds as a date."""

    trait_type: str
    value: str | float  # an int is a number too (one JSON Schema type, so `oneOf` holds)
    display_type: str | Unset = UNSET


class TokenMetadata(Schema, rename=None, kw_only=True):
    """An asset as marketplaces show its token: what its public detail shows, and its best public image
    (omitted when it has none)."""

    name: str
    description: str
    image: str | Unset = UNSET
    external_url: str
    attributes: list[Trait]
