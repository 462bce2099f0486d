"""The base of every request and response body: msgspec Structs, camelCase on the wire."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec

from app.lib.timeutil import CLIENT_TIME_PATTERN


class Schema(msgspec.Struct, rename="camel", kw_only=True):
    """A response body (or a part of one)."""


class RequestBody(Schema, forbid_unknown_fields=True):
    """A request body: an unknown field is a 400, never silently ignored.

    Its documented schema is msgspec's own, from the decoder that enforces it (app/lib/openapi.py).
    """


def documented(**json_schema: Any) -> msgspec.Meta:
    """A field's constraints as its schema documents them, for rules the service checks with codes of its
    own (`Annotated[str, documented(enum=ASSET_TYPES)]` answers 400 `invalid_asset_type`, not a generic
    validation error)."""
    return msgspec.Meta(extra_json_schema=json_schema)


# A date-time in a request body: msgspec decodes RFC 3339, which its own schema leaves unsaid.
Timestamp = Annotated[datetime, documented(format="date-time")]
# A time the service takes only from 1900 to 8999 (app.lib.timeutil.client_time), as documented.
ClientTimestamp = Annotated[datetime, documented(format="date-time", pattern=CLIENT_TIME_PATTERN)]


def as_builtin(value: Any) -> Any:
    """An `enc_hook` for values read from MongoDB: PyMongo returns 64-bit integers as `Int64`, an int
    subclass msgspec does not encode (a token id past 2^31 would fail its render)."""
    if isinstance(value, int):
        return int(value)
    raise NotImplementedError(f"cannot encode {type(value).__name__}")


def encode_json(value: Any) -> bytes:
    """JSON bytes of a body built from stored documents."""
    return msgspec.json.encode(value, enc_hook=as_builtin)
