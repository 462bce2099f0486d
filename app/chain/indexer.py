"""The indexer: the platform's contracts' logs, read into `chainEvents` in bounded ranges, reorg-safe.

Each pass reads from the block after its cursor to at most `CHAIN_INDEX_RANGE` blocks further (2,000
by default: what most providers allow one `eth_getLogs`), only the events the platform acts on. Before
it reads on, it checks that the block at its cursor still has the hash it recorded; when it does not,
it walks down the blocks it recorded (the last `CHAIN_REORG_DEPTH`, 12 by default) to the highest one
still canonical, marks every event above it `removed`, and reads again from there. A range is kept
only if the head block it was read against is still the head's ancestor afterwards, so a reorg during
the read is caught on the next pass. Events are keyed by block hash, transaction and log index: a
range read twice adds nothing.

What the events mean to the marketplace (transactions, owners, listings, sales) is the market
domain's to apply (app/market/indexing.py). The tokens a pass touched (and those a reorg rolled back)
join the cursor's `pending` in the same write that moves the cursor, and leave it only once applied,
so a crash between reading and applying loses nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import aiohttp
import structlog
from web3 import AsyncWeb3, Web3
from web3.exceptions import BlockNotFound, Web3RPCError

from app.chain import index_records, repository
from app.chain.artifacts import CONTRACTS, artifact
from app.config import Settings
from app.lib import landing
from app.lib.params import MAX_INT64
from app.lib.timeutil import utcnow

log = structlog.get_logger("chain.indexer")
T = TypeVar("T")

INDEXED = {
    # Approvals too: a listing stands only while the marketplace may move the token.
    "AssetToken": ("Transfer", "Approval", "ApprovalForAll"),
    "Marketplace": ("Listed", "Delisted", "Sold"),
    "PriceOracle": ("PriceUpdated",),
}
MARKET = ("AssetToken", "Marketplace")  # the contracts whose events the market applies
UNANNOUNCED = ("Approval", "ApprovalForAll")  # read for the listings' sake: the stream carries none
KEPT_BLOCKS = 256  # block hashes kept for reorg checks, well past any depth that is checked
BLOCK_READS = 8  # block headers read at once (the events' times): within a provider's rate limits
DECODE_CHUNK = 1_000  # logs decoded while the chunk before them is written
UNSETTLED = "chain.indexer.write_unsettled"  # a write a failed pass waited for past landing.SETTLE_S


class PassOverlapped(RuntimeError):
    """The cursor moved under a pass: another ran beside it (its lease lost). It stops before applying."""

    def __init__(self, chain_id: int, block: int) -> None:
        super().__init__(f"chain {chain_id}: the cursor left block {block} during the pass")


@dataclass
class IndexPass:
    start: int
    end: int
    head: int
    events: int = 0
    reorg: dict[str, Any] | None = None


@dataclass(frozen=True)
class _Source:
    name: str
    contract: Any
    topics: dict[str, str]  # topic0 -> event name
    decoders: dict[str, Any]  # event name -> its decoder, made once per pass (making one is not free)


async def sources(web3: AsyncWeb3, chain_id: int) -> dict[str, _Source]:
    """The deployed contracts to read, by lower-case address, and the topics of their events."""
    found = {}
    for name in CONTRACTS:
        record = await repository.latest_deployment(name, chain_id, status="deployed")
        if record is None:
            continue
        contract = web3.eth.contract(
            address=Web3.to_checksum_address(record["address"]), abi=artifact(name).abi
        )
        topics = {}
        for event in INDEXED[name]:
            abi = next(e for e in artifact(name).abi if e["type"] == "event" and e["name"] == event)
            signature = f"{event}({','.join(i['type'] for i in abi['inputs'])})"
            topics[Web3.to_hex(Web3.keccak(text=signature))] = event
        decoders = {event: contract.events[event]() for event in INDEXED[name]}
        found[record["address"].lower()] = _Source(name, contract, topics, decoders)
    return found


async def index_once(web3: AsyncWeb3, settings: Settings) -> IndexPass | None:
    """One pass: check for a reorg, then read the next range. None when nothing is deployed."""
    chain_id = settings.chain.chain_id
    found = await sources(web3, chain_id)
    if not found:
        return None
    cursor = await index_records.indexer_cursor(chain_id)
    if cursor is None or cursor.get("block") is None:
        cursor = await index_records.start_cursor(chain_id, await _origin(chain_id, found))
    head = await web3.eth.block_number
    if head < cursor["block"] and await _behind(web3, chain_id, head):
        return IndexPass(start=cursor["block"] + 1, end=cursor["block"], head=head)
    reorg = await _unwind(web3, chain_id, found, cursor, settings.chain.reorg_depth)
    if reorg is not None:
        cursor = await index_records.indexer_cursor(chain_id)
    # Events and block hashes a pass stored above the cursor before it ended without moving it (a crash)
    # are taken back, then read again below: those a reorg replaced meanwhile must not stay.
    if await index_records.live_events_after(chain_id, cursor["block"]):
        await _landed(index_records.remove_events_after(chain_id, cursor["block"]))
    await _landed(index_records.drop_blocks_after(chain_id, cursor["block"]))
    start = cursor["block"] + 1
    end = min(head, cursor["block"] + settings.chain.index_range)
    done = IndexPass(start=start, end=end, head=head, reorg=reorg)
    if start > end:
        return done
    topics = [topic for source in found.values() for topic in source.topics]
    addresses = [source.contract.address for source in found.values()]
    while True:  # a range whose logs the node refuses (too many, too slow) is read in halves
        top = await web3.eth.get_block(end)
        try:
            logs = await web3.eth.get_logs(
                {"fromBlock": start, "toBlock": end, "address": addresses, "topics": [topics]}
            )
            break
        except (Web3RPCError, ValueError, TimeoutError, OSError, aiohttp.ClientResponseError) as exc:
            # Providers refuse a range too wide over HTTP too: its answer too large (413), or too slow to
            # build (504). A bad key or a rate limit is no matter of width: it fails the pass.
            too_wide = not isinstance(exc, aiohttp.ClientResponseError) or exc.status in (413, 504)
            if end == start or not too_wide:
                raise
            end = start + (end - start) // 2
    done.end = end
    # The events' blocks (their times), and the range's last CHAIN_REORG_DEPTH, recorded for reorg checks.
    recent = set(range(max(start, end - settings.chain.reorg_depth + 1), end))
    headers = await _headers(web3, {entry["blockNumber"] for entry in logs} | recent)
    times = {n: datetime.fromtimestamp(int(b["timestamp"]), UTC) for n, b in headers.items()}
    # The range must hang from the block the cursor recorded, and still end where it did: a reorg
    # during the read (or between the check above and the read) is read again on the next pass.
    first = await web3.eth.get_block(start)
    if cursor.get("hash") is not None and Web3.to_hex(first["parentHash"]) != cursor["hash"]:
        return done
    if Web3.to_hex((await web3.eth.get_block(end))["hash"]) != Web3.to_hex(top["hash"]):
        return done
    events = await _store(chain_id, found, logs, times)
    # Number, hash and parent hash of each block read.
    blocks = {
        n: (Web3.to_hex(b["hash"]), Web3.to_hex(b["parentHash"])) for n, b in {**headers, end: top}.items()
    }
    await _landed(index_records.save_blocks(chain_id, blocks, keep=KEPT_BLOCKS))
    # The market rebuilds tokens from their transfers and listings; a price update changes neither.
    touched = await index_records.touched_tokens(
        chain_id,
        (e["tokenId"] for e in events if e["tokenId"] is not None and e["contract"] in MARKET),
        (e["args"]["owner"] for e in events if e["event"] == "ApprovalForAll"),
    )
    moved = index_records.advance_cursor(chain_id, cursor, end, Web3.to_hex(top["hash"]), touched)
    if not await _landed(moved):
        raise PassOverlapped(chain_id, cursor["block"])
    done.events = len(events)
    return done


async def _store(
    chain_id: int, found: dict[str, _Source], logs: list[Any], times: dict[int, datetime]
) -> list[dict[str, Any]]:
    """Decode the logs and store them, a chunk at a time: each chunk is decoded (CPU in this process, in a
    thread so the event loop stays free) while the one before it is written (work of the database's
    process), so a dense range costs about the longer of the two rather than their sum. One write is in
    flight at a time; a failed one fails the pass before the cursor moves, and a pass that fails (or is
    cancelled) ends only once the write it sent has."""
    events: list[dict[str, Any]] = []
    writing: asyncio.Task | None = None
    try:
        for start in range(0, len(logs), DECODE_CHUNK):
            chunk = await asyncio.to_thread(
                _decode, chain_id, found, logs[start : start + DECODE_CHUNK], times
            )
            if writing is not None:
                await asyncio.shield(writing)  # a cancelled pass must not cancel a write it sent
            writing = asyncio.create_task(index_records.save_events(chunk))
            events.extend(chunk)
        if writing is not None:
            await asyncio.shield(writing)
    except BaseException:
        if writing is not None and await _written(writing):
            raise asyncio.CancelledError from None  # stopped meanwhile: that comes first
        raise
    return events


async def _landed(write: Awaitable[T]) -> T:
    """A write of the pass, which a cancelled pass still waits for (see `_written`)."""
    return await landing.landed(write, event=UNSETTLED)


async def _written(write: asyncio.Task) -> bool:
    """Let a write already sent end before the failed or cancelled pass does: the database finishes it
    whether or not anyone waits, and landing after the pass let go of its lease it could undo the next
    pass's work (mark its events removed, or store an orphaned branch's events it would not take
    back). At most landing.SETTLE_S. Whether a cancel came meanwhile (held back until the write ended)."""
    return await landing.settled(write, event=UNSETTLED)


def _decode(
    chain_id: int, found: dict[str, _Source], logs: list[Any], times: dict[int, datetime]
) -> list[dict[str, Any]]:
    events = [_event(chain_id, found, entry, times) for entry in logs]
    return [event for event in events if event is not None]


async def _origin(chain_id: int, found: dict[str, _Source]) -> int:
    """The block before the first of the contracts' deployments: reading starts after it."""
    return min([await _deploy_block(chain_id, source.name) for source in found.values()]) - 1


