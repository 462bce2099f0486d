"""How the chain side is doing: head and indexed blocks, the lag, the last reorg, the outbox, the signer.

The same figures are Prometheus gauges, refreshed when `GET /api/chain/status` is read and before every
scrape of `/metrics`, so an alert can fire on an indexer that falls behind, an outbox that fills, a
signer that runs out of ETH, or a node that stops answering.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Gauge
from web3 import AsyncWeb3

from app.chain import index_records, repository
from app.config import Settings
from app.lib.money import wei_to_eth
from app.lib.rpc import NODE_UNAVAILABLE

NODE_UP = Gauge("dynamicvault_chain_node_up", "1 when the chain's node answered the last read, else 0")
HEAD = Gauge("dynamicvault_chain_head_block", "The chain's latest block")
INDEXED = Gauge("dynamicvault_chain_indexed_block", "The last block the indexer has read")
LAG = Gauge("dynamicvault_chain_index_lag_blocks", "Blocks between the head and the indexer")
OUTBOX = Gauge("dynamicvault_chain_outbox_open", "Outbox transactions not yet final, by status", ["status"])
BALANCE = Gauge("dynamicvault_chain_signer_balance_wei", "The platform signer's balance")
REORG_DEPTH = Gauge("dynamicvault_chain_last_reorg_depth", "Blocks the last reorg rolled back")
DRIFT = Gauge(
    "dynamicvault_chain_drift_tokens",
    "Tokens the last reconciliation found different from the chain",
    ["field"],
)
OPEN_STATUSES = ("intent", "signed", "sent", "mined")


async def report(web3: AsyncWeb3, settings: Settings, signer_address: str) -> dict[str, Any]:
    chain_id = settings.chain.chain_id
    try:
        head = await web3.eth.block_number
        balance = await web3.eth.get_balance(signer_address)
    except NODE_UNAVAILABLE:
        # The other gauges keep the last figures read: this one says they are no longer current.
        NODE_UP.set(0)
        raise
    NODE_UP.set(1)
    cursor = await index_records.indexer_cursor(chain_id) or {}
    indexed = cursor.get("block")
    reorg = cursor.get("lastReorg") or None
    if reorg and "at" not in reorg:
        reorg = None
    outbox = await repository.open_by_status(chain_id, OPEN_STATUSES)
    drift = await index_records.last_drift(chain_id)
    HEAD.set(head)
    if indexed is not None:
        INDEXED.set(indexed)
        LAG.set(max(head - indexed, 0))
    for status in OPEN_STATUSES:
        OUTBOX.labels(status).set(outbox.get(status, 0))
    BALANCE.set(balance)
    REORG_DEPTH.set(reorg["depth"] if reorg else 0)
    for field, count in ((drift or {}).get("byField") or {}).items():
        DRIFT.labels(field).set(count)
    return {
        "chainId": chain_id,
        "headBlock": head,
        "indexedBlock": indexed,
        "lag": max(head - indexed, 0) if indexed is not None else None,
        "lastReorg": reorg,
        "outbox": {"open": sum(outbox.values()), "byStatus": {s: outbox.get(s, 0) for s in OPEN_STATUSES}},
        "signer": {"address": signer_address, "balanceWei": str(balance), "balance": wei_to_eth(balance)},
        "drift": drift,
    }
