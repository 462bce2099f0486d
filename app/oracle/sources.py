"""What a data source stores and shows: its document from a request (secrets sealed), the changes a patch
makes, and the view every route answers with (secrets left out: only the header names)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

import msgspec

from app.lib.crypto import SecretBox
from app.lib.errors import Conflict
from app.oracle import schemas
from app.oracle.documents import DataSource
from app.oracle.schemas import UNSET

API_ONLY = ("rowsPath", "nextUrlPath", "pageParam", "maxPages")
FORMATS = {"file": schemas.FILE_FORMATS, "api": ("json",)}
_HTTP_URL = re.compile(schemas.HTTP_URL)


def sealed_headers(headers: dict[str, str], box: SecretBox) -> dict[str, str]:
    return {name: box.seal(value) for name, value in headers.items()}


def sealed_authentication(auth: schemas.Authentication | None, box: SecretBox) -> dict[str, str] | None:
    return None if auth is None else {"header": auth.header, "value": box.seal(auth.value)}


def configuration(
    config: schemas.FileConfiguration | schemas.ApiConfiguration, box: SecretBox
) -> dict[str, Any]:
    """The stored configuration: mapping and defaults as given, header values and credential sealed."""
    stored: dict[str, Any] = {
        "refreshInterval": config.refreshInterval,
        "mapping": msgspec.structs.asdict(config.mapping),
        "defaults": msgspec.to_builtins(config.defaults),
        "headers": sealed_headers(config.headers, box),
        "authentication": sealed_authentication(config.authentication, box),
        "series": config.series,
    }
    if isinstance(config, schemas.ApiConfiguration):
        stored.update({name: getattr(config, name) for name in API_ONLY})
    return stored


def new_document(
    data: schemas.DataSourceCreate, box: SecretBox, created_by: str | None, now: datetime
) -> dict[str, Any]:
    """The document of a new source, due for its first fetch at once when enabled."""
    source = DataSource.model_validate(
        {
            "name": data.name,
            "type": "file" if isinstance(data, schemas.FileSourceCreate) else "api",
            "kind": data.kind,
            "url": data.url,
            "format": data.format,
            "description": data.description,
            "configuration": configuration(data.configuration, box),
            "status": {"isEnabled": data.isEnabled, "nextFetchAt": now if data.isEnabled else None},
            "aiWeighting": data.aiWeighting,
            "createdBy": created_by,
            "createdAt": now,
            "updatedAt": now,
        }
    )
    return source.model_dump(exclude={"id", "revision_id"})


def changes(
    current: dict[str, Any], patch: schemas.DataSourcePatch, box: SecretBox, now: datetime
) -> dict[str, Any]:
    """The `$set` paths of a patch; 409 for a URL, format or field that the source's type does not take."""
    source_type = current["type"]
    found: dict[str, Any] = {}
    for name in ("name", "description", "aiWeighting"):
        if getattr(patch, name) is not UNSET:
            found[name] = getattr(patch, name)
    if patch.isEnabled is not UNSET:
        found["status.isEnabled"] = patch.isEnabled
        if patch.isEnabled and not (current.get("status") or {}).get("isEnabled"):
            found["status.nextFetchAt"] = now  # re-enabled: fetch at once
    if patch.url is not UNSET:
        if source_type == "api" and not _HTTP_URL.match(patch.url):
            raise Conflict("an api source fetches http(s) URLs only", code="url_not_for_type")
        found["url"] = patch.url
        found["status.nextFetchAt"] = now  # a new place: fetch at once
    if patch.format is not UNSET:
        if patch.format not in FORMATS.get(source_type, ()):
            raise Conflict(
                f"a {source_type} source takes {' or '.join(FORMATS.get(source_type, ()))}",
                code="format_not_for_type",
            )
        found["format"] = patch.format
    if patch.configuration is not UNSET:
        found.update(_configuration_changes(current, patch.configuration, box, now))
    return found


def _configuration_changes(
    current: dict[str, Any], patch: schemas.ConfigurationPatch, box: SecretBox, now: datetime
) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name in API_ONLY:
        if getattr(patch, name) is not UNSET:
            if current["type"] != "api":
                raise Conflict(f"{name} applies to api sources only", code="field_not_for_type")
            found[f"configuration.{name}"] = getattr(patch, name)
    if patch.mapping is not UNSET:
        found["configuration.mapping"] = msgspec.structs.asdict(patch.mapping)
    if patch.defaults is not UNSET:
        found["configuration.defaults"] = msgspec.to_builtins(patch.defaults)
    if patch.headers is not UNSET:
        found["configuration.headers"] = sealed_headers(patch.headers, box)
    if patch.authentication is not UNSET:
        found["configuration.authentication"] = sealed_authentication(patch.authentication, box)
    if patch.series is not UNSET:
        found["configuration.series"] = patch.series
    if patch.refreshInterval is not UNSET:
        found["configuration.refreshInterval"] = patch.refreshInterval
        last = (current.get("status") or {}).get("lastAttemptAt")
        found["status.nextFetchAt"] = (last or now) + timedelta(seconds=patch.refreshInterval)
    return found


# ---------------------------------------------------------------- the view


def view(doc: dict[str, Any]) -> schemas.DataSourceOut:
    """A source as every route shows it: secrets never, only the names of the headers that are set."""
    source = DataSource.model_validate(doc)
    config = source.configuration
    mapping = schemas.Mapping(**config.mapping)
    defaults = config.defaults or {}
    auth = config.authentication
    last = source.lastFetch
    metrics = source.metrics
    return schemas.DataSourceOut(
        id=str(doc["_id"]),
        name=source.name,
        type=source.type,
        kind=source.kind,
        url=source.url,
        format=source.format,
        description=source.description,
        configuration=schemas.ConfigurationOut(
            refreshInterval=config.refreshInterval,
            mapping=schemas.MappingOut(**msgspec.structs.asdict(mapping)),
            defaults=schemas.DefaultsOut(
                currency=defaults.get("currency"),
                assetType=defaults.get("assetType"),
                attributes=defaults.get("attributes") or {},
            ),
            headerNames=sorted(config.headers),
            authentication=schemas.AuthenticationOut(header=auth.header) if auth else None,
            series=config.series,
            rowsPath=config.rowsPath,
            nextUrlPath=config.nextUrlPath,
            pageParam=config.pageParam,
            maxPages=config.maxPages,
        ),
        status=schemas.StatusOut(**source.status.model_dump()),
        metrics=schemas.MetricsOut(**metrics.model_dump(exclude={"recent"})),
        lastFetch=schemas.LastFetchOut(
            **{
                **last.model_dump(exclude={"rejectedSamples"}),
                "rejectedSamples": [schemas.RejectedRowOut(**s.model_dump()) for s in last.rejectedSamples],
            }
        )
        if last
        else None,
        aiWeighting=source.aiWeighting,
        createdAt=source.createdAt,
        updatedAt=source.updatedAt,
    )


def audited(doc: dict[str, Any]) -> dict[str, Any]:
    """What the audit trail keeps of a source: its settings as shown (no secret), not its figures."""
    shown = msgspec.to_builtins(view(doc))
    return {k: v for k, v in shown.items() if k not in ("status", "metrics", "lastFetch")}
