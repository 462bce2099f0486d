"""Publication: the platform's appraisals pushed to the PriceOracle contract, each round exactly once.

Each current appraisal (not a historical one) is decided once, in the order they were made:
- `superseded` when a later appraisal of the same token is decided in the same pass;
- `abstained` below ORACLE_PUBLISH_MIN_CONFIDENCE, and says so;
- `published` when it is the token's first, when it moved more than ORACLE_PUBLISH_DEVIATION_BPS from
  the last price published, or when ORACLE_PUBLISH_HEARTBEAT_S has passed since it (`reason` says
  which);
- `skipped` otherwise (`within_deviation`).

Published appraisals go out ORACLE_PUBLISH_BATCH at a time in one `set_prices`. The decision, with the
batch's outbox key and the round id (the appraisal's time in milliseconds, so newer is higher), is
written before the outbox is asked, and the ask is keyed by the batch, so a crash in between asks again
for the same transaction; the contract skips a round not newer than the token's, so even a second
transaction would change nothing. A published appraisal is `submitted` until its push is final, then
`accepted` with its `onChainReference` (transaction, block, time), or `rejected` if the push failed.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import structlog

from app.chain import service as chain_service
from app.config import Settings
from app.lib.money import wei_string
from app.lib.timeutil import utcnow
from app.oracle import model_repository

log = structlog.get_logger("oracle.publication")
UNDECIDED_PER_PASS = 5000


def _wei(value: Any) -> int:
    return int(wei_string(value) or 0)


def round_id(prediction: dict[str, Any]) -> int:
    return int(prediction["timestamp"].timestamp() * 1000)


def _decision(settings: Settings, prediction: dict[str, Any], last: dict[str, Any] | None) -> tuple[str, str]:
    oracle = settings.oracle
    if prediction["confidenceScore"] < oracle.publish_min_confidence:
        return "abstained", "low_confidence"
    if last is None:
        return "published", "first"
    price, before = _wei(prediction["predictedPriceWei"]), _wei(last["wei"])
    if before == 0 or abs(price - before) * 10_000 > oracle.publish_deviation_bps * before:
        return "published", "deviation"
    if (prediction["timestamp"] - last["at"]).total_seconds() >= oracle.publish_heartbeat_s:
        return "published", "heartbeat"
    return "skipped", "within_deviation"


async def publish_due(clients, settings: Settings) -> dict[str, int]:
    """Decide the undecided appraisals and ask the outbox to push the published ones."""
    oracle = await chain_service.contract(clients, settings, "PriceOracle")
    if oracle is None:
        return {"decided": 0}
    found = await model_repository.undecided(UNDECIDED_PER_PASS)
    latest: dict[int, dict[str, Any]] = {}
    for prediction in found:  # oldest first: the last one seen per token is its newest
        latest[prediction["tokenId"]] = prediction
    last = await model_repository.last_published(list(latest))
    now = utcnow()
    decisions, due = [], []
    counts: dict[str, int] = defaultdict(int)
    for prediction in found:
        token = prediction["tokenId"]
        if latest[token] is not prediction:
            decision, reason = "superseded", "a later appraisal"
        else:
            decision, reason = _decision(settings, prediction, last.get(token))
        counts[decision] += 1
        if decision == "published":
            due.append(prediction)
        else:
            decisions.append((prediction["_id"], {"decision": decision, "reason": reason, "at": now}, None))
    await model_repository.decide(decisions)
    size = settings.oracle.publish_batch
    for start in range(0, len(due), size):
        batch = due[start : start + size]
        key = _batch_key(settings, batch)
        published = [
            (
                p["_id"],
                {
                    "decision": "published",
                    "reason": _decision(settings, p, last.get(p["tokenId"]))[1],
                    "roundId": round_id(p),
                    "outboxKey": key,
                    "at": now,
                },
                "submitted",
            )
            for p in batch
        ]
        await model_repository.decide(published)
        await _ask(clients, settings, oracle, key)
    log.info("oracle.publication.pass", **counts)
    return {"decided": len(found), **counts}


def _batch_key(settings: Settings, batch: list[dict[str, Any]]) -> str:
    rounds = ",".join(f"{p['tokenId']}:{round_id(p)}" for p in sorted(batch, key=lambda p: p["tokenId"]))
    return f"prices:{settings.chain.chain_id}:{hashlib.sha256(rounds.encode()).hexdigest()[:32]}"


async def _ask(clients, settings: Settings, oracle, key: str) -> None:
    """Ask the outbox for the push of the batch `key`, from what its appraisals recorded."""
    carried = await model_repository.published_in(key)
    prices = [
        (
            p["tokenId"],
            p["publication"]["roundId"],
            _wei(p["predictedPriceWei"]),
            _wei(p["interval"]["lowWei"]),
            _wei(p["interval"]["highWei"]),
            min(round(p["confidenceScore"] * 100), 10_000),
        )
        for p in sorted(carried, key=lambda p: p["tokenId"])
    ]
    await chain_service.submit_call(
        settings, key=key, kind="set_prices", contract=oracle, function="set_prices", args=[prices]
    )


async def confirm(clients, settings: Settings, limit: int = 1000) -> dict[str, int]:
    """Settle the published appraisals whose push is final (or failed): accepted when the indexer has
    read the contract's PriceUpdated for their round, rejected when the push failed or the chain held a
    newer round; ask again for any push a crash left unasked."""
    keys = {p["publication"]["outboxKey"] for p in await model_repository.submitted(limit)}
    oracle = await chain_service.contract(clients, settings, "PriceOracle")
    counts = {"accepted": 0, "rejected": 0, "asked": 0}
    indexed = await chain_service.indexed_block(settings)
    for key in keys:
        entry = await chain_service.outbox_entry(key)
        carried_docs = await model_repository.published_in(key)
        carried = [p["_id"] for p in carried_docs]
        if entry is None:
            if oracle is not None:
                await _ask(clients, settings, oracle, key)
                counts["asked"] += 1
            continue
        if entry["status"] == "confirmed":
            receipt = entry["receipt"]
            if indexed is None or indexed < receipt["blockNumber"]:
                continue  # confirmed by the contract's own PriceUpdated: once the indexer has read it
            updated = await chain_service.price_updates(settings, receipt)
            block = await clients.web3.eth.get_block(receipt["blockNumber"])
            reference = {
                "transactionHash": receipt["transactionHash"],
                "blockNumber": receipt["blockNumber"],
                "timestamp": block_time(block),
            }
            landed = [
                p["_id"] for p in carried_docs if (p["tokenId"], p["publication"]["roundId"]) in updated
            ]
            skipped = [i for i in carried if i not in set(landed)]
            counts["accepted"] += await model_repository.finish_publication(
                landed, {"status": "accepted", "onChainReference": reference}
            )
            counts["rejected"] += await model_repository.finish_publication(
                skipped,
                {"status": "rejected", "publication.error": "no PriceUpdated: the chain held a newer round"},
            )
        elif entry["status"] == "failed":
            counts["rejected"] += await model_repository.finish_publication(
                carried, {"status": "rejected", "publication.error": entry.get("error") or "failed"}
            )
    return counts


def block_time(block: Any) -> datetime:
    return datetime.fromtimestamp(int(block["timestamp"]), UTC)


async def publish(clients, settings: Settings) -> dict[str, Any]:
    """Decide and push the due appraisals, then settle the pushes that are final."""
    return {**await publish_due(clients, settings), **await confirm(clients, settings)}


async def reconcile(clients, settings: Settings, sample: int = 50) -> dict[str, Any]:
    """Compare the PriceOracle with the last accepted push of a sample of tokens: a token whose round on
    the chain is older than the one accepted, or whose price differs at that round, is drift (`price`)."""
    oracle = await chain_service.contract(clients, settings, "PriceOracle")
    if oracle is None:
        return {"reconciled": False}
    block = await clients.web3.eth.block_number
    items = []
    accepted = await model_repository.accepted_sample(sample)
    for prediction in accepted:
        token, expected = prediction["tokenId"], prediction["publication"]["roundId"]
        round_id, price, *_ = await oracle.functions.latest_round(token).call(block_identifier=block)
        stored = _wei(prediction["predictedPriceWei"])
        if round_id < expected or (round_id == expected and price != stored):
            items.append({"tokenId": token, "field": "price", "chain": str(price), "database": str(stored)})
    report = {
        "at": utcnow(),
        "block": block,
        "sampled": len(accepted),
        "byField": {"price": len(items)},
        "items": items,
    }
    await chain_service.save_drift(settings, report, "oracle")
    if items:
        log.warning("oracle.publication.drift", block=block, tokens=len(items))
    return {"reconciled": True, "block": block, "sampled": len(accepted), "drift": {"price": len(items)}}
