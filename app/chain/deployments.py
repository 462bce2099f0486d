"""Deploying the contracts, or finding them deployed already.

`ensure_deployed` deploys AssetToken, then Marketplace (which trades it), then PriceOracle (published
to by the signer), each only when no earlier deployment on this chain can be reused: one of the same
artifact and constructor arguments whose code is still at its address (a chain restarted without its
state has none). Each try is a `deploymentLogs` document, written `pending` before its transaction
is asked of the outbox (app/chain/outbox.py, keyed by the document's id), so a run cut short at any
step finds its transaction again instead of deploying twice. `make run` calls it on every start and
`scripts/deploy` on demand; the api and the workers only read the result.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from bson import ObjectId
from eth_account.signers.local import LocalAccount
from web3 import AsyncWeb3, Web3
from web3.exceptions import TransactionNotFound

from app.chain import lost_history, outbox, repository
from app.chain.artifacts import Artifact, artifact
from app.config import Settings


class DeploymentFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class Deployed:
    contract: str
    address: str
    tx_hash: str | None
    block: int | None
    reused: bool


def metadata_base_uri(settings: Settings) -> str:
    """The AssetToken's tokenURI base: the API's public metadata route, ending in `/`."""
    base = settings.chain.metadata_base_uri or f"{settings.auth.uri.rstrip('/')}/api/metadata/"
    if len(base) > 80:
        raise DeploymentFailed(f"the metadata base URI is over 80 characters: {base}")
    return base


async def ensure_deployed(web3: AsyncWeb3, settings: Settings, signer: LocalAccount) -> dict[str, Deployed]:
    """The three contracts on this chain, deployed where none can be reused."""
    chain_id = await web3.eth.chain_id
    if chain_id != settings.chain.chain_id:
        raise DeploymentFailed(
            f"the node's chain id is {chain_id}, CHAIN_CHAIN_ID is {settings.chain.chain_id}"
        )
    fee_recipient = Web3.to_checksum_address(settings.chain.fee_recipient or signer.address)
    token = await _ensure(web3, settings, signer, chain_id, "AssetToken", [metadata_base_uri(settings)])
    market = await _ensure(
        web3,
        settings,
        signer,
        chain_id,
        "Marketplace",
        [token.address, settings.chain.fee_bps, fee_recipient],
    )
    oracle = await _ensure(web3, settings, signer, chain_id, "PriceOracle", [signer.address])
    return {d.contract: d for d in (token, market, oracle)}


async def _ensure(
    web3: AsyncWeb3, settings: Settings, signer: LocalAccount, chain_id: int, name: str, args: list[Any]
) -> Deployed:
    built = artifact(name)
    wanted = [str(arg) for arg in args]
    last = await repository.latest_deployment(name, chain_id)
    same = last is not None and last["artifactHash"] == built.artifact_hash and last.get("args") == wanted
    if same and last["status"] == "pending":  # a run cut short: the same transaction, asked for again
        await _ask(chain_id, signer, name, last["_id"], last["data"])
        return await _finish(web3, settings, signer, built, last["_id"])
    if last is not None and last["status"] == "deployed":
        code = await web3.eth.get_code(Web3.to_checksum_address(last["address"]))
        if same and built.runs_at(code):
            return Deployed(name, last["address"], last.get("txHash"), last.get("block"), reused=True)
        if not code:
            await _lost(web3, settings, signer, last)  # whatever is deployed next, its nonce comes after
    data = web3.eth.contract(abi=built.abi, bytecode=built.bytecode).constructor(*args).data_in_transaction
    log_id = await repository.record_deployment(
        {
            "contract": name,
            "chainId": chain_id,
            "genesis": await _genesis(web3),
            "status": "pending",
            "artifactHash": built.artifact_hash,
            "args": wanted,
            "deployer": signer.address,
            "address": None,
            "txHash": None,
            "block": None,
            "error": None,
            "data": data,  # the creation transaction's input: asked for again, it is the same one
        }
    )
    await _ask(chain_id, signer, name, log_id, data)
    found = await _finish(web3, settings, signer, built, log_id)
    return Deployed(found.contract, found.address, found.tx_hash, found.block, reused=False)


def _outbox_key(log_id: ObjectId) -> str:
    return f"deploy:{log_id}"


async def _ask(chain_id: int, signer: LocalAccount, name: str, log_id: ObjectId, data: str) -> None:
    """Ask the outbox for the deployment (once per deployment log, however often asked)."""
    await outbox.submit(
        key=_outbox_key(log_id),
        kind="deploy",
        chain_id=chain_id,
        sender=signer.address,
        to=None,
        data=data,
        ref={"contract": name, "deploymentId": str(log_id)},
    )


async def _lost(web3: AsyncWeb3, settings: Settings, signer: LocalAccount, last: dict[str, Any]) -> None:
    """No code where a contract was deployed: deployed again only when the chain has lost its deployment.
    That is so on a chain with another block 0 (a new one), or when the node has reached the
    deployment's block without a receipt of it there, or (outside production) when a node that says it
    is not syncing is below that block (a development chain restarted from an older state). A node
    behind would catch up, and one with the deployment's receipt but no code answers wrongly: both fail
    the deployment. Outside production, the outbox then gives back the nonces of what the chain lost."""
    head, block, name = await web3.eth.block_number, last.get("block") or 0, last["contract"]
    if last.get("genesis") not in (None, await _genesis(web3)):
        pass  # another chain: nothing of the old one is on it
    elif head >= block:
        receipt = None
        with contextlib.suppress(TransactionNotFound, ValueError, TypeError):
            receipt = await web3.eth.get_transaction_receipt(last["txHash"])
        if receipt is not None and receipt["blockNumber"] == block:
            raise DeploymentFailed(f"{name}: its deployment is on the chain, but no code at its address")
    elif settings.is_production or await web3.eth.syncing:
        raise DeploymentFailed(
            f"{name} was deployed at block {block} and the node is at block {head}: a node behind; "
            f"run again once it has passed block {block}"
        )
    if not settings.is_production:  # a production chain loses no final block: nothing is released there
        await lost_history.release_lost(web3, settings, signer)


async def _genesis(web3: AsyncWeb3) -> str:
    return Web3.to_hex((await web3.eth.get_block(0))["hash"])


async def _runs_at(web3: AsyncWeb3, built: Artifact, address: str) -> bool:
    return built.runs_at(await web3.eth.get_code(Web3.to_checksum_address(address)))


async def _finish(
    web3: AsyncWeb3, settings: Settings, signer: LocalAccount, built: Artifact, log_id: ObjectId
) -> Deployed:
    """Wait for a deployment's transaction to be mined (a run cut short finds it again here), and
    record where the contract is."""
    key = _outbox_key(log_id)
    entry = await outbox.wait_mined(web3, settings, signer, key, timeout_s=settings.chain.deploy_timeout_s)
    receipt = entry.get("receipt")
    if entry.get("status") == "failed" or (receipt is not None and receipt["status"] != 1):
        error = entry.get("error") or "transaction reverted"
        await repository.update_deployment(log_id, status="failed", error=error, txHash=entry.get("txHash"))
        raise DeploymentFailed(f"{built.name}: {error}")
    if receipt is None:
        await repository.update_deployment(log_id, txHash=entry.get("txHash"))
        raise DeploymentFailed(
            f"{built.name}: not mined within {settings.chain.deploy_timeout_s:g} s; run again"
        )
    address, block, tx_hash = receipt["contractAddress"], receipt["blockNumber"], receipt["transactionHash"]
    if not await _runs_at(web3, built, address):
        await repository.update_deployment(
            log_id, status="failed", error="no code at the address", txHash=tx_hash
        )
        raise DeploymentFailed(f"{built.name}: no code at {address} after its deployment")
    await repository.update_deployment(
        log_id, status="deployed", address=address, block=block, txHash=tx_hash
    )
    return Deployed(built.name, address, tx_hash, block, reused=True)
