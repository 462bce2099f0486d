"""The chain domain: the platform's contracts, its signer's outbox and the indexer of their events.

Other domains reach the chain only through here: the assets domain asks for mints, the market domain
applies what the indexer reads, the oracle publishes prices.
"""

from __future__ import annotations

from typing import Any

import msgspec
from eth_account.signers.local import LocalAccount
from web3 import Web3

from app.chain import deployments, index_records, indexer, outbox, repository, schemas, status
from app.chain.artifacts import CONTRACTS, artifact
from app.chain.signer import SignerUnavailable, load_signer, signer_address
from app.config import Settings
from app.lib.clients import Clients
from app.lib.errors import ServiceUnavailable
from app.lib.rpc import NODE_UNAVAILABLE, describe

Deployed = deployments.Deployed
DeploymentFailed = deployments.DeploymentFailed
IndexPass = indexer.IndexPass
ZERO_ADDRESS = "0x" + "0" * 40
_signers: dict[int, LocalAccount] = {}


def signer(settings: Settings) -> LocalAccount:
    """The platform signer, opened once per settings (a keystore takes a second to decrypt)."""
    if id(settings) not in _signers:
        _signers[id(settings)] = load_signer(settings)
    return _signers[id(settings)]


async def ensure_deployed(clients: Clients, settings: Settings) -> dict[str, Deployed]:
    """Deploy the contracts to the configured chain where no earlier deployment can be reused."""
    if clients.web3 is None:
        raise DeploymentFailed("CHAIN_RPC_URL is not set")
    return await deployments.ensure_deployed(clients.web3, settings, signer(settings))


async def deployed_address(settings: Settings, name: str) -> str | None:
    """Where the contract of record is deployed on the configured chain, if it is: the latest deployed,
    of whatever build. Production keeps a live contract whose code has changed since until it is
    redeployed on purpose (app/chain/deployments.py), and its events and calls are still the ones
    the platform follows and makes; outside production a new build is deployed before anything reads
    this."""
    record = await repository.latest_deployment(name, settings.chain.chain_id, status="deployed")
    return None if record is None else record["address"]


async def callable_address(settings: Settings, name: str) -> str | None:
    """Where the contract of record is deployed, if it is of the current build: the only one the
    platform calls (mints, pushes, reads of its state), since its calls are encoded with this build's
    ABI and a deployment record keeps no other. A live contract of an older build is followed, not
    called, until it is redeployed."""
    record = await repository.latest_deployment(name, settings.chain.chain_id, status="deployed")
    if record is None or record["artifactHash"] != artifact(name).artifact_hash:
        return None
    return record["address"]


async def deployment_list(settings: Settings) -> schemas.DeploymentList:
    """The contracts deployed on the configured chain, each its latest deployment. A deployment of an
    artifact other than the one built (contracts rebuilt, not yet deployed again) is left out: its
    ABI would not be the one shown."""
    chain_id = settings.chain.chain_id
    found = []
    for name in CONTRACTS:
        record = await repository.latest_deployment(name, chain_id, status="deployed")
        built = artifact(name)
        if record is None or record["artifactHash"] != built.artifact_hash:
            continue
        found.append(
            schemas.Deployment(
                name=name,
                address=record["address"],
                chainId=chain_id,
                abi=built.abi,
                transactionHash=record.get("txHash"),
                blockNumber=record.get("block"),
                artifactHash=built.artifact_hash,
                deployedAt=record["updatedAt"],
            )
        )
    return schemas.DeploymentList(chainId=chain_id, deployments=found)


# ---------------------------------------------------------------- the outbox


def mint_key(settings: Settings, token_address: str, token_id: int) -> str:
    return f"mint:{settings.chain.chain_id}:{token_address.lower()}:{token_id}"


async def request_mint(
    clients: Clients, settings: Settings, token_address: str, token_id: int, owner: str
) -> str:
    """Ask the outbox to mint `token_id` to `owner` on the AssetToken (once, however often asked); the key."""
    if clients.web3 is None:
        raise DeploymentFailed("CHAIN_RPC_URL is not set")
    contract = clients.web3.eth.contract(
        address=Web3.to_checksum_address(token_address), abi=artifact("AssetToken").abi
    )
    return await submit_call(
        settings,
        key=mint_key(settings, token_address, token_id),
        kind="mint",
        contract=contract,
        function="mint",
        args=[Web3.to_checksum_address(owner), token_id],
        ref={"tokenId": token_id},
    )


