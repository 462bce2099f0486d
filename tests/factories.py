"""Test data factories, the one module of them: users, sessions, access tokens and API keys (made through
the auth service), and assets, price points and transactions (written as the API and the indexer write
them)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from pymongo import ReturnDocument
from redis.asyncio import Redis

from app.assets.documents import (
    AiMetrics,
    Asset,
    AssetStats,
    CurrentPrice,
    MarketStatus,
    Ownership,
    PriceHistory,
    PriceSource,
    Verification,
)
from app.auth import api_keys, sessions, siwe
from app.auth import service as auth_service
from app.auth.documents import User
from app.config import Settings
from app.lib.money import WEI_PER_ETH, wei_to_eth
from app.lib.security import Principal
from app.lib.timeutil import utcnow
from app.market.documents import Transaction, TransactionChain
from app.oracle import schemas as oracle_schemas
from app.oracle import service as oracle_service
from scripts.seed import wallet

CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
T0 = datetime(2025, 1, 1, tzinfo=UTC)
ALICE, BOB, CAROL = wallet(1), wallet(2), wallet(3)


@dataclass
class Login:
    """Credentials for requests: `headers` to send, and who they stand for."""

    headers: dict[str, str]
    wallet: str
    user_id: str
    session_id: str | None = None
    access_token: str | None = None
    refresh_token: str | None = None
    api_key: str | None = None
    api_key_id: str | None = None
    account: LocalAccount | None = field(default=None, repr=False)  # set when the wallet was generated


def new_account() -> LocalAccount:
    return Account.create()


async def user(
    wallet: str | None = None, *, roles: Sequence[str] = ("user",)
) -> tuple[User, LocalAccount | None]:
    """Create the user of `wallet` (a fresh account if None), or reset an existing one's roles."""
    account = None
    if wallet is None:
        account = new_account()
        wallet = account.address
    wallet = to_checksum_address(wallet)
    defaults = User(walletAddress=wallet).model_dump(exclude={"id", "revision_id", "lastLogin", "roles"})
    raw = await User.get_pymongo_collection().find_one_and_update(
        {"walletAddress": wallet},
        {"$set": {"roles": list(roles), "lastLogin": utcnow()}, "$setOnInsert": defaults},
        upsert=True,
        return_document=ReturnDocument.AFTER,
    )
    return User.model_validate(raw), account


def _redis(settings: Settings) -> Redis:
    return Redis.from_url(settings.redis.url)


async def login(settings: Settings, *, wallet: str | None = None, roles: Sequence[str] = ("user",)) -> Login:
    """A signed-in user with these roles: a real session and a real access token (Bearer headers)."""
    created, account = await user(wallet, roles=roles)
    redis = _redis(settings)
    try:
        # A role change made here must not be shadowed by an earlier test's role override.
        await redis.delete(auth_service.roles_key(str(created.id)))
        pair = await sessions.start_session(
            redis, settings, created, ip_address="127.0.0.1", user_agent="tests/factories"
        )
    finally:
        await redis.aclose()
    return Login(
        headers={"Authorization": f"Bearer {pair.access_token}"},
        wallet=created.walletAddress,
        user_id=str(created.id),
        session_id=pair.session_id,
        access_token=pair.access_token,
        refresh_token=pair.refresh_token,
        account=account,
    )


async def api_key(
    settings: Settings,
    *,
    permissions: Sequence[str],
    wallet: str | None = None,
    roles: Sequence[str] = ("user",),
    expires_at: datetime | None = None,
) -> Login:
    """An API key with these permissions (as an admin would create it), for `wallet` (X-API-Key headers)."""
    created, account = await user(wallet, roles=roles)
    record, key = await api_keys.create_api_key(
        settings,
        created,
        name="test key",
        permissions=permissions,
        expires_at=expires_at,
        created_by_admin=True,
    )
    return Login(
        headers={api_keys.API_KEY_HEADER: key},
        wallet=created.walletAddress,
        user_id=str(created.id),
        api_key=key,
        api_key_id=record.keyId,
        account=account,
    )


def sign(account: LocalAccount, text: str) -> str:
    """An EIP-191 (personal_sign) signature of `text`, 0x-hex."""
    return "0x" + bytes(account.sign_message(encode_defunct(text=text)).signature).hex()


def siwe_message(settings: Settings, address: str, nonce: str, **overrides: Any) -> str:
    """An EIP-4361 message for this server (its domain, uri and chain), valid now unless overridden."""
    now = utcnow()
    fields: dict[str, Any] = {
        "domain": settings.auth.domain,
        "address": address,
        "uri": settings.auth.uri,
        "chain_id": settings.chain.chain_id,
        "nonce": nonce,
        "issued_at": now,
        "expiration_time": now + timedelta(minutes=5),
        "statement": "Sign in to DynamicVault.",
    }
    fields.update(overrides)
    return siwe.build_message(**fields)


