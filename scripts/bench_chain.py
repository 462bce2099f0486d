"""Chain benchmarks: a batched price push against single-token pushes, and the indexer against a raw loop.

Both run on an embedded anvil, with the platform's contracts deployed and its outbox and indexer over
embedded SecantusDB and Redis, each against its baseline in the same run:

- pushes: 100 prices in one `set_prices`, through the outbox to its receipt, against 100 pushes of one
  price each; wall time and gas, for first prices (new storage) and for updates of them;
- indexing: 10,000 `PriceUpdated` events read by the indexer pass by pass into MongoDB (and applied),
  against a raw `eth_getLogs` and decode loop over the same blocks;
- market: 10,000 AssetToken and Marketplace events (half mints, half listings, of tokens the platform
  holds as assets), read and applied (transactions, owners, listings), against the same raw loop.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from web3 import Web3
from web3.exceptions import TransactionNotFound

from app.assets.documents import Asset
from app.chain import service as chain_service
from app.chain.artifacts import artifact
from app.config import Settings
from app.events import service as events_service
from app.lib.clients import open_clients
from app.lib.embedded import EmbeddedStack
from app.lib.logging import configure_logging
from app.main import DOCUMENTS
from app.market import service as market_service
from scripts.benchkit import bench_settings

ONE_ETH = 10**18
# A token's first price creates state that `latest_round` finds by the token's id, and token ids are the
# clients' choice (any int64), so no two tokens can be counted on to share a word: at least one new
# storage word a token, 20,000 gas (EIP-2200; a new contract or account costs more) however the call is
# made. A batch of n saves only what each call costs once: the 21,000 of a transaction and the call's
# own fixed cost F. With P gas a token, n(21,000 + F + P) >= 3(21,000 + F + nP) needs
# 21,000 + F >= 2nP / (n - 3), so 3x for first prices can only come from a layout that puts about
# 20,000 gas more fixed cost on every push: dearer pushes, not a cheaper batch.
NEW_WORD_GAS = 20_000
TX_GAS = 21_000
BATCH = 100
MARKET_FIRST_TOKEN = 1_000_000
PER_BLOCK = 500  # transactions a block in the market bench
# Full blocks raise the base fee 12.5% each: a fee cap fixed when sending would leave later transactions
# unmineable, so it is set far above what the run reaches.
FEES = {"maxFeePerGas": 10**13, "maxPriorityFeePerGas": 10**9}


# Prices as the oracle pushes them: round ids are round closes in milliseconds, amounts are full wei
# figures with few zero bytes, and confidences are basis points. Calldata costs 16 gas a non-zero byte
# and 4 a zero one, so small round ids and round amounts would flatter the batch.
FIRST_ROUND = 1_780_000_000_000


def prices(tokens: range, round_id: int) -> list[tuple[int, int, int, int, int, int]]:
    found = []
    for t in tokens:
        price = 12_345_678_901_234_567_890 + t * 1_000_003_000_017 + round_id % 997 * 10**15
        found.append((t, round_id, price, price * 9 // 10, price * 11 // 10, 8_734))
    return found


async def push(
    clients, settings: Settings, oracle, batches: list[list[tuple]], tag: str
) -> tuple[float, int]:
    """Ask the outbox for each batch as one `set_prices`, drive it until all are mined: (seconds, gas)."""
    started = time.perf_counter()
    keys = []
    for i, batch in enumerate(batches):
        key = f"bench:{tag}:{i}"
        keys.append(key)
        await chain_service.submit_call(
            settings, key=key, kind="set_prices", contract=oracle, function="set_prices", args=[batch]
        )
    while True:
        await chain_service.process_outbox(clients, settings)
        entries = [await chain_service.outbox_entry(key) for key in keys]
        if all(e["status"] in ("mined", "confirmed", "failed") for e in entries):
            break
    elapsed = time.perf_counter() - started
    assert all(e["status"] != "failed" and e["receipt"]["status"] == 1 for e in entries), entries[0].get(
        "error"
    )
    return elapsed, sum(e["receipt"]["gasUsed"] for e in entries)


async def pushes(clients, settings: Settings, oracle) -> None:
    rows = []
    for label, round_id in (("first prices", FIRST_ROUND), ("updates", FIRST_ROUND + 300_000)):
        batched_s, batched_gas = await push(
            clients, settings, oracle, [prices(range(1, BATCH + 1), round_id)], f"b{round_id}"
        )
        single_s, single_gas = await push(
            clients,
            settings,
            oracle,
            [prices(range(t, t + 1), round_id) for t in range(BATCH + 1, 2 * BATCH + 1)],
            f"s{round_id}",
        )
        rows.append((label, batched_s, batched_gas, single_s, single_gas))
    print("pushing 100 prices on anvil, through the outbox to the receipts:")
    for label, batched_s, batched_gas, single_s, single_gas in rows:
        print(
            f"  {label}: one set_prices of 100: {batched_s * 1000:.0f} ms, {batched_gas:,} gas; "
            f"100 of one: {single_s * 1000:.0f} ms, {single_gas:,} gas; "
            f"{single_s / batched_s:.1f}x less wall time (goal >= 10x), "
            f"{single_gas / batched_gas:.2f}x less gas (goal >= 3x)"
        )
        if label == "first prices":
            share, one = batched_gas / BATCH, single_gas / BATCH
            needed = 2 * BATCH * NEW_WORD_GAS / (BATCH - 3) - TX_GAS
            print(
                f"    a token's share of the batch: {share:,.0f} gas; a push of one: {one:,.0f} gas, of "
                f"which about {one - TX_GAS - share:,.0f} is the call's own fixed cost. With at least "
                f"{NEW_WORD_GAS:,} gas of new storage a token, 3x needs a fixed cost of at least "
                f"{needed:,.0f} gas on every push"
            )


async def raw_loop(web3, settings: Settings, contracts: list, first: int, last: int) -> tuple[int, float]:
    """A raw `eth_getLogs` and decode loop over the contracts' logs in these blocks: (events, seconds)."""
    decoders = {}
    for contract in contracts:
        for event in contract.events:
            item = event()
            decoders[(contract.address.lower(), item.topic)] = item
    started, decoded = time.perf_counter(), 0
    for start in range(first, last + 1, settings.chain.index_range):
        logs = await web3.eth.get_logs(
            {
                "fromBlock": start,
                "toBlock": min(last, start + settings.chain.index_range - 1),
                "address": [contract.address for contract in contracts],
            }
        )
        for entry in logs:
            decoders[(entry["address"].lower(), Web3.to_hex(entry["topics"][0]))].process_log(entry)
            decoded += 1
    return decoded, time.perf_counter() - started


