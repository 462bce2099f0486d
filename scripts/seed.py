"""`make seed`: a realistic, deterministic marketplace — assets, months of prices, and their transactions.

Run it while the platform runs (`make run` writes the service URLs to .data/services.env), or with
MONGODB_URL and REDIS_URL set. Re-running adds nothing twice: an asset is written last, after its price
history and transactions, and an asset that exists is skipped. `--reset` first removes what the seed
wrote (assets of the seed contract, and their prices and transactions).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from beanie.odm.utils.encoder import Encoder
from eth_utils import to_checksum_address
from pymongo import UpdateOne

from app.assets import service as assets_service
from app.assets.documents import (
    AiMetrics,
    Asset,
    AssetMetadata,
    AssetStats,
    Certificate,
    CurrentPrice,
    MarketStatus,
    Ownership,
    PriceFactor,
    PriceHistory,
    PriceSource,
    Provenance,
    Verification,
)
from app.lib import bucket as storage_keys
from app.lib.chain import ChainReference
from app.lib.money import WEI_PER_ETH, wei_to_eth
from app.market import service as market_service
from app.market.documents import Transaction, TransactionChain

SEED_CONTRACT = to_checksum_address("0x5fbdb2315678afecb367f032d93f642f64180aa3")
SEED_SOURCE = "seed"
MODEL_VERSIONS = ("dv-hgb-1.2.0", "dv-hgb-1.3.0", "dv-hgb-1.3.1")
PLATFORM_FEE = Decimal("0.025")
HISTORY_DAYS = 180
BLOCK_TIME_S = 12
GENESIS = datetime(2024, 1, 1, tzinfo=UTC)

TYPES = {  # weight, median price (ETH), price spread
    "Art": (30, 12.0, 1.0),
    "Collectible": (20, 1.5, 0.9),
    "Real Estate": (10, 350.0, 0.6),
    "Watch": (10, 9.0, 0.6),
    "Jewelry": (8, 6.0, 0.7),
    "Wine": (8, 0.8, 0.6),
    "Vehicle": (6, 45.0, 0.6),
    "Memorabilia": (5, 2.0, 0.9),
    "Luxury Goods": (3, 3.0, 0.5),
}
CITIES = [
    "Geneva",
    "London",
    "New York",
    "Paris",
    "Hong Kong",
    "Singapore",
    "Zurich",
    "Dubai",
    "Tokyo",
    "Milan",
]
CONDITIONS = ["Mint", "Excellent", "Very good", "Good", "Restored"]
ADJECTIVES = [
    "Azure",
    "Golden",
    "Silent",
    "Crimson",
    "Northern",
    "Velvet",
    "Ivory",
    "Midnight",
    "Amber",
    "Quiet",
]
NOUNS = {
    "Art": ["Horizon", "Study in Blue", "Reverie", "Portrait of a Lady", "Harbour at Dusk", "Composition"],
    "Collectible": ["Rookie Card", "First Edition", "Prototype", "Comic #1", "Stamp Block", "Coin Set"],
    "Real Estate": ["Loft", "Villa", "Townhouse", "Penthouse", "Chalet", "Warehouse Unit"],
    "Watch": ["Chronograph", "Perpetual Calendar", "Diver", "Tourbillon", "Moonphase"],
    "Jewelry": ["Sapphire Ring", "Emerald Necklace", "Diamond Brooch", "Pearl Earrings"],
    "Wine": ["Grand Cru 1990", "Bordeaux 2005", "Burgundy 1999", "Vintage Port 1977"],
    "Vehicle": ["Roadster", "Coupe 1967", "Spider", "Grand Tourer"],
    "Memorabilia": ["Signed Guitar", "Match-worn Jersey", "Film Prop", "Letter Archive"],
    "Luxury Goods": ["Travel Trunk", "Handbag", "Fountain Pen Set"],
}
CREATORS = ["A. Moreau", "K. Tanaka", "L. Okafor", "M. Rossi", "S. Lindqvist", "R. Alvarez", "J. Chen"]
ISSUERS = ["Christie's Appraisals", "Sotheby's Authentication", "Art Loss Register", "Gemological Institute"]
FACTORS = ["comparable_sales", "condition", "provenance_depth", "market_momentum", "rarity"]
MATERIALS = {
    "Art": [["oil", "canvas"], ["acrylic", "panel"], ["bronze"], ["ink", "paper"]],
    "Watch": [["steel", "sapphire crystal"], ["18k gold", "leather"], ["platinum"]],
    "Jewelry": [["platinum", "diamond"], ["18k gold", "sapphire"], ["silver", "pearl"]],
    "Vehicle": [["aluminium", "leather"], ["steel", "walnut"]],
}


def wallet(index: int) -> str:
    digest = hashlib.sha256(f"dynamicvault-seed-wallet-{index}".encode()).hexdigest()
    return to_checksum_address("0x" + digest[:40])


def tx_hash(token_id: int, index: int) -> str:
    return "0x" + hashlib.sha256(f"dynamicvault-seed-tx-{token_id}-{index}".encode()).hexdigest()


def block_at(moment: datetime) -> int:
    return int((moment - GENESIS).total_seconds() // BLOCK_TIME_S)


def eth_usd(moment: datetime) -> float:
    """A smooth, deterministic ETH/USD curve."""
    days = (moment - GENESIS).total_seconds() / 86400
    return round(2600 + 500 * ((days % 120) / 60 - 1) ** 2 + 120 * ((days * 7) % 3 - 1), 2)


def to_wei(eth: Decimal) -> Decimal:
    return (eth * WEI_PER_ETH).quantize(Decimal(1))


@dataclass
class Plan:
    """One asset and everything recorded about it."""

    asset: Asset
    prices: list[PriceHistory] = field(default_factory=list)
    transactions: list[Transaction] = field(default_factory=list)


def _custom_attributes(rng: random.Random, asset_type: str) -> dict:
    if asset_type == "Art":
        return {"medium": rng.choice(["painting", "sculpture", "drawing"]), "edition": "1/1", "signed": True}
    if asset_type == "Real Estate":
        return {
            "squareMeters": rng.randint(45, 600),
            "bedrooms": rng.randint(1, 6),
            "yearBuilt": rng.randint(1890, 2022),
            "tenure": rng.choice(["freehold", "leasehold"]),
        }
    if asset_type == "Watch":
        return {
            "brand": rng.choice(["Patek", "Rolex", "AP", "Omega"]),
            "reference": str(rng.randint(1000, 9999)),
        }
    if asset_type == "Wine":
        return {
            "bottles": rng.choice([1, 6, 12]),
            "storage": "bonded warehouse",
            "score": rng.randint(88, 100),
        }
    if asset_type == "Collectible":
        return {
            "grade": rng.choice(["PSA 10", "PSA 9", "CGC 9.8", "BGS 9.5"]),
            "year": rng.randint(1950, 2020),
        }
    if asset_type == "Vehicle":
        return {"mileageKm": rng.randint(3_000, 90_000), "vin": f"SEED{rng.randint(10**8, 10**9 - 1)}"}
    return {"rarity": rng.choice(["common", "rare", "unique"])}


def _eth(value: float) -> Decimal:
    return Decimal(str(round(max(value, 0.0001), 4)))


def plan_asset(rng: random.Random, token_id: int, owners: list[str], admin: str, now: datetime) -> Plan:
    """A deterministic asset with its price history and a consistent trail of transactions."""
    types = list(TYPES)
    asset_type = rng.choices(types, weights=[TYPES[t][0] for t in types])[0]
    _, median, spread = TYPES[asset_type]
    start = now - timedelta(days=HISTORY_DAYS)
    minted = start + timedelta(seconds=rng.randint(0, 60 * 86_400))
    owner = rng.choice(owners)
    name = f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS[asset_type])} #{token_id}"
    value = median * rng.lognormvariate(0, spread)
    confidence = rng.uniform(65, 92)

    plan = Plan(asset=None)  # type: ignore[arg-type]
    tx_index = 0

    def transaction(kind: str, moment: datetime, price: Decimal | None, seller, buyer) -> None:
        nonlocal tx_index
        wei = to_wei(price) if price is not None else None
        fee = to_wei(price * PLATFORM_FEE) if price is not None and kind in ("buy", "sell") else None
        plan.transactions.append(
            Transaction(
                type=kind,
                tokenId=token_id,
                price=wei_to_eth(wei) if wei is not None else None,
                priceWei=wei,
                priceUsd=round(float(price) * eth_usd(moment), 2) if price is not None else None,
                seller=seller,
                buyer=buyer,
                timestamp=moment,
                blockchain=TransactionChain(
                    transactionHash=tx_hash(token_id, tx_index),
                    blockNumber=block_at(moment),
                    gasUsed=rng.randint(48_000, 160_000),
                    gasPriceWei=Decimal(rng.randint(8, 60) * 10**9),
                ),
                status="completed",
                platformFee=wei_to_eth(fee) if fee is not None else None,
                platformFeeWei=fee,
            )
        )
        tx_index += 1

    def price_point(kind: str, moment: datetime, price: Decimal, **extra) -> None:
        wei = to_wei(price)
        plan.prices.append(
            PriceHistory(
                tokenId=token_id,
                price=wei_to_eth(wei),
                priceWei=wei,
                priceUsd=round(float(price) * eth_usd(moment), 2),
                timestamp=moment,
                source=PriceSource(type=kind, dataSourceName=SEED_SOURCE, **extra.pop("source", {})),
                **extra,
            )
        )

    transaction("mint", minted, None, None, owner)
    listed: tuple[Decimal, datetime] | None = None
    owner_since = minted
    moment = minted
    last_oracle: tuple[Decimal, datetime, float] | None = None
    model_version = rng.choice(MODEL_VERSIONS)
    while True:
        moment += timedelta(seconds=rng.randint(18 * 3600, 30 * 3600))
        if moment >= now:
            break
        value *= 1 + rng.gauss(0.001, 0.025)
        confidence = min(97.0, max(55.0, confidence + rng.gauss(0, 1.5)))
        oracle_price = _eth(value)
        weights = [rng.random() for _ in FACTORS]
        price_point(
            "ai-oracle",
            moment,
            oracle_price,
            source={"modelVersion": model_version},
            aiMetrics=AiMetrics(
                confidenceScore=round(confidence, 1),
                factors=[
                    PriceFactor(
                        name=f, weight=round(w / sum(weights), 3), impact=round(rng.uniform(-1, 1), 3)
                    )
                    for f, w in zip(FACTORS, weights, strict=True)
                ],
            ),
        )
        last_oracle = (oracle_price, moment, confidence)
        event = rng.random()
        when = moment + timedelta(minutes=rng.randint(5, 600))
        if when >= now:
            continue
        if listed is None and event < 0.04:
            ask = _eth(float(oracle_price) * rng.uniform(1.0, 1.25))
            listed = (ask, when)
            transaction("list", when, ask, owner, None)
            price_point("user-listing", when, ask)
        elif listed is not None and event < 0.05:
            transaction("delist", when, None, owner, None)
            listed = None
        elif listed is not None and event < 0.12:
            buyer = rng.choice([w for w in owners if w != owner])
            transaction("buy", when, listed[0], owner, buyer)
            price_point("sale", when, listed[0], blockchain=_chain_ref(plan, when))
            owner, owner_since, listed = buyer, when, None
        elif listed is None and event < 0.055:
            # An accepted offer: the seller initiates the sale.
            buyer = rng.choice([w for w in owners if w != owner])
            price = _eth(float(oracle_price) * rng.uniform(0.9, 1.05))
            transaction("sell", when, price, owner, buyer)
            price_point("sale", when, price, blockchain=_chain_ref(plan, when))
            owner, owner_since = buyer, when

    current = CurrentPrice()
    if last_oracle is not None:
        price, at, conf = last_oracle
        wei = to_wei(price)
        current = CurrentPrice(
            value=wei_to_eth(wei),
            valueWei=wei,
            valueUsd=round(float(price) * eth_usd(at), 2),
            updatedAt=at,
            aiConfidenceScore=round(conf, 1),
        )
    market = MarketStatus()
    if listed is not None:
        wei = to_wei(listed[0])
        market = MarketStatus(
            isListed=True,
            listingPrice=wei_to_eth(wei),
            listingPriceWei=wei,
            listedAt=listed[1],
            listedBy=owner,
        )
    verified = rng.random() < 0.6
    creation = datetime(rng.randint(1890, 2022), rng.randint(1, 12), rng.randint(1, 28), tzinfo=UTC)
    last_write = max([minted, *(t.timestamp for t in plan.transactions)])
    plan.asset = Asset(
        tokenId=token_id,
        contractAddress=SEED_CONTRACT,
        name=name,
        assetType=asset_type,
        description=(
            f"{name}: a {asset_type.lower()} held in {rng.choice(CITIES)} custody, tokenized on DynamicVault "
            "with its provenance and certificates on record."
        ),
        metadata=AssetMetadata(
            assetLocation=rng.choice(CITIES),
            acquisitionDate=minted - timedelta(days=rng.randint(30, 3000)),
            dimensions=f"{rng.randint(10, 300)} x {rng.randint(10, 300)} cm"
            if asset_type != "Real Estate"
            else None,
            materials=rng.choice(MATERIALS.get(asset_type, [[]])),
            creator=rng.choice(CREATORS) if asset_type in ("Art", "Jewelry", "Luxury Goods") else None,
            creationDate=creation,
            condition=rng.choice(CONDITIONS),
            provenance=[
                Provenance(
                    owner=rng.choice(
                        ["Private collection", "Estate of a collector", "Gallery", "Auction house"]
                    ),
                    period=f"{1950 + 10 * i}-{1960 + 10 * i}",
                    documentation=storage_keys.document_key(
                        token_id, "legal", f"provenance-{i}", storage_keys.timestamp_token(minted), "pdf"
                    ),
                )
                for i in range(rng.randint(1, 3))
            ],
            certificates=[
                Certificate(
                    type=kind,
                    issuer=rng.choice(ISSUERS),
                    date=minted - timedelta(days=rng.randint(1, 200)),
                    fileKey=storage_keys.document_key(
                        token_id, "certificates", kind, storage_keys.timestamp_token(minted), "pdf"
                    ),
                )
                for kind in ("authenticity", "appraisal")[: rng.randint(1, 2)]
            ],
            customAttributes=_custom_attributes(rng, asset_type),
        ),
        currentPrice=current,
        marketStatus=market,
        ownership=Ownership(currentOwner=owner, ownerSince=owner_since),
        verification=Verification(
            isVerified=verified,
            verifiedBy=admin if verified else None,
            verifiedAt=minted + timedelta(seconds=rng.randint(86_400, 864_000)) if verified else None,
            verificationData={"method": "physical inspection", "custodian": "DynamicVault Vaults"}
            if verified
            else {},
        ),
        stats=AssetStats(
            viewCount=rng.randint(0, 5000), favoriteCount=rng.randint(0, 300), offerCount=rng.randint(0, 20)
        ),
        createdAt=minted,
        updatedAt=last_write,
    )
    return plan


def _chain_ref(plan: Plan, moment: datetime) -> ChainReference:
    last = plan.transactions[-1]
    return ChainReference(
        transactionHash=last.blockchain.transactionHash,
        blockNumber=last.blockchain.blockNumber,
        timestamp=moment,
    )


async def seed_data(
    redis=None, *, count: int = 300, rng_seed: int = 7, reset: bool = False, now: datetime | None = None
) -> dict[str, int]:
    """Write the demo marketplace (Beanie must be initialised); returns what was written and skipped."""
    now = now or datetime.now(UTC).replace(microsecond=0)
    rng = random.Random(rng_seed)
    owners = [wallet(i) for i in range(max(8, count // 4))]
    admin = wallet(10_000)
    assets = Asset.get_pymongo_collection()
    prices = PriceHistory.get_pymongo_collection()
    transactions = Transaction.get_pymongo_collection()
    removed = 0
    if reset:
        seeded = [d["tokenId"] async for d in assets.find({"contractAddress": SEED_CONTRACT}, {"tokenId": 1})]
        removed = (await assets.delete_many({"contractAddress": SEED_CONTRACT})).deleted_count
        await prices.delete_many({"source.dataSourceName": SEED_SOURCE})
        if seeded:
            await transactions.delete_many({"tokenId": {"$in": seeded}})
    existing = {
        d["tokenId"] async for d in assets.find({"tokenId": {"$gte": 1, "$lte": count}}, {"tokenId": 1})
    }
    written = {"assets": 0, "priceHistory": 0, "transactions": 0, "skipped": 0, "removed": removed}
    encoder = Encoder()
    for token_id in range(1, count + 1):
        # Plan every asset, written or not: the random stream (so the data) must not depend on what exists.
        plan = plan_asset(rng, token_id, owners, admin, now)
        if token_id in existing:
            written["skipped"] += 1
            continue
        # A run that stopped half-way left this asset's prices without the asset: start it over.
        await prices.delete_many({"tokenId": token_id, "source.dataSourceName": SEED_SOURCE})
        if plan.prices:
            await prices.insert_many([_bson(encoder, p) for p in plan.prices], ordered=False)
        ops = []
        for tx in plan.transactions:
            doc = _bson(encoder, tx)
            ops.append(
                UpdateOne(
                    {"blockchain.transactionHash": tx.blockchain.transactionHash, "tokenId": tx.tokenId},
                    {"$setOnInsert": doc},
                    upsert=True,
                )
            )
        await transactions.bulk_write(ops, ordered=False)
        await assets.insert_one(_bson(encoder, plan.asset))
        written["assets"] += 1
        written["priceHistory"] += len(plan.prices)
        written["transactions"] += len(plan.transactions)
    if redis is not None:
        await assets_service.catalog_changed(redis)
        await market_service.invalidate_stats(redis)
    return written


def _bson(encoder: Encoder, document) -> dict:
    """A document as Beanie would store it (Decimal128 wei, aliases), without an unset _id."""
    raw = encoder.encode(document)
    for key in ("_id", "revision_id"):
        if raw.get(key) is None:
            raw.pop(key, None)
    return raw


async def _run(args: argparse.Namespace) -> int:
    from app.lib import db
    from app.lib.clients import redis_settings
    from app.lib.embedded import settings_with_running_services
    from app.main import DOCUMENTS

    settings = settings_with_running_services()
    if not settings.mongodb.url or not settings.redis.url:
        print(
            "seed: no MongoDB/Redis to write to. Start the platform with `make run` (it writes "
            f"{settings.data_dir / 'services.env'}) or set MONGODB_URL and REDIS_URL.",
            file=sys.stderr,
        )
        return 2
    from arq import create_pool

    mongo = db.make_client(settings)
    try:
        await db.init_db(mongo, settings, DOCUMENTS)
        redis = await create_pool(redis_settings(settings))
        try:
            written = await seed_data(redis, count=args.count, rng_seed=args.seed, reset=args.reset)
        finally:
            await redis.aclose()
    finally:
        await mongo.close()
    print(
        f"seeded {settings.mongodb.database}: {written['assets']} assets, {written['priceHistory']} price "
        f"points, {written['transactions']} transactions ({written['skipped']} assets already there"
        + (f", {written['removed']} removed first" if args.reset else "")
        + ")"
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300, help="number of assets (default 300)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    parser.add_argument("--reset", action="store_true", help="remove previously seeded data first")
    args = parser.parse_args()
    if args.count < 1 or args.count > 100_000:
        parser.error("--count must be between 1 and 100000")
    return asyncio.run(_run(args))


if __name__ == "__main__":
    sys.exit(main())
