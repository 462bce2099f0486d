"""Marketplace: listing, delisting, buying at the exact price, the fee's arithmetic, and its events."""

from __future__ import annotations

import boa
import pytest
from boa.contracts.vyper.vyper_contract import VyperContract, VyperDeployer

from tests.contracts.conftest import ETHER, FEE_BPS, ZERO_ADDRESS

TOKEN_ID = 11
PRICE = 3 * ETHER


def listed(
    token: VyperContract, market: VyperContract, seller: str, token_id: int = TOKEN_ID, price: int = PRICE
) -> None:
    """`seller` gets `token_id` minted, approves the marketplace for it and lists it at `price`."""
    token.mint(seller, token_id)
    with boa.env.prank(seller):
        token.approve(market.address, token_id)
        market.list_token(token_id, price)


def balances(*addresses: str) -> list[int]:
    return [boa.env.get_balance(address) for address in addresses]


def listing(market: VyperContract, token_id: int = TOKEN_ID) -> tuple[str, int]:
    entry = market.listings(token_id)
    return entry.seller, entry.price


# Deployment and the fee's settings


def test_deployment(market: VyperContract, token: VyperContract, owner: str, fee_recipient: str) -> None:
    assert market.token() == token.address
    assert market.owner() == owner
    assert market.fee_bps() == FEE_BPS
    assert market.fee_recipient() == fee_recipient
    assert market.MAX_FEE_BPS() == 1_000


def test_a_fee_above_the_maximum_cannot_be_deployed(
    marketplace_deployer: VyperDeployer, token: VyperContract, fee_recipient: str
) -> None:
    with boa.reverts("Marketplace: fee too high"):
        marketplace_deployer.deploy(token.address, 1_001, fee_recipient)
    with boa.reverts("Marketplace: no fee recipient"):
        marketplace_deployer.deploy(token.address, FEE_BPS, ZERO_ADDRESS)


@pytest.mark.parametrize("fee_bps", [0, 1, 999, 1_000])
def test_the_owner_sets_the_fee(market: VyperContract, stranger: str, fee_bps: int) -> None:
    market.set_fee(fee_bps, stranger)

    [changed] = market.get_logs()
    assert type(changed).__name__ == "FeeChanged"
    assert (changed.feeBps, changed.feeRecipient) == (fee_bps, stranger)
    assert market.fee_bps() == fee_bps
    assert market.fee_recipient() == stranger


@pytest.mark.parametrize("fee_bps", [1_001, 10_000, 2**256 - 1])
def test_a_fee_above_1000_bps_is_refused(market: VyperContract, fee_recipient: str, fee_bps: int) -> None:
    with boa.reverts("Marketplace: fee too high"):
        market.set_fee(fee_bps, fee_recipient)

    assert market.fee_bps() == FEE_BPS


def test_a_fee_needs_a_recipient(market: VyperContract, fee_recipient: str) -> None:
    with boa.reverts("Marketplace: no fee recipient"):
        market.set_fee(100, ZERO_ADDRESS)

    assert (market.fee_bps(), market.fee_recipient()) == (FEE_BPS, fee_recipient)


def test_only_the_owner_sets_the_fee(market: VyperContract, stranger: str, fee_recipient: str) -> None:
    with boa.env.prank(stranger), boa.reverts("ownable: caller is not the owner"):
        market.set_fee(0, stranger)

    assert (market.fee_bps(), market.fee_recipient()) == (FEE_BPS, fee_recipient)


# Listing


def test_listing_records_the_seller_and_price(
    token: VyperContract, market: VyperContract, seller: str
) -> None:
    token.mint(seller, TOKEN_ID)
    with boa.env.prank(seller):
        token.approve(market.address, TOKEN_ID)
        market.list_token(TOKEN_ID, PRICE)

    [event] = market.get_logs()
    assert type(event).__name__ == "Listed"
    assert (event.address, event.tokenId, event.seller, event.price) == (
        market.address,
        TOKEN_ID,
        seller,
        PRICE,
    )
    assert listing(market) == (seller, PRICE)
    # Listing moves nothing: the token stays with its owner until it is bought.
    assert token.ownerOf(TOKEN_ID) == seller


def test_listing_with_approval_for_all(token: VyperContract, market: VyperContract, seller: str) -> None:
    token.mint(seller, TOKEN_ID)
    with boa.env.prank(seller):
        token.setApprovalForAll(market.address, True)
        market.list_token(TOKEN_ID, PRICE)

    assert token.getApproved(TOKEN_ID) == ZERO_ADDRESS
    assert listing(market) == (seller, PRICE)


