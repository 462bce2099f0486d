"""Mint, list and buy on anvil by real wallets, read back by the indexer; a reorg rolled back."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from eth_account import Account
from structlog.testing import capture_logs
from web3 import Web3

from app.assets import service as assets_service
from app.chain import index_records, repository, service
from app.market import service as market_service
from app.market.documents import Transaction
from tests import factories
from tests.chain.conftest import (
    ONE_ETH,
    detail,
    minted_and_approved,
    onboard,
    rpc,
    settle,
    transact,
    transactions,
)

ZERO = "0x" + "00" * 20
BUYER_KEY = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a"  # anvil's account 2


async def test_mint_list_and_buy_by_real_wallets_show_in_the_api(web3, client, clients, settings, chain):
    seller, buyer = chain["seller"], chain["buyer"]
    created = await onboard(client, settings, 101, seller)
    assert created["contractAddress"] == chain["token"].address
    assert created["chain"] == {
        "contractAddress": chain["token"].address,
        "mintTx": None,
        "block": None,
        "status": "pending",
    }
    await settle(clients, settings)
    assert await chain["token"].functions.ownerOf(101).call() == seller
    minted = await detail(client, 101)
    assert minted["chain"]["status"] == "minted" and minted["chain"]["mintTx"].startswith("0x")
    assert [(t["type"], t["buyer"], t["status"]) for t in await transactions(client, 101)] == [
        ("mint", seller, "pending")
    ]

    # The owner lists with their own wallet, and another wallet buys.
    await transact(web3, chain["token"].functions.approve(chain["market"].address, 101), seller)
    await transact(web3, chain["market"].functions.list_token(101, ONE_ETH), seller)
    await settle(clients, settings, 1)
    listed = await detail(client, 101)
    assert listed["marketStatus"]["isListed"] and listed["marketStatus"]["listingPriceWei"] == str(ONE_ETH)
    assert listed["marketStatus"]["listedBy"] == seller
    listings = (await client.get("/api/market/listings")).json()["items"]
    assert [item["tokenId"] for item in listings] == [101]

    balance = await web3.eth.get_balance(seller)
    receipt = await transact(web3, chain["market"].functions.buy_token(101), buyer, ONE_ETH)
    fee = ONE_ETH * settings.chain.fee_bps // 10_000
    assert await web3.eth.get_balance(seller) == balance + ONE_ETH - fee
    await settle(clients, settings, 1)
    sold = await detail(client, 101)
    assert sold["ownership"]["currentOwner"] == buyer and not sold["marketStatus"]["isListed"]
    found = await transactions(client, 101)
    assert [t["type"] for t in found] == ["buy", "list", "mint"]  # newest first
    sale = found[0]
    assert (sale["seller"], sale["buyer"], sale["priceWei"]) == (seller, buyer, str(ONE_ETH))
    assert sale["transactionHash"] == Web3.to_hex(receipt["transactionHash"])
    owned = (await client.get(f"/api/users/{buyer}/assets")).json()["items"]
    assert [a["tokenId"] for a in owned] == [101]
    points = (await client.get("/api/assets/101/price-history", params={"source": "sale"})).json()["points"]
    assert [(p["price"], p["transactionHash"]) for p in points] == [(1.0, sale["transactionHash"])]

    # Final 64 blocks on (anvil's `finalized`): completed, and the mint confirmed.
    await rpc(web3, "anvil_mine", hex(70))
    await settle(clients, settings, 1)
    assert {t["status"] for t in await transactions(client, 101)} == {"completed"}
    assert (await detail(client, 101))["chain"]["status"] == "confirmed"


async def test_a_reorg_of_depth_three_is_rolled_back(web3, client, clients, settings, chain):
    seller, buyer = chain["seller"], chain["buyer"]
    await onboard(client, settings, 102, seller)
    await settle(clients, settings)
    await transact(web3, chain["token"].functions.approve(chain["market"].address, 102), seller)
    await transact(web3, chain["market"].functions.list_token(102, ONE_ETH), seller)
    await settle(clients, settings, 1)
    fork = await rpc(web3, "evm_snapshot")
    fork_block = await web3.eth.block_number
    await transact(web3, chain["market"].functions.buy_token(102), buyer, ONE_ETH)
    await rpc(web3, "anvil_mine", hex(2))  # the sale is 3 blocks deep
    await settle(clients, settings, 1)
    assert (await detail(client, 102))["ownership"]["currentOwner"] == buyer
    assert [t["type"] for t in await transactions(client, 102)] == ["buy", "list", "mint"]

    await rpc(web3, "evm_revert", fork)  # those 3 blocks are orphaned...
    await rpc(web3, "anvil_mine", hex(5))  # ...and another branch grows past them
    result = await settle(clients, settings, 1)
    assert (
        result["reorg"]["fork"] == fork_block and result["reorg"]["removed"] >= 2
    )  # the sale and its transfer
    rolled = await detail(client, 102)
    assert rolled["ownership"]["currentOwner"] == seller
    assert rolled["marketStatus"]["isListed"] and rolled["marketStatus"]["listingPriceWei"] == str(ONE_ETH)
    assert [t["type"] for t in await transactions(client, 102)] == ["list", "mint"]
    assert (await client.get("/api/assets/102/price-history", params={"source": "sale"})).json()[
        "points"
    ] == []
    cursor = await index_records.indexer_cursor(settings.chain.chain_id)
    assert cursor["lastReorg"]["fork"] == fork_block and cursor["block"] == await web3.eth.block_number


def _shallow(settings, depth: int = 2):
    """Settings whose indexer checks only the last `depth` recorded blocks one by one."""
    return settings.model_copy(update={"chain": settings.chain.model_copy(update={"reorg_depth": depth})})


async def _sold_on_a_branch(web3, client, clients, settings, chain, token_id: int, passes: int) -> int:
    """List the token, fork the chain, and on the branch buy it and index `passes` more blocks one pass
    at a time, so the orphaned part holds that many recorded blocks: the block the branch forked at."""
    seller, buyer = chain["seller"], chain["buyer"]
    await onboard(client, settings, token_id, seller)
    await settle(clients, settings)
    await transact(web3, chain["token"].functions.approve(chain["market"].address, token_id), seller)
    await transact(web3, chain["market"].functions.list_token(token_id, ONE_ETH), seller)
    await settle(clients, settings, 1)
    fork_block = await web3.eth.block_number
    snapshot = await rpc(web3, "evm_snapshot")
    await transact(web3, chain["market"].functions.buy_token(token_id), buyer, ONE_ETH)
    await settle(clients, settings, 1)
    for _ in range(passes):
        await rpc(web3, "anvil_mine", hex(1))
        await settle(clients, settings, 1)
    assert (await detail(client, token_id))["ownership"]["currentOwner"] == buyer
    await rpc(web3, "evm_revert", snapshot)
    assert await web3.eth.block_number == fork_block
    await rpc(web3, "anvil_mine", hex(passes + 5))  # another branch grows past the orphaned one
    return fork_block


async def _rolled_back(client, token_id: int, seller: str) -> None:
    rolled = await detail(client, token_id)
    assert rolled["ownership"]["currentOwner"] == seller and rolled["marketStatus"]["isListed"]
    assert [t["type"] for t in await transactions(client, token_id)] == ["list", "mint"]


async def test_a_reorg_deeper_than_the_blocks_checked_one_by_one_finds_its_fork(
    web3, client, clients, settings, chain
):
    """Eight recorded blocks orphaned, two checked one by one: the fork is found among those kept below
    them, and only what the orphaned blocks held is rolled back."""
    fork_block = await _sold_on_a_branch(web3, client, clients, settings, chain, 108, passes=8)
    result = await settle(clients, _shallow(settings), 1)
    assert result["reorg"]["fork"] == fork_block and result["reorg"]["depth"] >= 9
    await _rolled_back(client, 108, chain["seller"])
    cursor = await index_records.indexer_cursor(settings.chain.chain_id)
    assert cursor["lastReorg"]["fork"] == fork_block and cursor["block"] == await web3.eth.block_number


async def test_a_reorg_below_every_recorded_block_finds_its_fork_among_the_events_blocks(
    web3, client, clients, settings, chain, monkeypatch
):
    """No recorded block hash is canonical any more: the fork is the highest block of a live event that
    still is, found by bisection, and only what lies above it is read again."""
    fork_block = await _sold_on_a_branch(web3, client, clients, settings, chain, 109, passes=3)
    await index_records.blocks().delete_many({"number": {"$lte": fork_block}})  # forgotten: none canonical
    rewound = []
    real = index_records.rewind_cursor

    async def seen(chain_id, block, block_hash, reorg):
        rewound.append((block, block_hash))
        await real(chain_id, block, block_hash, reorg)

    monkeypatch.setattr(index_records, "rewind_cursor", seen)
    result = await settle(clients, _shallow(settings), 1)
    assert result["reorg"]["fork"] == fork_block  # the listing's block, the last event before the fork
    # the cursor keeps that block's hash, so the next range is checked to hang from it
    assert rewound == [(fork_block, Web3.to_hex((await web3.eth.get_block(fork_block))["hash"]))]
    await _rolled_back(client, 109, chain["seller"])
    assert (await index_records.indexer_cursor(settings.chain.chain_id))[
        "block"
    ] == await web3.eth.block_number


async def test_with_nothing_recorded_still_canonical_the_contracts_are_read_again_from_their_deployment(
    web3, client, clients, settings, chain
):
    fork_block = await _sold_on_a_branch(web3, client, clients, settings, chain, 110, passes=2)
    await index_records.blocks().delete_many({"number": {"$lte": fork_block}})
    await index_records.events().update_many({}, {"$set": {"blockHash": "0x" + "00" * 32}})  # none canonical
    deployed_at = min(r["block"] for r in await repository.deployments().find({}).to_list(None))
    result = await settle(clients, _shallow(settings), 1)
    assert result["reorg"]["fork"] == deployed_at - 1
    await settle(clients, settings, 2)
    await _rolled_back(client, 110, chain["seller"])


async def test_a_shallow_reorg_after_a_long_range_without_events_is_found_where_it_forked(
    web3, client, clients, settings, chain
):
    """A range longer than the block hashes kept, and no event in it: its last blocks' hashes are
    recorded, so a reorg of one block there is one block deep, not a read of everything again."""
    await onboard(client, settings, 111, chain["seller"])
    await settle(clients, settings)
    await rpc(web3, "anvil_mine", hex(300))
    fork_block = await web3.eth.block_number
    snapshot = await rpc(web3, "evm_snapshot")
    await rpc(web3, "anvil_mine", hex(1))
    await settle(clients, settings, 1)  # one range of 301 blocks
    await rpc(web3, "evm_revert", snapshot)
    approve = chain["token"].functions.approve(chain["market"].address, 111)
    await transact(web3, approve, chain["seller"])  # a block of its own: the branch differs
    await rpc(web3, "anvil_mine", hex(2))
    result = await settle(clients, settings, 1)
    assert result["reorg"]["fork"] == fork_block and result["reorg"]["depth"] == 1
    assert result["reorg"]["removed"] == 0
    assert [t["type"] for t in await transactions(client, 111)] == ["mint"]


async def test_a_node_behind_the_cursor_is_waited_for_not_taken_for_a_reorg(
    web3, client, clients, settings, chain
):
    await onboard(client, settings, 112, chain["seller"])
    await settle(clients, settings)
    snapshot = await rpc(web3, "evm_snapshot")
    behind = await web3.eth.block_number
    await rpc(web3, "anvil_mine", hex(5))
    await settle(clients, settings, 1)
    await rpc(web3, "evm_revert", snapshot)  # the node now answers from 5 blocks before the cursor
    assert await web3.eth.block_number == behind
    result = await settle(clients, settings, 1)
    assert result.get("reorg") is None and result["events"] == 0
    assert (await index_records.indexer_cursor(settings.chain.chain_id))["block"] == behind + 5
    assert [t["type"] for t in await transactions(client, 112)] == ["mint"]  # nothing taken back


@pytest.mark.parametrize("recorded", ["kept", "forgotten"])
async def test_a_chain_shorter_than_the_cursor_with_another_history_is_rolled_back_at_once(
    web3, client, clients, settings, chain, recorded
):
    """Below the cursor, but the node's own blocks differ from those recorded (or, with no block hash
    recorded at or below its head, from the blocks of the events read there): not a node behind, which
    would be waited for, but a chain that changed, rolled back without waiting for it to grow."""
    seller = chain["seller"]
    await onboard(client, settings, 113, seller)
    await settle(clients, settings)
    fork_block = await web3.eth.block_number
    snapshot = await rpc(web3, "evm_snapshot")
    await transact(web3, chain["token"].functions.approve(chain["market"].address, 113), seller)
    await transact(web3, chain["market"].functions.list_token(113, ONE_ETH), seller)
    await rpc(web3, "anvil_mine", hex(5))
    await settle(clients, settings, 1)
    assert (await detail(client, 113))["marketStatus"]["isListed"]
    await rpc(web3, "evm_revert", snapshot)
    await rpc(web3, "anvil_mine", hex(2))  # another branch, shorter than the cursor's
    head = await web3.eth.block_number
    assert head < (await index_records.indexer_cursor(settings.chain.chain_id))["block"]
    if recorded == "forgotten":
        await index_records.blocks().delete_many({"number": {"$lte": head}})
    result = await settle(clients, settings, 1)
    assert result["reorg"]["fork"] == fork_block and result["reorg"]["removed"] >= 1
    assert not (await detail(client, 113))["marketStatus"]["isListed"]


async def test_reading_a_range_again_adds_nothing(web3, client, clients, settings, chain):
    await onboard(client, settings, 103, chain["seller"])
    await settle(clients, settings)
    events = await index_records.events().count_documents({})
    deployed_at = min(r["block"] for r in await repository.deployments().find({}).to_list(None))
    await index_records.rewind_cursor(settings.chain.chain_id, deployed_at, None, {})
    await settle(clients, settings, 1)
    assert await index_records.events().count_documents({}) == events
    assert [t["type"] for t in await transactions(client, 103)] == ["mint"]


async def test_an_asset_of_another_contract_is_recorded_without_a_mint(
    web3, client, clients, settings, chain
):
    other = "0x" + "ab" * 20
    created = await onboard(
        client, settings, 104, chain["seller"], contractAddress=Web3.to_checksum_address(other)
    )
    assert created["chain"] is None
    assert await repository.outbox().count_documents({"kind": "mint"}) == 0


async def test_without_a_deployed_token_an_asset_needs_its_contract(web3, client, settings):
    admin = await factories.login(settings, roles=("admin",))
    body = {"tokenId": 105, "name": "No chain", "assetType": "Art"}
    refused = await client.post("/api/assets", json=body, headers=admin.headers)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "no_asset_token"


async def test_a_live_asset_token_of_an_older_build_is_not_minted_through(
    web3, client, clients, settings, chain
):
    """Its calls would be encoded with this build's ABI, which it may not have: a new asset needs its
    contract given, as with none deployed, until the token is redeployed."""
    await repository.deployments().update_one(
        {"contract": "AssetToken", "status": "deployed"}, {"$set": {"artifactHash": "an older build"}}
    )
    admin = await factories.login(settings, roles=("admin",))
    body = {"tokenId": 173, "name": "Old build", "assetType": "Art", "owner": chain["seller"]}
    refused = await client.post("/api/assets", json=body, headers=admin.headers)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "no_asset_token"
    assert await repository.outbox().count_documents({"kind": "mint"}) == 0


async def test_a_mint_asked_for_before_a_crash_is_asked_again_once(web3, client, clients, settings, chain):
    await onboard(client, settings, 106, chain["seller"])
    await repository.outbox().delete_many({})  # the process died between the insert and the ask
    assert await assets_service.request_pending_mints(clients, settings) == 1
    assert await assets_service.request_pending_mints(clients, settings) == 0  # asked for already
    assert await repository.outbox().count_documents({"kind": "mint"}) == 1
    await settle(clients, settings)
    assert await chain["token"].functions.ownerOf(106).call() == chain["seller"]
    assert (await detail(client, 106))["chain"]["status"] == "minted"
    assert await assets_service.request_pending_mints(clients, settings) == 0


async def test_one_transaction_that_moves_two_tokens_is_a_row_for_each(client, clients, settings, chain):
    """A sweep (one transaction, several tokens) is several transactions, one per token."""
    from datetime import UTC, datetime

    from app.market import indexing

    tx, block_hash = "0x" + "ab" * 32, "0x" + "cd" * 32
    sender, receiver = "0x" + "11" * 20, "0x" + "22" * 20
    events = [
        {
            "chainId": settings.chain.chain_id,
            "contract": "AssetToken",
            "address": chain["token"].address,
            "event": "Transfer",
            "blockNumber": 10,
            "blockHash": block_hash,
            "txHash": tx,
            "logIndex": index,
            "tokenId": token_id,
            "args": {"sender": sender, "receiver": receiver, "token_id": str(token_id)},
            "blockTime": datetime(2026, 1, 1, tzinfo=UTC),
            "removed": False,
        }
        for index, token_id in enumerate((301, 302))
    ]
    await index_records.save_events(events)
    await indexing.apply_tokens(clients, settings, [301, 302], final=5, token_address=None)
    for token_id in (301, 302):
        assert [(t["type"], t["transactionHash"]) for t in await transactions(client, token_id)] == [
            ("transfer", tx)
        ]


async def test_a_crash_between_reading_and_applying_loses_nothing(
    web3, client, clients, settings, chain, monkeypatch
):
    from app.market import indexing

    await onboard(client, settings, 107, chain["seller"])
    for _ in range(2):
        await service.process_outbox(clients, settings)
    real = indexing.apply_tokens

    async def died(*args, **kwargs):
        raise RuntimeError("the worker died")

    monkeypatch.setattr(indexing, "apply_tokens", died)
    with pytest.raises(RuntimeError, match="the worker died"):
        await market_service.index_chain(clients, settings)  # read the mint, died before applying it
    monkeypatch.setattr(indexing, "apply_tokens", real)
    result = await market_service.index_chain(clients, settings)
    assert result["events"] == 0 and result["tokens"] == 1  # nothing new to read; the mint still applied
    assert (await detail(client, 107))["chain"]["status"] == "minted"
    assert [t["type"] for t in await transactions(client, 107)] == ["mint"]
    assert await index_records.pending_tokens(settings.chain.chain_id) == []


async def test_a_mint_the_outbox_failed_shows_failed_and_is_not_asked_again(
    web3, client, clients, settings, chain
):
    await onboard(client, settings, 108, chain["seller"])
    await repository.outbox().update_one(
        {"kind": "mint"}, {"$set": {"status": "failed", "error": "would revert: x"}}
    )
    assert await assets_service.request_pending_mints(clients, settings) == 0
    failed = (await detail(client, 108))["chain"]
    assert failed["status"] == "failed"
    assert await assets_service.request_pending_mints(clients, settings) == 0


async def test_a_token_is_never_minted_to_the_zero_address(web3, client, settings, chain):
    admin = await factories.login(settings, roles=("admin",))
    body = {"tokenId": 109, "name": "Nobody's", "assetType": "Art", "owner": "0x" + "0" * 40}
    refused = await client.post("/api/assets", json=body, headers=admin.headers)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_address"
    assert await repository.outbox().count_documents({"kind": "mint"}) == 0


async def test_a_range_the_node_refuses_is_read_in_halves(
    web3, client, clients, settings, chain, monkeypatch
):
    """A provider that refuses ranges of more than 2 blocks (too many results): the indexer still reads."""
    from web3.exceptions import Web3RPCError

    for token_id in (110, 111, 112):
        await onboard(client, settings, token_id, chain["seller"])
        await service.process_outbox(clients, settings)
        await rpc(web3, "anvil_mine", hex(3))
    real = web3.eth.get_logs

    async def picky(params):
        if params["toBlock"] - params["fromBlock"] > 2:
            raise Web3RPCError("query returned more than 10000 results")
        return await real(params)

    monkeypatch.setattr(web3.eth, "get_logs", picky)
    for _ in range(12):
        await market_service.index_chain(clients, settings)
    for token_id in (110, 111, 112):
        assert (await detail(client, token_id))["chain"]["status"] == "minted"


async def test_one_indexer_pass_at_a_time(web3, client, clients, settings, chain):
    """Two overlapping passes could pull each other's pending tokens: the second one skips."""
    await clients.redis.set(market_service.INDEX_LOCK, "another pass", px=60_000)
    assert await market_service.index_chain(clients, settings) == {"skipped": "another pass is running"}
    assert await clients.redis.get(market_service.INDEX_LOCK) == b"another pass"  # not ours to release
    await clients.redis.delete(market_service.INDEX_LOCK)
    assert "events" in await market_service.index_chain(clients, settings)
    assert await clients.redis.get(market_service.INDEX_LOCK) is None


