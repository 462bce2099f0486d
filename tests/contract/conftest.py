"""Contract-test harness: an app of its own on a dedicated event loop (see bridge.py), its own database,
Redis db and bucket on the session's servers, and the identities rebuilt before each test.

Everything here is sync: Schemathesis' tests are sync functions, and the app's loop is not pytest-asyncio's.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from beanie import Document
from hypothesis.configuration import set_hypothesis_home_dir

from app.config import AuthSettings, Settings
from app.main import DOCUMENTS, create_app
from tests.contract.bridge import BRIDGE, AppThread
from tests.contract.world import World, build

CONTRACT_DATABASE = "dynamicvault_contract"
CONTRACT_REDIS_DB = 1
CONTRACT_BUCKET = "dynamicvault-contract"
METRICS_TOKEN = "contract-metrics-token"
# Generated requests arrive far faster than any client's; the limiter still runs (and 429 stays possible).
RAISED_LIMIT = {"per_ip": 1_000_000, "per_principal": 1_000_000, "window_s": 60}

# Hypothesis keeps caches (source constants, unicode tables) under ./.hypothesis, from collection on
# (Schemathesis builds its tests then): keep them out of the repository. The example database is off.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "dynamicvault-hypothesis")


def redis_db(url: str | None, db: int) -> str | None:
    """The same Redis server, database `db`."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{db}")) if url else url


def contract_settings_for(services: dict[str, str | None], data_dir: Path) -> Settings:
    """The contract app's settings: test defaults, production's closed /metrics, raised rate limits.

    Its own database, Redis db and bucket, so the other tests' wipes and its own never meet.
    """
    return Settings(
        _env_file=None,
        app_env="test",
        data_dir=data_dir,
        log_level="WARNING",
        metrics_token=METRICS_TOKEN,
        mongodb={"url": services["mongodb"], "database": CONTRACT_DATABASE},
        redis={"url": redis_db(services["redis"], CONTRACT_REDIS_DB)},
        s3={"endpoint_url": services["s3"], "bucket": CONTRACT_BUCKET},
        chain={"rpc_url": services["chain"]},
        auth={
            "cookie_secure": False,
            "rate_limits": {group: RAISED_LIMIT for group in AuthSettings().rate_limits},
        },
    )


@pytest.fixture(scope="session")
def contract_settings(services: dict[str, str | None], tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return contract_settings_for(services, Path(tmp_path_factory.mktemp("contract-data")))


@contextmanager
def beanie_bindings_restored(documents: list[type[Document]]) -> Iterator[None]:
    """Beanie binds each document class to one client, process-wide: the contract app rebinds them to
    its own (on its own loop), so the session app's bindings come back when it stops."""
    saved = {document: document.__dict__.get("_document_settings") for document in documents}
    try:
        yield
    finally:
        for document, bound in saved.items():
            if bound is not None:
                document._document_settings = bound
            elif "_document_settings" in document.__dict__:
                delattr(document, "_document_settings")


@pytest.fixture(scope="module")
def contract_app(contract_settings: Settings) -> Iterator[AppThread]:
    """The app, started once for the module on its own loop; `BRIDGE` reaches it from any thread."""
    with beanie_bindings_restored(DOCUMENTS):
        running = AppThread(create_app(contract_settings)).start()
        BRIDGE.attach(running)
        try:
            yield running
        finally:
            BRIDGE.detach()
            running.stop()


@pytest.fixture
def new_world(contract_app: AppThread, contract_settings: Settings) -> Callable[[], World]:
    """Wipe every store and write the identities and their objects again, on the app's loop: as often
    as a test needs a fresh start (the stateful test, before each scenario)."""

    def rebuild() -> World:
        assert contract_app.app is not None
        return contract_app.run(build(contract_settings, contract_app.app.state.clients))

    return rebuild


@pytest.fixture
def world(new_world: Callable[[], World]) -> World:
    """A fresh world for each test: what one test's requests change (a logout, a suspension, a revoked
    key) never reaches the next one."""
    return new_world()
