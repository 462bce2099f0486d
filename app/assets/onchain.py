"""An onboarded asset's token on the chain: which contract it is of, and its mint.

With the chain on and the contracts deployed, an asset is of the platform's AssetToken unless another
contract is named, and onboarding one asks the chain's outbox to mint it to its owner. The ask is
keyed by chain, contract and token, so asking again (the `assets.request_mints` sweep, after a crash
between the insert and the ask) mints once. An asset of another contract is recorded as it is.
"""

from __future__ import annotations

from app.assets import repository
from app.chain import service as chain_service
from app.config import Settings
from app.lib.errors import Conflict
from app.lib.params import parse_address


class NoAssetToken(Conflict):
    code = "no_asset_token"


async def asset_token(clients, settings: Settings) -> str | None:
    """The deployed AssetToken's address, when the chain is on and it is deployed."""
    if clients.web3 is None:
        return None
    return await chain_service.deployed_address(settings, "AssetToken")


async def contract_of(clients, settings: Settings, given: str | None) -> tuple[str, bool]:
    """The asset's contract, and whether the platform mints its token: (address, mints)."""
    token = await asset_token(clients, settings)
    if given is None:
        if token is None:
            raise NoAssetToken("contractAddress is required: no AssetToken is deployed on this chain")
        return token, True
    address = parse_address(given, "contractAddress")
    return address, token is not None and address.lower() == token.lower()


async def request_mint(clients, settings: Settings, token_id: int, contract: str, owner: str) -> str:
    return await chain_service.request_mint(clients, settings, contract, token_id, owner)


async def request_pending_mints(clients, settings: Settings, limit: int = 500) -> int:
    """Ask again for the mints of assets still `pending` (the outbox makes each ask count once)."""
    token = await asset_token(clients, settings)
    asked = 0
    for asset in await repository.pending_mints(limit):
        owner = (asset.get("ownership") or {}).get("currentOwner")
        if token is None or owner is None or asset["contractAddress"].lower() != token.lower():
            continue
        await request_mint(clients, settings, asset["tokenId"], asset["contractAddress"], owner)
        asked += 1
    return asked