async def test_the_blocks_read_are_kept_with_their_hash_and_parent(web3, client, clients, settings, chain):
    await onboard(client, settings, 113, chain["seller"])
    await settle(clients, settings)
    kept = await index_records.blocks().find({"chainId": settings.chain.chain_id}).to_list(None)
    assert kept
    for block in kept:
        header = await web3.eth.get_block(block["number"])
        assert block["hash"] == Web3.to_hex(header["hash"])
        assert block["parentHash"] == Web3.to_hex(header["parentHash"])


async def test_events_a_crashed_pass_left_above_the_cursor_do_not_outlive_a_reorg(
    web3, client, clients, settings, chain
):
    seller = chain["seller"]
    fork = await minted_and_approved(web3, client, clients, settings, chain, 108)
    before = await web3.eth.get_block("latest")
    await transact(web3, chain["market"].functions.list_token(108, ONE_ETH), seller)
    await settle(clients, settings, 1)
    # As a pass that stored the listing and died before moving its cursor past it:
    await index_records.cursors().update_one(
        {"chainId": settings.chain.chain_id},
        {"$set": {"block": before["number"], "hash": Web3.to_hex(before["hash"])}},
    )
    await rpc(web3, "evm_revert", fork)  # the listing's block is replaced; the cursor's block stays
    await transact(web3, chain["market"].functions.list_token(108, 2 * ONE_ETH), seller)
    await rpc(web3, "anvil_mine", hex(3))
    await settle(clients, settings, 2)

    listings = await index_records.events().find({"tokenId": 108, "event": "Listed"}).to_list()
    live = [int(e["args"]["price"]) for e in listings if not e["removed"]]
    assert live == [2 * ONE_ETH]
    assert (await detail(client, 108))["marketStatus"]["listingPriceWei"] == str(2 * ONE_ETH)