async def submit_call(
    settings: Settings, *, key: str, kind: str, contract, function: str, args: list, ref: dict | None = None
) -> str:
    """Ask the outbox for a call of `contract.function(*args)` by the signer, once per `key`."""
    await outbox.submit(
        key=key,
        kind=kind,
        chain_id=settings.chain.chain_id,
        sender=signer_address(settings),
        to=contract.address,
        data=contract.encode_abi(function, args),
        ref=ref or {},
    )
    return key


async def contract(clients: Clients, settings: Settings, name: str):
    """The deployed contract of record, to call; None when the chain is off or it is not deployed."""
    address = await callable_address(settings, name) if clients.web3 is not None else None
    if address is None:
        return None
    return clients.web3.eth.contract(address=Web3.to_checksum_address(address), abi=artifact(name).abi)


async def outbox_entry(key: str) -> dict[str, Any] | None:
    return await repository.find_entry(key)


async def process_outbox(clients: Clients, settings: Settings) -> dict[str, int]:
    """One pass of the outbox: sign, send, follow and confirm the signer's transactions."""
    if clients.web3 is None:
        return {}
    return await outbox.process(clients.web3, settings, signer(settings))


# ---------------------------------------------------------------- the indexer


async def index_once(clients: Clients, settings: Settings) -> IndexPass | None:
    """Read the next range of the contracts' events (after rolling back a reorg, if there was one)."""
    if clients.web3 is None:
        return None
    return await indexer.index_once(clients.web3, settings)


async def pending_tokens(settings: Settings) -> list[int]:
    """The tokens the indexer has read (or rolled back) whose state is not applied yet."""
    return await index_records.pending_tokens(settings.chain.chain_id)


async def tokens_applied(settings: Settings, token_ids: list[int]) -> None:
    await index_records.applied(settings.chain.chain_id, token_ids)


async def final_block(clients: Clients, settings: Settings, head: int) -> int:
    return await outbox.final_block(clients.web3, settings, head)


async def operator_approvals(settings: Settings, owners: list[str], operator: str) -> dict[str, bool]:
    """Whether each owner has approved `operator` (the marketplace) for all its tokens."""
    return await index_records.operator_approvals(settings.chain.chain_id, owners, operator)


async def token_events(
    settings: Settings, token_ids: list[int], contracts: list[str]
) -> list[dict[str, Any]]:
    """The live events of these tokens on the configured chain, in chain order: of the contracts deployed
    now (a Marketplace deployed again leaves the old one's listings behind)."""
    addresses = [address for name in CONTRACTS if (address := await deployed_address(settings, name))]
    return await index_records.token_events(settings.chain.chain_id, token_ids, addresses, contracts)


# ---------------------------------------------------------------- status


class ChainUnavailable(ServiceUnavailable):
    code = "chain_unavailable"


async def events_to_announce(settings: Settings, limit: int) -> list[dict[str, Any]]:
    return await index_records.to_announce(settings.chain.chain_id, limit)


async def events_announced(marks: list[tuple[dict[str, Any], str | None]], *, settled: bool = True) -> int:
    return await index_records.announced(marks, settled=settled)


async def chain_status(clients: Clients, settings: Settings) -> schemas.ChainStatus:
    """Head and indexed blocks, lag, last reorg, the outbox, the signer's balance and the last drift
    report; 503 `chain_unavailable` when no chain is configured or its node does not answer."""
    if clients.web3 is None:
        raise ChainUnavailable("no chain is configured (CHAIN_RPC_URL)")
    try:
        figures = await status.report(clients.web3, settings, signer_address(settings))
    except (*NODE_UNAVAILABLE, SignerUnavailable) as exc:
        raise ChainUnavailable(f"the chain's node does not answer: {describe(exc)}") from exc
    return msgspec.convert(figures, schemas.ChainStatus)


async def refresh_metrics(clients: Clients, settings: Settings) -> None:
    """Bring the chain's gauges up to date (before a scrape of /metrics). When the node is away the scrape
    still answers, the node marked down (`dynamicvault_chain_node_up` 0) beside the last figures read."""
    if clients.web3 is None:
        return
    try:
        await status.report(clients.web3, settings, signer_address(settings))
    except (*NODE_UNAVAILABLE, SignerUnavailable):
        return


async def save_drift(settings: Settings, drift: dict[str, Any], kind: str) -> None:
    await index_records.save_drift(settings.chain.chain_id, drift, kind)


async def indexed_block(settings: Settings) -> int | None:
    cursor = await index_records.indexer_cursor(settings.chain.chain_id)
    return None if cursor is None else cursor.get("block")


async def price_updates(settings: Settings, receipt: dict[str, Any]) -> set[tuple[int, int]]:
    """The (token, round) pairs a transaction's live PriceUpdated events set, as the indexer read them."""
    return await index_records.price_updates(
        settings.chain.chain_id, receipt["blockHash"], receipt["transactionHash"]
    )
