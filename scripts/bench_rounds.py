"""Benchmark the oracle's rounds: joining the platform's appraisals and closing the rounds, against the
database's floor measured in the same run.

Each run seeds N tokens, each with a platform appraisal and three operators' submissions joined to its
round, then times:
- assigning: `joining.assign_appraisals` over the N appraisals (the rounds opened, the members pushed);
- closing: `rounds.close_due` over the N rounds (claim, members read, weights, aggregation, gates,
  decisions, the bulk close and the verdicts);
- the floor: the writes a close cannot avoid, done as plainly as possible: one bulk update of the N
  rounds and one of their 4N predictions.

Runs are interleaved (floor, then the pass, on fresh data each time) and the medians are printed with
the ratio to the floor.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from bson import Decimal128, ObjectId
from pymongo import UpdateOne

from app.lib.clients import open_clients
from app.lib.embedded import EmbeddedStack
from app.lib.timeutil import utcnow
from app.main import DOCUMENTS
from app.oracle import joining, round_repository, rounds
from scripts.benchkit import bench_settings

ETH = 10**18
OPERATORS = ["0x" + f"{i:040x}" for i in range(1, 4)]


def prediction(token: int, eth: float, operator: str | None, at) -> dict:
    wei = int(eth * ETH)
    return {
        "_id": ObjectId(),
        "tokenId": token,
        "assetType": "Art",
        "timestamp": at,
        "asOf": None,
        "predictedPrice": eth,
        "predictedPriceWei": Decimal128(str(wei)),
        "interval": {
            "low": eth * 0.9,
            "high": eth * 1.1,
            "lowWei": Decimal128(str(wei * 9 // 10)),
            "highWei": Decimal128(str(wei * 11 // 10)),
            "confidenceLevel": 0.9,
        },
        "confidenceScore": 80.0,
        "modelVersion": "bench",
        "dataSourcesUsed": [],
        "status": "pending",
        "operator": operator,
        "round": None,
        "outcome": None,
        "createdAt": at,
    }


async def seed(settings, tokens: int) -> None:
    for document in DOCUMENTS:
        await document.get_pymongo_collection().delete_many({})
    now = utcnow()
    platform = [prediction(t, 10.0 + t % 7 / 10, None, now) for t in range(tokens)]
    await round_repository.predictions().insert_many(platform)
    submitted = []
    for token in range(tokens):
        asset = {"_id": None, "tokenId": token, "assetType": "Art"}
        for index, operator in enumerate(OPERATORS):
            doc = prediction(token, 10.0 + index / 10, operator, now)
            submitted.append(doc)
            key, opens, closes = joining.window(token, now, settings.oracle.round_window_s)
            await round_repository.predictions().insert_one({**doc, "round": key})
            await round_repository.join((key, token, asset, opens, closes, doc["_id"]), now, submission=True)


async def floor(tokens: int) -> float:
    keys = [doc["key"] for doc in await round_repository.rounds().find({}, {"key": 1}).to_list(None)]
    ids = [doc["_id"] for doc in await round_repository.predictions().find({}, {"_id": 1}).to_list(None)]
    started = time.perf_counter()
    await round_repository.rounds().bulk_write(
        [UpdateOne({"key": key}, {"$set": {"benchmark": 1}}) for key in keys], ordered=False
    )
    await round_repository.predictions().bulk_write(
        [UpdateOne({"_id": i}, {"$set": {"benchmark": 1}}) for i in ids], ordered=False
    )
    return time.perf_counter() - started


async def run(tokens: int, runs: int, services: dict, data_dir: Path) -> None:
    settings = bench_settings(services, data_dir, "rounds")
    window = timedelta(seconds=settings.oracle.round_window_s)
    assigned, closed, floors = [], [], []
    async with open_clients(settings, documents=DOCUMENTS):
        for attempt in range(runs):
            await seed(settings, tokens)
            floors.append(await floor(tokens))
            await seed(settings, tokens)
            started = time.perf_counter()
            joined = await joining.assign_appraisals(settings, utcnow())
            assigned.append(time.perf_counter() - started)
            started = time.perf_counter()
            result = await rounds.close_due(settings, utcnow() + window + timedelta(seconds=10))
            closed.append(time.perf_counter() - started)
            print(
                f"run {attempt + 1}: floor {floors[-1]:.2f} s, assigning {assigned[-1]:.2f} s "
                f"({joined['joined']} joined), closing {closed[-1]:.2f} s ({result.get('closed', 0)} closed)",
                flush=True,
            )
    floor_s, assign_s, close_s = (statistics.median(v) for v in (floors, assigned, closed))
    print(f"\n{tokens} rounds of 4 participants, medians of {runs} runs:")
    print(f"  floor (bulk update of the rounds and their predictions): {floor_s:.2f} s")
    print(f"  assigning the platform's appraisals: {assign_s:.2f} s ({assign_s / floor_s:.2f}x the floor)")
    print(f"  closing the rounds: {close_s:.2f} s ({close_s / floor_s:.2f}x the floor)")
    print(f"  per round: closing {close_s / tokens * 1000:.2f} ms, floor {floor_s / tokens * 1000:.2f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, EmbeddedStack() as stack:
        services = {"mongodb": stack.start_mongodb(), "redis": stack.start_redis(), "s3": stack.start_s3()}
        asyncio.run(run(args.tokens, args.runs, services, Path(tmp)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
