"""The chain's status and metrics, and the reconciliation of MongoDB with the chain, on anvil."""

from __future__ import annotations

import dataclasses

import pytest

from app.assets.documents import Asset
from app.chain import service
from app.chain.signer import load_signer
from app.market import service as market_service
from tests.chain.conftest import ONE_ETH, onboard, rpc, settle, transact


async def test_the_status_reports_the_head_the_indexer_the_outbox_and_the_signer(
    web3, client, clients, settings, chain
):
    await onboard(client, settings, 201, chain["seller"])  # one mint asked for, not sent yet
    before = (await client.get("/api/chain/status")).json()
    # the three deployments are mined, not final (anvil finalizes 64 blocks behind); the mint waits
    assert before["outbox"] == {"open": 4, "byStatus": {"intent": 1, "signed": 0, "sent": 0, "mined": 3}}
    assert before["indexedBlock"] is None and before["lag"] is None and before["lastReorg"] is None
    await settle(clients, settings)
    body = (await client.get("/api/chain/status")).json()
    head = await web3.eth.block_number
    signer = load_signer(settings).address
    assert body["chainId"] == settings.chain.chain_id
    assert body["headBlock"] == head and body["indexedBlock"] == head and body["lag"] == 0
    assert body["outbox"] == {"open": 4, "byStatus": {"intent": 0, "signed": 0, "sent": 0, "mined": 4}}
    assert body["signer"] == {
        "address": signer,
        "balanceWei": str(await web3.eth.get_balance(signer)),
        "balance": pytest.approx(await web3.eth.get_balance(signer) / ONE_ETH),
    }
    await rpc(web3, "anvil_mine", hex(5))
    lagging = (await client.get("/api/chain/status")).json()
    assert lagging["lag"] == 5
    metrics = (await client.get("/metrics")).text
    assert f"dynamicvault_chain_head_block {float(head + 5)}" in metrics
    assert "dynamicvault_chain_index_lag_blocks 5.0" in metrics
    assert 'dynamicvault_chain_outbox_open{status="mined"} 4.0' in metrics


async def test_the_status_says_when_the_chain_is_away(clients, settings):
    off = dataclasses.replace(clients, web3=None)
    with pytest.raises(service.ChainUnavailable) as refused:
        await service.chain_status(off, settings)
    assert refused.value.status_code == 503 and refused.value.code == "chain_unavailable"


async def test_a_reorg_shows_in_the_status(web3, client, clients, settings, chain):
    await onboard(client, settings, 202, chain["seller"])
    await settle(clients, settings)
    fork = await rpc(web3, "evm_snapshot")
    await rpc(web3, "anvil_mine", hex(3))
    await settle(clients, settings, 1)
    await rpc(web3, "evm_revert", fork)
    await rpc(
        web3, "evm_increaseTime", 100
    )  # another branch: empty blocks of the same second would be the same
    await rpc(web3, "anvil_mine", hex(6))
    await settle(clients, settings, 1)
    status = (await client.get("/api/chain/status")).json()
    reorg = status["lastReorg"]
    assert reorg["depth"] == 3 and reorg["removed"] == 0
    metrics = (await client.get("/metrics")).text  # the same figures for Prometheus
    assert "dynamicvault_chain_last_reorg_depth 3.0" in metrics
    [gauge] = [
        line for line in metrics.splitlines() if line.startswith("dynamicvault_chain_signer_balance_wei ")
    ]
    balance = int(status["signer"]["balanceWei"])
    assert balance > 0 and float(gauge.split()[1]) == pytest.approx(balance)


async def test_reconciliation_finds_what_mongodb_says_differently(web3, client, clients, settings, chain):
    await onboard(client, settings, 203, chain["seller"])
    await onboard(client, settings, 204, chain["seller"])
    await settle(clients, settings)
    await transact(web3, chain["token"].functions.approve(chain["market"].address, 204), chain["seller"])
    await transact(web3, chain["market"].functions.list_token(204, ONE_ETH), chain["seller"])
    await settle(clients, settings, 1)
    clean = await market_service.reconcile_chain(clients, settings)
    assert clean["sampled"] == 2 and clean["drift"] == {"owner": 0, "listing": 0}
    # Something wrote MongoDB behind the indexer's back.
    await Asset.get_pymongo_collection().update_one(
        {"tokenId": 203}, {"$set": {"ownership.currentOwner": chain["buyer"]}}
    )
    await Asset.get_pymongo_collection().update_one(
        {"tokenId": 204}, {"$set": {"marketStatus.isListed": False}}
    )
    found = await market_service.reconcile_chain(clients, settings)
    assert found["drift"] == {"owner": 1, "listing": 1}
    drift = (await client.get("/api/chain/status")).json()["drift"]
    assert sorted((i["tokenId"], i["field"], i["chain"], i["database"]) for i in drift["items"]) == [
        (203, "owner", chain["seller"], chain["buyer"]),
        (204, "listing", str(ONE_ETH), None),
    ]
    metrics = (await client.get("/metrics")).text
    assert 'dynamicvault_chain_drift_tokens{field="owner"} 1.0' in metrics
