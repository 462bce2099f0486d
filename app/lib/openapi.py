"""The OpenAPI document is the contract clients are generated from: this module finishes what Litestar
derives from the handlers with what it cannot see.

- Errors: every status an operation can answer, each with the one error schema (`Error`) and, as
  examples keyed by code, every `code` it can carry (app/lib/openapi_errors.py).
- Security: per operation, the credentials it accepts (none, optional, or required, and which).
- Links: the calls that follow a response (an asset's reads and writes after its creation, an API key's
  revocation after its creation), for clients and for stateful tests.

What is declared where, so that a new route is documented the moment it is added:
- what follows from the route itself (its parameters, body, rate-limit group, whether it is open to
  anonymous callers) is derived here: validation, malformed JSON, bodies too large, credentials, rate
  limits, dependencies down;
- a guard states its own refusals and the credentials it takes (`guard.errors`, `guard.credentials`,
  see app/lib/security.py);
- a handler states the refusals of its domain with `raises(...)` in its `opt`, and its follow-up calls
  with `links(...)`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import fields
from typing import Any

import msgspec
from litestar import Litestar
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.spec import (
    Components,
    Link,
    OpenAPI,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    Reference,
    Schema,
    SecurityScheme,
)
from litestar.routes import HTTPRoute
from litestar.types import Method

from app.lib.openapi_errors import ERROR_SCHEMAS, ERRORS_OPT, document_errors
from app.lib.schemas import RequestBody
from app.lib.security import (
    API_KEY_SCHEME,
    BEARER_SCHEME,
    OPERATOR_SCHEME,
    REFRESH_COOKIE_SCHEME,
    is_open_path,
)

LINKS_OPT, SECURITY_OPT, CONTENT_OPT, FORM_OPT = "links", "security", "content", "form"
OPTIONAL_AUTH_OPT = "optional_auth"  # see app.lib.params.OPTIONAL_AUTH
ErrorMap = Mapping[int, Iterable[str]]

SECURITY_SCHEMES = {
    BEARER_SCHEME: SecurityScheme(
        type="http",
        scheme="bearer",
        bearer_format="JWT",
        description="The access token from `POST /api/auth/verify` or `/api/auth/refresh` (15 minutes).",
    ),
    API_KEY_SCHEME: SecurityScheme(
        type="apiKey",
        name="X-API-Key",
        security_scheme_in="header",
        description="An API key (`POST /api/auth/api-keys`); it acts only within its permissions.",
    ),
    REFRESH_COOKIE_SCHEME: SecurityScheme(
        type="apiKey",
        name="dv_refresh",
        security_scheme_in="cookie",
        description="The refresh token, an HttpOnly cookie set by sign-in and rotated by every refresh.",
    ),
    OPERATOR_SCHEME: SecurityScheme(
        type="http",
        scheme="bearer",
        description="The operators' token (`METRICS_TOKEN`) for `/metrics` and readiness details.",
    ),
}

CREDENTIALS_RULE = (
    "Credentials: an operation lists the schemes it accepts; one with no security requirement is open "
    "to anyone, and one whose requirements include an empty one takes credentials optionally (the answer "
    "depends on who asks). Credentials that are sent are always verified, on open operations too: bad, "
    "expired or revoked ones answer 401. A request carries one credential at most: `Authorization` and "
    "`X-API-Key` together answer 400 `ambiguous_credentials`, whatever either holds. The probes and "
    "metrics (`/api/system/*`, `/metrics`) read no user credentials at all: only the operator token."
)

REQUEST_ID = OpenAPIHeader(
    schema=Schema(type=OpenAPIType.STRING),
    required=True,
    description="The request's id (the caller's, when well formed): it is in every log line of the request.",
)


def raises(errors: ErrorMap) -> dict[str, Any]:
    """A handler's `opt` entry: the refusals of its domain, by status, e.g. `{404: ["asset_not_found"]}`."""
    return {ERRORS_OPT: {status: tuple(codes) for status, codes in errors.items()}}


def links(status: int, **targets: Mapping[str, str]) -> dict[str, Any]:
    """A handler's `opt` entry: after a `status` answer, the operations (by handler name) it leads to,
    with where each takes its parameters from (e.g. `get_asset={"tokenId": "$response.body#/tokenId"}`)."""
    return {LINKS_OPT: (status, targets)}