async def test_a_pass_whose_write_fails_midway_keeps_its_cursor_and_loses_no_event(
    web3, client, clients, settings, chain, monkeypatch
):
    from app.chain import indexer

    seller, chain_id = chain["seller"], settings.chain.chain_id
    await minted_and_approved(web3, client, clients, settings, chain, 114)
    cursor = await index_records.indexer_cursor(chain_id)
    for call in (
        chain["market"].functions.list_token(114, ONE_ETH),
        chain["market"].functions.delist_token(114),
        chain["market"].functions.list_token(114, 2 * ONE_ETH),
    ):
        await transact(web3, call, seller)
    # A chunk per event: the second chunk's write fails while the first is stored.
    monkeypatch.setattr(indexer, "DECODE_CHUNK", 1)
    real, written = index_records.save_events, []

    async def lost_on_the_second(found):
        written.append(len(found))
        if len(written) == 2:
            raise ConnectionError("the database went away")
        await real(found)

    monkeypatch.setattr(index_records, "save_events", lost_on_the_second)
    with pytest.raises(ConnectionError):
        await market_service.index_chain(clients, settings)
    assert written == [1, 1]
    assert (await index_records.indexer_cursor(chain_id))["block"] == cursor["block"]

    monkeypatch.setattr(index_records, "save_events", real)
    await settle(clients, settings, 1)
    market = await index_records.events().find({"tokenId": 114, "contract": "Marketplace"}).to_list()
    assert sorted((e["event"], e["removed"]) for e in market) == [
        ("Delisted", False),
        ("Listed", False),
        ("Listed", False),
    ]
    assert (await detail(client, 114))["marketStatus"]["listingPriceWei"] == str(2 * ONE_ETH)


