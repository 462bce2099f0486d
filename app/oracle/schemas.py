"""Request and response bodies of the data-source API (seed plan 3.1.5 field names, camelCase).

Every constraint a body must meet is stated here, so the OpenAPI document promises exactly what is
accepted: a request that matches these schemas is created (or, for a change that does not fit the stored
source's type, answered 409), never refused as invalid. Secrets go in, and never come out: a response
names the headers that are set, not their values.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from app.lib.schemas import RequestBody, Schema

KINDS = ("sales", "index")
TYPES = ("file", "api")
FILE_FORMATS = ("csv", "jsonl")
CURRENCIES = ("ETH", "USD")
# Objects a `file` source may read from the platform's bucket: `s3://data-sources/...`.
BUCKET_PREFIX = "data-sources/"
MIN_REFRESH_S, MAX_REFRESH_S = 60, 30 * 24 * 3600
MAX_PAGES = 1000

_PORT = r"(?::(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?"
_HTTP = r"https?://[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?" + _PORT + r"(?:[/?][!\"$-~]*)?"
_S3 = r"s3://" + BUCKET_PREFIX + r"[A-Za-z0-9!_.*'()/-]{1,900}"
HTTP_URL = f"^{_HTTP}$"
FILE_URL = f"^(?:{_HTTP}|{_S3})$"
HEADER_NAME = r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$"
HEADER_VALUE = r"^[ -~]{1,4096}$"  # printable ASCII: no line breaks to split a header with
NAME = r"^[A-Za-z0-9][A-Za-z0-9 ._/-]{0,99}$"
JSON_PATH = r"^[A-Za-z0-9_$-]{1,64}(?:\.[A-Za-z0-9_$-]{1,64}){0,15}$"  # dotted keys (digits index lists)
PAGE_PARAM = r"^[A-Za-z0-9_.-]{1,64}$"
ATTRIBUTE = r"^[A-Za-z0-9_][A-Za-z0-9 _-]{0,99}$"


def matching(pattern: str, description: str | None = None, **constraints: Any) -> Meta:
    """A string that fully matches `pattern` (written `^...$`, as the OpenAPI document states it).

    msgspec checks it with `\\Z` for the `$`: Python's `$` also matches before a final newline, which
    JSON Schema's does not, so `"name\\n"` would pass here and fail every generated client.
    """
    documented: dict[str, Any] = {"extra": {"pattern": pattern}}
    if description:
        documented["description"] = description
    return Meta(pattern=pattern[:-1] + r"\Z", extra_json_schema=documented, **constraints)


Name = Annotated[str, matching(NAME, "1-100 letters, digits, spaces and ._/-")]
Description = Annotated[str, Meta(max_length=2000)]
Column = Annotated[str, Meta(min_length=1, max_length=200, description="a column (CSV) or key (JSON)")]
AssetType = Annotated[str, Meta(min_length=1, max_length=100, pattern=r"\S")]
Interval = Annotated[int, Meta(ge=MIN_REFRESH_S, le=MAX_REFRESH_S, description="seconds between fetches")]
Weight = Annotated[float, Meta(ge=0, le=1)]
JsonPath = Annotated[str, matching(JSON_PATH)]
PageParam = Annotated[str, matching(PAGE_PARAM)]
HeaderName = Annotated[str, matching(HEADER_NAME)]
HeaderValue = Annotated[str, matching(HEADER_VALUE)]
AttributeName = Annotated[str, matching(ATTRIBUTE)]
HttpUrl = Annotated[str, matching(HTTP_URL, max_length=2048)]
FileUrl = Annotated[
    str,
    matching(
        FILE_URL, "an http(s) URL, or s3://data-sources/<key> in the platform's bucket", max_length=2048
    ),
]
AttributeValue = Annotated[str, Meta(max_length=1000)] | Annotated[float, Meta(ge=-1e300, le=1e300)] | bool
MAX_HEADERS = 20
Headers = Annotated[
    dict[HeaderName, HeaderValue],
    Meta(
        max_length=MAX_HEADERS,
        description="sent with every request to the source's own origin; stored encrypted, never returned",
        extra_json_schema={
            "extra": {
                "property_names": {"type": "string", "pattern": HEADER_NAME},
                "additional_properties": {"type": "string", "pattern": HEADER_VALUE},
                "max_properties": MAX_HEADERS,
            }
        },
    ),
]
Attributes = Annotated[
    dict[AttributeName, AttributeValue],
    Meta(
        max_length=50,
        description="constants for attribute columns a source lacks",
        extra_json_schema={
            "extra": {
                "property_names": {"type": "string", "pattern": ATTRIBUTE},
                "additional_properties": {
                    "oneOf": [
                        {"type": "string", "maxLength": 1000},
                        {"type": "number", "minimum": -1e300, "maximum": 1e300},
                        {"type": "boolean"},
                    ]
                },
                "max_properties": 50,
            }
        },
    ),
]


# ---------------------------------------------------------------- requests


class Mapping(RequestBody):
    """Which column holds each field; a column named like the field needs no entry."""

    price: Column = "price"
    currency: Column = "currency"
    soldAt: Column = "soldAt"
    externalId: Column = "externalId"
    assetType: Column = "assetType"
    # The platform asset a sale is of, read only when named here; naming it needs `oracle:manage`.
    tokenId: Column | None = None
    timestamp: Column = "timestamp"  # index sources
    value: Column = "value"  # index sources


class Defaults(RequestBody):
    """Constants for columns a source lacks: ETH or USD, the asset type, attributes."""

    currency: Literal["ETH", "USD"] | None = None
    assetType: AssetType | None = None
    attributes: Attributes = msgspec.field(default_factory=dict)


class Authentication(RequestBody):
    """One credential header (`Authorization: Bearer ...`, `X-API-Key: ...`), encrypted at rest."""

    header: HeaderName
    value: HeaderValue


class FileConfiguration(RequestBody):
    refreshInterval: Interval = 3600
    mapping: Mapping = msgspec.field(default_factory=Mapping)
    defaults: Defaults = msgspec.field(default_factory=Defaults)
    headers: Headers = msgspec.field(default_factory=dict)
    authentication: Authentication | None = None
    series: Name | None = None  # index sources: the series (default: the source's name)


class ApiConfiguration(FileConfiguration):
    rowsPath: JsonPath | None = None  # where the rows are in each page; none: the page is the list
    nextUrlPath: JsonPath | None = None  # where a page names the next page's URL (it wins over pageParam)
    pageParam: PageParam | None = None  # a page number, from 1
    maxPages: Annotated[int, Meta(ge=1, le=MAX_PAGES)] = 100


class FileSourceCreate(RequestBody, tag_field="type", tag="file"):
    """CSV or JSON Lines at an http(s) URL, or at `s3://data-sources/<key>` in the platform's bucket."""

    name: Name
    kind: Literal["sales", "index"]
    url: FileUrl
    format: Literal["csv", "jsonl"]
    description: Description = ""
    isEnabled: bool = True
    aiWeighting: Weight = 0.5
    configuration: FileConfiguration = msgspec.field(default_factory=FileConfiguration)