def answers_text(status: int, media_type: str, description: str) -> dict[str, Any]:
    """A handler's `opt` entry: its `status` answer (also) comes as text of `media_type` (CSV, metrics)."""
    return {CONTENT_OPT: (status, media_type, description)}


def form(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A handler's `opt` entry: the fields of the multipart form it reads (a handler that takes the form as
    a plain mapping, to read its files by any name, states here what clients send)."""
    return {FORM_OPT: dict(schema)}


def operation_id(handler: HTTPRouteHandler, method: Method, path_components: list[Any]) -> str:
    """The handler's name in camelCase (`getAsset`): the names a generated client's functions take."""
    name = handler.handler_name
    if name.lower() in {"get", "post", "put", "patch", "delete"}:  # a generic handler: name it by its path
        name = f"{name}_{handler.paths and sorted(handler.paths)[0].strip('/').replace('/', '_')}"
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def finish(app: Litestar) -> OpenAPI:
    """Complete the app's document in place (before it is first served) and return it."""
    document = app.openapi_schema
    components = document.components if isinstance(document.components, Components) else Components()
    components.schemas = {**(components.schemas or {}), **ERROR_SCHEMAS}
    for schema in components.schemas.values():
        for name, value in ((schema.properties or {}) if isinstance(schema, Schema) else {}).items():
            if isinstance(value, Schema):
                schema.properties[name] = _constraints_on_the_value(value)  # type: ignore[index]
    components.schemas.update(_request_body_schemas(set(components.schemas)))
    components.security_schemes = dict(SECURITY_SCHEMES)
    components.headers = {"X-Request-ID": REQUEST_ID}
    document.components = components
    document.security = None  # each operation states its own
    document.info.description = f"{document.info.description or ''}\n\n{CREDENTIALS_RULE}".strip()

    operations = _operations(app, document)
    ids = {handler.handler_name: op.operation_id for handler, _, op in operations}
    for handler, path, op in operations:
        for parameter in op.parameters or []:
            if isinstance(parameter, Parameter) and isinstance(parameter.schema, Schema):
                parameter.schema = _constraints_on_the_value(parameter.schema)
        op.security = _security(handler, path)
        _add_text_content(handler, op)
        _add_form(handler, op)
        _body_optional(handler, op)
        document_errors(handler, path, op, _guards(handler), stated_security=SECURITY_OPT in handler.opt)
        _add_links(handler, op, ids, components.schemas)
        for status, response in (op.responses or {}).items():
            if isinstance(response, OpenAPIResponse):
                if status == "204":  # no content means no content, not a JSON null
                    response.content = None
                response.headers = {**(response.headers or {}), "X-Request-ID": _ref_header()}
    return document


_ANNOTATIONS = {"description", "title", "examples", "default"}


def _constraints_on_the_value(schema: Schema) -> Schema:
    """An optional parameter or field (`X | None`) is `oneOf: [X, null]` (`?limit=null` reads as not
    sent); the constraints documented beside that union (enum, pattern, range) are X's: they move into X."""
    variants = [v for v in schema.one_of or [] if not (isinstance(v, Schema) and v.type == OpenAPIType.NULL)]
    if not schema.one_of or len(variants) != 1 or not isinstance(variants[0], Schema):
        return schema
    value = variants[0]
    for f in fields(Schema):
        constraint = getattr(schema, f.name)
        if f.name != "one_of" and f.name not in _ANNOTATIONS and constraint is not None:
            setattr(value, f.name, constraint)
            setattr(schema, f.name, None)
    return schema


def _request_body_schemas(documented: set[str]) -> dict[str, Any]:
    """The schemas of the request bodies in the document, as msgspec (which decodes them) states them:
    every constraint it enforces (Litestar drops a falsy one such as `ge=0` on an optional field), and
    additionalProperties: false, as they refuse unknown fields."""
    bodies, pending = [], [RequestBody]
    while pending:
        for subclass in pending.pop().__subclasses__():
            pending.append(subclass)
            if subclass.__name__ in documented:
                bodies.append(subclass)
    _, schemas = msgspec.json.schema_components(bodies, ref_template="#/components/schemas/{name}")
    return schemas


def _ref_header() -> Reference:
    return Reference("#/components/headers/X-Request-ID")


