"""The outbox on anvil: nonces from one ledger, replacements of stuck transactions, crash recovery."""

from __future__ import annotations

import asyncio

import pytest
from web3 import Web3
from web3.exceptions import Web3RPCError

from app.chain import outbox, repository, service
from app.chain.artifacts import artifact
from app.chain.signer import load_signer
from tests.chain.conftest import outbox_process, rpc


@pytest.fixture
async def token(web3, clients, settings):
    deployed = await service.ensure_deployed(clients, settings)
    return web3.eth.contract(address=deployed["AssetToken"].address, abi=artifact("AssetToken").abi)


async def ask_mint(settings, token, token_id: int, owner: str) -> dict:
    data = token.encode_abi("mint", [owner, token_id])
    return await outbox.submit(
        key=f"test-mint:{token_id}",
        kind="mint",
        chain_id=settings.chain.chain_id,
        sender=load_signer(settings).address,
        to=token.address,
        data=data,
        ref={"tokenId": token_id},
    )


async def entry(key: str) -> dict:
    return await repository.find_entry(key)


async def drive(web3, settings, passes: int = 3) -> None:
    signer = load_signer(settings)
    for _ in range(passes):
        await outbox.process(web3, settings, signer)


async def test_asking_twice_asks_once(web3, settings, token):
    owner = (await web3.eth.accounts)[1]
    first = await ask_mint(settings, token, 7, owner)
    again = await ask_mint(settings, token, 7, owner)
    assert first["_id"] == again["_id"] and await repository.outbox().count_documents({"kind": "mint"}) == 1


@pytest.mark.parametrize("workers", ["passes in one process", "processes"])
async def test_two_workers_at_once_never_share_or_skip_a_nonce(web3, settings, token, workers):
    signer = load_signer(settings)
    owner = (await web3.eth.accounts)[1]
    start = await web3.eth.get_transaction_count(signer.address)
    for token_id in range(20):
        await ask_mint(settings, token, token_id, owner)
    if workers == "processes":
        assert await asyncio.gather(outbox_process(settings, 4), outbox_process(settings, 4)) == [0, 0]
        await drive(web3, settings, 1)  # whatever the two left to follow (a receipt that came late)
    else:
        for _ in range(4):  # two passes at once, interleaved at every await
            await asyncio.gather(
                outbox.process(web3, settings, signer), outbox.process(web3, settings, signer)
            )
    mints = await repository.outbox().find({"kind": "mint"}).sort("nonce", 1).to_list(None)
    assert [m["status"] for m in mints] == ["mined"] * 20
    assert [m["nonce"] for m in mints] == list(range(start, start + 20))  # no gap, no repeat
    assert await web3.eth.get_transaction_count(signer.address) == start + 20
    for m in mints:
        assert await token.functions.ownerOf(m["ref"]["tokenId"]).call() == owner


async def test_a_stuck_transaction_is_replaced_with_higher_fees_at_the_same_nonce(web3, settings, token):
    signer = load_signer(settings)
    owner = (await web3.eth.accounts)[1]
    await rpc(web3, "evm_setAutomine", False)
    await ask_mint(settings, token, 1, owner)
    await drive(web3, settings, 1)
    sent = await entry("test-mint:1")
    assert sent["status"] == "sent" and len(sent["attempts"]) == 1
    first = sent["attempts"][0]
    # The base fee leaps past what the transaction offers: blocks come, it stays out of them.
    await rpc(web3, "anvil_setNextBlockBaseFeePerGas", hex(first["maxFeePerGas"] * 50))
    for blocks in range(settings.chain.stuck_blocks):
        await rpc(web3, "evm_mine")
        await drive(web3, settings, 1)
        if blocks < settings.chain.stuck_blocks - 1:
            assert len((await entry("test-mint:1"))["attempts"]) == 1
    replaced = await entry("test-mint:1")
    assert len(replaced["attempts"]) == 2 and replaced["status"] == "sent"
    second = replaced["attempts"][1]
    assert second["maxFeePerGas"] >= first["maxFeePerGas"] * 1.2
    assert second["maxPriorityFeePerGas"] >= first["maxPriorityFeePerGas"] * 1.2
    await rpc(web3, "evm_mine")
    await drive(web3, settings, 1)
    mined = await entry("test-mint:1")
    assert mined["status"] == "mined" and mined["txHash"] == second["txHash"]
    assert await web3.eth.get_transaction_count(signer.address) == mined["nonce"] + 1
    assert await token.functions.ownerOf(1).call() == owner
    assert await token.functions.totalSupply().call() == 1  # once, not twice


