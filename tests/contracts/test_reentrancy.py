"""Marketplace.buy_token against a seller contract that re-enters it, or refuses to be paid.

The fixture, fixtures/HostileSeller.vy, owns and lists a token; when the marketplace pays it for that
token, its `__default__` calls `buy_token` again. The lock of `@nonreentrant` refuses that call, so the
sale reverts as a whole: no token moves and no wei.
"""

from __future__ import annotations

import boa
import pytest
from boa.contracts.vyper.vyper_contract import VyperContract, VyperDeployer

from tests.contracts.conftest import ETHER, FEE_BPS

ACCEPT, REENTER, REENTER_AND_CATCH, REFUSE = range(4)
HOSTILE_TOKEN, VICTIM_TOKEN = 1, 2
HOSTILE_PRICE, VICTIM_PRICE = 10_000, 4_000


@pytest.fixture
def hostile(
    hostile_seller_deployer: VyperDeployer, market: VyperContract, token: VyperContract
) -> VyperContract:
    """A HostileSeller that owns and lists HOSTILE_TOKEN at HOSTILE_PRICE."""
    contract = hostile_seller_deployer.deploy(market.address, token.address)
    token.mint(contract.address, HOSTILE_TOKEN)
    contract.list_token(HOSTILE_TOKEN, HOSTILE_PRICE)
    return contract


@pytest.fixture
def victim(token: VyperContract, market: VyperContract) -> str:
    """An honest seller who lists VICTIM_TOKEN at VICTIM_PRICE."""
    address = boa.env.generate_address("victim")
    token.mint(address, VICTIM_TOKEN)
    with boa.env.prank(address):
        token.approve(market.address, VICTIM_TOKEN)
        market.list_token(VICTIM_TOKEN, VICTIM_PRICE)
    return address


def snapshot(token: VyperContract, market: VyperContract, *addresses: str) -> dict:
    """Who owns each token, what is listed, and every balance concerned."""
    return {
        "owners": [token.ownerOf(token_id) for token_id in (HOSTILE_TOKEN, VICTIM_TOKEN)],
        "listings": [tuple(market.listings(token_id))[:2] for token_id in (HOSTILE_TOKEN, VICTIM_TOKEN)],
        "balances": [boa.env.get_balance(address) for address in (*addresses, market.address)],
    }


def test_the_hostile_seller_sells_normally_when_it_only_accepts(
    token: VyperContract, market: VyperContract, hostile: VyperContract, buyer: str, fee_recipient: str
) -> None:
    """The control: the fixture is a working seller, so the reverts below come from what it does."""
    hostile.arm(ACCEPT, 0, 0)
    with boa.env.prank(buyer):
        market.buy_token(HOSTILE_TOKEN, value=HOSTILE_PRICE)

    fee = HOSTILE_PRICE * FEE_BPS // 10_000
    assert token.ownerOf(HOSTILE_TOKEN) == buyer
    assert boa.env.get_balance(hostile.address) == HOSTILE_PRICE - fee
    assert boa.env.get_balance(fee_recipient) == fee
    assert hostile.payments() == 1


def test_the_second_purchase_succeeds_outside_a_sale(
    token: VyperContract, market: VyperContract, hostile: VyperContract, victim: str
) -> None:
    """The control of the re-entry: the purchase the hostile seller attempts is a valid one."""
    boa.env.set_balance(hostile.address, VICTIM_PRICE)
    hostile.arm(REENTER, VICTIM_TOKEN, VICTIM_PRICE)

    hostile.buy_target()

    assert token.ownerOf(VICTIM_TOKEN) == hostile.address
    assert hostile.last_attempt_succeeded()


def test_reentering_buy_for_another_token_reverts_the_whole_sale(
    token: VyperContract,
    market: VyperContract,
    hostile: VyperContract,
    victim: str,
    buyer: str,
    fee_recipient: str,
) -> None:
    hostile.arm(REENTER, VICTIM_TOKEN, VICTIM_PRICE)
    parties = (buyer, hostile.address, victim, fee_recipient)
    before = snapshot(token, market, *parties)

    with boa.env.prank(buyer), boa.reverts("external call failed"):
        market.buy_token(HOSTILE_TOKEN, value=HOSTILE_PRICE)

    after = snapshot(token, market, *parties)
    assert after == before
    assert after["owners"] == [hostile.address, victim]
    assert after["listings"] == [(hostile.address, HOSTILE_PRICE), (victim, VICTIM_PRICE)]
    assert hostile.payments() == 0
    assert hostile.attempts() == 0


