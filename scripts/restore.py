"""`make restore ARGS=<backup>`: a backup from S3 into an empty database; `--list` lists the backups.

<backup> is a backup's timestamp (`20250101T023000123456Z`), a prefix naming one backup only
(`20250101`), or `latest`. Every archive is checked against the sha256 in the manifest before anything
is written; a database that holds documents is refused unless `--force`, which drops the collections
the backup holds (and only those). `--database` restores into another database than MONGODB_DATABASE
(a scratch one, to try a backup out). An error is JSON on stderr, `{"error": {"code", "message",
"details"}}`, and a non-zero exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from app.config import Settings
from app.system import service
from scripts.backup import (
    EXIT_NO_SERVICES,
    EXIT_REFUSED,
    log_to_stderr,
    open_target,
    run_reporting_errors,
    target_settings,
)


async def restore(settings: Settings, wanted: str, *, force: bool, database: str | None) -> dict[str, Any]:
    async with open_target(settings, database) as (target, storage):
        restored = await service.restore(target, storage, wanted, force=force)
    manifest = restored.manifest
    return {
        "backup": manifest.name,
        "database": restored.database,
        "collections": {c.name: c.count for c in manifest.collections},
        "documents": manifest.documents,
        "dropped": restored.dropped,
    }


async def listing(settings: Settings) -> list[dict[str, Any]]:
    async with open_target(settings) as (_, storage):
        entries = await service.list_backups(storage)
    return [{"backup": e.name, "complete": e.complete, "files": len(e.keys)} for e in entries]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backup", nargs="?", help="the backup's timestamp, a prefix of it, or `latest`")
    parser.add_argument("--force", action="store_true", help="drop the collections the backup holds first")
    parser.add_argument("--database", help="restore into this database (default: MONGODB_DATABASE)")
    parser.add_argument("--list", action="store_true", help="list the backups in the bucket, oldest first")
    args = parser.parse_args()
    if not args.list and not args.backup:
        parser.error("name the backup to restore (its timestamp, a prefix of it, or `latest`), or --list")
    settings = target_settings()
    if settings is None:
        return EXIT_NO_SERVICES
    log_to_stderr(settings)
    if args.list:
        result: Any = asyncio.run(run_reporting_errors(lambda: listing(settings)))
    else:
        result = asyncio.run(
            run_reporting_errors(
                lambda: restore(settings, args.backup, force=args.force, database=args.database)
            )
        )
    if result is None:
        return EXIT_REFUSED
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
