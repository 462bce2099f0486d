"""AssetToken: who mints, what ids, what the token exposes, and its metadata URI."""

from __future__ import annotations

import json

import boa
import pytest
from boa.contracts.vyper.vyper_contract import VyperContract
from eth_abi import encode
from eth_utils import function_signature_to_4byte_selector

from scripts.build_contracts import BUILD
from tests.contracts.conftest import BASE_URI, ZERO_ADDRESS

ERC721_INTERFACE_ID = bytes.fromhex("80ac58cd")


def test_the_deployer_owns_the_token_and_is_its_minter(token: VyperContract, owner: str) -> None:
    assert token.owner() == owner
    assert token.is_minter(owner)
    assert token.name() == "DynamicVault Asset"
    assert token.symbol() == "DVA"
    assert token.totalSupply() == 0


def test_a_minter_mints_at_the_id_it_chooses(token: VyperContract, seller: str) -> None:
    token.mint(seller, 4242)

    [transfer] = token.get_logs()
    assert type(transfer).__name__ == "Transfer"
    assert (transfer.sender, transfer.receiver, transfer.token_id) == (ZERO_ADDRESS, seller, 4242)
    assert token.ownerOf(4242) == seller
    assert token.balanceOf(seller) == 1
    assert token.totalSupply() == 1
    assert token.tokenByIndex(0) == 4242


def test_a_non_minter_cannot_mint(token: VyperContract, stranger: str) -> None:
    with boa.env.prank(stranger), boa.reverts("AssetToken: access is denied"):
        token.mint(stranger, 1)

    assert token.totalSupply() == 0
    with boa.reverts("erc721: invalid token ID"):
        token.ownerOf(1)


def test_an_id_minted_before_is_refused(token: VyperContract, seller: str, stranger: str) -> None:
    token.mint(seller, 7)

    with boa.reverts("erc721: token already minted"):
        token.mint(stranger, 7)
    with boa.reverts("erc721: token already minted"):
        token.mint(seller, 7)

    assert token.ownerOf(7) == seller
    assert token.balanceOf(stranger) == 0
    assert token.totalSupply() == 1


def test_the_owner_adds_and_removes_a_minter(token: VyperContract, stranger: str, seller: str) -> None:
    token.set_minter(stranger, True)

    [changed] = token.get_logs()
    assert type(changed).__name__ == "RoleMinterChanged"
    assert (changed.minter, changed.status) == (stranger, True)
    assert token.is_minter(stranger)
    with boa.env.prank(stranger):
        token.mint(seller, 1)
    assert token.ownerOf(1) == seller

    token.set_minter(stranger, False)

    assert not token.is_minter(stranger)
    with boa.env.prank(stranger), boa.reverts("AssetToken: access is denied"):
        token.mint(seller, 2)


def test_only_the_owner_sets_a_minter(token: VyperContract, stranger: str) -> None:
    with boa.env.prank(stranger), boa.reverts("ownable: caller is not the owner"):
        token.set_minter(stranger, True)

    assert not token.is_minter(stranger)


def test_a_new_owner_takes_over_minting(token: VyperContract, owner: str, stranger: str) -> None:
    token.transfer_ownership(stranger)

    assert token.owner() == stranger
    assert token.is_minter(stranger)
    assert not token.is_minter(owner)
    with boa.reverts("AssetToken: access is denied"):
        token.mint(owner, 1)
    with boa.reverts("ownable: caller is not the owner"):
        token.set_minter(owner, True)


def test_a_mint_runs_no_code_of_the_receiver(
    token: VyperContract, market: VyperContract, hostile_seller_deployer, seller: str
) -> None:
    """The signer pays for mints: a receiver contract gets its token without being called, so it can
    neither refuse it nor make the signer pay for its code."""
    token.mint(market.address, 1)  # the marketplace implements no onERC721Received
    assert token.ownerOf(1) == market.address
    hostile = hostile_seller_deployer.deploy(market.address, token.address)
    token.mint(hostile.address, 2)
    assert token.ownerOf(2) == hostile.address and token.transfers(2) == 0


def test_every_transfer_is_counted(token: VyperContract, seller: str, stranger: str) -> None:
    token.mint(seller, 1)
    with boa.env.prank(seller):
        token.transferFrom(seller, stranger, 1)
    with boa.env.prank(stranger):
        token.safeTransferFrom(stranger, seller, 1)
    assert token.transfers(1) == 2 and token.ownerOf(1) == seller


def test_a_mint_to_the_zero_address_is_refused(token: VyperContract) -> None:
    with boa.reverts("erc721: mint to the zero address"):
        token.mint(ZERO_ADDRESS, 1)


def _functions(abi: list[dict]) -> set[str]:
    return {item["name"] for item in abi if item["type"] == "function"}


def test_safe_mint_and_burn_are_not_exposed(token: VyperContract) -> None:
    """Neither in the ABI boa compiled nor in the committed artifact (test_artifacts: it is up to date)."""
    committed = _functions(json.loads((BUILD / "AssetToken.json").read_text())["abi"])
    compiled = _functions(token.abi)

    assert compiled == committed
    assert {"mint", "transferFrom", "safeTransferFrom", "set_minter"} <= compiled
    assert "safe_mint" not in compiled
    assert "burn" not in compiled
    assert not hasattr(token, "safe_mint")
    assert not hasattr(token, "burn")


@pytest.mark.parametrize(
    ("name", "types"),
    [("burn", ["uint256"]), ("safe_mint", ["address", "string"])],
    ids=["burn", "safe_mint"],
)
def test_the_selectors_of_safe_mint_and_burn_revert(
    token: VyperContract, owner: str, name: str, types: list[str]
) -> None:
    """Called by their selectors anyway, with arguments that would work, by the owner and minter."""
    token.mint(owner, 1)
    selector = function_signature_to_4byte_selector(f"{name}({','.join(types)})")
    arguments = encode(types, [1] if name == "burn" else [owner, "2"])

    call = boa.env.execute_code(token.address, sender=owner, data=selector + arguments)

    assert call.is_error

    assert token.ownerOf(1) == owner
    assert token.totalSupply() == 1


@pytest.mark.parametrize("token_id", [0, 1, 42, 1_000_000_007, 2**256 - 1])
def test_token_uri_is_the_base_uri_then_the_decimal_id(
    token: VyperContract, seller: str, token_id: int
) -> None:
    token.mint(seller, token_id)

    assert token.tokenURI(token_id) == f"{BASE_URI}{token_id}"


def test_token_uri_of_an_unminted_token_reverts(token: VyperContract) -> None:
    with boa.reverts("erc721: invalid token ID"):
        token.tokenURI(1)


@pytest.mark.parametrize(
    ("interface_id", "supported"),
    [
        (ERC721_INTERFACE_ID, True),
        (bytes.fromhex("01ffc9a7"), True),  # ERC-165
        (bytes.fromhex("5b5e139f"), True),  # ERC-721 metadata
        (bytes.fromhex("780e9d63"), True),  # ERC-721 enumerable
        (bytes.fromhex("ffffffff"), False),  # ERC-165 says never
        (bytes.fromhex("d9b67a26"), False),  # ERC-1155
    ],
)
def test_supports_interface(token: VyperContract, interface_id: bytes, supported: bool) -> None:
    assert token.supportsInterface(interface_id) is supported