class _LandingLate:
    """A repository write as the database does it, taking `delay`: once sent, it goes on to land even if
    its client stops waiting."""

    def __init__(self, write, delay: float) -> None:
        self.write, self.delay = write, delay
        self.sent, self.landed = asyncio.Event(), asyncio.Event()

    async def __call__(self, *args):
        self.sent.set()
        return await asyncio.shield(asyncio.ensure_future(self._server_side(*args)))

    async def _server_side(self, *args):
        await asyncio.sleep(self.delay)
        result = await self.write(*args)
        self.landed.set()
        return result


async def _cancelled_once_sent(clients, settings, write: _LandingLate) -> None:
    """Run a pass and cancel it once `write` is sent: it ends only after the write has landed, and then
    lets go of its lease."""
    running = asyncio.create_task(market_service.index_chain(clients, settings))
    await write.sent.wait()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert write.landed.is_set()
    assert await clients.redis.get(market_service.INDEX_LOCK) is None


async def test_a_pass_that_fails_ends_only_once_the_write_it_sent_has_landed(
    web3, client, clients, settings, chain, monkeypatch
):
    """The database finishes a write whether or not its client waits; landing after the failed pass let
    go, an orphaned branch's event would stay live under the next pass."""
    from app.chain import indexer

    seller = chain["seller"]
    fork = await minted_and_approved(web3, client, clients, settings, chain, 115)
    await transact(web3, chain["market"].functions.list_token(115, ONE_ETH), seller)
    await transact(web3, chain["market"].functions.delist_token(115), seller)
    monkeypatch.setattr(indexer, "DECODE_CHUNK", 1)
    real_save, real_decode = index_records.save_events, indexer._decode
    slow_save = _LandingLate(real_save, 0.5)
    decoded = []

    def fails_on_the_second(*args):
        decoded.append(1)
        if len(decoded) == 2:
            raise ValueError("a log the ABI cannot decode")
        return real_decode(*args)

    monkeypatch.setattr(index_records, "save_events", slow_save)
    monkeypatch.setattr(indexer, "_decode", fails_on_the_second)
    with pytest.raises(ValueError):
        await market_service.index_chain(clients, settings)
    assert (
        slow_save.landed.is_set()
    )  # the first chunk's write landed before the pass ended, not under the next
    monkeypatch.setattr(index_records, "save_events", real_save)
    monkeypatch.setattr(indexer, "_decode", real_decode)

    # A reorg replaces the listing; the next pass takes back what the failed one stored, reads the new
    # branch, and only its listing is live.
    await rpc(web3, "evm_revert", fork)
    await transact(web3, chain["market"].functions.list_token(115, 2 * ONE_ETH), seller)
    await rpc(web3, "anvil_mine", hex(3))
    await settle(clients, settings, 2)
    listings = await index_records.events().find({"tokenId": 115, "event": "Listed"}).to_list()
    assert [int(e["args"]["price"]) for e in listings if not e["removed"]] == [2 * ONE_ETH]