async def siwe_sign_in(client: Any, settings: Settings, account: LocalAccount | None = None) -> Any:
    """The whole wallet flow over HTTP: nonce, sign, verify; returns the verify response."""
    account = account or new_account()
    nonce = (await client.get("/api/auth/nonce", params={"walletAddress": account.address})).json()["nonce"]
    text = siwe_message(settings, account.address, nonce)
    return await client.post(
        "/api/auth/verify",
        json={"walletAddress": account.address, "signature": sign(account, text), "message": text},
    )


# ---------------------------------------------------------------- assets, prices, transactions


def wei(eth: str | float) -> Decimal:
    return (Decimal(str(eth)) * WEI_PER_ETH).quantize(Decimal(1))


async def asset(
    token_id: int,
    owner: str | None = ALICE,
    *,
    asset_type: str = "Art",
    price: str | float | None = None,
    listed_at: str | float | None = None,
    verified: bool = False,
    views: int = 0,
    created: datetime | None = None,
    name: str | None = None,
    **fields: Any,
) -> Asset:
    """Insert an asset owned by `owner`; `price` and `listed_at` are ETH amounts (exact in wei), and any
    other Asset field may be given as it is stored."""
    created = created or T0 + timedelta(hours=token_id)
    current = CurrentPrice()
    if price is not None:
        current = CurrentPrice(
            value=wei_to_eth(wei(price)), valueWei=wei(price), valueUsd=float(price) * 3000, updatedAt=created
        )
    market = MarketStatus()
    if listed_at is not None:
        market = MarketStatus(
            isListed=True,
            listingPrice=wei_to_eth(wei(listed_at)),
            listingPriceWei=wei(listed_at),
            listedAt=created,
            listedBy=owner,
        )
    values: dict[str, Any] = {
        "tokenId": token_id,
        "contractAddress": CONTRACT,
        "name": name or f"Asset {token_id}",
        "assetType": asset_type,
        "currentPrice": current,
        "marketStatus": market,
        "ownership": Ownership(currentOwner=owner, ownerSince=created),
        "verification": Verification(isVerified=verified),
        "stats": AssetStats(viewCount=views),
        "createdAt": created,
        "updatedAt": created,
    }
    document = Asset(**{**values, **fields})
    await document.insert()
    return document


async def owner_with_asset(settings: Settings, token_id: int = 7) -> Login:
    """A signed-in user who owns a fresh asset."""
    owner = await login(settings)
    await asset(token_id, owner.wallet)
    return owner


async def price_point(
    token_id: int,
    at: datetime,
    price: str | float,
    source: str = "ai-oracle",
    confidence: float | None = 80.0,
) -> PriceHistory:
    point = PriceHistory(
        tokenId=token_id,
        price=wei_to_eth(wei(price)),
        priceWei=wei(price),
        timestamp=at,
        source=PriceSource(type=source, dataSourceName="tests"),
        aiMetrics=AiMetrics(confidenceScore=confidence) if confidence is not None else None,
    )
    await point.insert()
    return point


def transaction(
    n: int,
    *,
    kind: str = "buy",
    token_id: int = 1,
    price: str | float | None = "1.5",
    seller: str | None = ALICE,
    buyer: str | None = BOB,
    at: datetime | None = None,
    status: str = "completed",
) -> Transaction:
    """A transaction as the indexer records it (not stored: pass it to market's record_transaction)."""
    return Transaction(
        type=kind,
        tokenId=token_id,
        price=float(price) if price is not None else None,
        priceWei=wei(price) if price is not None else None,
        seller=seller,
        buyer=buyer,
        timestamp=at or T0 + timedelta(minutes=n),
        blockchain=TransactionChain(transactionHash="0x" + f"{n:064x}", blockNumber=100 + n),
        status=status,
    )


# ---------------------------------------------------------------- oracle data sources


async def data_source(settings: Settings, **body: Any) -> dict[str, Any]:
    """A data source made through the oracle service, as an admin's POST makes it (body fields as JSON);
    returns its view as the API shows it."""
    fields = {"name": "source", "type": "file", "kind": "sales", "format": "csv", **body}
    data = msgspec.convert(fields, oracle_schemas.DataSourceCreate)
    admin = Principal(user_id="tests", wallet_address=ALICE, roles=frozenset({"user", "admin"}))
    return msgspec.to_builtins(await oracle_service.create_source(settings, data, admin))