async def _deploy_block(chain_id: int, name: str) -> int:
    record = await repository.latest_deployment(name, chain_id, status="deployed")
    return int(record["block"] or 0)


async def _headers(web3: AsyncWeb3, numbers: set[int]) -> dict[int, Any]:
    """The blocks the events are in (their times, hashes and parents), BLOCK_READS at a time."""
    gate = asyncio.Semaphore(BLOCK_READS)

    async def read(number: int):
        async with gate:
            return await web3.eth.get_block(number)

    blocks = await asyncio.gather(*(read(n) for n in sorted(numbers)))
    return {int(b["number"]): b for b in blocks}


def _event(chain_id: int, found: dict[str, _Source], entry: Any, times: dict[int, datetime]) -> dict | None:
    source = found.get(entry["address"].lower())
    name = source.topics.get(Web3.to_hex(entry["topics"][0])) if source and entry["topics"] else None
    if name is None:
        return None
    decoded = source.decoders[name].process_log(entry)
    args = {key: _plain(value) for key, value in decoded["args"].items()}
    token = decoded["args"].get("tokenId", decoded["args"].get("token_id"))
    return {
        "chainId": chain_id,
        "contract": source.name,
        "address": source.contract.address,
        "event": name,
        "blockNumber": int(entry["blockNumber"]),
        "blockHash": Web3.to_hex(entry["blockHash"]),
        "txHash": Web3.to_hex(entry["transactionHash"]),
        "logIndex": int(entry["logIndex"]),
        "tokenId": int(token) if token is not None and 0 <= token <= MAX_INT64 else None,
        "args": args,
        "blockTime": times.get(int(entry["blockNumber"])),
        "removed": False,
        "indexedAt": utcnow(),
        "toAnnounce": name not in UNANNOUNCED,
        "announcements": 0,
    }


