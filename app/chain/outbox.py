"""The outbox: every transaction the platform sends, exactly once, whatever crashes on the way.

An entry moves intent -> signed -> sent -> mined -> confirmed (or failed), one compare-and-set at a
time, so any number of processes may run `process` at once:

- *Signing* estimates gas (an intent that would revert fails here, before it holds a nonce), prices
  the fees from `eth_feeHistory` (app/chain/fees.py) and takes the next nonce. The nonce ledger is the
  outbox itself: a unique index on (chain, sender, nonce) lets one entry hold a nonce, and the next is
  one past the highest held, or the chain's own count when transactions sent elsewhere went past it.
  A nonce is taken in the same write that stores the signed transaction, so none is skipped.
- *Sending* sends the latest attempt. Every attempt is stored before it is sent, so a crash between
  the two sends the same bytes again (the node answers "already known" or "nonce too low").
- *Following* looks for a receipt of any attempt. None after `CHAIN_STUCK_BLOCKS` blocks: the entry
  is replaced at the same nonce with both fees raised by at least `CHAIN_FEE_BUMP_PERCENT`. Its nonce
  used by a transaction that is none of its attempts: it goes back to intent for a new nonce.
- *Confirming* waits for the block to be final (the node's `finalized` tag, or CHAIN_FINALITY_DEPTH
  blocks), checking that the receipt is still in the canonical chain; a reorg that dropped it sends
  it again. A final receipt that reverted is `failed`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from eth_account.signers.local import LocalAccount
from pymongo.errors import DuplicateKeyError
from web3 import AsyncWeb3, Web3
from web3.exceptions import ContractLogicError, TransactionNotFound, Web3Exception, Web3RPCError

from app.chain import fees as fee_rules
from app.chain import repository
from app.config import Settings
from app.lib.rpc import NODE_UNAVAILABLE, describe
from app.lib.timeutil import utcnow

log = structlog.get_logger("chain.outbox")

# Over the estimate: the state moves between estimate and inclusion (a storage word the estimate saw
# unchanged, written in the same second, changes in the next block: 200 prices pushed twice in one
# second cost 24% more than estimated). Gas not used is not paid for.
GAS_MARGIN_PERCENT = 50
GAS_MARGIN = 25_000
SENT_ALREADY = ("already known", "nonce too low", "known transaction", "already imported")
# A refusal of the price, which a higher price cures ("exceeds the configured cap" is one it worsens).
PRICE_REFUSALS = ("base fee", "underpriced", "fee too low", "gas price too low", "tip too low")


async def submit(
    *,
    key: str,
    kind: str,
    chain_id: int,
    sender: str,
    to: str | None,
    data: str,
    value: int = 0,
    ref: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Ask for a transaction (an intent); the entry already asked for under `key` if there is one."""
    return await repository.add_intent(
        {
            "key": key,
            "kind": kind,
            "chainId": chain_id,
            "sender": sender,
            "to": to,
            "data": data,
            "value": str(value),
            "status": "intent",
            "attempts": [],
            "txHash": None,
            "receipt": None,
            "error": None,
            "ref": ref or {},
        }
    )


async def process(
    web3: AsyncWeb3, settings: Settings, signer: LocalAccount, *, limit: int = 100
) -> dict[str, int]:
    """One pass over the signer's open entries on this chain: sign, send, follow, confirm. A node that
    stops answering ends the pass where it is, as a crash would (every step is a compare-and-set): the
    next pass goes on from there."""
    counts = {"signed": 0, "sent": 0, "mined": 0, "replaced": 0, "requeued": 0, "confirmed": 0, "failed": 0}
    try:
        await _pass(web3, settings, signer, limit, counts)
    except NODE_UNAVAILABLE as exc:
        log.warning("chain.outbox.node_unavailable", error=describe(exc))
    if any(counts.values()):
        log.info("chain.outbox.pass", **counts)
    return counts


