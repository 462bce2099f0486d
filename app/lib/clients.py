"""The external clients (MongoDB, Redis + arq, S3, chain), made once per process and closed on exit."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from beanie import Document
from pymongo import AsyncMongoClient
from web3 import AsyncHTTPProvider, AsyncWeb3

from app.config import Settings
from app.lib import db
from app.lib.storage import Storage, s3_client_context


@dataclass
class Clients:
    mongo: AsyncMongoClient
    redis: ArqRedis  # also the arq queue: one pool serves both
    storage: Storage
    web3: AsyncWeb3 | None


def redis_settings(settings: Settings) -> RedisSettings:
    return RedisSettings.from_dsn(settings.redis.url)


def make_web3(settings: Settings) -> AsyncWeb3 | None:
    if not settings.chain.rpc_url:
        return None
    provider = AsyncHTTPProvider(
        settings.chain.rpc_url, request_kwargs={"timeout": settings.chain.request_timeout_s}
    )
    return AsyncWeb3(provider)


@asynccontextmanager
async def open_clients(
    settings: Settings, *, documents: Sequence[type[Document]] = ()
) -> AsyncIterator[Clients]:
    """Open every client (binding `documents` to MongoDB); on exit close them in reverse order."""
    async with AsyncExitStack() as stack:
        mongo = db.make_client(settings)
        stack.push_async_callback(mongo.close)
        if documents:
            await db.init_db(mongo, settings, documents)
        redis = await create_pool(redis_settings(settings))
        stack.push_async_callback(redis.aclose)
        s3 = await stack.enter_async_context(s3_client_context(settings))
        storage = Storage(s3, settings.s3.bucket, settings)
        await storage.ensure_bucket()
        web3 = make_web3(settings)
        if web3 is not None:
            stack.push_async_callback(web3.provider.disconnect)
        yield Clients(mongo=mongo, redis=redis, storage=storage, web3=web3)