def _operations(app: Litestar, document: OpenAPI) -> list[tuple[HTTPRouteHandler, str, Operation]]:
    found = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        item = (document.paths or {}).get(route.path_format or "/")
        if item is None:
            continue
        for handler in route.route_handlers:
            if not handler.resolve_include_in_schema():
                continue
            for method in handler.http_methods:
                op = getattr(item, method.lower(), None)
                if isinstance(op, Operation):
                    found.append((handler, route.path_format or "/", op))
    return found


def _guards(handler: HTTPRouteHandler) -> list[Any]:
    # As declared on each layer: resolve_guards() wraps them, without the attributes read here.
    return [guard for layer in handler.ownership_layers for guard in (layer.guards or [])]


def _security(handler: HTTPRouteHandler, path: str) -> list[dict[str, list[str]]]:
    opt = handler.opt
    if SECURITY_OPT in opt:  # stated by the route (operator token, refresh cookie)
        return [dict(requirement) for requirement in opt[SECURITY_OPT]]
    if is_open_path(path) or (opt.get("anonymous") and not opt.get(OPTIONAL_AUTH_OPT)):
        return []
    schemes = [BEARER_SCHEME, API_KEY_SCHEME]
    for guard in _guards(handler):
        accepted = getattr(guard, "credentials", None)
        if accepted is not None:
            schemes = [scheme for scheme in schemes if scheme in accepted]
    requirements = [{scheme: []} for scheme in schemes]
    return [{}, *requirements] if opt.get("anonymous") else requirements


def _body_optional(handler: HTTPRouteHandler, op: Operation) -> None:
    """A body the handler defaults (`data: ... = None`) is optional in the document too."""
    parameter = handler.parsed_fn_signature.parameters.get("data")
    if op.request_body is not None and parameter is not None and parameter.has_default:
        op.request_body.required = False


def _add_form(handler: HTTPRouteHandler, op: Operation) -> None:
    declared = handler.opt.get(FORM_OPT)
    media = (getattr(op.request_body, "content", None) or {}).get("multipart/form-data")
    if declared and media is not None:
        media.schema = declared  # type: ignore[assignment]  # a JSON Schema object, as msgspec's are


def _response(handler: HTTPRouteHandler, op: Operation, status: int, what: str) -> OpenAPIResponse:
    """The documented `status` answer that a handler's `what` (links, text content) is declared on."""
    response = (op.responses or {}).get(str(status))
    if not isinstance(response, OpenAPIResponse):
        raise ValueError(f"{handler.handler_name}: {what} on an undocumented status {status}")
    return response


def _add_text_content(handler: HTTPRouteHandler, op: Operation) -> None:
    declared = handler.opt.get(CONTENT_OPT)
    if not declared:
        return
    status, media_type, description = declared
    response = _response(handler, op, status, "text content")
    content = {k: v for k, v in (response.content or {}).items() if v.schema != Schema()}  # drop `{}`
    text = Schema(type=OpenAPIType.STRING, description=description)
    content[media_type] = OpenAPIMediaType(schema=text)
    response.content = content


def _add_links(
    handler: HTTPRouteHandler, op: Operation, ids: Mapping[str, str | None], schemas: Mapping[str, Any]
) -> None:
    declared = handler.opt.get(LINKS_OPT)
    if not declared:
        return
    status, targets = declared
    response = _response(handler, op, status, "links")
    response.links = {}
    for target, parameters in targets.items():
        for expression in parameters.values():
            _check_body_pointer(handler, response, expression, schemas)
        target_id = ids.get(target)
        if target_id is None:
            raise ValueError(f"{handler.handler_name}: a link to an unknown operation {target!r}")
        response.links[target_id] = Link(operation_id=target_id, parameters=dict(parameters))


def _check_body_pointer(
    handler: HTTPRouteHandler, response: OpenAPIResponse, expression: str, schemas: Mapping[str, Any]
) -> None:
    """A link's `$response.body#/field` names a field the response documents (else it never resolves)."""
    prefix = "$response.body#/"
    if not expression.startswith(prefix):
        return
    field_name = expression.removeprefix(prefix).split("/")[0]
    media = (response.content or {}).get("application/json")
    schema = media.schema if media is not None else None
    properties: Mapping[str, Any] = {}
    if isinstance(schema, Reference):
        resolved = schemas.get(schema.ref.rpartition("/")[2])
        properties = (resolved.properties or {}) if isinstance(resolved, Schema) else {}
    if field_name not in properties:
        raise ValueError(f"{handler.handler_name}: a link reads {expression}, which its answer does not have")
