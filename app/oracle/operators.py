"""Operators' accountability (`GET /api/oracle/operators`): per observer (each operator's wallet, and the
platform), its submissions and their verdicts in rounds, and its live record against later sales: MdAPE,
p95 APE and how often the sale fell inside its band. Computed at most once a minute."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import msgspec
import numpy as np

from app.config import Settings
from app.lib import cache
from app.oracle import round_repository, rounds
from app.oracle.round_documents import PLATFORM
from oracle import rounds as arithmetic

CACHE = "oracle_operators"
CACHE_TTL_S = 60
MAX_SCORED = 10_000  # the live figures are over an observer's latest this many scored predictions


def _live(outcomes: list[tuple[float, bool]]) -> dict[str, Any]:
    if not outcomes:
        return {"count": 0, "mdape": None, "p95Ape": None, "coverage": None}
    apes = np.array([ape for ape, _ in outcomes], dtype=float)
    return {
        "count": len(outcomes),
        "mdape": float(np.median(apes)),
        "p95Ape": float(np.quantile(apes, 0.95)),
        "coverage": float(np.mean([covered for _, covered in outcomes])),
    }


async def _compute(settings: Settings) -> list[dict[str, Any]]:
    rows: dict[str | None, dict[str, Any]] = defaultdict(
        lambda: {"accepted": 0, "rejected": 0, "pending": 0, "rejectedByReason": {}, "lastSubmissionAt": None}
    )
    for group in await round_repository.operator_counts():
        key, row = group["_id"], rows[group["_id"].get("operator")]
        status = "accepted" if key.get("status") in round_repository.ACCEPTED else key.get("status")
        if status in ("accepted", "rejected", "pending"):
            row[status] += group["count"]
        if status == "rejected":
            code = key.get("code") or "unknown"
            row["rejectedByReason"][code] = row["rejectedByReason"].get(code, 0) + group["count"]
        if row["lastSubmissionAt"] is None or group["last"] > row["lastSubmissionAt"]:
            row["lastSubmissionAt"] = group["last"]
    oracle = settings.oracle
    found = []
    for operator, row in rows.items():
        outcomes = [(row.ape, row.covered) for row in await rounds.record(settings, operator, MAX_SCORED)]
        decided = row["accepted"] + row["rejected"]
        found.append(
            {
                "operator": operator or PLATFORM,
                "submissions": decided + row["pending"],
                **row,
                "acceptanceRate": row["accepted"] / decided if decided else None,
                "weight": arithmetic.weight(  # as rounds weigh it: over the last weight_window sales
                    [ape for ape, _ in outcomes[: oracle.weight_window]],
                    oracle.weight_min_scored,
                    oracle.new_operator_weight,
                ),
                "live": _live(outcomes),
            }
        )
    return sorted(found, key=lambda r: (r["operator"] != PLATFORM, r["operator"]))


async def figures(redis, settings: Settings) -> list[dict[str, Any]]:
    """Every observer's figures, computed by one caller a minute (the others wait for them)."""

    async def compute() -> bytes:
        return msgspec.json.encode(await _compute(settings))

    return msgspec.json.decode(await cache.computed_once(redis, CACHE, CACHE, CACHE_TTL_S, compute))
