"""JSON request bodies are decoded strictly, as their schemas say, and refused past a sane depth.

Litestar converts a handler's arguments leniently (`strict=False`), which query strings need (`"5"` is
the int 5) but which also lets a JSON body say `"isEnabled": 0` for `false` or `"tokenId": "7"` for 7:
a body its schema refuses would be taken. Before the handler runs, this hook decodes the body once more
against the handler's body type with msgspec's strict rules and answers 400 `validation_error` for
anything the schema does not allow.
"""

from __future__ import annotations

from functools import cache
from typing import Any, get_args

import msgspec
from litestar import Request
from litestar.enums import RequestEncodingType
from litestar.exceptions import ValidationException
from litestar.handlers import HTTPRouteHandler
from litestar.params import BodyKwarg

from app.lib.errors import BadRequest
from app.lib.json_depth import json_depth_ok
from app.lib.schemas import RequestBody

# No body of this API nests anywhere near this deep; a parser recursing into a deeper one can exhaust
# the stack (a RecursionError, or a crash where a library raised the recursion limit).
MAX_BODY_DEPTH = 64


@cache
def _json_body(handler: HTTPRouteHandler) -> tuple[bool, Any]:
    """Whether the handler reads a JSON body, and its type when that is (or holds) a RequestBody."""
    parameter = handler.parsed_fn_signature.parameters.get("data")
    if parameter is None:
        return False, None
    # Litestar keeps the body marker (`JSONBody`, `Body(media_type=...)`) beside the annotation.
    kwarg = parameter.kwarg_definition
    if isinstance(kwarg, BodyKwarg) and kwarg.media_type != RequestEncodingType.JSON:
        return False, None  # a form: its files are checked by the route that reads them
    annotation = parameter.annotation
    members = get_args(annotation) or (annotation,)
    if not any(isinstance(member, type) and issubclass(member, RequestBody) for member in members):
        return True, None
    return True, annotation


def _integral_floats_as_ints(value: Any) -> Any:
    """JSON has numbers, not ints and floats: 5.0 is the integer 5 (as JSON Schema reads it), 5.5 is not."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _integral_floats_as_ints(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_integral_floats_as_ints(item) for item in value]
    return value


async def check_json_body(request: Request) -> None:
    """A Litestar `before_request` hook: refuse a JSON body that only lenient decoding would accept."""
    is_json, body_type = _json_body(request.route_handler)
    if not is_json:
        return
    raw = await request.body()
    if not raw.strip():
        return  # no body: Litestar's own handling (a default, or a 400 for a required body) applies
    if not json_depth_ok(raw, MAX_BODY_DEPTH):
        raise BadRequest(f"the body nests deeper than {MAX_BODY_DEPTH} levels", code="json_too_deep")
    if body_type is None:
        return
    try:
        try:  # typed and strict: fails at the first byte out of place, without building anything else
            msgspec.json.decode(raw, type=body_type, strict=True)
        except msgspec.ValidationError as exc:
            if "got `float`" not in str(exc):
                raise
            # 5.0 where an integer goes: JSON has numbers, and JSON Schema reads 5.0 as an integer
            msgspec.convert(_integral_floats_as_ints(msgspec.json.decode(raw)), body_type, strict=True)
    except msgspec.ValidationError as exc:
        field = str(exc).rpartition(" - at `$.")[2].rstrip("`") if " - at `$." in str(exc) else None
        raise ValidationException(
            "the body does not match its schema",
            extra=[{"key": field, "message": str(exc), "source": "body"}],
        ) from exc
    except msgspec.DecodeError:
        return  # malformed JSON: Litestar answers it as malformed_json
