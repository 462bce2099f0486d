"""What the indexed chain announces to the stream: OpenSea's event names in chain order, once each, and
`{event}_removed` for what a reorg took back."""

from __future__ import annotations

from web3 import Web3

from app.chain import service as chain_service
from app.chain.documents import ChainEvent
from app.events.documents import EventRecord
from app.lib import eventlog
from app.market import announcing
from app.market import jobs as market_jobs
from app.market import service as market_service
from tests.chain.conftest import ONE_ETH, minted_and_approved, onboard, rpc, settle, transact


async def _announced(clients, since: str = "0-0", topics=("sales", "listings", "transfers", "asset:111")):
    found = await eventlog.replay_page(clients.redis, since, list(topics))
    return [(m["event"], m["payload"]["tokenId"]) for m in found.messages], found.messages


async def _minted_and_listed(web3, client, clients, settings, chain) -> None:
    """Token 111 minted to the seller and listed by them (not yet indexed)."""
    seller = chain["seller"]
    await onboard(client, settings, 111, seller)
    await settle(clients, settings)
    await transact(web3, chain["token"].functions.approve(chain["market"].address, 111), seller)
    await transact(web3, chain["market"].functions.list_token(111, ONE_ETH), seller)


async def test_mint_list_and_sale_are_announced_once_each_in_chain_order(
    web3, client, clients, settings, chain
):
    seller, buyer = chain["seller"], chain["buyer"]
    await _minted_and_listed(web3, client, clients, settings, chain)
    receipt = await transact(web3, chain["market"].functions.buy_token(111), buyer, ONE_ETH)
    await settle(clients, settings, 2)
    await settle(clients, settings, 2)  # passes that find nothing new announce nothing

    names, messages = await _announced(clients)
    assert names == [
        ("item_transferred", 111),  # the mint
        ("item_listed", 111),
        ("item_transferred", 111),  # the sale's transfer, then the sale
        ("item_sold", 111),
    ]
    sale = messages[-1]
    assert sale["topic"] == "sales"
    assert sale["payload"]["transactionHash"] == Web3.to_hex(receipt["transactionHash"])
    assert (sale["payload"]["seller"], sale["payload"]["buyer"]) == (seller, buyer)
    assert sale["payload"]["priceWei"] == str(ONE_ETH) and sale["payload"]["price"] == 1.0
    fee = ONE_ETH * settings.chain.fee_bps // 10_000
    assert sale["payload"]["feeWei"] == str(fee)
    mint = messages[0]["payload"]
    assert mint["from"] == "0x0000000000000000000000000000000000000000" and mint["to"] == seller
    assert await EventRecord.find(EventRecord.doneAt == None).count() == 0  # noqa: E711 - a query


async def test_a_reorg_announces_what_it_removed_and_the_new_branch_again(
    web3, client, clients, settings, chain
):
    seller, buyer = chain["seller"], chain["buyer"]
    await _minted_and_listed(web3, client, clients, settings, chain)
    await settle(clients, settings, 1)
    fork = await rpc(web3, "evm_snapshot")
    await transact(web3, chain["market"].functions.buy_token(111), buyer, ONE_ETH)
    await rpc(web3, "anvil_mine", hex(2))
    await settle(clients, settings, 1)
    _, before = await _announced(clients)
    last_before = before[-1]["id"]

    await rpc(web3, "evm_revert", fork)
    await rpc(web3, "anvil_mine", hex(1))
    await transact(web3, chain["market"].functions.delist_token(111), seller)  # the new branch
    await rpc(web3, "anvil_mine", hex(4))
    await settle(clients, settings, 2)

    names, _ = await _announced(clients, since=last_before)
    assert names == [  # what the reorg took back first, in chain order, then the new branch
        ("item_transferred_removed", 111),
        ("item_sold_removed", 111),
        ("item_cancelled", 111),
    ]


async def test_an_announcement_whose_mark_a_crash_lost_is_taken_back_on_a_reorg(
    web3, client, clients, settings, chain
):
    seller = chain["seller"]
    await onboard(client, settings, 111, seller)
    await settle(clients, settings)
    fork = await rpc(web3, "evm_snapshot")
    await transact(web3, chain["token"].functions.approve(chain["market"].address, 111), seller)
    await transact(web3, chain["market"].functions.list_token(111, ONE_ETH), seller)
    await settle(clients, settings, 1)
    # As after a crash between recording the announcement and marking the event: recorded, unmarked.
    await ChainEvent.get_pymongo_collection().update_one(
        {"event": "Listed"}, {"$set": {"toAnnounce": True, "announced": None, "announcements": 0}}
    )

    await rpc(web3, "evm_revert", fork)
    await rpc(web3, "anvil_mine", hex(5))
    await settle(clients, settings, 2)

    names, _ = await _announced(clients)
    assert names.count(("item_listed", 111)) == 1
    assert names[-1] == ("item_listed_removed", 111)