async def _pass(
    web3: AsyncWeb3, settings: Settings, signer: LocalAccount, limit: int, counts: dict[str, int]
) -> None:
    chain_id = settings.chain.chain_id
    for entry in await repository.entries("intent", chain_id, signer.address, limit):
        outcome = await _sign(web3, settings, signer, entry)
        if outcome:
            counts[outcome] += 1
    head = await web3.eth.block_number
    for entry in await repository.entries("signed", chain_id, signer.address, limit):
        if await web3.eth.get_transaction_count(signer.address, "latest") > entry["nonce"]:
            # Its nonce is used (by it, sent before a crash, or by another): following it settles which.
            await repository.mark_sent(entry["_id"], entry["txHash"], head)
            continue
        outcome = await _send(web3, entry, entry["attempts"][-1]["raw"], head)
        if outcome == "sent":
            counts["sent"] += 1
        elif outcome == "refused":
            refused = await repository.find_entry(entry["key"])
            if refused is not None and refused["status"] == "signed":
                await _resign(web3, settings, signer, refused)
    for entry in await repository.entries("sent", chain_id, signer.address, limit):
        outcome = await _follow(web3, settings, signer, entry, head)
        if outcome:
            counts[outcome] += 1
    final = await final_block(web3, settings, head)
    for entry in await repository.entries("mined", chain_id, signer.address, limit):
        outcome = await _confirm(web3, entry, final)
        if outcome:
            counts[outcome] += 1


async def final_block(web3: AsyncWeb3, settings: Settings, head: int) -> int:
    """The highest block taken as final: the node's `finalized` block, or a fixed depth below the head."""
    if settings.chain.finality_depth is not None:
        return head - settings.chain.finality_depth
    try:
        return int((await web3.eth.get_block("finalized"))["number"])
    except (Web3Exception, ValueError, KeyError):
        return head - settings.chain.confirmations


async def suggested_fees(web3: AsyncWeb3, settings: Settings) -> fee_rules.Fees:
    history = await web3.eth.fee_history(settings.chain.fee_history_blocks, "latest", [50])
    fees = fee_rules.suggest(
        history["baseFeePerGas"], history.get("reward") or [], settings.chain.min_tip_wei
    )
    return fee_rules.capped(fees, settings.chain.max_fee_per_gas)


def _attempt(signer: LocalAccount, transaction: dict[str, Any], fees: fee_rules.Fees) -> dict[str, Any]:
    signed = signer.sign_transaction(
        {
            **transaction,
            "maxFeePerGas": fees.max_fee_per_gas,
            "maxPriorityFeePerGas": fees.max_priority_fee_per_gas,
        }
    )
    return {
        "txHash": Web3.to_hex(signed.hash),
        "raw": Web3.to_hex(signed.raw_transaction),
        "maxFeePerGas": fees.max_fee_per_gas,
        "maxPriorityFeePerGas": fees.max_priority_fee_per_gas,
        "signedAt": utcnow(),
    }


def _transaction(entry: dict[str, Any], nonce: int, gas: int) -> dict[str, Any]:
    transaction = {
        "type": 2,
        "chainId": entry["chainId"],
        "nonce": nonce,
        "gas": gas,
        "value": int(entry["value"]),
        "data": entry["data"],
    }
    if entry.get("to"):
        transaction["to"] = Web3.to_checksum_address(entry["to"])
    return transaction


async def _sign(
    web3: AsyncWeb3, settings: Settings, signer: LocalAccount, entry: dict[str, Any]
) -> str | None:
    call = {"from": signer.address, "data": entry["data"], "value": int(entry["value"])}
    if entry.get("to"):
        call["to"] = Web3.to_checksum_address(entry["to"])
    try:
        gas = await web3.eth.estimate_gas(call)
    except ContractLogicError as exc:
        moved = await repository.move(
            entry["_id"], "intent", "failed", error=f"would revert: {exc.message}"[:500]
        )
        return "failed" if moved else None
    except NODE_UNAVAILABLE as exc:  # the node is away: the intent waits for the next pass
        log.warning("chain.outbox.estimate_failed", key=entry["key"], error=describe(exc))
        return None
    gas = gas * (100 + GAS_MARGIN_PERCENT) // 100 + GAS_MARGIN
    if gas > settings.chain.max_gas:  # what no block would take, or the signer should not pay for
        error = f"gas {gas} is over CHAIN_MAX_GAS ({settings.chain.max_gas})"
        return "failed" if await repository.move(entry["_id"], "intent", "failed", error=error) else None
    fees = await suggested_fees(web3, settings)
    for _ in range(16):  # another process may take the nonce first: then the next one
        held = await repository.highest_nonce(entry["chainId"], signer.address)
        counted = await web3.eth.get_transaction_count(signer.address, "pending")
        nonce = max(counted, -1 if held is None else held + 1)
        attempt = _attempt(signer, _transaction(entry, nonce, gas), fees)
        try:
            taken = await repository.take_nonce(
                entry["_id"],
                nonce,
                {"gas": gas, "attempts": [attempt], "txHash": attempt["txHash"], "error": None},
            )
        except DuplicateKeyError:
            continue
        return "signed" if taken else None
    return None