async def indexed(clients, settings: Settings, last: int) -> tuple[int, float]:
    """Indexer passes, each applied to the marketplace, until `last` is read: (events, seconds)."""
    started = time.perf_counter()
    read = 0
    while True:
        result = await market_service.index_chain(clients, settings)
        read += result.get("events", 0)
        if result["to"] >= last:
            return read, time.perf_counter() - started


async def against_raw(clients, settings: Settings, contracts: list, first: int, last: int, what: str) -> None:
    # The raw loop runs before the indexer and again after it, and the faster run is the baseline: the
    # node answers a range it has just served faster, and neither side should have that only.
    decoded, before_s = await raw_loop(clients.web3, settings, contracts, first, last)
    read, platform_s = await indexed(clients, settings, last)
    again, after_s = await raw_loop(clients.web3, settings, contracts, first, last)
    assert read == decoded == again, (read, decoded, again)
    raw_s = min(before_s, after_s)
    print(
        f"indexing {read:,} events ({what}): the indexer into MongoDB "
        f"{read / platform_s:,.0f} events/s ({platform_s:.1f} s); a raw eth_getLogs and decode loop "
        f"{decoded / raw_s:,.0f} events/s (the faster of {before_s:.2f} s before the indexer and "
        f"{after_s:.2f} s after it); ratio {raw_s / platform_s:.2f}x (goal >= 0.5x)"
    )


