"""Deployments on anvil: the three contracts deployed once, reused, found again after a crash."""

from __future__ import annotations

import json

import pytest
from eth_account import Account
from pydantic import SecretStr
from web3 import Web3

from app.chain import lost_history, outbox, repository, service
from app.chain.artifacts import CONTRACTS, artifact
from app.chain.deployments import metadata_base_uri
from app.chain.signer import SignerUnavailable, load_signer, new_keystore, signer_address
from app.config import DEV_SIGNER_KEY


async def logs() -> list[dict]:
    return await repository.deployments().find({}).sort("createdAt", 1).to_list(None)


async def test_the_three_contracts_are_deployed_and_wired(web3, clients, settings):
    deployed = await service.ensure_deployed(clients, settings)
    assert list(deployed) == list(CONTRACTS) and not any(d.reused for d in deployed.values())
    records = await logs()
    assert [(r["contract"], r["status"], r["chainId"]) for r in records] == [
        (name, "deployed", settings.chain.chain_id) for name in CONTRACTS
    ]
    signer = load_signer(settings)
    for record in records:
        built = artifact(record["contract"])
        assert record["artifactHash"] == built.artifact_hash and record["deployer"] == signer.address
        assert record["block"] > 0 and record["txHash"].startswith("0x") and record["error"] is None
        assert built.runs_at(await web3.eth.get_code(record["address"]))
        receipt = await web3.eth.get_transaction_receipt(record["txHash"])
        assert receipt["contractAddress"] == record["address"]

    def at(name):
        return web3.eth.contract(address=deployed[name].address, abi=artifact(name).abi)

    assert await at("Marketplace").functions.token().call() == deployed["AssetToken"].address
    assert await at("Marketplace").functions.fee_bps().call() == settings.chain.fee_bps
    assert await at("Marketplace").functions.fee_recipient().call() == signer.address
    assert await at("PriceOracle").functions.publisher().call() == signer.address
    token = at("AssetToken")
    assert await token.functions.is_minter(signer.address).call()
    # The signer mints, and tokenURI is the API's metadata route for the id.
    owner = (await web3.eth.accounts)[3]
    tx = await token.functions.mint(owner, 42).build_transaction(
        {"from": signer.address, "nonce": await web3.eth.get_transaction_count(signer.address)}
    )
    await web3.eth.wait_for_transaction_receipt(
        await web3.eth.send_raw_transaction(signer.sign_transaction(tx).raw_transaction)
    )
    assert await token.functions.ownerOf(42).call() == owner
    assert await token.functions.tokenURI(42).call() == f"{metadata_base_uri(settings)}42"
    assert metadata_base_uri(settings).endswith("/api/metadata/")


async def test_a_second_run_reuses_what_is_deployed(web3, clients, settings):
    first = await service.ensure_deployed(clients, settings)
    block = await web3.eth.block_number
    again = await service.ensure_deployed(clients, settings)
    assert all(d.reused for d in again.values())
    assert {n: d.address for n, d in again.items()} == {n: d.address for n, d in first.items()}
    assert await web3.eth.block_number == block and len(await logs()) == 3


async def test_a_chain_that_lost_the_code_gets_the_contracts_again(web3, clients, settings):
    before = await web3.provider.make_request("evm_snapshot", [])
    await service.ensure_deployed(clients, settings)
    await web3.provider.make_request("evm_revert", [before["result"]])  # the blocks are gone, as in a reorg
    again = await service.ensure_deployed(clients, settings)  # a development node not syncing: lost
    # Whatever is reused, every contract is at its address and the marketplace trades the token there.
    assert not again["AssetToken"].reused
    for name in CONTRACTS:
        assert artifact(name).runs_at(await web3.eth.get_code(again[name].address))
    market = web3.eth.contract(address=again["Marketplace"].address, abi=artifact("Marketplace").abi)
    assert await market.functions.token().call() == again["AssetToken"].address


