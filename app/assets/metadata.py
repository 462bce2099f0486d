"""The rules of an asset's off-chain metadata: what a write may store, and the changes a patch makes."""

from __future__ import annotations

from typing import Any

import msgspec

from app.assets import schemas
from app.assets.documents import AssetMetadata
from app.events import service as events_service
from app.lib.errors import BadRequest, Conflict
from app.lib.events import asset_topic
from app.lib.params import MAX_INT64

MAX_ATTRIBUTE_DEPTH = schemas.MAX_ATTRIBUTE_DEPTH
MAX_ATTRIBUTE_BYTES = 16_384
METADATA_FIELDS = frozenset(field.name for field in msgspec.structs.fields(schemas.MetadataIn))
_LISTS = ("materials", "provenance", "certificates")


def check_attributes(value: Any, path: str = "customAttributes", depth: int = 0) -> None:
    """Free-form attributes are stored as given, so no key may look like an operator or a path, and
    no integer may be one MongoDB cannot hold (it keeps 8-byte integers only, and would fail the write)."""
    if depth > MAX_ATTRIBUTE_DEPTH:
        raise BadRequest(f"{path} nests too deeply", code="invalid_attributes")
    if isinstance(value, int) and not -MAX_INT64 - 1 <= value <= MAX_INT64:
        raise BadRequest(
            f"{path} is an integer outside the stored range (-2^63 to 2^63-1); send it as a string",
            code="invalid_attributes",
        )
    if isinstance(value, dict):
        for key, item in value.items():
            if not key or key.startswith("$") or "." in key or "\x00" in key or len(key) > 100:
                raise BadRequest(
                    f"{path} has a key that is not allowed: {key!r}",
                    code="operator_not_allowed" if key.startswith("$") else "invalid_attributes",
                )
            check_attributes(item, f"{path}.{key}", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_attributes(item, f"{path}[{index}]", depth + 1)


def check_attribute_size(value: dict[str, Any]) -> None:
    if len(msgspec.json.encode(value)) > MAX_ATTRIBUTE_BYTES:
        raise BadRequest("customAttributes is too large", code="invalid_attributes")


def document(metadata: schemas.MetadataIn | None, custom: dict[str, Any] | None) -> AssetMetadata:
    """The metadata a new asset stores: the fields given, and the custom attributes of both places."""
    data = msgspec.to_builtins(metadata) if metadata is not None else {}
    data = {key: value for key, value in data.items() if value is not None}
    attributes = {**(data.pop("customAttributes", None) or {}), **(custom or {})}
    check_attributes(attributes)
    check_attribute_size(attributes)
    try:
        return AssetMetadata(**data, customAttributes=attributes)
    except ValueError as exc:
        raise BadRequest(f"invalid metadata: {exc}", code="invalid_metadata") from None


def _field_changes(patch: dict[str, Any]) -> dict[str, Any]:
    """`$set` values for the metadata fields given (None clears), each checked against its type."""
    unknown = sorted(set(patch) - (METADATA_FIELDS - {"customAttributes"}))
    if unknown:
        raise BadRequest(
            f"these metadata fields cannot be changed here: {', '.join(unknown)}",
            code="field_not_editable",
            details={"fields": unknown},
        )
    try:
        typed = msgspec.convert(patch, schemas.MetadataIn, strict=False)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"invalid metadata: {exc}", code="invalid_metadata") from None
    changes: dict[str, Any] = {}
    for name in patch:
        value = getattr(typed, name)
        if value is None:
            changes[f"metadata.{name}"] = [] if name in _LISTS else None
            continue
        if name in ("provenance", "certificates"):
            value = [msgspec.structs.asdict(item) for item in value]
        changes[f"metadata.{name}"] = value
    return changes


def patch_changes(patch: schemas.MetadataPatch, stored: dict[str, Any]) -> dict[str, Any]:
    """The `metadata.*` paths a patch sets, checked, given the `stored` metadata (400 when none)."""
    given = msgspec.to_builtins(patch.metadata) if patch.metadata is not None else {}
    changes = _field_changes(given)
    if len(msgspec.json.encode(given)) > MAX_ATTRIBUTE_BYTES:
        raise BadRequest("metadata is too large", code="invalid_metadata")
    if patch.customAttributes is not None:
        check_attributes(patch.customAttributes)
        attributes = dict(stored.get("customAttributes") or {})
        for key, value in patch.customAttributes.items():  # a JSON merge patch: null removes the key
            if value is None:
                attributes.pop(key, None)
            else:
                attributes[key] = value
        check_attribute_size(attributes)
        changes["metadata.customAttributes"] = attributes
    return changes


def version_conflict(latest: dict[str, Any]) -> Conflict:
    return Conflict(
        "the asset changed since you read it; re-read it and apply your change again",
        code="version_conflict",
        details={"currentVersion": latest.get("version", 0), "updatedAt": latest.get("updatedAt")},
    )


def announcement(token_id: int, version: int, changes: dict[str, Any]) -> dict[str, Any]:
    """`item_metadata_updated` for the change that made `version`: once per version."""
    fields = sorted({path.split(".", 1)[1] if "." in path else path for path in changes})
    payload = {"tokenId": token_id, "version": version, "changed": fields}
    return events_service.event(
        f"metadata:{token_id}:{version}", "item_metadata_updated", [asset_topic(token_id)], payload
    )
