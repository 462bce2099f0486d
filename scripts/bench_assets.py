"""Benchmark GET /api/assets/{tokenId} and GET /api/assets?limit=50 against raw PyMongo + msgspec handlers.

Both run in one process on one app (same middleware: request ids, metrics, authentication), against
embedded MongoDB (SecantusDB) and Redis seeded by `scripts.seed`. The baselines read the raw documents
with PyMongo (the detail: one `find_one` by tokenId; the list: the sorted first page) and encode them
with msgspec, with no validation, shaping, caching, access rules or view counting. The detail under test
is the real endpoint: it counts each view in Redis (the `assets.flush_views` job moves the counts into
MongoDB), reads the live fields with a projection, and renders the cached public view and the media.
For reference, one more case times the per-view MongoDB `$inc` the endpoint used to do.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import msgspec
from bson import Decimal128, ObjectId
from litestar import MediaType, Response, get
from litestar.params import FromPath
from pymongo import ReturnDocument

from app.assets import service as assets_service
from app.assets import views as asset_views
from app.assets.documents import Asset
from app.lib.embedded import EmbeddedStack
from app.main import create_app
from scripts.benchkit import bench_settings


def _enc_hook(value: Any) -> Any:
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, Decimal128):
        return str(value.to_decimal())
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(type(value).__name__)


_encoder = msgspec.json.Encoder(enc_hook=_enc_hook)


@get("/bench/baseline/assets/{token_id:int}", opt={"anonymous": True})
async def baseline_detail(token_id: FromPath[int]) -> Response[bytes]:
    """The baseline: one raw find_one of the document and a msgspec encode."""
    doc = await Asset.get_pymongo_collection().find_one({"tokenId": token_id})
    return Response(_encoder.encode(doc), media_type=MediaType.JSON)


@get("/bench/reference/assets/inc/{token_id:int}", opt={"anonymous": True})
async def reference_detail_inc(token_id: FromPath[int]) -> Response[bytes]:
    """Reference only: a view counted by a MongoDB find_one_and_update ($inc), as the detail used to."""
    doc = await Asset.get_pymongo_collection().find_one_and_update(
        {"tokenId": token_id}, {"$inc": {"stats.viewCount": 1}}, return_document=ReturnDocument.AFTER
    )
    return Response(_encoder.encode(doc), media_type=MediaType.JSON)


@get("/bench/baseline/assets", opt={"anonymous": True})
async def baseline_list() -> Response[bytes]:
    """Raw: the first page in the default order, whole documents, msgspec-encoded."""
    cursor = Asset.get_pymongo_collection().find({}, sort=[("createdAt", -1), ("_id", -1)], limit=50)
    return Response(_encoder.encode({"items": await cursor.to_list()}), media_type=MediaType.JSON)


async def _round(
    client: httpx.AsyncClient, path_for: Callable[[int], str], requests: int, concurrency: int
) -> float:
    """Requests per second for one round of `requests` calls, `concurrency` at a time."""
    counter = iter(range(requests))

    async def worker() -> None:
        for i in counter:
            response = await client.get(path_for(i))
            if response.status_code != 200:
                raise RuntimeError(f"{path_for(i)} -> {response.status_code}: {response.text[:200]}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return requests / (time.perf_counter() - started)


async def _bench(args: argparse.Namespace, services: dict[str, str], data_dir: Path) -> None:
    from scripts.seed import seed_data

    # Both sides pass the same middleware; the limiter would only turn the load into 429s.
    settings = bench_settings(services, data_dir, "assets", auth={"rate_limit_enabled": False})
    app = create_app(settings)
    for handler in (baseline_detail, reference_detail_inc, baseline_list):
        app.register(handler)
    async with app.lifespan():
        await Asset.get_pymongo_collection().delete_many({})
        written = await seed_data(app.state.clients.redis, count=args.assets)
        tokens = args.assets
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            cases: dict[str, Callable[[int], str]] = {
                "GET /api/assets/{tokenId}": lambda i: f"/api/assets/{i % tokens + 1}",
                "baseline detail (find_one + encode)": lambda i: f"/bench/baseline/assets/{i % tokens + 1}",
                "reference: per-view $inc (old)": lambda i: f"/bench/reference/assets/inc/{i % tokens + 1}",
                "GET /api/assets?limit=50": lambda i: "/api/assets?limit=50",
                "baseline list (find + encode)": lambda i: "/bench/baseline/assets",
            }
            for path_for in cases.values():  # warm-up: caches, connection pools, imports
                await _round(client, path_for, 2 * args.concurrency, args.concurrency)
            results: dict[str, list[float]] = {label: [] for label in cases}
            for _ in range(args.rounds):
                for label, path_for in cases.items():  # interleaved, so drift hits every case alike
                    slow = "limit=50" in label or "list" in label or "$inc" in label
                    requests = args.list_requests if slow else args.requests
                    results[label].append(await _round(client, path_for, requests, args.concurrency))
        # What the views the endpoint buffered in Redis cost to move into MongoDB (the job's work).
        redis = app.state.clients.redis
        keys = asset_views.pending_keys(list(range(1, tokens + 1)))
        pending = sum(int(value or 0) for value in await redis.mget(keys))
        started = time.perf_counter()
        flushed = await assets_service.flush_views(redis)
        flush_ms = (time.perf_counter() - started) * 1000
    medians = {label: statistics.median(values) for label, values in results.items()}
    print(
        f"{written['assets']} seeded assets ({written['priceHistory']} price points), {args.rounds} rounds, "
        f"concurrency {args.concurrency}, in-process ASGI (httpx) against embedded SecantusDB + Redis"
    )
    print(f"{'case':<36}{'req/s (median)':>16}")
    for label, median in medians.items():
        print(f"{label:<36}{median:>16.1f}")
    detail = medians["GET /api/assets/{tokenId}"] / medians["baseline detail (find_one + encode)"]
    listing = medians["GET /api/assets?limit=50"] / medians["baseline list (find + encode)"]
    print(f"ratio detail / baseline: {detail:.2f}x   (goal >= 0.5x)")
    print(f"ratio list / baseline:   {listing:.2f}x   (goal >= 0.5x)")
    print(
        f"assets.flush_views: {pending} buffered views over {flushed['tokens']} tokens moved into MongoDB "
        f"in {flush_ms:.0f} ms"
    )


def main() -> None:
    """Start embedded services, seed them, and print requests/s medians and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=400, help="detail requests per round")
    parser.add_argument(
        "--list-requests", type=int, default=100, help="list (and reference $inc) requests per round"
    )
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, EmbeddedStack(log_dir=Path(tmp) / "logs") as stack:
        services = {"mongodb": stack.start_mongodb(), "redis": stack.start_redis(), "s3": stack.start_s3()}
        asyncio.run(_bench(args, services, Path(tmp)))


if __name__ == "__main__":
    main()