async def indexing(clients, settings: Settings, oracle, events: int) -> None:
    web3 = clients.web3
    first = await web3.eth.block_number + 1
    per_tx = 200
    for i in range(events // per_tx):
        await push(clients, settings, oracle, [prices(range(1, per_tx + 1), 10 + i)], f"i{i}")
    last = await web3.eth.block_number
    await against_raw(clients, settings, [oracle], first, last, f"PriceUpdated, {events // per_tx} blocks")
    # The announcer's job, apart from the passes: the same events into the stream's outbox, published.
    started = time.perf_counter()
    announced = 0
    while (run := await market_service.announce_chain(clients, settings))["batches"]:
        announced += run["announced"]
    while (await events_service.dispatch(clients, settings))["published"]:
        pass
    announce_s = time.perf_counter() - started
    print(
        f"  then announcing them to the stream (market.announce_chain: outbox, marks, publication): "
        f"{announced:,} in {announce_s:.1f} s, {announced / announce_s:,.0f} events/s"
    )


async def market(clients, settings: Settings, token, marketplace, events: int) -> None:
    """Mints and listings by wallets of their own, PER_BLOCK a block, of tokens onboarded as assets."""
    web3 = clients.web3
    minter, seller = (await web3.eth.accounts)[:2]
    tokens = range(MARKET_FIRST_TOKEN, MARKET_FIRST_TOKEN + events // 2)
    await Asset.insert_many(
        [Asset(tokenId=t, contractAddress=token.address, name=f"Bench {t}", assetType="Art") for t in tokens]
    )
    await web3.provider.make_request("evm_setAutomine", [False])
    try:
        await _mined(
            web3, lambda _: token.functions.setApprovalForAll(marketplace.address, True), seller, [0]
        )
        first = await web3.eth.block_number + 1
        await indexed(clients, settings, first - 1)  # what came before (the approval) is not measured
        await _mined(web3, lambda t: token.functions.mint(seller, t), minter, tokens)
        await _mined(web3, lambda t: marketplace.functions.list_token(t, ONE_ETH + t), seller, tokens)
    finally:
        await web3.provider.make_request("evm_setAutomine", [True])
    last = await web3.eth.block_number
    blocks = last - first + 1
    what = f"{len(tokens):,} mints and {len(tokens):,} listings in {blocks} blocks"
    await against_raw(clients, settings, [token, marketplace], first, last, what)


async def _mined(web3, call, sender: str, items) -> None:
    """Send a transaction for each item (`call(item)`), PER_BLOCK at a time, mining blocks until all
    are in."""
    items = list(items)
    for start in range(0, len(items), PER_BLOCK):
        hashes = [
            await call(item).transact({"from": sender, "gas": 150_000, **FEES})
            for item in items[start : start + PER_BLOCK]
        ]
        while True:
            await web3.provider.make_request("evm_mine", [])
            try:
                receipts = [await web3.eth.get_transaction_receipt(tx_hash) for tx_hash in hashes]
                break
            except TransactionNotFound:
                continue
        assert all(receipt["status"] == 1 for receipt in receipts)


async def _bench(args, services: dict[str, str], data_dir: Path) -> None:
    settings = bench_settings(services, data_dir, "chain")
    configure_logging(settings.log_level, settings.log_json)
    async with open_clients(settings, documents=DOCUMENTS) as clients:
        deployed = await chain_service.ensure_deployed(clients, settings)
        oracle = clients.web3.eth.contract(
            address=deployed["PriceOracle"].address, abi=artifact("PriceOracle").abi
        )
        await market_service.index_chain(clients, settings)  # the indexer starts past the deployments
        if "pushes" in args.parts:
            await pushes(clients, settings, oracle)
            while (await market_service.index_chain(clients, settings))[
                "to"
            ] < await clients.web3.eth.block_number:
                pass
        if "indexing" in args.parts:
            await indexing(clients, settings, oracle, args.events)
        if "market" in args.parts:
            token, marketplace = (
                clients.web3.eth.contract(address=deployed[name].address, abi=artifact(name).abi)
                for name in ("AssetToken", "Marketplace")
            )
            await market(clients, settings, token, marketplace, args.events)


def main() -> None:
    """Start embedded services and anvil, and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["pushes", "indexing", "market"])
    parser.add_argument("--events", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, EmbeddedStack(log_dir=Path(tmp) / "logs") as stack:
        services = {
            "mongodb": stack.start_mongodb(),
            "redis": stack.start_redis(),
            "s3": stack.start_s3(),
            "chain": stack.start_chain(),
        }
        if services["chain"] is None:
            print("no anvil: install the npm packages (make run or make test does)")
            return
        asyncio.run(_bench(args, services, Path(tmp)))


if __name__ == "__main__":
    main()
