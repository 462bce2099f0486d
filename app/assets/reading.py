"""Reading one asset: the raw document by tokenId (404 when there is none), and its detail as each
caller sees it, the view counted in Redis (in MongoDB without Redis) and the public part cached."""

from __future__ import annotations

from typing import Any

import structlog
from redis.exceptions import RedisError

from app.assets import detail, repository, views
from app.assets.media_view import live_media_view
from app.config import Settings
from app.lib.errors import NotFound
from app.lib.params import MAX_INT64, bounded_query
from app.lib.security import Principal

log = structlog.get_logger("app.assets.service")

MAX_TOKEN_ID = MAX_INT64


def known_token(token_id: int) -> int:
    """Token ids outside MongoDB's int64 cannot be stored, so no asset has one: 404 like any unknown id."""
    if not 0 <= token_id <= MAX_TOKEN_ID:
        raise NotFound(f"no asset with tokenId {token_id}", code="asset_not_found")
    return token_id


async def get_raw(token_id: int, projection: dict[str, Any] | None = None) -> dict[str, Any]:
    """The raw asset (or `projection` of it); 404 when there is none."""
    doc = await repository.find(known_token(token_id), projection)
    if doc is None:
        raise NotFound(f"no asset with tokenId {token_id}", code="asset_not_found")
    return doc


async def _render(
    static: bytes,
    live: dict[str, Any],
    principal: Principal | None,
    clients,
    settings: Settings,
    counters: views.ViewCounters | None = None,
) -> dict[str, Any]:
    return detail.render(
        static,
        live,
        principal,
        view_count=views.visible_views(live.get("stats") or {}, counters),
        media=await live_media_view(live, principal, clients.storage, settings),
    )


async def asset_detail(
    clients, settings: Settings, token_id: int, principal: Principal | None
) -> dict[str, Any]:
    """Full details of one asset (schemas.AssetDetail), counting the view: one Redis and one MongoDB
    round trip on a cache hit."""
    known_token(token_id)
    redis = clients.redis
    try:
        pipe = redis.pipeline(transaction=True)
        detail.queue_cached(pipe, token_id)
        views.queue_views(pipe, token_id, count=True)
        cached, *replies = await pipe.execute()
    except (RedisError, OSError) as exc:
        log.warning("assets.detail.redis_failed", token_id=token_id, error=str(exc))
        return await _detail_counted_in_mongo(clients, settings, token_id, principal)
    counters = views.counters(replies, counted=True)
    async with bounded_query():
        admin = principal is not None and principal.is_admin
        projection = repository.ADMIN_PROJECTION if admin else repository.LIVE_PROJECTION
        live = await repository.find(token_id, projection if cached is not None else None)
        if live is None:
            await _unview(redis, token_id, drop_cache=cached is not None)
            raise NotFound(f"no asset with tokenId {token_id}", code="asset_not_found")
        if views.applied_seq(live) > counters.top:
            # A flush of this token ran between the two reads: take both again, Redis first.
            counters = await views.snapshot_or_none(redis, token_id) or counters
            again = await repository.find(token_id, {"stats": 1})
            if again is not None:
                live["stats"] = again.get("stats")
        stats = live.get("stats") or {}
        if cached is not None and detail.is_current(cached, live):
            detail.hit()
            return await _render(cached, live, principal, clients, settings, counters)
        detail.miss()
        doc = live if cached is None else await repository.find(token_id)
    if doc is None:
        raise NotFound(f"no asset with tokenId {token_id}", code="asset_not_found")
    doc["stats"] = stats  # the stats the view counters were matched against
    static = detail.static_detail(doc)
    await detail.store(redis, token_id, static)
    return await _render(static, doc, principal, clients, settings, counters)


async def _detail_counted_in_mongo(
    clients, settings: Settings, token_id: int, principal: Principal | None
) -> dict[str, Any]:
    """Without Redis (no cache, no counters), a view is counted by a MongoDB `$inc` as a fallback."""
    detail.miss()
    async with bounded_query():
        doc = await repository.count_view(token_id)
    if doc is None:
        raise NotFound(f"no asset with tokenId {token_id}", code="asset_not_found")
    return await _render(detail.static_detail(doc), doc, principal, clients, settings)


async def _unview(redis, token_id: int, *, drop_cache: bool) -> None:
    """Take back the view of a token that has no asset, so 404s leave nothing to flush."""
    try:
        await views.unview(redis, token_id)
        if drop_cache:
            await detail.invalidate(redis, token_id)
    except (RedisError, OSError) as exc:
        log.warning("assets.views.unview_failed", token_id=token_id, error=str(exc))


async def detail_after_write(
    clients, settings: Settings, token_id: int, principal: Principal | None
) -> dict[str, Any]:
    """The detail body as the write left it (no view counted, the views not yet flushed included)."""
    counters = await views.snapshot_or_none(clients.redis, token_id)
    doc = await get_raw(token_id)
    if counters is not None and views.applied_seq(doc) > counters.top:  # a flush ran in between
        counters = await views.snapshot_or_none(clients.redis, token_id)
        doc["stats"] = (await get_raw(token_id, {"stats": 1})).get("stats")
    return await _render(detail.static_detail(doc), doc, principal, clients, settings, counters)
