"""Nonces a chain that lost its history can never mine (a development chain restarted from an older
state), given back so that the signer's next transactions are signed from the chain's own count."""

from __future__ import annotations

from typing import Any

import structlog
from eth_account.signers.local import LocalAccount
from web3 import AsyncWeb3

from app.chain import outbox, repository
from app.config import Settings

log = structlog.get_logger("chain.outbox")


async def release_lost(web3: AsyncWeb3, settings: Settings, signer: LocalAccount) -> int:
    """After the chain lost history it had (a development chain restarted from an older state), the
    signer's entries at nonces the chain has not reached, none of them waiting in the node's pool, can
    never be mined: each is `failed` as lost and gives its nonce back, so the next transactions are
    signed from the chain's own count rather than after a gap nothing fills. They are not sent again:
    the contracts they called may be gone with it."""
    latest = await web3.eth.get_transaction_count(signer.address, "latest")
    if await web3.eth.get_transaction_count(signer.address, "pending") != latest:
        return 0  # some of the signer's transactions wait in the pool: those nonces are not lost
    reason = f"lost: the chain's history no longer reaches nonce {latest} or above"
    holding = await repository.holding_nonces(settings.chain.chain_id, signer.address, latest)
    lost = []
    for entry in holding:  # an attempt the node has a receipt of is not lost, whatever its nonce says
        if not await _any_receipt(web3, entry):
            lost.append(entry)
    released = await repository.release_nonces(lost, reason)
    if released:
        log.error("chain.outbox.history_lost", nonce=latest, released=released)
    return released


async def _any_receipt(web3: AsyncWeb3, entry: dict[str, Any]) -> bool:
    for attempt in reversed(entry.get("attempts") or ()):  # the newest is the likeliest mined
        if await outbox.receipt_of(web3, attempt["txHash"]) is not None:
            return True
    return False
