"""Deploying the contracts, or finding them deployed already.

`ensure_deployed` deploys AssetToken, then Marketplace (which trades it), then PriceOracle (published
to by the signer), each only when no earlier deployment on this chain can be reused: one of the same
artifact whose code is still at its address (a chain restarted without its state has none). Its
constructor arguments come from settings, and a setting changed since does not replace a live contract:
tokens minted on it and listings made on it are followed only while it stays the deployment of record.
It is reused with the values it was deployed with, and a warning says which differ. Only what a
contract cannot work without replaces it: a Marketplace trades the one AssetToken it was deployed with,
so a new AssetToken brings a new Marketplace. New code replaces a live contract outside production; in
production only an explicit redeploy (`redeploy`, `scripts/deploy --redeploy NAME`) does.

Each try is a `deploymentLogs` document, written `pending` before its transaction is asked of the
outbox (app/chain/outbox.py, keyed by the document's id), so a run cut short at any step finds its
transaction again instead of deploying twice. `make run` calls it on every start and `scripts/deploy`
on demand; the api and the workers only read the result.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import structlog
from bson import ObjectId
from eth_account.signers.local import LocalAccount
from web3 import AsyncWeb3, Web3
from web3.exceptions import TransactionNotFound

from app.chain import lost_history, outbox, repository
from app.chain.artifacts import CONTRACTS, Artifact, artifact
from app.config import Settings

log = structlog.get_logger("chain.deploy")

# How an operator gives a live contract a setting changed since its deployment, if it can be given.
_SETTERS = {
    "AssetToken": "none: the base URI is fixed at deployment (a redeploy leaves its tokens unfollowed)",
    "Marketplace": "Marketplace.set_fee(fee_bps, fee_recipient), called by its owner",
    "PriceOracle": "PriceOracle.set_publisher(publisher), called by its owner",
}


class DeploymentFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class Deployed:
    contract: str
    address: str
    tx_hash: str | None
    block: int | None
    reused: bool
    # Constructor arguments whose settings changed since the deployment: the contract keeps its own.
    kept_arguments: tuple[str, ...] = ()


def metadata_base_uri(settings: Settings) -> str:
    """The AssetToken's tokenURI base: the API's public metadata route, ending in `/`."""
    base = settings.chain.metadata_base_uri or f"{settings.auth.uri.rstrip('/')}/api/metadata/"
    if len(base) > 80:
        raise DeploymentFailed(f"the metadata base URI is over 80 characters: {base}")
    return base


async def ensure_deployed(
    web3: AsyncWeb3, settings: Settings, signer: LocalAccount, redeploy: Collection[str] = ()
) -> dict[str, Deployed]:
    """The three contracts on this chain, deployed where none can be reused, and those in `redeploy`
    deployed afresh (a Marketplace too when its AssetToken is new)."""
    unknown = sorted(set(redeploy) - set(CONTRACTS))
    if unknown:
        raise DeploymentFailed(
            f"no contract named {', '.join(unknown)}: the contracts are {', '.join(CONTRACTS)}"
        )
    chain_id = await web3.eth.chain_id
    if chain_id != settings.chain.chain_id:
        raise DeploymentFailed(
            f"the node's chain id is {chain_id}, CHAIN_CHAIN_ID is {settings.chain.chain_id}"
        )
    fee_recipient = Web3.to_checksum_address(settings.chain.fee_recipient or signer.address)

    async def ensure(name: str, args: list[Any], bound: tuple[int, ...] = ()) -> Deployed:
        return await _ensure(
            web3, settings, signer, chain_id, name, args, redeploy=name in redeploy, bound=bound
        )

    token = await ensure("AssetToken", [metadata_base_uri(settings)])
    # A Marketplace trades the one AssetToken it was deployed with (argument 0): only a Marketplace of
    # the current AssetToken is reused, so a new AssetToken brings a new Marketplace.
    market = await ensure("Marketplace", [token.address, settings.chain.fee_bps, fee_recipient], bound=(0,))
    oracle = await ensure("PriceOracle", [signer.address])
    return {d.contract: d for d in (token, market, oracle)}


async def _ensure(
    web3: AsyncWeb3,
    settings: Settings,
    signer: LocalAccount,
    chain_id: int,
    name: str,
    args: list[Any],
    *,
    redeploy: bool = False,
    bound: tuple[int, ...] = (),
) -> Deployed:
    """One contract: the deployment of record reused, a run cut short finished, or a new deployment.
    `bound` are the positions of the arguments a deployment must have been given to be reused."""
    built = artifact(name)
    wanted = [str(arg) for arg in args]
    last = await repository.latest_deployment(name, chain_id)
    if (
        last is not None
        and last["status"] == "pending"
        and last["artifactHash"] == built.artifact_hash
        and not _differ(last, wanted, bound)
    ):  # a run cut short: the same transaction, asked for again
        await _ask(chain_id, signer, name, last["_id"], last["data"])
        found = await _finish(web3, settings, signer, built, last["_id"])
        return _kept(built, last, wanted, found)
    # The deployment of record is the latest one deployed (the one the indexer follows), whatever
    # tries failed since.
    live = last
    if live is not None and live["status"] != "deployed":
        live = await repository.latest_deployment(name, chain_id, status="deployed")
    if live is not None:
        code = await web3.eth.get_code(Web3.to_checksum_address(live["address"]))
        moved = _differ(live, wanted, bound)  # a contract it works with was replaced: so must it be
        if not code:
            await _lost(web3, settings, signer, live)  # whatever is deployed next, its nonce comes after
        elif live["artifactHash"] != built.artifact_hash:
            if settings.is_production and not (redeploy or moved):
                raise DeploymentFailed(
                    f"{name}: its code changed since its deployment at {live['address']}, which is live; "
                    f"a new one would leave what is on the old one unfollowed. To replace it, run "
                    f"scripts/deploy --redeploy {name}"
                )
            log.warning(
                "chain.deploy.code_changed",
                contract=name,
                address=live["address"],
                note="deploying the new code: tokens and listings of the old contract are no longer followed",
            )
        elif built.runs_at(code):
            if not (redeploy or moved):
                return _kept(built, live, wanted, None)
            log.warning(
                "chain.deploy.replaced",
                contract=name,
                address=live["address"],
                reason="asked to redeploy" if redeploy else "a contract it was deployed with was replaced",
                note="tokens and listings of the old contract are no longer followed",
            )
    return await _deploy(web3, settings, signer, chain_id, built, args, wanted)


def _differ(record: dict[str, Any], wanted: list[str], positions: Collection[int] | None = None) -> list[int]:
    """The positions (of `positions`, or all) where a deployment's arguments are not `wanted`."""
    given = record.get("args") or []
    checked = range(max(len(given), len(wanted))) if positions is None else positions
    return [
        i
        for i in checked
        if (given[i] if i < len(given) else None) != (wanted[i] if i < len(wanted) else None)
    ]


