"""Publication: the rounds decided `published` (app/oracle/rounds.py) pushed to the PriceOracle contract,
each exactly once.

Rounds go out ORACLE_PUBLISH_BATCH at a time in one `set_prices`, oldest first. Each round's push (the
batch's outbox key, and its round id on the contract: the round's close in milliseconds, so a later round
is higher) is written before the outbox is asked, and the ask is keyed by the batch, so a crash in
between asks again for the same transaction; the contract skips a round not newer than the token's, so
even a second transaction would change nothing. A push is `submitted` until final, then `accepted` with
its `onChainReference` (transaction, block, time), which the round's accepted participants carry too,
or `failed`.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import structlog

from app.chain import service as chain_service
from app.config import Settings
from app.lib.money import wei_string
from app.lib.timeutil import as_utc, utcnow
from app.oracle import round_repository

log = structlog.get_logger("oracle.publication")
DECIDED_PER_PASS = 5000


def _wei(value: Any) -> int:
    return int(wei_string(value) or 0)


def round_id(closes_at: datetime) -> int:
    return int(as_utc(closes_at).timestamp() * 1000)


async def push_due(clients, settings: Settings) -> dict[str, int]:
    """Ask the outbox to push the rounds decided `published` and not pushed yet."""
    oracle = await chain_service.contract(clients, settings, "PriceOracle")
    if oracle is None:
        return {"pushed": 0}
    due = await round_repository.undecided_publications(DECIDED_PER_PASS)
    size = settings.oracle.publish_batch
    for start in range(0, len(due), size):
        batch = due[start : start + size]
        key = _batch_key(settings, batch)
        await round_repository.start_publication(
            [
                (r["key"], {"status": "submitted", "roundId": round_id(r["closesAt"]), "outboxKey": key})
                for r in batch
            ]
        )
        await _ask(clients, settings, oracle, key)
    return {"pushed": len(due)}


def _batch_key(settings: Settings, batch: list[dict[str, Any]]) -> str:
    rounds = ",".join(sorted(r["key"] for r in batch))
    return f"prices:{settings.chain.chain_id}:{hashlib.sha256(rounds.encode()).hexdigest()[:32]}"


async def _ask(clients, settings: Settings, oracle, key: str) -> None:
    """Ask the outbox for the push of the batch `key`, from what its rounds recorded."""
    carried = await round_repository.published_in(key)
    prices = [
        (
            r["tokenId"],
            r["publication"]["roundId"],
            _wei(r["answer"]["priceWei"]),
            _wei(r["answer"]["lowWei"]),
            _wei(r["answer"]["highWei"]),
            min(round(r["answer"]["confidence"] * 100), 10_000),
        )
        for r in sorted(carried, key=lambda r: r["tokenId"])
    ]
    await chain_service.submit_call(
        settings, key=key, kind="set_prices", contract=oracle, function="set_prices", args=[prices]
    )


async def confirm(clients, settings: Settings, limit: int = 1000) -> dict[str, int]:
    """Settle the pushes that are final (or failed): a round is accepted when the indexer has read the
    contract's PriceUpdated for it, failed when the push failed or the chain held a newer round; ask
    again for any push a crash left unasked."""
    keys = {r["publication"]["outboxKey"] for r in await round_repository.submitted(limit)}
    oracle = await chain_service.contract(clients, settings, "PriceOracle")
    counts = {"accepted": 0, "failed": 0, "asked": 0}
    indexed = await chain_service.indexed_block(settings)
    for key in keys:
        entry = await chain_service.outbox_entry(key)
        carried = await round_repository.published_in(key)
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
            landed = {r["key"] for r in carried if (r["tokenId"], r["publication"]["roundId"]) in updated}
            counts["accepted"] += await round_repository.finish_publication(
                sorted(landed), {"status": "accepted", "onChainReference": reference}
            )
            counts["failed"] += await round_repository.finish_publication(
                sorted({r["key"] for r in carried} - landed),
                {"status": "failed", "error": "no PriceUpdated: the chain held a newer round"},
            )
        elif entry["status"] == "failed":
            counts["failed"] += await round_repository.finish_publication(
                sorted(r["key"] for r in carried),
                {"status": "failed", "error": entry.get("error") or "failed"},
            )
    return counts


def block_time(block: Any) -> datetime:
    return datetime.fromtimestamp(int(block["timestamp"]), UTC)


async def reconcile(clients, settings: Settings, sample: int = 50) -> dict[str, Any]:
    """Compare the PriceOracle with the last accepted push of a sample of tokens: a token whose round on
    the chain is older than the one accepted, or whose price differs at that round, is drift (`price`)."""
    oracle = await chain_service.contract(clients, settings, "PriceOracle")
    if oracle is None:
        return {"reconciled": False}
    block = await clients.web3.eth.block_number
    items = []
    accepted = await round_repository.accepted_sample(sample)
    for found in accepted:
        token, expected = found["tokenId"], found["publication"]["roundId"]
        chain_round, price, *_ = await oracle.functions.latest_round(token).call(block_identifier=block)
        stored = _wei(found["answer"]["priceWei"])
        if chain_round < expected or (chain_round == expected and price != stored):
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
