"""Benchmark backup and restore of 100,000 documents against a plain find() and a plain insert_many.

One collection of prediction-shaped documents (ObjectId, Decimal128 wei, dates, nested fields and a
list; four indexes, one unique and one partial) on embedded SecantusDB, and moto's S3 server. Each
round, interleaved so drift hits every case alike: the baseline read (a `find()` of the whole
collection into dicts), the backup (`app/system/backups.py`: read, gzip, upload, manifest), the
baseline write (drop, `insert_many` of the documents the read returned, 1,000 at a time, unordered, and
the same indexes built), and the restore (download, sha256 check, drop, insert, indexes).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bson import Decimal128, ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase

from app.lib import db
from app.lib.embedded import EmbeddedStack
from app.lib.logging import configure_logging
from app.lib.storage import Storage, s3_client_context
from app.system import backups
from scripts.benchkit import bench_settings

COLLECTION = "aiOracleData"
INDEXES = [
    IndexModel([("tokenId", ASCENDING), ("timestamp", DESCENDING)], name="tokenId_timestamp"),
    IndexModel([("status", ASCENDING)], name="status"),
    IndexModel([("createdAt", DESCENDING), ("_id", DESCENDING)], name="createdAt_id"),
    IndexModel(
        [("operator", ASCENDING), ("idempotencyKey", ASCENDING)],
        unique=True,
        partialFilterExpression={"idempotencyKey": {"$type": "string"}},
        name="operator_idempotencyKey_unique",
    ),
]
START = datetime(2025, 1, 1, tzinfo=UTC)


def document(n: int, rng: random.Random) -> dict[str, Any]:
    """A prediction as the oracle stores one (about 700 bytes of BSON)."""
    price = rng.lognormvariate(1.5, 1.0)
    wei = int(price * 10**18)
    at = START + timedelta(seconds=37 * n)
    return {
        "_id": ObjectId(),
        "tokenId": n % 5000 + 1,
        "timestamp": at,
        "predictedPrice": price,
        "predictedPriceWei": Decimal128(str(wei)),
        "predictedPriceUsd": price * 3000,
        "interval": {
            "low": price * 0.9,
            "high": price * 1.1,
            "lowWei": Decimal128(str(wei * 9 // 10)),
            "highWei": Decimal128(str(wei * 11 // 10)),
            "confidenceLevel": 0.9,
        },
        "confidenceScore": rng.uniform(40, 99),
        "dataSourcesUsed": ["platform-sales", "index:art"],
        "modelVersion": "dv-hgb-1.3.1",
        "featureImportance": [
            {"feature": name, "importance": rng.random(), "direction": rng.choice((-1.0, 1.0))}
            for name in ("assetType", "age", "lastSale", "indexLevel", "condition")
        ],
        "performanceMetrics": {"accuracy": None, "errorMargin": None, "calibration": None},
        "status": rng.choice(("pending", "accepted", "rejected")),
        "assetType": rng.choice(("Art", "Watch", "Wine", "Real Estate")),
        "operator": f"0x{n % 7:040x}" if n % 3 else None,
        "idempotencyKey": f"key-{n}" if n % 3 else None,
        "createdAt": at,
    }


async def _seed(database: AsyncDatabase, count: int) -> None:
    rng = random.Random(7)
    await database.drop_collection(COLLECTION)
    collection = database[COLLECTION]
    for start in range(0, count, 1000):
        batch = [document(n, rng) for n in range(start, min(count, start + 1000))]
        await collection.insert_many(batch, ordered=False)
    await collection.create_indexes(INDEXES)


async def _timed(work: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = await work()
    return time.perf_counter() - started, result


async def _bench(args: argparse.Namespace, services: dict[str, str | None], data_dir: Path) -> None:
    settings = bench_settings(services, data_dir, "backup")
    configure_logging(settings.log_level, settings.log_json)
    mongo = db.make_client(settings)
    database = mongo[settings.mongodb.database]
    times: dict[str, list[float]] = {"find()": [], "backup": [], "insert_many + indexes": [], "restore": []}
    sizes = []
    try:
        async with s3_client_context(settings) as s3:
            storage = Storage(s3, settings.s3.bucket, settings)
            await storage.ensure_bucket()
            await _seed(database, args.documents)
            collection = database[COLLECTION]

            async def read() -> list[dict[str, Any]]:
                return [doc async for doc in collection.find({}, batch_size=1000)]

            async def write(documents: list[dict[str, Any]]) -> None:
                await database.drop_collection(COLLECTION)
                for start in range(0, len(documents), 1000):
                    await collection.insert_many(documents[start : start + 1000], ordered=False)
                await collection.create_indexes(INDEXES)

            for _ in range(args.rounds):
                elapsed, documents = await _timed(read)
                times["find()"].append(elapsed)
                elapsed, manifest = await _timed(lambda: backups.create_backup(database, storage))
                times["backup"].append(elapsed)
                sizes.append(manifest.bytes)
                elapsed, _ = await _timed(lambda documents=documents: write(documents))
                times["insert_many + indexes"].append(elapsed)
                del documents
                elapsed, _ = await _timed(
                    lambda name=manifest.name: backups.restore_backup(database, storage, name, force=True)
                )
                times["restore"].append(elapsed)
                if await collection.count_documents({}) != args.documents:
                    raise RuntimeError("the restore did not bring every document back")
                await backups.prune_backups(storage, keep=1, abandoned_after=timedelta(0))
    finally:
        await mongo.close()
    medians = {label: statistics.median(values) for label, values in times.items()}
    per_100k = 100_000 / args.documents
    print(
        f"{args.documents} documents ({len(INDEXES)} indexes), {args.rounds} rounds, embedded SecantusDB + "
        f"moto S3; archive {statistics.median(sizes) / 2**20:.1f} MiB gzip'd"
    )
    print(f"{'case':<24}{'median s':>10}{'s per 100k':>12}{'docs/s':>10}")
    for label, median in medians.items():
        print(f"{label:<24}{median:>10.2f}{median * per_100k:>12.2f}{args.documents / median:>10.0f}")
    print(f"ratio backup / find():                   {medians['backup'] / medians['find()']:.2f}x the time")
    ratio = medians["restore"] / medians["insert_many + indexes"]
    print(f"ratio restore / (insert_many + indexes): {ratio:.2f}x the time")


def main() -> None:
    """Start embedded MongoDB and S3, seed one collection, and print the medians and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, EmbeddedStack(log_dir=Path(tmp) / "logs") as stack:
        services = {"mongodb": stack.start_mongodb(), "redis": None, "s3": stack.start_s3()}
        asyncio.run(_bench(args, services, Path(tmp)))


if __name__ == "__main__":
    main()