async def test_a_pass_whose_cursor_moved_under_it_leaves_the_cursor_alone(
    web3, client, clients, settings, chain, monkeypatch
):
    from app.chain import indexer

    chain_id = settings.chain.chain_id
    await minted_and_approved(web3, client, clients, settings, chain, 116)
    await transact(web3, chain["market"].functions.list_token(116, ONE_ETH), chain["seller"])
    ahead = await web3.eth.block_number + 5
    real_save = index_records.save_events

    async def another_pass_moves_on(found):  # as a pass beside this one, whose lease lapsed
        await real_save(found)
        await index_records.cursors().update_one({"chainId": chain_id}, {"$set": {"block": ahead}})

    monkeypatch.setattr(index_records, "save_events", another_pass_moves_on)
    with pytest.raises(indexer.PassOverlapped):
        await market_service.index_chain(clients, settings)
    assert (await index_records.indexer_cursor(chain_id))["block"] == ahead  # not moved back


async def test_a_cancelled_pass_lets_go_only_once_its_take_back_has_landed(
    web3, client, clients, settings, chain, monkeypatch
):
    """A job timeout or a worker shutting down cancels a pass; a write it had sent still lands, and must
    land before the next pass runs, or it would undo that pass's work."""
    seller, chain_id = chain["seller"], settings.chain.chain_id
    await minted_and_approved(web3, client, clients, settings, chain, 117)
    before = await web3.eth.get_block("latest")
    await transact(web3, chain["market"].functions.list_token(117, ONE_ETH), seller)
    await settle(clients, settings, 1)
    # As a pass that stored the listing and died before moving its cursor past it:
    await index_records.cursors().update_one(
        {"chainId": chain_id}, {"$set": {"block": before["number"], "hash": Web3.to_hex(before["hash"])}}
    )
    real_remove = index_records.remove_events_after
    slow_remove = _LandingLate(real_remove, 1)
    monkeypatch.setattr(index_records, "remove_events_after", slow_remove)
    await _cancelled_once_sent(clients, settings, slow_remove)  # the take-back landed before it let go
    monkeypatch.setattr(index_records, "remove_events_after", real_remove)
    await settle(clients, settings, 2)
    listed = await index_records.events().find({"tokenId": 117, "event": "Listed"}).to_list()
    assert [e["removed"] for e in listed] == [False]
    assert (await detail(client, 117))["marketStatus"]["isListed"]


