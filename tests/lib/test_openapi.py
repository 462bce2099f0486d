"""The document states, per operation, who may call, and how every refusal looks (app/lib/openapi.py)."""

from __future__ import annotations

from typing import Any

import pytest
from litestar import Litestar, get, post
from litestar.openapi import OpenAPIConfig
from litestar.params import FromPath, JSONBody

from app.lib import openapi
from app.lib.params import PUBLIC
from app.lib.schemas import RequestBody, Schema
from app.lib.security import requires_permission, requires_roles


@pytest.fixture
async def document(client) -> dict[str, Any]:
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    return response.json()


def operations(document: dict[str, Any]):
    for path, item in document["paths"].items():
        for method, op in item.items():
            if method in {"get", "post", "put", "patch", "delete"}:
                yield method.upper(), path, op


async def test_security_is_stated_per_operation_none_optional_or_the_schemes_taken(document):
    security = {f"{m} {p}": op.get("security") for m, p, op in operations(document)}
    assert "security" not in document  # no global requirement for open routes to inherit
    assert security["GET /api/assets"] == []  # open
    assert security["GET /api/system/health"] == []
    assert security["GET /api/assets/{tokenId}"] == [{}, {"BearerToken": []}, {"ApiKey": []}]  # optional
    assert security["POST /api/assets"] == [{"BearerToken": []}, {"ApiKey": []}]
    assert security["POST /api/assets/{tokenId}/verify"] == [{"BearerToken": []}]  # a role: keys never
    assert security["POST /api/auth/api-keys"] == [{"BearerToken": []}]  # a session: keys never
    assert security["POST /api/auth/refresh"] == [{"RefreshCookie": []}]
    assert security["GET /api/system/ready"] == [{}, {"OperatorToken": []}]
    assert "ambiguous_credentials" in document["info"]["description"]


async def test_every_refusal_uses_the_error_schema_with_its_codes_and_429_says_when_to_retry(document):
    for method, path, op in operations(document):
        for status, response in op["responses"].items():
            assert response["headers"]["X-Request-ID"] == {"$ref": "#/components/headers/X-Request-ID"}
            if int(status) < 400 or (path, status) == ("/api/system/ready", "503"):
                continue
            media = response["content"]["application/json"]
            assert media["schema"] == {"$ref": "#/components/schemas/Error"}, (method, path, status)
            codes = media["examples"]
            assert codes, (method, path, status)
            for code, example in codes.items():
                assert example["value"]["error"]["code"] == code
            if status == "429":
                assert response["headers"]["Retry-After"]["required"] is True
        if path != "/api/system/health":
            assert "503" in op["responses"], (method, path)


async def test_a_routes_guards_and_declared_refusals_are_its_documented_codes(document):
    create = document["paths"]["/api/assets"]["post"]["responses"]
    assert set(create["403"]["content"]["application/json"]["examples"]) == {"insufficient_permission"}
    assert "duplicate_token" in create["409"]["content"]["application/json"]["examples"]
    assert {"validation_error", "malformed_json", "ambiguous_credentials"} <= set(
        create["400"]["content"]["application/json"]["examples"]
    )
    metadata = document["paths"]["/api/assets/{tokenId}/metadata"]["patch"]["responses"]
    # not_found: a tokenId that is no integer matches no route
    assert set(metadata["404"]["content"]["application/json"]["examples"]) == {"asset_not_found", "not_found"}
    assert set(metadata["403"]["content"]["application/json"]["examples"]) == {
        "insufficient_permission",
        "not_owner",
    }


async def test_request_bodies_refuse_unknown_fields_in_the_schema_too(document):
    assert document["components"]["schemas"]["AssetCreate"]["additionalProperties"] is False
    assert "additionalProperties" not in document["components"]["schemas"]["AssetDetail"]


async def test_links_lead_from_created_objects_to_their_operations(document):
    asset_links = document["paths"]["/api/assets"]["post"]["responses"]["201"]["links"]
    assert asset_links["getAsset"] == {
        "operationId": "getAsset",
        "parameters": {"tokenId": "$response.body#/tokenId"},
    }
    key_links = document["paths"]["/api/auth/api-keys"]["post"]["responses"]["201"]["links"]
    assert key_links["revokeApiKey"]["parameters"] == {"keyId": "$response.body#/id"}


class Thing(Schema):
    id: str


class ThingIn(RequestBody):
    name: str


def app_with(*handlers) -> Litestar:
    config = OpenAPIConfig(title="t", version="1", operation_id_creator=openapi.operation_id)
    app = Litestar(handlers, openapi_config=config)
    openapi.finish(app)
    return app


def test_a_link_to_a_field_its_answer_does_not_have_is_refused_at_start_up():
    @post("/things", opt=openapi.links(201, get_thing={"thingId": "$response.body#/thingId"}))
    async def create_thing(data: JSONBody[ThingIn]) -> Thing:
        return Thing(id="1")

    @get("/things/{thingId:str}", opt=PUBLIC)
    async def get_thing(thingId: FromPath[str]) -> Thing:
        return Thing(id=thingId)

    with pytest.raises(ValueError, match="does not have"):
        app_with(create_thing, get_thing)


def test_guards_state_the_credentials_and_refusals_of_a_new_route():
    @post("/things", guards=[requires_roles("admin")], opt=openapi.raises({409: ["thing_exists"]}))
    async def create_thing(data: JSONBody[ThingIn]) -> Thing:
        return Thing(id="1")

    @get("/things", guards=[requires_permission("things:read")])
    async def list_things() -> Thing:
        return Thing(id="1")

    document = app_with(create_thing, list_things).openapi_schema.to_schema()
    create, listing = document["paths"]["/things"]["post"], document["paths"]["/things"]["get"]
    assert create["security"] == [{"BearerToken": []}]
    assert listing["security"] == [{"BearerToken": []}, {"ApiKey": []}]
    assert set(create["responses"]["403"]["content"]["application/json"]["examples"]) == {"insufficient_role"}
    assert set(create["responses"]["409"]["content"]["application/json"]["examples"]) == {"thing_exists"}
    assert "authentication_required" in create["responses"]["401"]["content"]["application/json"]["examples"]
    assert create["operationId"] == "createThing"


def test_every_json_body_is_checked_strictly_before_its_handler(app):
    """Litestar runs only the innermost before_request: a layer that set its own would drop the check."""
    from litestar.routes import HTTPRoute

    from app.lib.bodies import _json_body, check_json_body

    checked = 0
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            if _json_body(handler)[0]:
                assert handler.resolve_before_request() is check_json_body, handler.handler_name
                checked += 1
    assert checked >= 10
    handlers = [h for r in app.routes if isinstance(r, HTTPRoute) for h in r.route_handlers]
    forms = [h for h in handlers if any(p.endswith("/images") for p in h.paths)]
    assert forms and not any(_json_body(handler)[0] for handler in forms)  # a form is no JSON body


async def test_a_path_parameter_alone_is_no_validation_error(document):
    """A path value that does not parse matches no route: 404 not_found, never 400."""
    responses = document["paths"]["/api/assets/{tokenId}"]["get"]["responses"]
    assert "validation_error" not in responses["400"]["content"]["application/json"]["examples"]
    assert "not_found" in responses["404"]["content"]["application/json"]["examples"]
