"""Every route declares who may call it, so no route can forget an access check."""

from litestar.routes import HTTPRoute

from app.lib.security import OPEN_PREFIXES
from tests import factories

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
# Mutating routes open to anonymous callers, each for a reason.
ANONYMOUS_WRITES = {
    "/api/auth/verify",  # signing in is how a caller becomes known
    "/api/auth/refresh",  # authenticated by its refresh cookie
    "/api/auth/logout",  # ends the session of its token or cookie, if any
}
# /schema, /metrics and /api/system/* are open by path (app.lib.security.OPEN_PREFIXES); their only
# write is worker-ping, one de-duplicated trivial job per 10 s window.


def _handlers(app):
    for route in app.routes:
        if isinstance(route, HTTPRoute) and not route.path.startswith(OPEN_PREFIXES):
            for handler in route.route_handlers:
                yield route.path, handler


def _rules(handler) -> set[str]:
    guards = [getattr(guard, "func", guard) for guard in handler.resolve_guards()]  # unwrap AsyncCallable
    return {rule for guard in guards if (rule := getattr(guard, "access_rule", None))}


def test_every_write_to_one_asset_is_guarded_by_ownership_or_a_privilege(app):
    checked = 0
    for path, handler in _handlers(app):
        if "{tokenId" in path and not set(handler.http_methods) <= SAFE_METHODS:
            checked += 1
            # a broad permission (media:write, say) is not enough: the caller must own this asset
            assert _rules(handler) & {"owner_or_admin", "role:admin"}, f"{path}: no object-level guard"
    assert checked >= 5  # metadata, verify, images, documents, process-media


def test_only_the_listed_writes_are_open_to_anonymous_callers(app):
    anonymous_writes = {
        path
        for path, handler in _handlers(app)
        if not set(handler.http_methods) <= SAFE_METHODS and handler.opt.get("anonymous")
    }
    assert anonymous_writes == ANONYMOUS_WRITES


async def test_a_non_owner_is_refused_by_the_route_before_the_handler_runs(client, settings):
    owner = await factories.login(settings)
    stranger = await factories.login(settings)
    await factories.asset(71, owner=owner.wallet)
    for method, path in [
        ("PATCH", "/api/assets/71/metadata"),
        ("POST", "/api/assets/71/images"),
        ("POST", "/api/assets/71/documents"),
        ("POST", "/api/assets/71/process-media"),
    ]:
        response = await client.request(method, path, headers=stranger.headers, json={})
        assert response.status_code == 403, (path, response.text)
        assert response.json()["error"]["code"] == "not_owner"
    missing = await client.post("/api/assets/72/process-media", headers=stranger.headers)
    assert missing.status_code == 404