def _kept(built: Artifact, record: dict[str, Any], wanted: list[str], found: Deployed | None) -> Deployed:
    """A deployment reused as it is. When settings it was deployed with have changed since, a warning
    names them, for the contract keeps its own values; the values are not logged (a URI may hold a
    secret)."""
    positions = _differ(record, wanted)
    names = _argument_names(built)
    kept = tuple(names[i] if i < len(names) else str(i) for i in positions)
    if positions:
        log.warning(
            "chain.deploy.settings_changed",
            contract=built.name,
            address=record.get("address") or (found.address if found else None),
            positions=positions,
            arguments=list(kept),
            note="the live contract keeps the values it was deployed with",
            change=_SETTERS[built.name],
            deployer=record.get("deployer"),  # its owner, unless ownership was transferred
        )
    if found is not None:
        return Deployed(found.contract, found.address, found.tx_hash, found.block, found.reused, kept)
    return Deployed(built.name, record["address"], record.get("txHash"), record.get("block"), True, kept)


def _argument_names(built: Artifact) -> list[str]:
    constructor = next((item for item in built.abi if item.get("type") == "constructor"), {})
    return [str(given.get("name") or index) for index, given in enumerate(constructor.get("inputs", []))]


async def _deploy(
    web3: AsyncWeb3,
    settings: Settings,
    signer: LocalAccount,
    chain_id: int,
    built: Artifact,
    args: list[Any],
    wanted: list[str],
) -> Deployed:
    data = web3.eth.contract(abi=built.abi, bytecode=built.bytecode).constructor(*args).data_in_transaction
    log_id = await repository.record_deployment(
        {
            "contract": built.name,
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
    await _ask(chain_id, signer, built.name, log_id, data)
    return await _finish(web3, settings, signer, built, log_id)


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
    return Deployed(built.name, address, tx_hash, block, reused=False)