@pytest.mark.parametrize("contracts", ["the same", "with other constructor arguments"])
async def test_a_chain_that_lost_final_history_gets_the_contracts_again_from_its_own_nonce(
    web3, clients, settings, contracts
):
    """A development chain restarted from an older state has lost transactions the outbox had taken as
    final: their nonces are given back, so the contracts are deployed again rather than waiting forever
    behind a gap in the nonces, the same ones or others (its metadata URI changed meanwhile)."""
    signer = load_signer(settings)
    before = await web3.provider.make_request("evm_snapshot", [])
    start = await web3.eth.get_transaction_count(signer.address)
    await service.ensure_deployed(clients, settings)
    await web3.provider.make_request("anvil_mine", [hex(70)])
    for _ in range(2):
        await service.process_outbox(clients, settings)
    assert {e["status"] for e in await repository.outbox().find({}).to_list(None)} == {"confirmed"}
    await web3.provider.make_request("evm_revert", [before["result"]])
    await web3.provider.make_request("anvil_mine", [hex(80)])  # past the lost blocks, on another branch
    other = {"metadata_base_uri": "https://other.example/api/metadata/"}
    changed = {"deploy_timeout_s": 30} | (other if contracts != "the same" else {})
    short = settings.model_copy(update={"chain": settings.chain.model_copy(update=changed)})
    again = await service.ensure_deployed(clients, short)
    for name in CONTRACTS:
        assert artifact(name).runs_at(await web3.eth.get_code(again[name].address))
    entries = await repository.outbox().find({}).sort("createdAt", 1).to_list(None)
    lost, fresh = entries[:3], entries[3:]
    assert [e["status"] for e in lost] == ["failed"] * 3 and all("lost" in e["error"] for e in lost)
    assert [e["lostNonce"] for e in lost] == list(range(start, start + 3))
    assert [e["nonce"] for e in fresh] == list(range(start, start + 3))  # from the chain's own count
    assert await web3.eth.get_transaction_count(signer.address) == start + 3


async def test_in_production_missing_code_releases_no_nonce(web3, clients, settings, monkeypatch):
    """A production chain never loses final blocks: code missing there is a node behind, or one of
    another chain, and the transactions the outbox took as final stay so."""
    from app.chain import deployments

    before = await web3.provider.make_request("evm_snapshot", [])
    await service.ensure_deployed(clients, settings)
    await web3.provider.make_request("anvil_mine", [hex(70)])
    for _ in range(2):
        await service.process_outbox(clients, settings)
    await web3.provider.make_request("evm_revert", [before["result"]])
    await web3.provider.make_request("anvil_mine", [hex(80)])
    production = settings.model_copy(
        update={"app_env": "production", "chain": settings.chain.model_copy(update={"deploy_timeout_s": 3})}
    )
    released = []
    real = lost_history.release_lost

    async def spy(*args):
        released.append(await real(*args))
        return released[-1]

    monkeypatch.setattr(lost_history, "release_lost", spy)
    with pytest.raises(deployments.DeploymentFailed):
        await deployments.ensure_deployed(web3, production, load_signer(settings))
    assert released == []
    finals = await repository.outbox().find({"status": "confirmed"}).to_list(None)
    assert len(finals) == 3 and all("nonce" in e for e in finals)


async def test_in_production_a_node_below_the_deployments_is_behind_and_nothing_is_sent(
    web3, clients, settings
):
    before = await web3.provider.make_request("evm_snapshot", [])
    await service.ensure_deployed(clients, settings)
    await web3.provider.make_request("evm_revert", [before["result"]])
    production = settings.model_copy(update={"app_env": "production"})
    from app.chain import deployments

    with pytest.raises(deployments.DeploymentFailed, match="a node behind"):
        await deployments.ensure_deployed(web3, production, load_signer(settings))
    assert await repository.outbox().count_documents({}) == 3  # nothing asked for again