async def test_a_pass_cancelled_while_it_applies_lets_go_once_its_write_landed_and_writes_no_more(
    web3, client, clients, settings, chain, monkeypatch
):
    """The market's own writes of a pass (a token's transactions, owner, listing) land too once sent:
    a pass cancelled while it writes them lets go of its lease only once they have."""
    from app.market import repository as market_repository

    seller = chain["seller"]
    await minted_and_approved(web3, client, clients, settings, chain, 118)
    await transact(web3, chain["market"].functions.list_token(118, ONE_ETH), seller)
    real_insert = market_repository.insert_indexed
    slow_insert = _LandingLate(real_insert, 1)
    later = []

    async def applied(*args):
        later.append(args)
        return set()

    monkeypatch.setattr(market_repository, "insert_indexed", slow_insert)
    monkeypatch.setattr(assets_service, "apply_chain_states", applied)
    await _cancelled_once_sent(clients, settings, slow_insert)
    assert later == []  # nothing after it: the token's listing was not written
    assert [t["type"] for t in await transactions(client, 118)] == ["list", "mint"]
    assert not (await detail(client, 118))["marketStatus"]["isListed"]
    monkeypatch.undo()
    await settle(clients, settings, 1)
    assert [t["type"] for t in await transactions(client, 118)] == ["list", "mint"]
    assert (await detail(client, 118))["marketStatus"]["isListed"]


async def test_a_pass_reads_at_most_its_range_of_blocks(web3, client, clients, settings, chain, monkeypatch):
    """What most providers allow one eth_getLogs (CHAIN_INDEX_RANGE, 2,000 by default), here 5."""
    await settle(clients, settings, 1)
    narrow = settings.model_copy(update={"chain": settings.chain.model_copy(update={"index_range": 5})})
    asked = []
    real = web3.eth.get_logs

    async def counted(query):
        asked.append(query["toBlock"] - query["fromBlock"] + 1)
        return await real(query)

    monkeypatch.setattr(web3.eth, "get_logs", counted)
    await rpc(web3, "anvil_mine", hex(12))
    head = await web3.eth.block_number
    passes = []
    while not passes or passes[-1]["to"] < head:
        passes.append(await market_service.index_chain(clients, narrow))
    assert [p["to"] - p["from"] + 1 for p in passes] == [5, 5, 2] and asked == [5, 5, 2]


async def test_a_sale_on_chain_scores_the_appraisal_before_it_in_the_live_ledger(
    web3, client, clients, settings, chain
):
    from datetime import timedelta

    from app.lib.timeutil import utcnow
    from app.oracle import service as oracle_service
    from app.oracle.documents import AIOracleData

    seller, buyer = chain["seller"], chain["buyer"]
    await minted_and_approved(web3, client, clients, settings, chain, 118)
    appraised = await AIOracleData.get_pymongo_collection().insert_one(
        {
            "tokenId": 118,
            "timestamp": utcnow() - timedelta(hours=1),
            "predictedPrice": 0.9,
            "interval": {"low": 0.8, "high": 1.1},
            "confidenceScore": 80.0,
            "modelVersion": "v-test",
            "operator": None,
            "status": "accepted",
            "outcome": None,
        }
    )
    await transact(web3, chain["market"].functions.list_token(118, ONE_ETH), seller)
    receipt = await transact(web3, chain["market"].functions.buy_token(118), buyer, ONE_ETH)
    await settle(clients, settings, 1)
    assert (await oracle_service.score_ledger(clients.redis))["scored"] == 0  # the sale is not final yet
    await rpc(web3, "anvil_mine", hex(70))
    await settle(clients, settings, 1)
    assert (await oracle_service.score_ledger(clients.redis))["scored"] == 1
    outcome = (await AIOracleData.get_pymongo_collection().find_one({"_id": appraised.inserted_id}))[
        "outcome"
    ]
    assert outcome["source"] == f"chain:{Web3.to_hex(receipt['transactionHash'])}"
    assert outcome["price"] == 1.0 and outcome["covered"] and outcome["ape"] == pytest.approx(0.1)


async def test_a_pass_writes_what_changed_not_a_tokens_whole_history_again(
    web3, client, clients, settings, chain
):
    """A token relisted block after block must not make every pass rewrite all its transactions: the
    pass after one more listing writes that listing's row alone."""
    seller = chain["seller"]
    await minted_and_approved(web3, client, clients, settings, chain, 160)
    for price in range(1, 31):
        await transact(web3, chain["market"].functions.list_token(160, price * ONE_ETH), seller)
    first = await settle(clients, settings, 1)
    assert first["transactions"] == 30  # the listings; the mint was written by an earlier pass

    await transact(web3, chain["market"].functions.list_token(160, 99 * ONE_ETH), seller)
    result = await settle(clients, settings, 1)
    assert (result["tokens"], result["transactions"]) == (1, 1)
    found = (await client.get("/api/transactions", params={"tokenId": 160, "limit": 100})).json()["items"]
    assert len(found) == 32 and found[0]["priceWei"] == str(99 * ONE_ETH)
    assert (await detail(client, 160))["marketStatus"]["listingPriceWei"] == str(99 * ONE_ETH)

    await rpc(web3, "anvil_mine", hex(70))  # final: each row's status moves once, by the sweep
    await settle(clients, settings, 1)
    found = (await client.get("/api/transactions", params={"tokenId": 160, "limit": 100})).json()["items"]
    assert len(found) == 32 and {t["status"] for t in found} == {"completed"}
    await transact(web3, chain["market"].functions.delist_token(160), seller)
    assert (await settle(clients, settings, 1))["transactions"] == 1