def _plain(value: Any) -> Any:
    """uint256 values as decimal strings (BSON holds 64 bits), addresses checksummed."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value)
    return value


async def _unwind(
    web3: AsyncWeb3, chain_id: int, found: dict[str, _Source], cursor: dict[str, Any], depth: int
) -> dict[str, Any] | None:
    """Roll back to the highest recorded block that is still canonical, if the cursor's block is not."""
    if cursor.get("hash") is None:
        return None
    if await _canonical(web3, cursor["block"], cursor["hash"]):
        return None
    fork = await _fork(web3, chain_id, cursor["block"], depth)
    kept = None if fork is None else await index_records.block_hash(chain_id, fork)
    if fork is None:  # below every block recorded: the highest block of a live event still canonical
        fork, kept = await _event_fork(web3, chain_id, await _origin(chain_id, found), cursor["block"])
    if cursor["block"] - fork > depth:
        log.error("chain.indexer.deep_reorg", cursor=cursor["block"], fork=fork, depth=depth)
    fork = max(fork, 0)
    removed = await _landed(index_records.remove_events_after(chain_id, fork))  # their tokens are pending now
    await _landed(index_records.drop_blocks_after(chain_id, fork))
    reorg = {
        "at": utcnow(),
        "fork": fork,
        "depth": cursor["block"] - fork,
        "removed": removed,
    }
    await _landed(index_records.rewind_cursor(chain_id, fork, kept, reorg))
    log.warning("chain.indexer.reorg", fork=fork, depth=reorg["depth"], removed=removed)
    return reorg


