"""What a data source stores and shows: its document from a request (secrets sealed), the changes a patch
makes, and the view every route answers with (secrets left out: only the header names).

Header values and the authentication value are sealed with the origin of the source's URL, and a patch
that moves the URL to another origin (or between http and the bucket) drops them unless it gives them
again: the right to edit a source is not the right to send its owner's credentials somewhere else.
Credentials go in `authentication` or `headers`, never in the URL's query, which is stored and shown.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import msgspec

from app.lib import outbound
from app.lib.crypto import SecretBox
from app.lib.errors import BadRequest, Conflict
from app.lib.security import Principal, ensure_permission
from app.oracle import schemas
from app.oracle.documents import DataSource
from app.oracle.schemas import UNSET

API_ONLY = ("rowsPath", "nextUrlPath", "pageParam", "maxPages")
FORMATS = {"file": schemas.FILE_FORMATS, "api": ("json",)}
_HTTP_URL = re.compile(schemas.HTTP_URL)
# Query parameters that carry credentials, compared lower-case with `-` read as `_`, and the endings of
# their compound names (`client_secret`, `X-Amz-Signature`, `auth_token`).
CREDENTIAL_PARAMS = frozenset(
    {"token", "key", "apikey", "api_key", "secret", "password", "signature", "sig", "access_token"}
)
CREDENTIAL_SUFFIXES = ("_token", "_key", "_secret", "_password", "_signature", "_credential")


def credential_origin(url: str | None) -> str:
    """The origin a source's credentials are sealed to: its URL's scheme, host and port (the bucket's
    objects have one origin, `s3`)."""
    if not url:
        return ""
    return "s3" if url.startswith("s3://") else outbound.origin_of(url)


def refuse_credentials_in_url(url: str) -> None:
    """400 `credentials_in_url` for a query parameter named like a credential: the URL is stored, shown
    and audited in clear, so a token there would be too."""
    try:
        query = urlsplit(url).query.replace(";", "&")  # some servers split on `;` too
        names = [name for name, _ in parse_qsl(query, keep_blank_values=True)]
    except ValueError:
        names = []
    for name in names:
        plain = name.strip().lower().replace("-", "_")
        if plain in CREDENTIAL_PARAMS or plain.endswith(CREDENTIAL_SUFFIXES):
            raise BadRequest(
                "credentials belong in `authentication` or `headers`, which are stored encrypted, "
                "not in the URL, which is stored and shown as it is",
                code="credentials_in_url",
                details={"parameter": name[:64]},
            )


def sealed_headers(headers: dict[str, str], box: SecretBox, origin: str) -> dict[str, str]:
    return {name: box.seal_for(value, origin) for name, value in headers.items()}


def sealed_authentication(
    auth: schemas.Authentication | None, box: SecretBox, origin: str
) -> dict[str, str] | None:
    return None if auth is None else {"header": auth.header, "value": box.seal_for(auth.value, origin)}


def configuration(
    config: schemas.FileConfiguration | schemas.ApiConfiguration, box: SecretBox, origin: str
) -> dict[str, Any]:
    """The stored configuration: mapping and defaults as given, header values and credential sealed for
    `origin`."""
    stored: dict[str, Any] = {
        "refreshInterval": config.refreshInterval,
        "mapping": msgspec.structs.asdict(config.mapping),
        "defaults": msgspec.to_builtins(config.defaults),
        "headers": sealed_headers(config.headers, box, origin),
        "authentication": sealed_authentication(config.authentication, box, origin),
        "series": config.series,
    }
    if isinstance(config, schemas.ApiConfiguration):
        stored.update({name: getattr(config, name) for name in API_ONLY})
    return stored


def new_document(
    data: schemas.DataSourceCreate, box: SecretBox, created_by: str | None, now: datetime
) -> dict[str, Any]:
    """The document of a new source, due for its first fetch at once when enabled."""
    refuse_credentials_in_url(data.url)
    source = DataSource.model_validate(
        {
            "name": data.name,
            "type": "file" if isinstance(data, schemas.FileSourceCreate) else "api",
            "kind": data.kind,
            "url": data.url,
            "format": data.format,
            "description": data.description,
            "configuration": configuration(data.configuration, box, credential_origin(data.url)),
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
    """The `$set` paths of a patch; 409 for a URL, format or field that the source's type does not take.
    A URL at another origin drops the stored headers and authentication unless the patch gives them."""
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
        refuse_credentials_in_url(patch.url)
        found["url"] = patch.url
        found["status.nextFetchAt"] = now  # a new place: fetch at once
    if patch.format is not UNSET:
        if patch.format not in FORMATS.get(source_type, ()):
            raise Conflict(
                f"a {source_type} source takes {' or '.join(FORMATS.get(source_type, ()))}",
                code="format_not_for_type",
            )
        found["format"] = patch.format
    origin = credential_origin(found.get("url", current.get("url")))
    if patch.configuration is not UNSET:
        found.update(_configuration_changes(current, patch.configuration, box, now, origin))
    if origin != credential_origin(current.get("url")):
        found.setdefault("configuration.headers", {})
        found.setdefault("configuration.authentication", None)
    return found


def _configuration_changes(
    current: dict[str, Any], patch: schemas.ConfigurationPatch, box: SecretBox, now: datetime, origin: str
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
        found["configuration.headers"] = sealed_headers(patch.headers, box, origin)
    if patch.authentication is not UNSET:
        found["configuration.authentication"] = sealed_authentication(patch.authentication, box, origin)
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


MANAGE_PERMISSION = "oracle:manage"


def may_name_tokens(mapping: schemas.Mapping, principal: Principal) -> None:
    """A source whose sales name platform assets (`mapping.tokenId`) feeds those assets' repeat sales
    and scores their appraisals: whoever sets one must be allowed to move appraisals (403)."""
    if mapping.tokenId:
        ensure_permission(principal, MANAGE_PERMISSION)