async def test_a_crash_between_signing_and_sending_sends_the_same_transaction(
    web3, settings, token, monkeypatch
):
    owner = (await web3.eth.accounts)[1]
    await ask_mint(settings, token, 2, owner)
    signer = load_signer(settings)
    original_send = outbox._send

    async def died_before_sending(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(outbox, "_send", died_before_sending)
    with pytest.raises(KeyboardInterrupt):
        await outbox.process(web3, settings, signer)
    signed = await entry("test-mint:2")
    assert signed["status"] == "signed"
    monkeypatch.setattr(outbox, "_send", original_send)
    await drive(web3, settings)
    mined = await entry("test-mint:2")
    assert mined["status"] == "mined" and mined["txHash"] == signed["txHash"] and len(mined["attempts"]) == 1


async def test_a_crash_between_sending_and_recording_it_is_not_sent_twice(web3, settings, token, monkeypatch):
    owner = (await web3.eth.accounts)[1]
    await ask_mint(settings, token, 3, owner)
    signer = load_signer(settings)
    original_mark = repository.mark_sent

    async def died_after_sending(*args, **kwargs):
        raise KeyboardInterrupt  # sent, but the outbox never heard of it

    monkeypatch.setattr(repository, "mark_sent", died_after_sending)
    with pytest.raises(KeyboardInterrupt):
        await outbox.process(web3, settings, signer)
    monkeypatch.setattr(repository, "mark_sent", original_mark)
    nonce = (await entry("test-mint:3"))["nonce"]
    await drive(web3, settings)
    mined = await entry("test-mint:3")
    assert mined["status"] == "mined" and len(mined["attempts"]) == 1
    assert await web3.eth.get_transaction_count(signer.address) == nonce + 1
    assert await token.functions.totalSupply().call() == 1


async def test_a_nonce_used_elsewhere_sends_the_entry_again_with_the_next(web3, settings, token, monkeypatch):
    owner = (await web3.eth.accounts)[1]
    signer = load_signer(settings)
    await ask_mint(settings, token, 4, owner)
    monkeypatch.setattr(outbox, "_send", lambda *args, **kwargs: asyncio.sleep(0, False))
    await outbox.process(web3, settings, signer)  # signed, never sent
    monkeypatch.undo()
    taken = (await entry("test-mint:4"))["nonce"]
    # Another program signs with the same key and uses that nonce first.
    other = signer.sign_transaction(
        {
            "to": owner,
            "value": 1,
            "gas": 21_000,
            "nonce": taken,
            "chainId": settings.chain.chain_id,
            "maxFeePerGas": 10**11,
            "maxPriorityFeePerGas": 10**9,
        }
    )
    await web3.eth.wait_for_transaction_receipt(await web3.eth.send_raw_transaction(other.raw_transaction))
    await drive(web3, settings, 2)
    assert (await entry("test-mint:4"))["nonce"] == taken  # not final yet: a reorg could still undo it
    await rpc(web3, "anvil_mine", hex(70))
    await drive(web3, settings, 4)
    mined = await entry("test-mint:4")
    assert mined["status"] == "mined" and mined["nonce"] == taken + 1
    assert await token.functions.ownerOf(4).call() == owner


async def test_confirmed_at_finality_and_sent_again_after_a_reorg(web3, settings, token):
    """Mined, then its block is orphaned (the intent stays, the chain forgets): sent again, mined in
    another block, and confirmed once that block is final."""
    owner = (await web3.eth.accounts)[1]
    await ask_mint(settings, token, 5, owner)
    await rpc(web3, "evm_setAutomine", False)
    before = await rpc(web3, "evm_snapshot")
    await outbox.process(web3, settings, load_signer(settings))  # signed and sent, not mined
    await rpc(web3, "evm_mine")
    await drive(web3, settings, 1)
    mined = await entry("test-mint:5")
    assert mined["status"] == "mined"
    await rpc(web3, "evm_revert", before)  # its block is gone, and so is the transaction from the pool
    await rpc(web3, "anvil_dropAllTransactions")
    await rpc(web3, "evm_increaseTime", 30)
    await rpc(web3, "evm_mine")
    await drive(web3, settings, 2)  # the receipt is gone or in another block: sent again if need be
    await rpc(web3, "evm_mine")
    await drive(web3, settings, 1)
    again = await entry("test-mint:5")
    assert again["status"] == "mined" and again["txHash"] == mined["txHash"]
    assert again["receipt"]["blockHash"] != mined["receipt"]["blockHash"]
    assert await token.functions.ownerOf(5).call() == owner
    assert (
        await outbox.final_block(web3, settings, await web3.eth.block_number)
        < again["receipt"]["blockNumber"]
    )
    await rpc(web3, "anvil_mine", hex(80))
    await drive(web3, settings, 1)
    assert (await entry("test-mint:5"))["status"] == "confirmed"


async def test_a_transaction_reverted_on_chain_is_failed_once_final(web3, settings, token):
    """An intent that estimates fine but reverts when mined (state moved in between) ends failed."""
    owner = (await web3.eth.accounts)[1]
    signer = load_signer(settings)
    await rpc(web3, "evm_setAutomine", False)
    await ask_mint(settings, token, 6, owner)
    await ask_mint(settings, token, 6, owner)  # the same key: one entry
    data = token.encode_abi("mint", [owner, 6])
    twin = await outbox.submit(
        key="test-mint:6:twin",
        kind="mint",
        chain_id=settings.chain.chain_id,
        sender=signer.address,
        to=token.address,
        data=data,
    )
    await drive(web3, settings, 1)  # both estimated against a chain where 6 is not minted yet
    await rpc(web3, "evm_mine")
    await drive(web3, settings, 1)
    await rpc(web3, "anvil_mine", hex(80))
    await drive(web3, settings, 1)
    statuses = sorted([(await entry("test-mint:6"))["status"], (await entry(twin["key"]))["status"]])
    assert statuses == ["confirmed", "failed"]
    assert Web3.is_address(await token.functions.ownerOf(6).call())


async def test_two_workers_on_different_entries_share_no_nonce_and_requeue_none(
    web3, settings, token, monkeypatch
):
    """One worker walks the intents oldest first, the other newest first: they race on nonces."""
    signer = load_signer(settings)
    owner = (await web3.eth.accounts)[1]
    start = await web3.eth.get_transaction_count(signer.address)
    for token_id in range(30, 42):
        await ask_mint(settings, token, token_id, owner)
    real_entries = repository.entries

    async def newest_first(status, chain_id, sender, limit):
        return list(reversed(await real_entries(status, chain_id, sender, limit)))

    async def backwards():
        monkeypatch.setattr(repository, "entries", newest_first)
        try:
            return await outbox.process(web3, settings, signer)
        finally:
            monkeypatch.setattr(repository, "entries", real_entries)

    for _ in range(4):
        await asyncio.gather(outbox.process(web3, settings, signer), backwards())
    mints = await repository.outbox().find({"kind": "mint"}).sort("nonce", 1).to_list(None)
    assert [m["status"] for m in mints] == ["mined"] * 12
    assert [m["nonce"] for m in mints] == list(range(start, start + 12))
    assert all(len(m["attempts"]) == 1 and not m.get("abandoned") and m["error"] is None for m in mints)


async def test_an_intent_over_the_gas_ceiling_fails_before_it_holds_a_nonce(web3, settings, token):
    tight = settings.model_copy(update={"chain": settings.chain.model_copy(update={"max_gas": 30_000})})
    await ask_mint(settings, token, 50, (await web3.eth.accounts)[1])
    await drive(web3, tight, 1)
    failed = await entry("test-mint:50")
    assert failed["status"] == "failed" and "CHAIN_MAX_GAS" in failed["error"] and failed.get("nonce") is None


async def test_replacements_stop_at_the_fee_ceiling(web3, settings, token):
    owner = (await web3.eth.accounts)[1]
    await rpc(web3, "evm_setAutomine", False)
    await ask_mint(settings, token, 51, owner)
    first_fees = (await outbox.suggested_fees(web3, settings)).max_fee_per_gas
    ceiling = int(first_fees * 1.3)  # room for one 20% bump, not two
    capped = settings.model_copy(
        update={"chain": settings.chain.model_copy(update={"max_fee_per_gas": ceiling})}
    )
    await drive(web3, capped, 1)
    await rpc(web3, "anvil_setNextBlockBaseFeePerGas", hex(first_fees * 50))
    for _ in range(4 * settings.chain.stuck_blocks):
        await rpc(web3, "evm_mine")
        await drive(web3, capped, 1)
    stuck = await entry("test-mint:51")
    assert stuck["status"] == "sent"
    assert max(a["maxFeePerGas"] for a in stuck["attempts"]) <= ceiling
    assert len(stuck["attempts"]) == 2  # one replacement reached the ceiling; no more were signed


async def test_a_transaction_the_node_keeps_refusing_is_cancelled_and_frees_its_nonce(
    web3, settings, token, monkeypatch
):
    """The node refuses one mint for good: after CHAIN_MAX_SEND_ERRORS refusals a self-transfer takes its
    nonce, the mint is failed, and the mint behind it goes through."""
    owner = (await web3.eth.accounts)[1]
    signer = load_signer(settings)
    start = await web3.eth.get_transaction_count(signer.address)
    await ask_mint(settings, token, 52, owner)
    mint_52 = token.encode_abi("mint", [owner, 52])[2:].lower()
    real_send = web3.eth.send_raw_transaction

    async def refusing(raw):
        if mint_52 in str(raw).lower():  # the mint of 52, whatever its fees; not a cancel
            raise Web3RPCError("invalid transaction: refused for good")
        return await real_send(raw)

    monkeypatch.setattr(web3.eth, "send_raw_transaction", refusing)
    await ask_mint(settings, token, 53, owner)
    await drive(web3, settings, settings.chain.max_send_errors + 3)
    assert (await entry("test-mint:52")).get("cancelled")  # mined as a cancel: failed once final
    await rpc(web3, "anvil_mine", hex(70))
    await drive(web3, settings, 1)
    cancelled, behind = await entry("test-mint:52"), await entry("test-mint:53")
    assert cancelled["status"] == "failed" and cancelled["error"].startswith("cancelled")
    assert cancelled["attempts"][-1]["cancel"] and cancelled["nonce"] == start
    assert behind["status"] == "confirmed" and behind["nonce"] == start + 1
    assert await token.functions.ownerOf(53).call() == owner
    assert await token.functions.totalSupply().call() == 1


async def test_a_refusal_of_the_price_is_priced_again_and_never_cancels(web3, settings, token, monkeypatch):
    """A base fee above the offer for a while: the mint waits and is priced again, and goes through."""
    owner = (await web3.eth.accounts)[1]
    await ask_mint(settings, token, 54, owner)
    mint_54 = token.encode_abi("mint", [owner, 54])[2:].lower()
    real_send = web3.eth.send_raw_transaction
    refusing = {"on": True}

    async def spiking(raw):
        if refusing["on"] and mint_54 in str(raw).lower():
            raise Web3RPCError("max fee per gas less than block base fee")
        return await real_send(raw)

    monkeypatch.setattr(web3.eth, "send_raw_transaction", spiking)
    await drive(web3, settings, settings.chain.max_send_errors + 3)
    waiting = await entry("test-mint:54")
    assert waiting["status"] == "signed" and not any(a.get("cancel") for a in waiting["attempts"])
    assert waiting.get("sendErrors", 0) == 0 and "base fee" in waiting["refusal"]
    refusing["on"] = False
    await drive(web3, settings, 2)
    assert (await entry("test-mint:54"))["status"] == "mined"
    assert await token.functions.ownerOf(54).call() == owner


async def test_finality_is_a_depth_when_configured_or_when_the_node_has_no_finalized_block(
    web3, settings, monkeypatch
):
    head = await web3.eth.block_number + 100
    deep = settings.model_copy(update={"chain": settings.chain.model_copy(update={"finality_depth": 6})})
    assert await outbox.final_block(web3, deep, head) == head - 6
    real = web3.eth.get_block

    async def no_finalized_tag(block, *args, **kwargs):
        if block == "finalized":
            raise ValueError("unknown block tag")
        return await real(block, *args, **kwargs)

    monkeypatch.setattr(web3.eth, "get_block", no_finalized_tag)
    assert await outbox.final_block(web3, settings, head) == head - settings.chain.confirmations


async def test_the_signers_key_and_password_appear_in_no_log_and_no_record(
    web3, settings, token, tmp_path, caplog
):
    import json
    import logging

    from eth_account import Account
    from pydantic import SecretStr

    from app.config import DEV_SIGNER_KEY

    caplog.set_level(logging.DEBUG)
    password = "correct horse battery staple"
    path = tmp_path / "signer.json"
    path.write_text(json.dumps(Account.encrypt(DEV_SIGNER_KEY, password)))  # anvil's funded account 0
    chain = settings.chain.model_copy(
        update={"keystore_path": path, "keystore_password": SecretStr(password)}
    )
    keyed = settings.model_copy(update={"chain": chain})
    await ask_mint(keyed, token, 8, (await web3.eth.accounts)[1])
    await drive(web3, keyed)
    assert (await entry("test-mint:8"))["status"] == "mined"
    key = Account.from_key(DEV_SIGNER_KEY).key.hex().removeprefix("0x").lower()
    logged = (caplog.text + "".join(str(record.__dict__) for record in caplog.records)).lower()
    stored = json.dumps(await repository.outbox().find({}).to_list(None), default=str).lower()
    assert caplog.records  # the outbox did log its work
    for secret in (key, password):
        assert secret not in logged and secret not in stored
    assert password not in repr(keyed) and key not in repr(keyed).lower()
