"""The refusals an operation documents: every status it can answer, each with the one error schema
(`Error`) and, as examples keyed by code, every `code` it can carry; a 429 carries `Retry-After`.

What follows from the route itself is derived here (its parameters, body, rate-limit group, whether it
reads credentials); guards add their own (`guard.errors`), handlers their domain's (`raises(...)`,
app/lib/openapi.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from litestar.handlers import HTTPRouteHandler
from litestar.openapi.spec import (
    Example,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Reference,
    Schema,
)

from app.lib.security import CREDENTIAL_ERRORS, is_open_path

ERRORS_OPT = "errors"  # a handler's own refusals: openapi.raises(...)
NO_IO_OPT = "no_io"  # a route that reaches no dependency, so it cannot answer 503 (liveness)

_DESCRIPTIONS = {
    400: "The request is invalid: a parameter, the body, or a rule of the operation",
    401: "Credentials are missing, invalid, expired or revoked",
    403: "The credentials do not allow this",
    404: "Nothing is there",
    409: "The request conflicts with the current state",
    413: "The body is too large",
    415: "The body's media type or encoding is not accepted",
    422: "The request is well formed but cannot be carried out",
    429: "Too many requests: retry after `Retry-After` seconds",
    503: "A dependency (MongoDB, Redis, S3 or the chain) is unavailable, or a query ran out of time",
}

ERROR_SCHEMAS = {
    "Error": Schema(
        type=OpenAPIType.OBJECT,
        required=["error"],
        properties={"error": Reference("#/components/schemas/ErrorBody")},
        description="Every refusal has this shape; `error.code` is the machine-readable reason.",
    ),
    "ErrorBody": Schema(
        type=OpenAPIType.OBJECT,
        required=["code", "message", "details"],
        properties={
            "code": Schema(
                type=OpenAPIType.STRING,
                description="A stable, machine-readable reason; each response lists the codes it carries.",
            ),
            "message": Schema(type=OpenAPIType.STRING, description="A human-readable explanation."),
            "details": Schema(
                one_of=[
                    Schema(type=OpenAPIType.ARRAY, items=Reference("#/components/schemas/FieldError")),
                    Schema(type=OpenAPIType.OBJECT, additional_properties=True),
                    Schema(type=OpenAPIType.NULL),
                ],
                description="Per-field errors for `validation_error`; facts about the refusal otherwise.",
            ),
        },
    ),
    "FieldError": Schema(
        type=OpenAPIType.OBJECT,
        required=["field", "message", "source"],
        properties={
            "field": Schema(one_of=[Schema(type=OpenAPIType.STRING), Schema(type=OpenAPIType.NULL)]),
            "message": Schema(one_of=[Schema(type=OpenAPIType.STRING), Schema(type=OpenAPIType.NULL)]),
            "source": Schema(one_of=[Schema(type=OpenAPIType.STRING), Schema(type=OpenAPIType.NULL)]),
        },
    ),
}

RETRY_AFTER = OpenAPIHeader(
    schema=Schema(type=OpenAPIType.INTEGER, minimum=0),
    required=True,
    description="Seconds until the limit's window lets the caller in again.",
)


def document_errors(
    handler: HTTPRouteHandler, path: str, op: Operation, guards: Sequence[Any], *, stated_security: bool
) -> None:
    """Set `op`'s error responses: those its route implies, its `guards` state and its handler declares
    (`stated_security`: the route names its credentials itself, and answers for their absence)."""
    errors: dict[int, set[str]] = {}

    def add(status: int, *codes: str) -> None:
        errors.setdefault(status, set()).update(codes)

    opt = handler.opt
    body = op.request_body
    open_path = is_open_path(path)
    if body is not None or any(getattr(p, "param_in", None) != "path" for p in op.parameters or []):
        add(400, "validation_error")
    if "{" in path:  # a path parameter the router cannot parse (a typed one) matches no route: no 400
        add(404, "not_found")
    if body is not None:
        add(413, "payload_too_large")
        if "application/json" in getattr(body, "content", {}):
            add(400, "malformed_json", "json_too_deep")
    if not open_path:  # credentials are read (and verified) on every other route
        for status, codes in CREDENTIAL_ERRORS.items():
            add(status, *codes)
        if not opt.get("anonymous") and not stated_security:
            add(401, "authentication_required")
    if opt.get("rate_limit", None if open_path else "default") is not None:
        add(429, "rate_limited")
    if not opt.get(NO_IO_OPT):
        add(503, "service_unavailable")
    for guard in guards:
        for status, codes in (getattr(guard, "errors", None) or {}).items():
            add(status, *codes)
    for status, codes in (opt.get(ERRORS_OPT) or {}).items():
        add(status, *codes)

    responses = dict(op.responses or {})
    for status in sorted(errors):
        codes = sorted(errors[status])
        responses[str(status)] = OpenAPIResponse(
            description=f"{_DESCRIPTIONS.get(status, 'Refused')}: " + ", ".join(f"`{c}`" for c in codes),
            headers={"Retry-After": RETRY_AFTER} if status == 429 else None,
            content={
                "application/json": OpenAPIMediaType(
                    schema=Reference("#/components/schemas/Error"),
                    examples={code: _example(code) for code in codes},
                )
            },
        )
    # Litestar's generic 400 (its own error shape) is replaced above; drop it where nothing replaced it.
    if 400 not in errors:
        responses.pop("400", None)
    op.responses = responses


def _example(code: str) -> Example:
    message = code.replace("_", " ")
    return Example(summary=code, value={"error": {"code": code, "message": message, "details": None}})