async def test_a_sale_mined_again_in_another_block_after_a_reorg_takes_that_blocks_time(
    web3, client, clients, settings, chain
):
    """The same signed sale, orphaned and then mined again later on the new branch: its row, owner and
    sale point all follow the block it is in now."""
    buyer = Account.from_key(BUYER_KEY)
    assert buyer.address == chain["buyer"]
    await minted_and_approved(web3, client, clients, settings, chain, 161)
    await transact(web3, chain["market"].functions.list_token(161, ONE_ETH), chain["seller"])
    await settle(clients, settings, 1)
    snapshot = await rpc(web3, "evm_snapshot")
    nonce = await web3.eth.get_transaction_count(buyer.address)
    tx = (
        await chain["market"]
        .functions.buy_token(161)
        .build_transaction({"from": buyer.address, "value": ONE_ETH, "nonce": nonce})
    )
    raw = buyer.sign_transaction(tx).raw_transaction
    first = await web3.eth.wait_for_transaction_receipt(await web3.eth.send_raw_transaction(raw))
    await settle(clients, settings, 1)

    await rpc(web3, "evm_revert", snapshot)
    await rpc(web3, "evm_increaseTime", 3600)
    await rpc(web3, "anvil_mine", hex(3))
    again = await web3.eth.wait_for_transaction_receipt(await web3.eth.send_raw_transaction(raw))
    assert again["transactionHash"] == first["transactionHash"] and again["blockHash"] != first["blockHash"]
    await settle(clients, settings, 1)

    block = await web3.eth.get_block(again["blockNumber"])
    at = datetime.fromtimestamp(block["timestamp"], UTC).isoformat().replace("+00:00", "Z")
    [sale] = [t for t in await transactions(client, 161) if t["type"] == "buy"]
    assert (sale["timestamp"], sale["blockNumber"]) == (at, again["blockNumber"])
    assert (await detail(client, 161))["ownership"]["ownerSince"] == at
    points = (await client.get("/api/assets/161/price-history", params={"source": "sale"})).json()["points"]
    assert [p["timestamp"] for p in points] == [at]


async def test_a_token_minted_for_an_asset_onboarded_while_the_chain_was_off_is_applied_with_the_rest(
    web3, client, clients, settings, chain
):
    """An asset of the AssetToken written without a chain record (onboarded before the chain was on)
    gets one when its token is minted, and the other tokens of the same pass are applied too."""
    minter = (await web3.eth.accounts)[0]
    await factories.asset(162, chain["seller"], contractAddress=chain["token"].address, chain=None)
    await onboard(client, settings, 163, chain["seller"])
    await transact(web3, chain["token"].functions.mint(chain["seller"], 162), minter)
    await settle(clients, settings)
    offline = (await detail(client, 162))["chain"]
    assert offline["status"] == "minted" and offline["mintTx"].startswith("0x")
    assert offline["contractAddress"] == chain["token"].address
    assert (await detail(client, 163))["chain"]["status"] == "minted"
    assert [t["type"] for t in await transactions(client, 162)] == ["mint"]


async def test_a_token_whose_state_the_database_refuses_holds_back_no_other_token(
    web3, client, clients, settings, chain
):
    """A write the database refuses for one token (here its asset's `ownership` is not a document) leaves
    that token pending and logged, and every other token of the pass is applied; once the asset is
    mended the next pass applies it."""
    minter = (await web3.eth.accounts)[0]
    await factories.asset(164, chain["seller"], contractAddress=chain["token"].address, chain=None)
    assets = assets_service.Asset.get_pymongo_collection()
    await assets.update_one({"tokenId": 164}, {"$set": {"ownership": "not a document"}})
    await onboard(client, settings, 165, chain["seller"])
    await transact(web3, chain["token"].functions.mint(chain["seller"], 164), minter)
    with capture_logs() as logs:
        result = await settle(clients, settings)
    assert result["refused"] == [164]
    assert any(e["event"] == "chain_state.refused" and e["tokenId"] == 164 for e in logs)
    assert (await detail(client, 165))["chain"]["status"] == "minted"
    assert 164 in await service.pending_tokens(settings)

    await assets.update_one({"tokenId": 164}, {"$set": {"ownership": {"currentOwner": None}}})
    result = await settle(clients, settings, 1)
    assert result["refused"] == [] and 164 not in await service.pending_tokens(settings)
    mended = await detail(client, 164)
    assert mended["ownership"]["currentOwner"] == chain["seller"] and mended["chain"]["status"] == "minted"


async def test_a_listing_priced_beyond_all_the_ether_is_no_listing_and_the_token_still_moves(
    web3, client, clients, settings, chain
):
    """A Marketplace of an older build took any price. One a decimal column cannot hold exactly is a
    row without a price and no listing to show, and the token's later moves are applied as ever."""
    seller, buyer = chain["seller"], chain["buyer"]
    await minted_and_approved(web3, client, clients, settings, chain, 166)
    receipt = await transact(web3, chain["market"].functions.list_token(166, ONE_ETH), seller)
    await settle(clients, settings, 1)
    # What such a Marketplace logs: the same event with a 41-digit price.
    await index_records.events().update_one(
        {"tokenId": 166, "event": "Listed", "txHash": Web3.to_hex(receipt["transactionHash"])},
        {"$set": {"args.price": str(10**40 + 1)}},
    )
    await Transaction.get_pymongo_collection().delete_one({"tokenId": 166, "type": "list"})
    await _repend(settings, 166)
    result = await settle(clients, settings, 1)
    assert result["refused"] == []
    assert not (await detail(client, 166))["marketStatus"]["isListed"]
    listing = next(t for t in await transactions(client, 166) if t["type"] == "list")
    assert listing["priceWei"] is None

    await transact(web3, chain["token"].functions.transferFrom(seller, buyer, 166), seller)
    await settle(clients, settings, 1)
    assert (await detail(client, 166))["ownership"]["currentOwner"] == buyer