async def _send(web3: AsyncWeb3, entry: dict[str, Any], raw: str, head: int) -> str:
    """Send one attempt: `sent`, `refused` (the node said no, and why is kept), or `unavailable`."""
    try:
        await web3.eth.send_raw_transaction(raw)
    except Web3RPCError as exc:
        reason = str(exc)
        if not any(words in reason.lower() for words in SENT_ALREADY):
            log.warning(
                "chain.outbox.send_refused", key=entry["key"], nonce=entry.get("nonce"), error=reason[:300]
            )
            await repository.send_refused(entry["_id"], reason[:500], priced=_price_refusal(reason))
            return "refused"
    except NODE_UNAVAILABLE as exc:
        log.warning("chain.outbox.send_failed", key=entry["key"], error=describe(exc))
        return "unavailable"
    if entry["status"] == "signed":  # only the attempt read: a stale process cannot mark a newer one sent
        return "sent" if await repository.mark_sent(entry["_id"], entry["txHash"], head) else "unavailable"
    return "sent"


def _price_refusal(reason: str) -> bool:
    lowered = reason.lower()
    return "exceeds the configured cap" not in lowered and any(words in lowered for words in PRICE_REFUSALS)


def _replaceable(previous: fee_rules.Fees, fees: fee_rules.Fees) -> bool:
    """Whether nodes take `fees` in place of `previous` at the same nonce: both at least 10% higher."""
    return (
        fees.max_fee_per_gas * 10 >= previous.max_fee_per_gas * 11
        and fees.max_priority_fee_per_gas * 10 >= previous.max_priority_fee_per_gas * 11
    )


def _bumped(settings: Settings, previous: fee_rules.Fees, fresh: fee_rules.Fees) -> fee_rules.Fees:
    bumped = fee_rules.bump(previous, fresh, settings.chain.fee_bump_percent)
    return fee_rules.capped(bumped, settings.chain.max_fee_per_gas)


async def _resign(web3: AsyncWeb3, settings: Settings, signer: LocalAccount, entry: dict[str, Any]) -> None:
    """A signed entry the node refuses: priced again at its nonce when its price was refused; refused
    CHAIN_MAX_SEND_ERRORS times for anything else, replaced by a cancel (a self-transfer of nothing)
    that frees its nonce for the entries behind it. A nonce is never left empty."""
    last = entry["attempts"][-1]
    previous = fee_rules.Fees(last["maxFeePerGas"], last["maxPriorityFeePerGas"])
    fresh = await suggested_fees(web3, settings)
    refusal = entry.get("refusal") or ""
    if entry.get("sendErrors", 0) >= settings.chain.max_send_errors and not last.get("cancel"):
        cancel = {
            "type": 2,
            "chainId": entry["chainId"],
            "nonce": entry["nonce"],
            "gas": 21_000,
            "value": 0,
            "to": signer.address,
            "data": "0x",
        }
        fees = _bumped(settings, previous, fresh)
        attempt = {**_attempt(signer, cancel, fees), "cancel": True}
        await repository.add_attempt(entry["_id"], entry["txHash"], attempt, status="signed", sendErrors=0)
        log.warning("chain.outbox.cancelled", key=entry["key"], nonce=entry["nonce"], error=refusal[:300])
    elif _price_refusal(refusal) and fresh.max_fee_per_gas > previous.max_fee_per_gas:
        fees = _bumped(settings, previous, fresh)
        if not _replaceable(previous, fees):
            return
        attempt = _attempt(signer, _transaction(entry, entry["nonce"], entry["gas"]), fees)
        await repository.add_attempt(entry["_id"], entry["txHash"], attempt, status="signed")


async def receipt_of(web3: AsyncWeb3, tx_hash: str) -> dict[str, Any] | None:
    try:
        found = await web3.eth.get_transaction_receipt(tx_hash)
    except TransactionNotFound:
        return None
    return {
        "transactionHash": Web3.to_hex(found["transactionHash"]),
        "blockNumber": int(found["blockNumber"]),
        "blockHash": Web3.to_hex(found["blockHash"]),
        "status": int(found["status"]),
        "gasUsed": int(found["gasUsed"]),
        "effectiveGasPrice": int(found.get("effectiveGasPrice") or 0),
        "contractAddress": found.get("contractAddress"),
    }