def test_reentering_buy_for_the_same_token_reverts_the_whole_sale(
    token: VyperContract,
    market: VyperContract,
    hostile: VyperContract,
    victim: str,
    buyer: str,
    fee_recipient: str,
) -> None:
    boa.env.set_balance(hostile.address, HOSTILE_PRICE)
    hostile.arm(REENTER, HOSTILE_TOKEN, HOSTILE_PRICE)
    parties = (buyer, hostile.address, fee_recipient)
    before = snapshot(token, market, *parties)

    with boa.env.prank(buyer), boa.reverts("external call failed"):
        market.buy_token(HOSTILE_TOKEN, value=HOSTILE_PRICE)

    assert snapshot(token, market, *parties) == before
    assert token.ownerOf(HOSTILE_TOKEN) == hostile.address


def test_the_lock_is_what_refuses_the_reentrant_call(
    token: VyperContract,
    market: VyperContract,
    hostile: VyperContract,
    victim: str,
    buyer: str,
    fee_recipient: str,
) -> None:
    """The hostile seller catches the failure of its re-entrant call: the sale itself then goes through,
    and the re-entrant purchase, valid on its own (see above), failed with no reason, as the
    `@nonreentrant` lock fails (every assert of buy_token gives one)."""
    hostile.arm(REENTER_AND_CATCH, VICTIM_TOKEN, VICTIM_PRICE)

    with boa.env.prank(buyer):
        market.buy_token(HOSTILE_TOKEN, value=HOSTILE_PRICE)

    assert hostile.attempts() == 1
    assert not hostile.last_attempt_succeeded()
    assert hostile.last_attempt_revert_data() == b""
    fee = HOSTILE_PRICE * FEE_BPS // 10_000
    assert token.ownerOf(HOSTILE_TOKEN) == buyer
    assert token.ownerOf(VICTIM_TOKEN) == victim
    assert tuple(market.listings(VICTIM_TOKEN))[:2] == (victim, VICTIM_PRICE)
    assert boa.env.get_balance(hostile.address) == HOSTILE_PRICE - fee
    assert boa.env.get_balance(victim) == 0
    assert boa.env.get_balance(fee_recipient) == fee
    assert boa.env.get_balance(market.address) == 0
    # The lock is released after the sale: the same purchase now succeeds.
    hostile.buy_target()
    assert hostile.last_attempt_succeeded()
    assert token.ownerOf(VICTIM_TOKEN) == hostile.address


def test_a_seller_that_refuses_payment_makes_the_buy_revert(
    token: VyperContract,
    market: VyperContract,
    hostile: VyperContract,
    victim: str,
    buyer: str,
    fee_recipient: str,
) -> None:
    hostile.arm(REFUSE, 0, 0)
    parties = (buyer, hostile.address, fee_recipient)
    before = snapshot(token, market, *parties)

    with boa.env.prank(buyer), boa.reverts("external call failed"):
        market.buy_token(HOSTILE_TOKEN, value=HOSTILE_PRICE)

    assert snapshot(token, market, *parties) == before
    assert token.ownerOf(HOSTILE_TOKEN) == hostile.address
    assert boa.env.get_balance(buyer) == 100 * ETHER


def test_a_fee_recipient_that_refuses_payment_makes_the_buy_revert(
    hostile_seller_deployer: VyperDeployer,
    token: VyperContract,
    market: VyperContract,
    victim: str,
    buyer: str,
) -> None:
    refusing = hostile_seller_deployer.deploy(market.address, token.address)
    refusing.arm(REFUSE, 0, 0)
    market.set_fee(FEE_BPS, refusing.address)

    with boa.env.prank(buyer), boa.reverts("external call failed"):
        market.buy_token(VICTIM_TOKEN, value=VICTIM_PRICE)

    assert token.ownerOf(VICTIM_TOKEN) == victim
    assert boa.env.get_balance(victim) == 0
    assert boa.env.get_balance(buyer) == 100 * ETHER
    assert tuple(market.listings(VICTIM_TOKEN))[:2] == (victim, VICTIM_PRICE)


def test_a_zero_fee_is_not_sent(
    hostile_seller_deployer: VyperDeployer,
    token: VyperContract,
    market: VyperContract,
    victim: str,
    buyer: str,
) -> None:
    """With no fee, the fee recipient is not called at all: one that refuses payment blocks no sale."""
    refusing = hostile_seller_deployer.deploy(market.address, token.address)
    refusing.arm(REFUSE, 0, 0)
    market.set_fee(0, refusing.address)

    with boa.env.prank(buyer):
        market.buy_token(VICTIM_TOKEN, value=VICTIM_PRICE)

    assert token.ownerOf(VICTIM_TOKEN) == buyer
    assert boa.env.get_balance(victim) == VICTIM_PRICE
    assert boa.env.get_balance(refusing.address) == 0
