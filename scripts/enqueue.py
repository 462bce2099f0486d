"""Queue one worker job by name, e.g. a migration: `make enqueue ARGS=assets.backfill_search_fields`."""

from __future__ import annotations

import argparse
import asyncio
import sys

from arq import create_pool

from app.config import Settings
from app.lib.clients import redis_settings
from app.lib.embedded import settings_with_running_services
from workers.settings import WorkerSettings


async def enqueue(settings: Settings, name: str) -> str:
    redis = await create_pool(redis_settings(settings))
    try:
        # A fixed job id: asking twice while the job is queued or running queues it once.
        job = await redis.enqueue_job(name, _job_id=f"manual:{name}")
    finally:
        await redis.aclose()
    return "queued" if job is not None else "already queued, running, or finished within the last hour"


def main() -> int:
    names = sorted(f.name for f in WorkerSettings.functions)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("name", choices=names, help="the job's registered name")
    args = parser.parse_args()
    settings = settings_with_running_services()
    if not settings.redis.url:
        print("REDIS_URL is not set and no running `make run` was found", file=sys.stderr)
        return 2
    print(f"{args.name}: {asyncio.run(enqueue(settings, args.name))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