class ApiSourceCreate(RequestBody, tag_field="type", tag="api"):
    """An HTTP JSON API: rows at `rowsPath` of each page, pages followed by URL or by number."""

    name: Name
    kind: Literal["sales", "index"]
    url: HttpUrl
    format: Literal["json"] = "json"
    description: Description = ""
    isEnabled: bool = True
    aiWeighting: Weight = 0.5
    configuration: ApiConfiguration = msgspec.field(default_factory=ApiConfiguration)


DataSourceCreate = FileSourceCreate | ApiSourceCreate

Unset = msgspec.UnsetType
UNSET = msgspec.UNSET


class ConfigurationPatch(RequestBody):
    """Fields given replace the stored ones (`headers` as a whole); null clears an optional one."""

    refreshInterval: Interval | Unset = UNSET
    mapping: Mapping | Unset = UNSET
    defaults: Defaults | Unset = UNSET
    headers: Headers | Unset = UNSET
    authentication: Authentication | Unset | None = UNSET
    series: Name | Unset | None = UNSET
    rowsPath: JsonPath | Unset | None = UNSET  # api sources only, as are the fields below
    nextUrlPath: JsonPath | Unset | None = UNSET
    pageParam: PageParam | Unset | None = UNSET
    maxPages: Annotated[int, Meta(ge=1, le=MAX_PAGES)] | Unset = UNSET


class DataSourcePatch(RequestBody):
    """Change a source; its type and kind stay. A URL or format its type does not take is a 409."""

    name: Name | Unset = UNSET
    url: FileUrl | Unset = UNSET
    format: Literal["csv", "jsonl", "json"] | Unset = UNSET
    description: Description | Unset = UNSET
    isEnabled: bool | Unset = UNSET
    aiWeighting: Weight | Unset = UNSET
    configuration: ConfigurationPatch | Unset = UNSET


# ---------------------------------------------------------------- responses


class MappingOut(Schema):
    price: str
    currency: str
    soldAt: str
    externalId: str
    assetType: str
    tokenId: str | None
    timestamp: str
    value: str


class DefaultsOut(Schema):
    currency: Literal["ETH", "USD"] | None
    assetType: str | None
    attributes: dict[str, Any]


class AuthenticationOut(Schema):
    """Which header carries the credential; its value is never returned."""

    header: str


class ConfigurationOut(Schema):
    refreshInterval: int
    mapping: MappingOut
    defaults: DefaultsOut
    headerNames: list[str]  # the headers set (their values are never returned)
    authentication: AuthenticationOut | None
    series: str | None
    rowsPath: str | None
    nextUrlPath: str | None
    pageParam: str | None
    maxPages: int


class StatusOut(Schema):
    isEnabled: bool
    lastFetchAt: datetime | None  # the last successful fetch
    lastAttemptAt: datetime | None
    nextFetchAt: datetime | None
    errorCount: int  # consecutive failures
    lastError: str | None  # a code: address_refused, body_too_large, upstream_status, ...
    lastErrorMessage: str | None


class MetricsOut(Schema):
    reliability: float | None  # 0-100, over the recent fetches
    latency: float | None  # ms, mean of the recent successful fetches
    priceAccuracy: float | None
    fetches: int
    rowsAccepted: int  # over every fetch
    rowsRejected: int


class RejectedRowOut(Schema):
    row: int
    reason: str


class LastFetchOut(Schema):
    at: datetime
    ok: bool
    latencyMs: float
    bytes: int
    pages: int
    rowsAccepted: int
    rowsRejected: int
    inserted: int
    updated: int
    unchanged: int
    duplicates: int
    rejectedByReason: dict[str, int]
    rejectedSamples: list[RejectedRowOut]
    error: str | None


class DataSourceOut(Schema):
    id: str
    name: str
    type: Literal["file", "api", "stream"]
    kind: Literal["sales", "index"]
    url: str | None
    format: Literal["csv", "jsonl", "json"]
    description: str
    configuration: ConfigurationOut
    status: StatusOut
    metrics: MetricsOut
    lastFetch: LastFetchOut | None
    aiWeighting: float
    createdAt: datetime
    updatedAt: datetime


class DataSourcePage(Schema):
    items: list[DataSourceOut]
    nextCursor: str | None
    limit: int


class RefreshQueued(Schema):
    jobId: str
    statusUrl: str