async def test_a_node_with_the_deployment_but_no_code_fails_it(web3, clients, settings, monkeypatch):
    await service.ensure_deployed(clients, settings)

    async def no_code(address, block_identifier=None):
        return b""

    monkeypatch.setattr(web3.eth, "get_code", no_code)
    with pytest.raises(service.DeploymentFailed, match="on the chain, but no code"):
        await service.ensure_deployed(clients, settings)
    assert await repository.outbox().count_documents({}) == 3


async def test_a_chain_with_another_block_zero_is_another_chain(web3, clients, settings, monkeypatch):
    """Deployments recorded on a chain whose block 0 was another: deployed again at once, even in
    production, where a node below the deployments' block would otherwise be taken as behind."""
    from app.chain import deployments

    before = await web3.provider.make_request("evm_snapshot", [])
    await service.ensure_deployed(clients, settings)
    await repository.deployments().update_many({}, {"$set": {"genesis": "0x" + "ab" * 32}})
    await web3.provider.make_request("evm_revert", [before["result"]])  # below the deployments' blocks
    production = settings.model_copy(update={"app_env": "production"})
    again = await deployments.ensure_deployed(web3, production, load_signer(settings))
    for name in CONTRACTS:
        assert artifact(name).runs_at(await web3.eth.get_code(again[name].address))
    genesis = Web3.to_hex((await web3.eth.get_block(0))["hash"])
    made = [r for r in await logs() if r["genesis"] != "0x" + "ab" * 32]
    assert made and {r["genesis"] for r in made} == {genesis}


async def test_a_node_that_counts_fewer_transactions_than_the_ledger_releases_none_it_has(
    web3, clients, settings, monkeypatch
):
    """A node that answers low counts (syncing, behind a load balancer) is no evidence of lost history:
    an entry any of whose attempts the node has a receipt of keeps its nonce."""
    signer = load_signer(settings)
    start = await web3.eth.get_transaction_count(signer.address)
    await service.ensure_deployed(clients, settings)

    async def counted_from_the_start(address, block_identifier=None):
        return start

    monkeypatch.setattr(web3.eth, "get_transaction_count", counted_from_the_start)
    assert await lost_history.release_lost(web3, settings, signer) == 0
    held = await repository.outbox().find({}).to_list(None)
    assert len(held) == 3 and all("nonce" in e and e["status"] != "failed" for e in held)


async def test_an_entry_that_moved_after_it_was_read_as_lost_is_not_released(web3, clients, settings):
    signer = load_signer(settings)
    start = await web3.eth.get_transaction_count(signer.address)
    await service.ensure_deployed(clients, settings)
    read = await repository.holding_nonces(settings.chain.chain_id, signer.address, start)
    replaced = read[0]["_id"]  # a worker replaced its transaction since: a new attempt, a new hash
    await repository.outbox().update_one({"_id": replaced}, {"$set": {"txHash": "0x" + "12" * 32}})
    assert await repository.release_nonces(read, "lost") == 2
    assert "nonce" in await repository.outbox().find_one({"_id": replaced})


async def test_a_deployment_cut_short_is_found_again_not_sent_twice(web3, clients, settings, monkeypatch):
    """The run signed and sent the AssetToken's deployment, then died: the next run finishes that one."""
    real = outbox.wait_mined

    async def crash_after_one_pass(web3, settings, signer, key, *, timeout_s):
        await outbox.process(web3, settings, signer)  # signs and sends
        raise KeyboardInterrupt

    signer = load_signer(settings)
    nonce = await web3.eth.get_transaction_count(signer.address)
    monkeypatch.setattr(outbox, "wait_mined", crash_after_one_pass)
    with pytest.raises(KeyboardInterrupt):
        await service.ensure_deployed(clients, settings)
    assert [(r["contract"], r["status"]) for r in await logs()] == [("AssetToken", "pending")]
    monkeypatch.setattr(outbox, "wait_mined", real)
    deployed = await service.ensure_deployed(clients, settings)
    sent = await repository.outbox().find({"ref.contract": "AssetToken"}).to_list(None)
    assert len(sent) == 1 and deployed["AssetToken"].tx_hash == sent[0]["txHash"]
    assert [(r["contract"], r["status"]) for r in await logs()] == [(name, "deployed") for name in CONTRACTS]
    # three deployments sent in all, one each: the first was not sent again
    assert await web3.eth.get_transaction_count(signer.address) == nonce + 3