async def test_no_index_pass_runs_while_the_announcer_works(
    web3, client, clients, settings, chain, monkeypatch
):
    """Beside a pass, the announcer could see its writes half done and announce out of chain order."""
    await _minted_and_listed(web3, client, clients, settings, chain)
    await market_service.index_chain(clients, settings)  # indexed, not yet announced
    announce = announcing.events_service.announce
    during = []

    async def announce_and_index(pending):
        during.append(await market_service.index_chain(clients, settings))
        await announce(pending)

    monkeypatch.setattr(announcing.events_service, "announce", announce_and_index)
    assert (await market_service.announce_chain(clients, settings))["announced"] >= 1
    assert during and all("skipped" in result for result in during)
    assert "skipped" not in await market_service.index_chain(clients, settings)


async def test_a_removal_recovered_after_a_crash_goes_out_before_the_new_branch(
    web3, client, clients, settings, chain
):
    seller = chain["seller"]
    fork = await minted_and_approved(web3, client, clients, settings, chain, 111)
    await transact(web3, chain["market"].functions.list_token(111, ONE_ETH), seller)
    await settle(clients, settings, 1)
    # As after a crash between recording the announcement and marking the event: recorded, unmarked.
    await ChainEvent.get_pymongo_collection().update_one(
        {"event": "Listed"}, {"$set": {"toAnnounce": True, "announced": None, "announcements": 0}}
    )
    await rpc(web3, "evm_revert", fork)
    await transact(web3, chain["market"].functions.list_token(111, 2 * ONE_ETH), seller)  # the new branch
    await rpc(web3, "anvil_mine", hex(5))
    await market_service.index_chain(clients, settings)  # removes the first listing, stores the second
    await settle(clients, settings, 2)

    _, messages = await _announced(clients, topics=("listings",))
    listings = [(m["event"], m["payload"]["priceWei"]) for m in messages]
    assert listings == [
        ("item_listed", str(ONE_ETH)),
        ("item_listed_removed", str(ONE_ETH)),
        ("item_listed", str(2 * ONE_ETH)),
    ]


async def test_an_index_pass_that_read_events_queues_the_announcer(web3, client, clients, settings, chain):
    ctx = {"clients": clients, "settings": settings, "redis": clients.redis}
    await market_jobs.index_chain(ctx)  # the chain as the fixture left it: nothing new
    await onboard(client, settings, 111, chain["seller"])
    await chain_service.process_outbox(clients, settings)  # the mint is sent
    assert not [job for job in await clients.redis.queued_jobs() if job.function == market_jobs.ANNOUNCE]

    result = await market_jobs.index_chain(ctx)
    assert result["events"] >= 1
    queued = [job for job in await clients.redis.queued_jobs() if job.function == market_jobs.ANNOUNCE]
    assert len(queued) == 1
    await rpc(web3, "anvil_mine", hex(2))
    assert (await market_jobs.index_chain(ctx))["events"] == 0  # blocks, but no events: nothing queued
    assert (
        len([job for job in await clients.redis.queued_jobs() if job.function == market_jobs.ANNOUNCE]) == 1
    )


async def test_the_announcer_takes_the_indexers_lease_a_batch_at_a_time(
    web3, client, clients, settings, chain, monkeypatch
):
    """A backlog delays an index pass by one batch at most, not by a whole run."""
    await _minted_and_listed(web3, client, clients, settings, chain)
    await transact(web3, chain["market"].functions.buy_token(111), chain["buyer"], ONE_ETH)
    await market_service.index_chain(clients, settings)  # the listing and the sale wait: three events
    monkeypatch.setattr(announcing, "BATCH", 1)
    taken = []
    lease = market_service.leases.lease

    def counted(redis, key, ttl_ms):
        taken.append(key)
        return lease(redis, key, ttl_ms)

    monkeypatch.setattr(market_service.leases, "lease", counted)
    run = await market_service.announce_chain(clients, settings)
    # a lease a batch, and one more for the read that found nothing left
    assert run["batches"] == 3 and taken.count(market_service.INDEX_LOCK) == 4
