"""Test harness: real servers started once per session on free ports, state wiped before each test."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from litestar import Litestar
from pymongo.errors import AutoReconnect

from app.config import Settings
from app.lib.clients import Clients
from app.lib.embedded import EmbeddedStack
from app.main import DOCUMENTS, create_app
from workers.burst import Drained, drain_jobs  # noqa: F401 - the tests import them from here

# Settings come from the fixtures below, never from a developer's .env or shell.
for _name in [
    n for n in os.environ if n.split("_", 1)[0] in {"MONGODB", "REDIS", "S3", "CHAIN", "AUTH", "APP"}
]:
    del os.environ[_name]


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str | None]]:
    """MongoDB (SecantusDB), Redis, S3 (moto) and anvil, as real servers for the whole session."""
    with EmbeddedStack(log_dir=tmp_path_factory.mktemp("service-logs")) as stack:
        yield {
            "mongodb": stack.start_mongodb(),
            "redis": stack.start_redis(),
            "s3": stack.start_s3(),
            "chain": stack.start_chain(),
        }


@pytest.fixture(scope="session")
def settings(services: dict[str, str | None], tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        _env_file=None,
        app_env="test",
        data_dir=Path(tmp_path_factory.mktemp("data")),
        log_level="WARNING",
        mongodb={"url": services["mongodb"], "database": "dynamicvault_test"},
        redis={"url": services["redis"]},
        s3={"endpoint_url": services["s3"], "bucket": "dynamicvault-test"},
        chain={"rpc_url": services["chain"]},
        auth={"cookie_secure": False},
        oracle={"point_bag": 2},  # the bag and its blend, at a fifth of the training time
    )


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[Litestar]:
    yield create_app(settings)


@pytest.fixture(scope="session")
async def _session_client(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    # The lifespan runs in the tests' own event loop (Litestar's AsyncTestClient would run it in a
    # portal thread, and PyMongo's async client is bound to the loop that made it).
    # It is entered and left in one task of its own, as anyio's cancel scopes require.
    started, stop = asyncio.Event(), asyncio.Event()

    async def run_lifespan() -> None:
        async with app.lifespan():
            started.set()
            await stop.wait()

    lifespan = asyncio.create_task(run_lifespan())
    await asyncio.wait({lifespan, asyncio.create_task(started.wait())}, return_when=asyncio.FIRST_COMPLETED)
    if lifespan.done():
        lifespan.result()  # start-up failed: raise its error here
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost:8000") as client:
        yield client
    stop.set()
    await lifespan


@pytest.fixture(scope="session")
def clients(app: Litestar, _session_client: httpx.AsyncClient) -> Clients:
    return app.state.clients


async def wipe(clients: Clients) -> None:
    """Empty every collection, Redis and the bucket; indexes stay."""
    for document in DOCUMENTS:
        try:
            await document.get_pymongo_collection().delete_many({})
        except AutoReconnect:  # a pooled connection the server closed while idle (minutes of chain tests)
            await document.get_pymongo_collection().delete_many({})
    await clients.redis.flushdb()
    s3, bucket = clients.storage.client, clients.storage.bucket
    paginator = s3.get_paginator("list_objects_v2")
    async for page in paginator.paginate(Bucket=bucket):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            await s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})
    async for key, upload_id, _ in clients.storage.multipart_uploads(""):  # uploads never completed
        await clients.storage.abort_multipart(key, upload_id)


@pytest.fixture
async def client(_session_client: httpx.AsyncClient, clients: Clients) -> httpx.AsyncClient:
    """An HTTP client on the app, with all state wiped first."""
    await wipe(clients)
    _session_client.cookies.clear()
    return _session_client