async def _follow(
    web3: AsyncWeb3, settings: Settings, signer: LocalAccount, entry: dict[str, Any], head: int
) -> str | None:
    # The counts first, then the receipts: a receipt that lands in between is then still seen.
    used = await web3.eth.get_transaction_count(signer.address, "latest")
    final = max(await final_block(web3, settings, head), 0)
    used_final = await web3.eth.get_transaction_count(signer.address, final)
    for attempt in reversed(entry["attempts"]):
        receipt = await receipt_of(web3, attempt["txHash"])
        if receipt is None:
            continue
        if attempt.get("cancel"):  # final, it fails the entry (app/chain/outbox.py _confirm)
            moved = await repository.move(
                entry["_id"],
                "sent",
                "mined",
                receipt=receipt,
                txHash=receipt["transactionHash"],
                cancelled=True,
            )
            return "mined" if moved else None
        moved = await repository.move(
            entry["_id"], "sent", "mined", receipt=receipt, txHash=receipt["transactionHash"]
        )
        return "mined" if moved else None
    if used_final > entry["nonce"]:
        # Final blocks used its nonce for a transaction that is none of its attempts: none of them can be
        # mined any more, so it is asked for again, with a new nonce.
        log.warning("chain.outbox.nonce_taken", key=entry["key"], nonce=entry["nonce"])
        reason = f"nonce {entry['nonce']} was used by another transaction"
        return "requeued" if await repository.requeue(entry, reason) else None
    if used != entry["nonce"] or head - (entry.get("sentBlock") or head) < settings.chain.stuck_blocks:
        return None  # behind an earlier nonce it waits; only the next nonce can be stuck
    if len(entry["attempts"]) >= settings.chain.max_attempts:
        log.error(
            "chain.outbox.stuck", key=entry["key"], nonce=entry["nonce"], attempts=len(entry["attempts"])
        )
        return None
    last = entry["attempts"][-1]
    previous = fee_rules.Fees(last["maxFeePerGas"], last["maxPriorityFeePerGas"])
    fees = _bumped(settings, previous, await suggested_fees(web3, settings))
    if not _replaceable(previous, fees):  # held down by CHAIN_MAX_FEE_PER_GAS: nodes would refuse it
        log.error("chain.outbox.fee_ceiling", key=entry["key"], nonce=entry["nonce"])
        return None
    if last.get("cancel"):
        transaction = {
            **_transaction(entry, entry["nonce"], 21_000),
            "to": signer.address,
            "data": "0x",
            "value": 0,
        }
        attempt = {**_attempt(signer, transaction, fees), "cancel": True}
    else:
        attempt = _attempt(signer, _transaction(entry, entry["nonce"], entry["gas"]), fees)
    if not await repository.add_attempt(entry["_id"], entry["txHash"], attempt, sentBlock=head):
        return None
    log.info("chain.outbox.replaced", key=entry["key"], nonce=entry["nonce"], tx=attempt["txHash"])
    await _send(web3, {**entry, "status": "sent"}, attempt["raw"], head)
    return "replaced"


async def _confirm(web3: AsyncWeb3, entry: dict[str, Any], final: int) -> str | None:
    kept = entry["receipt"]
    now = await receipt_of(web3, entry["txHash"])
    if now is None:  # a reorg dropped its block: the same transaction is sent again
        log.warning("chain.outbox.reorged", key=entry["key"], tx=entry["txHash"])
        await repository.move(entry["_id"], "mined", "signed", receipt=None)
        return None
    if now["blockHash"] != kept["blockHash"]:  # mined again in another block after a reorg
        await repository.move(entry["_id"], "mined", "mined", receipt=now)
        return None
    if kept["blockNumber"] > final:
        return None
    if entry.get("cancelled"):
        reason = f"cancelled, the node refused it: {(entry.get('refusal') or '')[:200]}"
        moved = await repository.move(entry["_id"], "mined", "failed", error=reason, confirmedAt=utcnow())
        return "failed" if moved else None
    if kept["status"] != 1:
        moved = await repository.move(entry["_id"], "mined", "failed", error="reverted", confirmedAt=utcnow())
        return "failed" if moved else None
    moved = await repository.move(entry["_id"], "mined", "confirmed", confirmedAt=utcnow())
    return "confirmed" if moved else None


async def wait_mined(
    web3: AsyncWeb3, settings: Settings, signer: LocalAccount, key: str, *, timeout_s: float
) -> dict[str, Any]:
    """Drive the outbox until the entry `key` is mined (or later): for scripts that need the receipt now."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        await process(web3, settings, signer)
        entry = await repository.find_entry(key)
        if entry is None or entry["status"] in {"mined", "confirmed", "failed"}:
            return entry or {}
        if asyncio.get_running_loop().time() > deadline:
            return entry
        await asyncio.sleep(0.2)
