"""What the contract tests run against: four identities, and a small marketplace for them to read and write.

KNOWN_VALUES names the seeded objects by parameter name: generated requests use them half of the time
(see test_schemathesis.py), so that reads and writes meet real objects (an owned asset, a listed one,
the callers' own wallets) rather than only 404s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from app.config import Settings
from app.lib.clients import Clients
from app.lib.security import KNOWN_PERMISSIONS
from app.market import service as market_service
from tests import factories
from tests.conftest import wipe
from tests.factories import ALICE, T0

ANONYMOUS, USER, ADMIN, API_KEY = "anonymous", "user", "admin", "api_key"
IDENTITIES = (ANONYMOUS, USER, ADMIN, API_KEY)

USER_WALLET = "0xc187F2546d1c6C8BafffB5280CaaCd7c0CB878B2"
ADMIN_WALLET = "0x37F47A21Ba485D888581Da665A0B269851729Be1"
OWNED_TOKEN = 7  # the signed-in user's asset (and so the API key's: the key acts for the same wallet)
LISTED_TOKEN = 8  # another wallet's asset, verified and listed for sale
ASSET_TYPES = ("Art", "Real Estate")
KNOWN_VALUES: dict[str, tuple[object, ...]] = {
    "tokenId": (OWNED_TOKEN, LISTED_TOKEN),
    "walletAddress": (USER_WALLET, ADMIN_WALLET, ALICE),
    "owner": (USER_WALLET, ALICE),
    "assetType": ASSET_TYPES,
}


@dataclass
class World:
    """The headers each identity sends, and who they stand for."""

    logins: dict[str, factories.Login] = field(default_factory=dict)

    def headers(self, identity: str) -> dict[str, str]:
        """A fresh copy of the identity's credential headers (none for the anonymous caller)."""
        login = self.logins.get(identity)
        return dict(login.headers) if login is not None else {}


async def build(settings: Settings, clients: Clients) -> World:
    """Wipe every store, then write the identities and the objects they meet.

    - user: a signed-in wallet (Bearer access token) that owns OWNED_TOKEN, with price history and a sale;
    - admin: a signed-in wallet with roles user and admin;
    - api_key: a key for the user's wallet with every known permission, granted by an admin (so the
      permissions stand on their own, whatever the owner's roles);
    - anonymous: no credentials.
    """
    await wipe(clients)
    user = await factories.login(settings, wallet=USER_WALLET)
    await factories.asset(OWNED_TOKEN, user.wallet, asset_type=ASSET_TYPES[0], price="1.2")
    await factories.asset(
        LISTED_TOKEN, ALICE, asset_type=ASSET_TYPES[1], price="2.5", listed_at="3", verified=True
    )
    for hour in range(24):
        await factories.price_point(OWNED_TOKEN, T0 + timedelta(hours=hour), f"{1 + hour / 100:.2f}")
    await factories.price_point(OWNED_TOKEN, T0 + timedelta(hours=30), "1.5", source="sale", confidence=None)
    sale = factories.transaction(1, token_id=OWNED_TOKEN, seller=ALICE, buyer=user.wallet, price="1.5")
    await market_service.record_transaction(clients.redis, sale)
    admin = await factories.login(settings, wallet=ADMIN_WALLET, roles=("user", "admin"))
    key = await factories.api_key(settings, permissions=sorted(KNOWN_PERMISSIONS), wallet=USER_WALLET)
    return World(logins={USER: user, ADMIN: admin, API_KEY: key})
