"""Benchmark authentication: the same GET handler protected (Bearer JWT, API key) and anonymous, in one run.

The app is `create_app()` with its whole middleware stack (request ids, metrics, authentication and
rate limits) over real servers started here (SecantusDB, redis-server, moto S3); a pair of identical
benchmark-only handlers is registered on it, one anonymous. Requests go through httpx's ASGITransport,
interleaved round by round so that drift in the machine's speed hits every variant alike.

Variants:
- anonymous: no credentials; the rate-limit counter is still one Redis round trip;
- bearer: the JWT (verified once per process, then cached until it expires), then rate limits +
  session state + role override in one single Redis pipeline (the Redis-cached session validity that
  makes logout immediate);
- bearer, token's first use: a freshly minted token each request, so PyJWT verifies it (~100 µs);
- bearer, cold session cache: the session's Redis entry deleted before each request, so MongoDB is
  read (the cost after an eviction or a Redis restart, once per session per 15 minutes);
- api key: one Redis pipeline: rate limits + the key's cached principal and its generation;
- api key, cold cache: the key's Redis entry deleted before each request, so it is looked up in
  MongoDB by its hash and cached again (once per key per minute, or after a revocation/role change).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from litestar import get

from app.auth import api_keys, service, sessions, tokens
from app.auth.documents import User
from app.config import RateLimitRule, Settings
from app.lib.embedded import EmbeddedStack
from app.main import create_app

GOAL_RATIO = 1.15


@get("/api/bench/protected", cache=False, include_in_schema=False)
async def bench_protected() -> dict[str, str]:
    """Benchmark only: a protected handler."""
    return {"status": "ok"}


@get("/api/bench/open", cache=False, include_in_schema=False, opt={"anonymous": True})
async def bench_open() -> dict[str, str]:
    """Benchmark only: the same handler, anonymous."""
    return {"status": "ok"}


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


async def run(rounds: int, warmup: int, services: dict[str, str], data_dir: Path) -> None:
    unlimited = RateLimitRule(per_ip=10**9, per_principal=10**9, window_s=60)
    settings = Settings(
        _env_file=None,
        app_env="test",
        data_dir=data_dir,
        log_level="WARNING",
        log_json=True,
        mongodb={"url": services["mongodb"], "database": "bench_auth"},
        redis={"url": services["redis"]},
        s3={"endpoint_url": services["s3"], "bucket": "bench-auth"},
        auth={"cookie_secure": False, "rate_limits": {"default": unlimited, "auth": unlimited}},
    )
    app = create_app(settings)
    app.register(bench_protected)
    app.register(bench_open)

    async with app.lifespan():
        clients = app.state.clients
        await User.get_pymongo_collection().delete_many({})
        wallet = "0x71C7656EC7ab88b098defB751B7401B5f6d8976F"
        user = await service.upsert_user(settings, wallet)
        pair = await sessions.start_session(
            clients.redis, settings, user, ip_address="127.0.0.1", user_agent="bench"
        )
        _, key = await api_keys.create_api_key(
            settings, user, name="bench", permissions=["assets:write"], expires_at=None, created_by_admin=True
        )
        bearer = {"Authorization": f"Bearer {pair.access_token}"}
        cache_key = sessions.session_key(pair.session_id)
        key_cache_key = api_keys.api_key_cache_key(tokens.hash_api_key(key))

        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:

            async def call(path: str, headers: dict[str, str] | None = None) -> float:
                started = time.perf_counter()
                response = await client.get(path, headers=headers)
                elapsed = (time.perf_counter() - started) * 1000
                if response.status_code != 200:
                    raise RuntimeError(f"{path}: {response.status_code} {response.text}")
                return elapsed

            def fresh_token() -> dict[str, str]:
                token, _ = tokens.issue_access_token(
                    sessions.keyring(settings),
                    subject=str(user.id),
                    session_id=pair.session_id,
                    roles=["user"],
                    issuer=settings.auth.jwt_issuer,
                    audience=settings.auth.jwt_audience,
                )
                return {"Authorization": f"Bearer {token}"}

            async def first_use() -> float:
                return await call("/api/bench/protected", fresh_token())  # minted before the clock starts

            async def cold() -> float:
                await clients.redis.delete(cache_key)  # not timed
                return await call("/api/bench/protected", bearer)

            async def cold_key() -> float:
                await clients.redis.delete(key_cache_key)  # not timed
                return await call("/api/bench/protected", {"X-API-Key": key})

            # Warm variants first: in the interleaving (forward, then reversed) none of them then runs
            # right after one that reads MongoDB, which slows the request that follows it.
            variants: dict[str, Callable[[], Awaitable[float]]] = {
                "anonymous": lambda: call("/api/bench/open"),
                "bearer": lambda: call("/api/bench/protected", bearer),
                "api key": lambda: call("/api/bench/protected", {"X-API-Key": key}),
                "bearer, token's first use": first_use,
                "bearer, cold session cache": cold,
                "api key, cold cache": cold_key,
            }
            for _ in range(warmup):
                for measure in variants.values():
                    await measure()
            timings: dict[str, list[float]] = {name: [] for name in variants}
            names = list(variants)
            for index in range(rounds):
                order = names if index % 2 == 0 else names[::-1]
                for name in order:
                    timings[name].append(await variants[name]())
        await User.get_pymongo_collection().delete_many({})

    base = statistics.median(timings["anonymous"])
    print(
        f"{rounds} rounds, {warmup} warm-up rounds; ms per request (httpx ASGITransport, real Redis, MongoDB)"
    )
    print(f"{'variant':<28}{'p50':>8}{'p90':>8}{'p50 ratio':>11}")
    for name, values in timings.items():
        p50, p90 = statistics.median(values), percentile(values, 90)
        print(f"{name:<28}{p50:>8.3f}{p90:>8.3f}{p50 / base:>11.3f}")
    ratio = statistics.median(timings["bearer"]) / base
    verdict = "meets" if ratio <= GOAL_RATIO else "misses"
    print(f"protected (bearer) / unprotected p50 ratio: {ratio:.3f} ({verdict} the goal of {GOAL_RATIO})")


def main() -> None:
    """Start MongoDB, Redis and S3 stand-ins, then print p50/p90 per variant and the p50 ratio."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-auth-") as tmp, EmbeddedStack(log_dir=Path(tmp)) as stack:
        services = {"mongodb": stack.start_mongodb(), "redis": stack.start_redis(), "s3": stack.start_s3()}
        asyncio.run(run(args.rounds, args.warmup, services, Path(tmp)))


if __name__ == "__main__":
    main()
