"""Fixtures of the contract tests: titanoboa's in-process EVM, the contracts loaded from their sources.

Titanoboa's pytest plugin (`boa_test`, installed with it) runs each fixture and each test inside a
`boa.env.anchor()`, so whatever a test deploys, mints or pays is undone after it.
"""

from __future__ import annotations

from pathlib import Path

import boa
import pytest
from boa.contracts.vyper.vyper_contract import VyperContract, VyperDeployer

CONTRACTS = Path(__file__).resolve().parents[2] / "infra" / "contracts"
FIXTURES = Path(__file__).resolve().parent / "fixtures"

BASE_URI = "https://api.dynamicvault.test/api/metadata/"
FEE_BPS = 250
ETHER = 10**18
ZERO_ADDRESS = "0x" + "00" * 20


def deployer(path: Path) -> VyperDeployer:
    return boa.load_partial(str(path))


@pytest.fixture(scope="session")
def asset_token_deployer() -> VyperDeployer:
    return deployer(CONTRACTS / "AssetToken.vy")


@pytest.fixture(scope="session")
def marketplace_deployer() -> VyperDeployer:
    return deployer(CONTRACTS / "Marketplace.vy")


@pytest.fixture(scope="session")
def oracle_deployer() -> VyperDeployer:
    return deployer(CONTRACTS / "PriceOracle.vy")


@pytest.fixture(scope="session")
def hostile_seller_deployer() -> VyperDeployer:
    return deployer(FIXTURES / "HostileSeller.vy")


@pytest.fixture
def owner() -> str:
    """The deployer of every contract, so their owner (and the token's first minter)."""
    return boa.env.eoa


@pytest.fixture
def token(asset_token_deployer: VyperDeployer) -> VyperContract:
    return asset_token_deployer.deploy(BASE_URI)


@pytest.fixture
def fee_recipient() -> str:
    return boa.env.generate_address("fee_recipient")


@pytest.fixture
def market(marketplace_deployer: VyperDeployer, token: VyperContract, fee_recipient: str) -> VyperContract:
    return marketplace_deployer.deploy(token.address, FEE_BPS, fee_recipient)


@pytest.fixture
def publisher() -> str:
    return boa.env.generate_address("publisher")


@pytest.fixture
def oracle(oracle_deployer: VyperDeployer, publisher: str) -> VyperContract:
    return oracle_deployer.deploy(publisher)


@pytest.fixture
def seller() -> str:
    return boa.env.generate_address("seller")


@pytest.fixture
def buyer() -> str:
    address = boa.env.generate_address("buyer")
    boa.env.set_balance(address, 100 * ETHER)
    return address


@pytest.fixture
def stranger() -> str:
    address = boa.env.generate_address("stranger")
    boa.env.set_balance(address, 100 * ETHER)
    return address