async def test_a_token_whose_events_cannot_be_read_holds_back_no_other_token(
    web3, client, clients, settings, chain
):
    """An event the platform cannot make sense of (here a listing without its price): that token is
    refused, logged and left pending, and the others of the pass are applied."""
    await minted_and_approved(web3, client, clients, settings, chain, 166)
    await minted_and_approved(web3, client, clients, settings, chain, 167)
    receipt = await transact(web3, chain["market"].functions.list_token(166, ONE_ETH), chain["seller"])
    await transact(web3, chain["market"].functions.list_token(167, ONE_ETH), chain["seller"])
    await settle(clients, settings, 1)
    await index_records.events().update_one(
        {"tokenId": 166, "event": "Listed", "txHash": Web3.to_hex(receipt["transactionHash"])},
        {"$unset": {"args.price": ""}},
    )
    await _repend(settings, 166, 167)
    with capture_logs() as logs:
        result = await settle(clients, settings, 1)
    assert result["refused"] == [166]
    assert any(e["event"] == "market.indexing.token_refused" and e["tokenId"] == 166 for e in logs)
    assert 166 in await service.pending_tokens(settings)
    assert (await detail(client, 167))["marketStatus"]["isListed"]


async def _repend(settings, *token_ids: int) -> None:
    await index_records.cursors().update_one(
        {"chainId": settings.chain.chain_id}, {"$addToSet": {"pending": {"$each": list(token_ids)}}}
    )


async def test_a_live_marketplace_of_an_older_build_is_still_followed(web3, client, clients, settings, chain):
    """Production keeps a live Marketplace whose code has changed since (until it is redeployed on
    purpose): its events stay the token's history, and new listings on it show."""
    seller, buyer, market, token = chain["seller"], chain["buyer"], chain["market"], chain["token"]
    await minted_and_approved(web3, client, clients, settings, chain, 171)
    await transact(web3, market.functions.list_token(171, ONE_ETH), seller)
    await transact(web3, market.functions.buy_token(171), buyer, ONE_ETH)
    await settle(clients, settings, 1)
    await repository.deployments().update_one(
        {"contract": "Marketplace", "status": "deployed"}, {"$set": {"artifactHash": "an older build"}}
    )
    await transact(web3, token.functions.approve(market.address, 171), buyer)
    await transact(web3, market.functions.list_token(171, 2 * ONE_ETH), buyer)
    await settle(clients, settings, 1)
    assert [t["type"] for t in await transactions(client, 171)] == ["list", "buy", "list", "mint"]
    points = (await client.get("/api/assets/171/price-history", params={"source": "sale"})).json()["points"]
    assert len(points) == 1
    relisted = (await detail(client, 171))["marketStatus"]
    assert relisted["isListed"] and relisted["listingPriceWei"] == str(2 * ONE_ETH)


async def test_an_approval_of_all_tokens_taken_back_on_an_orphaned_branch_shows_the_listings_again(
    web3, client, clients, settings, chain
):
    seller, market, token = chain["seller"], chain["market"], chain["token"]
    await onboard(client, settings, 172, seller)
    await settle(clients, settings)
    await transact(web3, token.functions.setApprovalForAll(market.address, True), seller)
    await transact(web3, market.functions.list_token(172, ONE_ETH), seller)
    await settle(clients, settings, 1)
    snapshot = await rpc(web3, "evm_snapshot")
    await transact(web3, token.functions.setApprovalForAll(market.address, False), seller)
    await settle(clients, settings, 1)
    assert 172 not in await _listed_ids(client)

    await rpc(web3, "evm_revert", snapshot)  # the revocation is orphaned, and not mined again
    await rpc(web3, "anvil_mine", hex(4))
    await settle(clients, settings, 2)
    assert await token.functions.isApprovedForAll(seller, market.address).call()
    assert 172 in await _listed_ids(client)


async def _listed_ids(client) -> list[int]:
    return [item["tokenId"] for item in (await client.get("/api/market/listings")).json()["items"]]


async def test_a_listing_whose_token_approval_was_taken_back_is_not_shown_until_it_returns(
    web3, client, clients, settings, chain
):
    """A listing the marketplace can no longer fill (its owner approved another address, or none) is not
    bait in the listings; it shows again, at its price, when the approval returns."""
    seller, market, token = chain["seller"], chain["market"], chain["token"]
    await minted_and_approved(web3, client, clients, settings, chain, 168)
    await transact(web3, market.functions.list_token(168, ONE_ETH), seller)
    await settle(clients, settings, 1)
    assert 168 in await _listed_ids(client)

    await transact(web3, token.functions.approve(ZERO, 168), seller)
    await settle(clients, settings, 1)
    assert not (await detail(client, 168))["marketStatus"]["isListed"]
    assert 168 not in await _listed_ids(client)
    assert [t["type"] for t in await transactions(client, 168)] == ["list", "mint"]  # no approval rows
    assert (await market_service.reconcile_chain(clients, settings))["drift"]["listing"] == 0

    await transact(web3, token.functions.approve(market.address, 168), seller)
    await settle(clients, settings, 1)
    shown = await detail(client, 168)
    assert shown["marketStatus"]["isListed"] and shown["marketStatus"]["listingPriceWei"] == str(ONE_ETH)


async def test_an_owner_taking_back_its_approval_of_all_tokens_hides_each_of_its_listings(
    web3, client, clients, settings, chain
):
    seller, market, token = chain["seller"], chain["market"], chain["token"]
    for token_id in (169, 170):
        await onboard(client, settings, token_id, seller)
    await settle(clients, settings)
    await transact(web3, token.functions.setApprovalForAll(market.address, True), seller)
    for token_id in (169, 170):
        await transact(web3, market.functions.list_token(token_id, ONE_ETH), seller)
    await settle(clients, settings, 1)
    assert {169, 170} <= set(await _listed_ids(client))

    await transact(web3, token.functions.setApprovalForAll(market.address, False), seller)
    await settle(clients, settings, 1)
    assert not {169, 170} & set(await _listed_ids(client))
    assert (await market_service.reconcile_chain(clients, settings))["drift"]["listing"] == 0

    await transact(web3, token.functions.setApprovalForAll(market.address, True), seller)
    await settle(clients, settings, 1)
    assert {169, 170} <= set(await _listed_ids(client))
