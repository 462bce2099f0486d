"""The base of every request and response body: msgspec Structs, camelCase on the wire."""

from __future__ import annotations

import msgspec


class Schema(msgspec.Struct, rename="camel", kw_only=True):
    """A response body (or a part of one)."""


class RequestBody(Schema, forbid_unknown_fields=True):
    """A request body: an unknown field is a 400, never silently ignored."""
