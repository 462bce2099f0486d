"""Publication: the rounds decided `published` (app/oracle/rounds.py) pushed to the PriceOracle contract,
each exactly once.

Rounds go out ORACLE_PUBLISH_BATCH at a time in one `set_prices`, oldest first. Each round's push (the
batch's outbox key, and its round id on the contract: the round's close in milliseconds, so a later round
is higher) is written before the outbox is asked, and the ask is keyed by the batch, so a crash in
between asks again for the same transaction; the contract skips a round not newer than the token's, so
even a second transaction would change nothing. A push is `submitted` until final, then `accepted` with
its `onChainReference` (transaction, block, time), or `failed`. A round not pushed while the chain was
away is `superseded` by the token's later one, or `expired` past ORACLE_GATE_MAX_AGE_S.

The predictions a round decided `published` accepted are `submitted` from its close (while the chain is
on) and `accepted` once its push settles: with the push's `onChainReference` when it landed, without one
when it failed, was superseded or expired.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from app.chain import service as chain_service
from app.config import Settings
from app.lib.money import wei_string
from app.lib.timeutil import as_utc, utcnow
from app.oracle import publication_repository
from oracle.rounds import MAX_WEI

log = structlog.get_logger("oracle.publication")
DECIDED_PER_PASS = 5000


def _wei(value: Any) -> int:
    return int(wei_string(value) or 0)


def round_id(closes_at: datetime) -> int:
    return int(as_utc(closes_at).timestamp() * 1000)


async def push_due(clients, settings: Settings, now: datetime | None = None) -> dict[str, int]:
    """Ask the outbox to push the rounds decided `published` and not pushed yet: per token the latest
    (an earlier one waiting beside it is `superseded`), if younger than ORACLE_GATE_MAX_AGE_S (an older
    one, left while the chain was away, is `expired`: a price that old is not published as new). A
    round the contract would refuse is `failed` before it is sent: it would fail its whole batch."""
    if clients.web3 is None:
        return {"pushed": 0}
    oracle = await chain_service.contract(clients, settings, "PriceOracle")
    found = await publication_repository.undecided_publications(DECIDED_PER_PASS)
    latest = {r["tokenId"]: r for r in found}  # oldest first: the last one seen is the token's latest
    oldest = (now or utcnow()) - timedelta(seconds=settings.oracle.gate_max_age_s)
    due, dropped = [], []
    for r in found:
        if latest[r["tokenId"]] is not r:
            dropped.append((r["key"], {"status": "superseded", "roundId": round_id(r["closesAt"])}))
        elif as_utc(r["closesAt"]) < oldest:
            dropped.append((r["key"], {"status": "expired", "roundId": round_id(r["closesAt"])}))
        elif (refused := _refused(r)) is not None:  # the contract would refuse the whole batch for it
            dropped.append(
                (r["key"], {"status": "failed", "roundId": round_id(r["closesAt"]), "error": refused})
            )
        else:
            due.append(r)
    await publication_repository.start_publication(dropped)
    await publication_repository.settle_predictions([key for key, _ in dropped])
    if oracle is None:  # none deployed yet: rounds wait for it, and expire past ORACLE_GATE_MAX_AGE_S
        return {"pushed": 0, "dropped": len(dropped)}
    size = settings.oracle.publish_batch
    for start in range(0, len(due), size):
        batch = due[start : start + size]
        key = _batch_key(settings, batch)
        await publication_repository.start_publication(
            [
                (r["key"], {"status": "submitted", "roundId": round_id(r["closesAt"]), "outboxKey": key})
                for r in batch
            ]
        )
        await _ask(clients, settings, oracle, key)
    return {"pushed": len(due), "dropped": len(dropped)}


def _refused(found: dict[str, Any]) -> str | None:
    """Why the PriceOracle would refuse this round's price (its `set_prices` checks), if it would."""
    answer = found["answer"]
    price, low, high = (_wei(answer[name]) for name in ("priceWei", "lowWei", "highWei"))
    if not low <= price <= high:
        return "invalid: the price is outside its band"
    if high > MAX_WEI:
        return "invalid: an amount is above 2^96-1 wei"
    return None


def _batch_key(settings: Settings, batch: list[dict[str, Any]]) -> str:
    rounds = ",".join(sorted(r["key"] for r in batch))
    return f"prices:{settings.chain.chain_id}:{hashlib.sha256(rounds.encode()).hexdigest()[:32]}"


async def _ask(clients, settings: Settings, oracle, key: str) -> None:
    """Ask the outbox for the push of the batch `key`, from what its rounds recorded."""
    carried = await publication_repository.published_in(key)
    if not carried:  # a concurrent pass recorded every round of the batch first, in batches of its own
        return
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
    again for any push a crash left unasked. Then the predictions of every settled round follow it."""
    keys = {r["publication"]["outboxKey"] for r in await publication_repository.submitted(limit)}
    oracle = await chain_service.contract(clients, settings, "PriceOracle")
    counts = {"accepted": 0, "failed": 0, "asked": 0}
    indexed = await chain_service.indexed_block(settings)
    for key in keys:
        entry = await chain_service.outbox_entry(key)
        carried = await publication_repository.published_in(key)
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
            counts["accepted"] += await publication_repository.finish_publication(
                sorted(landed), {"status": "accepted", "onChainReference": reference}
            )
            counts["failed"] += await publication_repository.finish_publication(
                sorted({r["key"] for r in carried} - landed),
                {"status": "failed", "error": "no PriceUpdated: the chain held a newer round"},
            )
        elif entry["status"] == "failed":
            counts["failed"] += await publication_repository.finish_publication(
                sorted(r["key"] for r in carried),
                {"status": "failed", "error": entry.get("error") or "failed"},
            )
    await publication_repository.settle_predictions()  # any a crash left behind their round
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
    accepted = await publication_repository.accepted_sample(sample)
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
