"""What the chain's events say to the stream and webhooks: one announcement per event that appears,
and one `{event}_removed` when a reorg takes it back (app/lib/events.py).

The indexer marks each event it stores, or a reorg removes, `toAnnounce`. The announcer (a job of its
own, between the indexer's passes) announces those in chain order, keyed by the event and how many
times it was announced before (so an event removed and then mined again is announced again, and a
crash between the announcement and its mark announces nothing twice), then marks what it announced.
"""

from __future__ import annotations

from typing import Any

from app.chain import service as chain_service
from app.config import Settings
from app.events import service as events_service
from app.lib.events import REMOVED_SUFFIX, asset_topic
from app.lib.money import wei_to_eth

BATCH = 500
MAX_ROUNDS = 20  # batches an announcer's run takes (a recovered one included); the next run goes on
# Chain event -> (stream event, its topic besides the token's).
MEANINGS = {
    ("AssetToken", "Transfer"): ("item_transferred", "transfers"),
    ("Marketplace", "Listed"): ("item_listed", "listings"),
    ("Marketplace", "Delisted"): ("item_cancelled", "listings"),
    ("Marketplace", "Sold"): ("item_sold", "sales"),
    ("PriceOracle", "PriceUpdated"): ("price_updated", "prices"),
}


async def announce_batch(settings: Settings) -> int | None:
    """Announce the next BATCH of what the chain's events changed: how many announcements, or None when
    nothing waits. The caller holds the indexer's lease, so no pass writes meanwhile."""
    batch = await chain_service.events_to_announce(settings, BATCH)
    if not batch:
        return None
    already = await events_service.recorded([_key(event) for event in batch])
    fresh, recovered = [], []
    for event in batch:
        name = already.get(_key(event))
        if name is None:
            fresh.append(event)
        else:  # announced, then a crash before its mark: mark it now, and look at it again
            recovered.append((event, "removed" if name.endswith(REMOVED_SUFFIX) else "added"))
    # Before anything fresh: a removal the recovered events still owe goes out ahead of the new
    # branch's events that come after it in the batch (unless no mark took, which would loop).
    if recovered and await chain_service.events_announced(recovered, settled=False):
        return 0
    marks = [(event, _state(event)) for event in fresh]
    pending = [_announcement(event, state) for event, state in marks if state is not None]
    await events_service.announce(pending)
    await chain_service.events_announced(marks)
    return len(pending)


def _key(event: dict[str, Any]) -> str:
    """The key of the event's next announcement: its n-th."""
    return f"chain:{event['_id']}:{event.get('announcements', 0)}"


def _state(event: dict[str, Any]) -> str | None:
    """What to announce of an event now: "added", "removed", or nothing."""
    meaning = MEANINGS.get((event["contract"], event["event"]))
    if meaning is None or event.get("tokenId") is None:
        return None
    if not event["removed"] and event.get("announced") != "added":
        return "added"
    if event["removed"] and event.get("announced") == "added":
        return "removed"
    return None


def _announcement(event: dict[str, Any], state: str) -> dict[str, Any]:
    name, topic = MEANINGS[(event["contract"], event["event"])]
    if state == "removed":
        name += REMOVED_SUFFIX
    return events_service.event(_key(event), name, [topic, asset_topic(event["tokenId"])], _payload(event))


def _payload(event: dict[str, Any]) -> dict[str, Any]:
    """The token and transaction (the REST resources' ids), where it happened, and what changed."""
    args = event["args"]
    payload: dict[str, Any] = {
        "tokenId": event["tokenId"],
        "transactionHash": event["txHash"].lower(),
        "blockNumber": event["blockNumber"],
        "blockHash": event["blockHash"],
        "logIndex": event["logIndex"],
        "contractAddress": event["address"],
        "at": event["blockTime"].isoformat().replace("+00:00", "Z") if event.get("blockTime") else None,
    }
    name = event["event"]
    if name == "Transfer":
        payload |= {"from": args["sender"], "to": args["receiver"]}
    elif name in ("Listed", "Delisted", "Sold"):
        payload["seller"] = args["seller"]
    if name == "Sold":
        payload["buyer"] = args["buyer"]
        payload |= _amount("fee", args["fee"])
    if name in ("Listed", "Sold"):
        payload |= _amount("price", args["price"])
    if name == "PriceUpdated":
        payload |= (
            _amount("price", args["price"]) | _amount("low", args["low"]) | _amount("high", args["high"])
        )
        payload["confidence"] = int(args["confidence"])
        payload["onChainRoundId"] = str(args["roundId"])  # the PriceOracle's, not a REST round id
    return payload


def _amount(name: str, wei: str | int) -> dict[str, Any]:
    """An amount as the REST resources give it: ETH, and the exact wei as a string."""
    return {name: wei_to_eth(int(wei)), f"{name}Wei": str(int(wei))}