def test_a_token_given_away_and_back_does_not_revive_its_listing(
    token: VyperContract, market: VyperContract, seller: str, buyer: str, stranger: str
) -> None:
    """Listed at PRICE, moved away and back, approved again to list anew: the old listing sells nothing."""
    listed(token, market, seller)
    with boa.env.prank(seller):
        token.transferFrom(seller, stranger, TOKEN_ID)
    with boa.env.prank(stranger):
        token.transferFrom(stranger, seller, TOKEN_ID)
    with boa.env.prank(seller):
        token.approve(market.address, TOKEN_ID)  # the first step of listing at a new price
        token.setApprovalForAll(market.address, True)
    with boa.env.prank(buyer), boa.reverts("Marketplace: listing is stale"):
        market.buy_token(TOKEN_ID, value=PRICE)
    assert token.ownerOf(TOKEN_ID) == seller
    with boa.env.prank(seller):
        market.list_token(TOKEN_ID, PRICE * 10)  # listed again: the new listing sells
    with boa.env.prank(buyer):
        market.buy_token(TOKEN_ID, value=PRICE * 10)
    assert token.ownerOf(TOKEN_ID) == buyer


def test_listing_again_changes_the_price(token: VyperContract, market: VyperContract, seller: str) -> None:
    listed(token, market, seller)
    with boa.env.prank(seller):
        market.list_token(TOKEN_ID, PRICE // 2)

    [event] = market.get_logs()
    assert (event.tokenId, event.seller, event.price) == (TOKEN_ID, seller, PRICE // 2)
    assert listing(market) == (seller, PRICE // 2)


def test_listing_needs_approval(
    token: VyperContract, market: VyperContract, seller: str, stranger: str
) -> None:
    token.mint(seller, TOKEN_ID)
    with boa.env.prank(seller), boa.reverts("Marketplace: not approved"):
        market.list_token(TOKEN_ID, PRICE)
    # An approval of someone else is not the marketplace's.
    with boa.env.prank(seller):
        token.approve(stranger, TOKEN_ID)
        token.setApprovalForAll(stranger, True)
    with boa.env.prank(seller), boa.reverts("Marketplace: not approved"):
        market.list_token(TOKEN_ID, PRICE)

    assert listing(market) == (ZERO_ADDRESS, 0)


def test_listing_needs_ownership(
    token: VyperContract, market: VyperContract, seller: str, stranger: str
) -> None:
    token.mint(seller, TOKEN_ID)
    with boa.env.prank(seller):
        token.setApprovalForAll(market.address, True)
        # Even an operator the owner approved cannot list for it.
        token.setApprovalForAll(stranger, True)
    with boa.env.prank(stranger), boa.reverts("Marketplace: not the owner"):
        market.list_token(TOKEN_ID, PRICE)

    assert listing(market) == (ZERO_ADDRESS, 0)


def test_an_unminted_token_cannot_be_listed(market: VyperContract, seller: str) -> None:
    with boa.env.prank(seller), boa.reverts():
        market.list_token(TOKEN_ID, PRICE)


def test_a_zero_price_is_refused(token: VyperContract, market: VyperContract, seller: str) -> None:
    token.mint(seller, TOKEN_ID)
    with boa.env.prank(seller):
        token.approve(market.address, TOKEN_ID)
    with boa.env.prank(seller), boa.reverts("Marketplace: price is zero"):
        market.list_token(TOKEN_ID, 0)

    assert listing(market) == (ZERO_ADDRESS, 0)


def test_a_price_above_max_price_is_refused_and_max_price_itself_lists(
    token: VyperContract, market: VyperContract, seller: str
) -> None:
    # An amount an indexer could not hold exactly (over 34 digits) must never reach the chain's events.
    token.mint(seller, TOKEN_ID)
    with boa.env.prank(seller):
        token.approve(market.address, TOKEN_ID)
    with boa.env.prank(seller), boa.reverts("Marketplace: price out of range"):
        market.list_token(TOKEN_ID, 10**40 + 1)
    with boa.env.prank(seller), boa.reverts("Marketplace: price out of range"):
        market.list_token(TOKEN_ID, 2**96)
    assert listing(market) == (ZERO_ADDRESS, 0)

    with boa.env.prank(seller):
        market.list_token(TOKEN_ID, 2**96 - 1)
    assert market.MAX_PRICE() == 2**96 - 1
    assert listing(market) == (seller, 2**96 - 1)


# Delisting


def test_the_seller_delists(token: VyperContract, market: VyperContract, seller: str, buyer: str) -> None:
    listed(token, market, seller)
    with boa.env.prank(seller):
        market.delist_token(TOKEN_ID)

    [event] = market.get_logs()
    assert type(event).__name__ == "Delisted"
    assert (event.address, event.tokenId, event.seller) == (market.address, TOKEN_ID, seller)
    assert listing(market) == (ZERO_ADDRESS, 0)
    with boa.env.prank(buyer), boa.reverts("Marketplace: not listed"):
        market.buy_token(TOKEN_ID, value=PRICE)


def test_the_current_owner_delists_a_stale_listing(
    token: VyperContract, market: VyperContract, seller: str, stranger: str
) -> None:
    listed(token, market, seller)
    with boa.env.prank(seller):
        token.transferFrom(seller, stranger, TOKEN_ID)
    with boa.env.prank(stranger):
        market.delist_token(TOKEN_ID)

    [event] = market.get_logs()
    # The event names the listing's seller, not who withdrew it.
    assert (event.tokenId, event.seller) == (TOKEN_ID, seller)
    assert listing(market) == (ZERO_ADDRESS, 0)


def test_others_cannot_delist(
    token: VyperContract, market: VyperContract, seller: str, stranger: str, owner: str
) -> None:
    listed(token, market, seller)
    for someone in (stranger, owner):
        with boa.env.prank(someone), boa.reverts("Marketplace: not the seller"):
            market.delist_token(TOKEN_ID)

    assert listing(market) == (seller, PRICE)


def test_an_unlisted_token_cannot_be_delisted(
    token: VyperContract, market: VyperContract, seller: str
) -> None:
    token.mint(seller, TOKEN_ID)
    with boa.env.prank(seller), boa.reverts("Marketplace: not listed"):
        market.delist_token(TOKEN_ID)


# Buying


@pytest.mark.parametrize("value", [0, 1, PRICE - 1, PRICE + 1, 2 * PRICE])
def test_a_wrong_value_is_refused(
    token: VyperContract, market: VyperContract, seller: str, buyer: str, fee_recipient: str, value: int
) -> None:
    listed(token, market, seller)
    before = balances(seller, buyer, fee_recipient, market.address)

    with boa.env.prank(buyer), boa.reverts("Marketplace: wrong price"):
        market.buy_token(TOKEN_ID, value=value)

    assert balances(seller, buyer, fee_recipient, market.address) == before
    assert token.ownerOf(TOKEN_ID) == seller
    assert listing(market) == (seller, PRICE)


def test_an_unlisted_token_cannot_be_bought(
    token: VyperContract, market: VyperContract, seller: str, buyer: str
) -> None:
    token.mint(seller, TOKEN_ID)
    with boa.env.prank(buyer), boa.reverts("Marketplace: not listed"):
        market.buy_token(TOKEN_ID, value=0)
    with boa.env.prank(buyer), boa.reverts("Marketplace: not listed"):
        market.buy_token(TOKEN_ID, value=PRICE)

    assert boa.env.get_balance(buyer) == 100 * ETHER


def test_the_seller_cannot_buy_its_own_listing(
    token: VyperContract, market: VyperContract, seller: str
) -> None:
    listed(token, market, seller)
    boa.env.set_balance(seller, PRICE)

    with boa.env.prank(seller), boa.reverts("Marketplace: buyer is the seller"):
        market.buy_token(TOKEN_ID, value=PRICE)

    assert boa.env.get_balance(seller) == PRICE
    assert listing(market) == (seller, PRICE)


def test_a_stale_listing_cannot_be_bought(
    token: VyperContract, market: VyperContract, seller: str, buyer: str, stranger: str, fee_recipient: str
) -> None:
    """The seller gave the token away after listing it: the listing sells nothing, whoever has it now."""
    listed(token, market, seller)
    with boa.env.prank(seller):
        token.transferFrom(seller, stranger, TOKEN_ID)
    # The new owner approving the marketplace does not make the old listing its.
    with boa.env.prank(stranger):
        token.setApprovalForAll(market.address, True)
    before = balances(seller, buyer, stranger, fee_recipient, market.address)

    with boa.env.prank(buyer), boa.reverts("Marketplace: listing is stale"):
        market.buy_token(TOKEN_ID, value=PRICE)

    assert balances(seller, buyer, stranger, fee_recipient, market.address) == before
    assert token.ownerOf(TOKEN_ID) == stranger


def test_a_listing_whose_approval_was_revoked_cannot_be_bought(
    token: VyperContract, market: VyperContract, seller: str, buyer: str, fee_recipient: str
) -> None:
    listed(token, market, seller)
    with boa.env.prank(seller):
        token.approve(ZERO_ADDRESS, TOKEN_ID)
    before = balances(seller, buyer, fee_recipient, market.address)

    with boa.env.prank(buyer), boa.reverts("erc721: caller is not token owner or approved"):
        market.buy_token(TOKEN_ID, value=PRICE)

    assert balances(seller, buyer, fee_recipient, market.address) == before
    assert token.ownerOf(TOKEN_ID) == seller
    assert listing(market) == (seller, PRICE)


@pytest.mark.parametrize(
    ("fee_bps", "price", "fee"),
    [
        (250, 3 * ETHER, 75 * 10**15),
        (0, 3 * ETHER, 0),
        (1_000, 3 * ETHER, 3 * 10**17),
        (250, 9_999, 249),  # 2_499.75 rounds down
        (1_000, 9_999, 999),  # 999.9 rounds down
        (1, 9_999, 0),  # 0.9999 rounds down to nothing
        (1_000, 1, 0),
        (333, 10**18 + 7, 33_300_000_000_000_000),  # 33_300_000_000_000_000.2331
    ],
)
def test_the_sale_pays_the_seller_and_the_fee_recipient(
    token: VyperContract,
    market: VyperContract,
    seller: str,
    buyer: str,
    fee_recipient: str,
    fee_bps: int,
    price: int,
    fee: int,
) -> None:
    assert fee == price * fee_bps // 10_000
    market.set_fee(fee_bps, fee_recipient)
    listed(token, market, seller, price=price)
    seller_before, buyer_before, recipient_before = balances(seller, buyer, fee_recipient)

    with boa.env.prank(buyer):
        market.buy_token(TOKEN_ID, value=price)

    transfer, sold = market.get_logs()
    assert type(sold).__name__ == "Sold"
    assert (sold.address, sold.tokenId, sold.seller, sold.buyer, sold.price, sold.fee) == (
        market.address,
        TOKEN_ID,
        seller,
        buyer,
        price,
        fee,
    )
    assert type(transfer).__name__ == "Transfer"
    assert (transfer.address, transfer.sender, transfer.receiver, transfer.token_id) == (
        token.address,
        seller,
        buyer,
        TOKEN_ID,
    )
    assert boa.env.get_balance(seller) == seller_before + price - fee
    assert boa.env.get_balance(fee_recipient) == recipient_before + fee
    assert boa.env.get_balance(buyer) == buyer_before - price
    assert boa.env.get_balance(market.address) == 0


def test_a_sale_clears_the_listing_and_moves_the_token(
    token: VyperContract, market: VyperContract, seller: str, buyer: str, stranger: str
) -> None:
    listed(token, market, seller)
    with boa.env.prank(buyer):
        market.buy_token(TOKEN_ID, value=PRICE)

    assert listing(market) == (ZERO_ADDRESS, 0)
    assert token.ownerOf(TOKEN_ID) == buyer
    assert token.balanceOf(seller) == 0
    assert token.balanceOf(buyer) == 1
    # The seller's approval of the marketplace went with the token.
    assert token.getApproved(TOKEN_ID) == ZERO_ADDRESS
    for someone in (stranger, buyer):
        with boa.env.prank(someone), boa.reverts("Marketplace: not listed"):
            market.buy_token(TOKEN_ID, value=PRICE)
    with boa.env.prank(seller), boa.reverts("Marketplace: not listed"):
        market.delist_token(TOKEN_ID)


def test_the_buyer_can_list_what_it_bought(
    token: VyperContract, market: VyperContract, seller: str, buyer: str, stranger: str
) -> None:
    listed(token, market, seller)
    with boa.env.prank(buyer):
        market.buy_token(TOKEN_ID, value=PRICE)
        token.approve(market.address, TOKEN_ID)
        market.list_token(TOKEN_ID, 2 * PRICE)
    with boa.env.prank(stranger):
        market.buy_token(TOKEN_ID, value=2 * PRICE)

    assert token.ownerOf(TOKEN_ID) == stranger


def test_the_fee_is_the_one_in_force_at_the_sale(
    token: VyperContract, market: VyperContract, seller: str, buyer: str, fee_recipient: str
) -> None:
    listed(token, market, seller, price=10_000)
    market.set_fee(1_000, fee_recipient)

    with boa.env.prank(buyer):
        market.buy_token(TOKEN_ID, value=10_000)

    assert market.get_logs()[-1].fee == 1_000
    assert boa.env.get_balance(fee_recipient) == 1_000
    assert boa.env.get_balance(seller) == 9_000
