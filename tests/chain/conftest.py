"""The chain tests' anvil: each test starts from the chain as it was and leaves it so."""

from __future__ import annotations

import asyncio
import sys

import pytest

from app.chain import service
from app.chain.artifacts import artifact
from app.lib.embedded import ROOT
from app.market import service as market_service
from scripts.benchkit import process_env
from tests import factories


@pytest.fixture
async def web3(client, clients):
    if clients.web3 is None:
        pytest.skip("no anvil: install the npm packages (make test does)")
    snapshot = await clients.web3.provider.make_request("evm_snapshot", [])
    yield clients.web3
    await clients.web3.provider.make_request("anvil_dropAllTransactions", [])  # none queued for the next
    await clients.web3.provider.make_request("evm_setAutomine", [True])
    await clients.web3.provider.make_request("evm_revert", [snapshot["result"]])


async def rpc(web3, method: str, *params):
    answer = await web3.provider.make_request(method, list(params))
    assert "error" not in answer, answer
    return answer.get("result")


ONE_ETH = 10**18


@pytest.fixture
async def chain(web3, clients, settings):
    deployed = await service.ensure_deployed(clients, settings)

    def at(name):
        return web3.eth.contract(address=deployed[name].address, abi=artifact(name).abi)

    accounts = await web3.eth.accounts
    return {
        "token": at("AssetToken"),
        "market": at("Marketplace"),
        "seller": accounts[1],
        "buyer": accounts[2],
    }


async def settle(clients, settings, passes: int = 3) -> dict:
    """Let the outbox send and the indexer read, as the worker's crons do."""
    result = {}
    for _ in range(passes):
        await service.process_outbox(clients, settings)
        result = await market_service.index_chain(clients, settings)
        await market_service.announce_chain(clients, settings)
    return result


async def minted_and_approved(web3, client, clients, settings, chain, token_id: int) -> str:
    """A token minted to the seller (indexed and announced), the marketplace approved for it: the
    snapshot taken then, to fork the chain from."""
    await onboard(client, settings, token_id, chain["seller"])
    await settle(clients, settings)
    await transact(web3, chain["token"].functions.approve(chain["market"].address, token_id), chain["seller"])
    return await rpc(web3, "evm_snapshot")


async def onboard(client, settings, token_id: int, owner: str, **extra) -> dict:
    admin = await factories.login(settings, roles=("admin",))
    body = {"tokenId": token_id, "name": f"Asset {token_id}", "assetType": "Art", "owner": owner, **extra}
    created = await client.post("/api/assets", json=body, headers=admin.headers)
    assert created.status_code == 201, created.text
    return created.json()


async def transact(web3, call, sender: str, value: int = 0):
    tx_hash = await call.transact({"from": sender, "value": value})
    receipt = await web3.eth.wait_for_transaction_receipt(tx_hash)
    assert receipt["status"] == 1
    return receipt


async def detail(client, token_id: int) -> dict:
    return (await client.get(f"/api/assets/{token_id}")).json()


async def transactions(client, token_id: int) -> list[dict]:
    return (await client.get("/api/transactions", params={"tokenId": token_id})).json()["items"]


async def outbox_process(settings, passes: int, kill_at: str | None = None) -> int:
    """Run `passes` outbox passes in a worker process of its own (tests/chain/outbox_process.py), killed
    with SIGKILL at `kill_at` if given: its exit status."""
    env = process_env(settings, CHAIN_RPC_URL=settings.chain.rpc_url)
    command = [
        sys.executable,
        "-m",
        "tests.chain.outbox_process",
        str(passes),
        *([kill_at] if kill_at else []),
    ]
    process = await asyncio.create_subprocess_exec(*command, cwd=ROOT, env=env)
    try:
        return await asyncio.wait_for(process.wait(), timeout=120)
    finally:  # never left behind to send on the shared anvil during later tests
        if process.returncode is None:
            process.kill()
            await process.wait()
