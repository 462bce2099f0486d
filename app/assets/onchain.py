"""An onboarded asset's token on the chain: which contract it is of, and its mint.

With the chain on and the contracts deployed, an asset is of the platform's AssetToken unless another
contract is named, and onboarding one asks the chain's outbox to mint it to its owner. The ask is
keyed by chain, contract and token, so asking again (the `assets.request_mints` sweep, after a crash
between the insert and the ask) mints once. An asset of another contract is recorded as it is.
"""

from __future__ import annotations

from app.assets import chain_records as repository
from app.chain import service as chain_service
from app.config import Settings
from app.lib.errors import BadRequest, Conflict
from app.lib.params import parse_address


class NoAssetToken(Conflict):
    code = "no_asset_token"


async def asset_token(clients, settings: Settings) -> str | None:
    """The deployed AssetToken's address, when the chain is on and it is deployed (of this build: its
    tokens are minted through it)."""
    if clients.web3 is None:
        return None
    return await chain_service.callable_address(settings, "AssetToken")


async def contract_of(clients, settings: Settings, given: str | None, owner: str | None) -> tuple[str, bool]:
    """The asset's contract, and whether the platform mints its token (to `owner`): (address, mints)."""
    token = await asset_token(clients, settings)
    if given is None:
        if token is None:
            raise NoAssetToken("contractAddress is required: no AssetToken is deployed on this chain")
        address = token
    else:
        address = parse_address(given, "contractAddress")
    mints = token is not None and address.lower() == token.lower()
    if mints:
        check_owner(owner)
    return address, mints


def check_owner(owner: str | None) -> None:
    """A token is minted to a wallet that can hold it: never to no one or to the zero address."""
    if owner is None or int(owner, 16) == 0:
        raise BadRequest("the asset needs an owner to mint its token to", code="invalid_address")


async def request_mint(clients, settings: Settings, token_id: int, contract: str, owner: str) -> str:
    return await chain_service.request_mint(clients, settings, contract, token_id, owner)


async def request_pending_mints(clients, settings: Settings, batch: int = 500) -> int:
    """Ask for the mints of assets still `pending` that the outbox has never heard of (a crash between
    the insert and the ask), and mark `failed` those whose mint the outbox failed; the count asked."""
    token = await asset_token(clients, settings)
    if token is None:
        return 0
    asked, after = 0, -1
    while found := await repository.pending_mints(after, batch):
        after = found[-1]["tokenId"]
        for asset in found:
            owner = (asset.get("ownership") or {}).get("currentOwner")
            if owner is None or asset["contractAddress"].lower() != token.lower():
                continue
            entry = await chain_service.outbox_entry(
                chain_service.mint_key(settings, token, asset["tokenId"])
            )
            if entry is None:
                await request_mint(clients, settings, asset["tokenId"], asset["contractAddress"], owner)
                asked += 1
            elif entry["status"] == "failed":
                await repository.fail_mint(asset["tokenId"], entry.get("error") or "failed")
    return asked