async def test_a_deployment_that_would_revert_is_failed_and_said(web3, clients, settings):
    bad = settings.model_copy(
        update={"chain": settings.chain.model_copy(update={"fee_recipient": "0x" + "0" * 40})}
    )
    with pytest.raises(service.DeploymentFailed, match="no fee recipient"):
        await service.ensure_deployed(clients, bad)
    records = await logs()
    assert [(r["contract"], r["status"]) for r in records] == [
        ("AssetToken", "deployed"),
        ("Marketplace", "failed"),
    ]
    assert "would revert" in records[1]["error"]
    entry = await repository.outbox().find_one({"key": f"deploy:{records[1]['_id']}"})
    assert entry["status"] == "failed" and entry.get("nonce") is None  # no nonce held: no gap on the chain


async def test_a_node_of_another_chain_is_refused(web3, clients, settings):
    other = settings.model_copy(update={"chain": settings.chain.model_copy(update={"chain_id": 1337})})
    with pytest.raises(service.DeploymentFailed, match="chain id"):
        await service.ensure_deployed(clients, other)
    assert await logs() == []


async def test_the_deployments_route_lists_address_and_abi(web3, client, clients, settings):
    empty = await client.get("/api/chain/deployments")
    assert empty.status_code == 200
    assert empty.json() == {"chainId": settings.chain.chain_id, "deployments": []}
    deployed = await service.ensure_deployed(clients, settings)
    body = (await client.get("/api/chain/deployments")).json()
    assert [d["name"] for d in body["deployments"]] == list(CONTRACTS)
    for entry in body["deployments"]:
        assert entry["address"] == deployed[entry["name"]].address
        assert entry["chainId"] == settings.chain.chain_id
        assert entry["abi"] == artifact(entry["name"]).abi
        assert entry["artifactHash"] == artifact(entry["name"]).artifact_hash
        assert entry["transactionHash"].startswith("0x") and entry["blockNumber"] > 0
    # a client can call the contract from what the route gives
    market = next(d for d in body["deployments"] if d["name"] == "Marketplace")
    contract = web3.eth.contract(address=market["address"], abi=market["abi"])
    assert await contract.functions.token().call() == deployed["AssetToken"].address


def test_the_signer_opens_its_keystore_and_never_says_what_it_holds(settings, tmp_path):
    address, keystore = new_keystore("correct horse")
    path = tmp_path / "signer.json"
    path.write_text(json.dumps(keystore))
    chain = settings.chain.model_copy(
        update={"keystore_path": path, "keystore_password": SecretStr("correct horse")}
    )
    assert load_signer(settings.model_copy(update={"chain": chain})).address == address
    wrong = settings.chain.model_copy(update={"keystore_path": path, "keystore_password": SecretStr("wrong")})
    with pytest.raises(SignerUnavailable) as refused:
        load_signer(settings.model_copy(update={"chain": wrong}))
    assert str(path) in str(refused.value) and keystore["crypto"]["ciphertext"] not in str(refused.value)
    missing = settings.chain.model_copy(update={"keystore_path": path, "keystore_password": None})
    with pytest.raises(SignerUnavailable, match="PASSWORD"):
        load_signer(settings.model_copy(update={"chain": missing}))


def test_the_development_key_is_never_the_signer_in_production(settings):
    assert load_signer(settings).address == Account.from_key(DEV_SIGNER_KEY).address
    with pytest.raises(SignerUnavailable, match="KEYSTORE_PATH"):
        load_signer(settings.model_copy(update={"app_env": "production"}))


def test_the_development_key_signs_on_development_chains_only(settings):
    mainnet = settings.model_copy(update={"chain": settings.chain.model_copy(update={"chain_id": 1})})
    with pytest.raises(SignerUnavailable, match="development key"):
        load_signer(mainnet)