async def _fork(web3: AsyncWeb3, chain_id: int, below: int, depth: int) -> int | None:
    """The highest recorded block under `below` still canonical: the last `depth` checked one by one (a
    reorg is nearly always shallow), the older ones kept (KEPT_BLOCKS) by bisection, since the canonical
    ones are all below the orphaned ones. None when none is canonical."""
    recorded = await index_records.recent_blocks(chain_id, below=below, limit=KEPT_BLOCKS)  # highest first
    for block in recorded[:depth]:
        if await _canonical(web3, block["number"], block["hash"]):
            return block["number"]
    older = recorded[depth:]
    low, high = 0, len(older)  # the first canonical one of `older` is in [low, high]; high: none
    while low < high:
        middle = (low + high) // 2
        if await _canonical(web3, older[middle]["number"], older[middle]["hash"]):
            high = middle
        else:
            low = middle + 1
    return older[low]["number"] if low < len(older) else None


async def _event_fork(web3: AsyncWeb3, chain_id: int, origin: int, below: int) -> tuple[int, str | None]:
    """The highest block under `below` of a live event still canonical, and its hash, by bisection over
    block numbers (the canonical ones are all below the orphaned ones); `origin` (before the
    deployments, so all is read again) when there is none."""
    fork, fork_hash, low, high = origin, None, origin + 1, below - 1
    while low <= high:
        middle = (low + high) // 2
        found = await index_records.live_block_at_or_below(chain_id, middle, low)
        if found is None:  # no event in [low, middle]
            low = middle + 1
        elif await _canonical(web3, found["blockNumber"], found["blockHash"]):
            fork, fork_hash, low = found["blockNumber"], found["blockHash"], middle + 1
        else:
            high = found["blockNumber"] - 1
    return fork, fork_hash


async def _behind(web3: AsyncWeb3, chain_id: int, head: int) -> bool:
    """A node whose head is below the cursor is behind the one read before, to be waited for, if the
    highest block recorded at or below its head is the node's too; if not, the chain itself changed
    (a reorg to a shorter branch, a development chain restarted from an older state)."""
    [highest] = await index_records.recent_blocks(chain_id, below=head + 1, limit=1) or [None]
    if highest is not None:
        return await _canonical(web3, highest["number"], highest["hash"])
    event = await index_records.live_block_at_or_below(chain_id, head, 0)  # events are never pruned
    return event is None or await _canonical(web3, event["blockNumber"], event["blockHash"])


async def _canonical(web3: AsyncWeb3, number: int, recorded: str) -> bool:
    try:
        block = await web3.eth.get_block(number)
    except BlockNotFound:  # a block the node no longer has is not canonical
        return False
    return Web3.to_hex(block["hash"]) == recorded
