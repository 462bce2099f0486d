"""`make backup`: every MongoDB collection to S3 under backups/{timestamp}/, then the old backups pruned.

Each collection is one gzip'd BSON archive, and the manifest, written last, holds their document counts,
sha256 and the collections' indexes; then the complete backups past the newest BACKUP_KEEP, and those a
failed run left without a manifest, are deleted (what the daily `system.backup` cron does). It reads the
running platform's services (`make run` writes them to DATA_DIR/services.env), or MONGODB_URL and
S3_*. Prints the backup as JSON; an error is JSON on stderr, `{"error": {"code", "message", "details"}}`,
and a non-zero exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from app.config import Settings
from app.lib import db
from app.lib.embedded import settings_with_running_services
from app.lib.errors import AppError
from app.lib.logging import configure_logging
from app.lib.storage import Storage, s3_client_context
from app.system import service

T = TypeVar("T")
EXIT_REFUSED, EXIT_NO_SERVICES = 1, 2


def target_settings() -> Settings | None:
    """The settings to reach MongoDB and S3 with, or None (said on stderr) when there are none."""
    settings = settings_with_running_services()
    missing = [] if settings.mongodb.url else ["MONGODB_URL"]
    if not settings.s3.endpoint_url and not settings.is_production:  # production: AWS S3 itself
        missing.append("S3_ENDPOINT_URL")
    if missing:
        fail(
            "no_services",
            f"{' and '.join(missing)} not set, and no running `make run` found "
            f"({settings.data_dir / 'services.env'})",
        )
        return None
    return settings


@asynccontextmanager
async def open_target(
    settings: Settings, database: str | None = None
) -> AsyncIterator[tuple[AsyncDatabase, Storage]]:
    """The database (`database`, or MONGODB_DATABASE) and the bucket, with clients made for this run."""
    mongo = db.make_client(settings)
    try:
        async with s3_client_context(settings) as s3:
            yield mongo[database or settings.mongodb.database], Storage(s3, settings.s3.bucket, settings)
    finally:
        await mongo.close()


def log_to_stderr(settings: Settings) -> None:
    """The platform's log lines (one per collection as it goes) on stderr, so stdout holds the result."""
    configure_logging(settings.log_level, settings.log_json)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(sys.stderr)


def fail(code: str, message: str, details: Any = None) -> None:
    print(json.dumps({"error": {"code": code, "message": message, "details": details}}), file=sys.stderr)


async def run_reporting_errors(work: Callable[[], Awaitable[T]]) -> T | None:
    """`work`'s result, or None once its failure is said on stderr in the error format."""
    try:
        return await work()
    except AppError as exc:
        fail(exc.code, exc.message, exc.details)
    except TimeoutError:
        fail("backup_timeout", "the backup took longer than BACKUP_TIMEOUT_S")
    except PyMongoError as exc:
        fail("database_error", f"MongoDB: {type(exc).__name__}: {str(exc)[:300]}")
    except (BotoCoreError, ClientError) as exc:
        fail("storage_error", f"S3: {type(exc).__name__}: {str(exc)[:300]}")
    return None


async def backup(settings: Settings) -> dict[str, Any]:
    async with open_target(settings) as (database, storage):
        done = await service.back_up(database, storage, settings.backup)
    manifest = done.manifest
    return {
        "backup": manifest.name,
        "database": manifest.database,
        "collections": {c.name: c.count for c in manifest.collections},
        "documents": manifest.documents,
        "bytes": manifest.bytes,
        "pruned": done.pruned,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    settings = target_settings()
    if settings is None:
        return EXIT_NO_SERVICES
    log_to_stderr(settings)
    result = asyncio.run(run_reporting_errors(lambda: backup(settings)))
    if result is None:
        return EXIT_REFUSED
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