def test_the_signers_address_is_read_without_its_password(settings, tmp_path):
    """The api states the sender of what it asks for; only the workers open the key."""
    address, keystore = new_keystore("correct horse")
    path = tmp_path / "signer.json"
    path.write_text(json.dumps(keystore))
    chain = settings.chain.model_copy(update={"keystore_path": path, "keystore_password": None})
    assert signer_address(settings.model_copy(update={"chain": chain})) == address


async def test_a_deployment_recorded_but_never_asked_for_is_asked_for_on_the_next_run(
    web3, clients, settings, monkeypatch
):
    """A crash between the deployment log and the outbox's intent: the next run asks, and deploys once."""
    from app.chain import deployments

    real = deployments._ask

    async def died(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(deployments, "_ask", died)
    with pytest.raises(KeyboardInterrupt):
        await service.ensure_deployed(clients, settings)
    assert await repository.outbox().count_documents({}) == 0
    monkeypatch.setattr(deployments, "_ask", real)
    deployed = await service.ensure_deployed(clients, settings)
    assert [(r["contract"], r["status"]) for r in await logs()] == [(name, "deployed") for name in CONTRACTS]
    assert await repository.outbox().count_documents({"kind": "deploy"}) == 3
    assert artifact("AssetToken").runs_at(await web3.eth.get_code(deployed["AssetToken"].address))


class Recorder:
    """Stands in for the module's logger (structlog caches bound loggers, so capture_logs may miss them)."""

    def __init__(self):
        self.warnings: list[dict] = []

    def warning(self, event, **fields):
        self.warnings.append({"event": event, **fields})

    def info(self, event, **fields):
        pass

    def of(self, event: str) -> list[dict]:
        return [w for w in self.warnings if w["event"] == event]


@pytest.fixture
def logged(monkeypatch):
    from app.chain import deployments

    recorder = Recorder()
    monkeypatch.setattr(deployments, "log", recorder)
    return recorder


def with_chain(settings, **changes):
    return settings.model_copy(update={"chain": settings.chain.model_copy(update=changes)})


@pytest.mark.parametrize(
    ("change", "contract", "positions"),
    [
        ("fee", "Marketplace", [1]),
        ("fee recipient", "Marketplace", [2]),
        ("auth uri", "AssetToken", [0]),
    ],
)
async def test_a_changed_setting_keeps_the_live_contracts_and_says_so(
    web3, clients, settings, logged, change, contract, positions
):
    """A contract keeps the settings it was deployed with: a new one would orphan the tokens minted and
    the listings made on it, since the indexer follows the latest deployment only."""
    first = await service.ensure_deployed(clients, settings)
    block = await web3.eth.block_number
    changed = {
        "fee": with_chain(settings, fee_bps=500),
        "fee recipient": with_chain(settings, fee_recipient=(await web3.eth.accounts)[5]),
        "auth uri": settings.model_copy(
            update={"auth": settings.auth.model_copy(update={"uri": "https://vault.example.org"})}
        ),
    }[change]
    again = await service.ensure_deployed(clients, changed)
    assert {n: d.address for n, d in again.items()} == {n: d.address for n, d in first.items()}
    assert all(d.reused for d in again.values()) and await web3.eth.block_number == block
    assert len(await logs()) == 3  # nothing deployed, nothing tried
    [warning] = logged.of("chain.deploy.settings_changed")
    assert warning["contract"] == contract and warning["positions"] == positions
    assert warning["address"] == first[contract].address
    assert ("set_fee" in warning["change"]) == (contract == "Marketplace")
    assert "vault.example.org" not in repr(warning)  # which arguments differ, never their values
    assert again[contract].kept_arguments and not logged.of("chain.deploy.replaced")
    market = web3.eth.contract(address=again["Marketplace"].address, abi=artifact("Marketplace").abi)
    assert await market.functions.fee_bps().call() == settings.chain.fee_bps  # as it was deployed


async def test_a_redeployed_asset_token_brings_a_new_marketplace(web3, clients, settings, logged):
    from app.chain import deployments

    first = await service.ensure_deployed(clients, settings)
    again = await deployments.ensure_deployed(web3, settings, load_signer(settings), redeploy=["AssetToken"])
    assert not again["AssetToken"].reused and not again["Marketplace"].reused and again["PriceOracle"].reused
    assert again["AssetToken"].address != first["AssetToken"].address
    assert again["Marketplace"].address != first["Marketplace"].address
    assert again["PriceOracle"].address == first["PriceOracle"].address
    market = web3.eth.contract(address=again["Marketplace"].address, abi=artifact("Marketplace").abi)
    assert await market.functions.token().call() == again["AssetToken"].address
    assert [r["contract"] for r in await logs()] == [*CONTRACTS, "AssetToken", "Marketplace"]
    assert await service.deployed_address(settings, "AssetToken") == again["AssetToken"].address
    replaced = logged.of("chain.deploy.replaced")
    assert [w["contract"] for w in replaced] == ["AssetToken", "Marketplace"]
    # the next ordinary run reuses the new ones
    third = await service.ensure_deployed(clients, settings)
    assert all(d.reused for d in third.values()) and len(await logs()) == 5
    assert {n: d.address for n, d in third.items()} == {n: d.address for n, d in again.items()}


async def test_a_redeployed_marketplace_leaves_the_asset_token(web3, clients, settings):
    from app.chain import deployments

    first = await service.ensure_deployed(clients, settings)
    again = await deployments.ensure_deployed(web3, settings, load_signer(settings), redeploy=["Marketplace"])
    assert again["AssetToken"].address == first["AssetToken"].address and again["AssetToken"].reused
    assert again["Marketplace"].address != first["Marketplace"].address
    with pytest.raises(deployments.DeploymentFailed, match="no contract named Nope"):
        await deployments.ensure_deployed(web3, settings, load_signer(settings), redeploy=["Nope"])


async def code_changed_since(name: str) -> None:
    """As if its source changed after its deployment: the recorded artifact is not the built one."""
    await repository.deployments().update_many({"contract": name}, {"$set": {"artifactHash": "0" * 64}})


async def test_in_production_changed_code_replaces_a_live_contract_only_when_asked(
    web3, clients, settings, logged
):
    from app.chain import deployments

    first = await service.ensure_deployed(clients, settings)
    await code_changed_since("AssetToken")
    production = settings.model_copy(update={"app_env": "production"})
    with pytest.raises(deployments.DeploymentFailed, match="--redeploy AssetToken"):
        await deployments.ensure_deployed(web3, production, load_signer(settings))
    assert len(await logs()) == 3 and await repository.outbox().count_documents({}) == 3
    asked = await deployments.ensure_deployed(
        web3, production, load_signer(settings), redeploy=["AssetToken"]
    )
    assert asked["AssetToken"].address != first["AssetToken"].address
    assert asked["Marketplace"].address != first["Marketplace"].address  # it follows the new token


async def test_outside_production_changed_code_is_deployed_with_a_warning(web3, clients, settings, logged):
    first = await service.ensure_deployed(clients, settings)
    await code_changed_since("PriceOracle")
    again = await service.ensure_deployed(clients, settings)
    assert again["PriceOracle"].address != first["PriceOracle"].address and not again["PriceOracle"].reused
    assert again["AssetToken"].reused and again["Marketplace"].reused
    [warning] = logged.of("chain.deploy.code_changed")
    assert warning["contract"] == "PriceOracle" and warning["address"] == first["PriceOracle"].address


def test_the_deploy_script_takes_the_contracts_to_redeploy():
    from scripts.deploy import parse_args

    assert parse_args([]).redeploy == []
    assert parse_args(["--redeploy", "AssetToken", "PriceOracle"]).redeploy == ["AssetToken", "PriceOracle"]
    with pytest.raises(SystemExit):
        parse_args(["--redeploy", "Nope"])
