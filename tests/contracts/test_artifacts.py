"""The committed artifacts in infra/contracts/build are what `make contracts` makes of the sources."""

from __future__ import annotations

import json

import boa
import pytest
from boa.contracts.vyper.vyper_contract import VyperContract

from scripts.build_contracts import BUILD, CONTRACTS, compile_contract, render

NAMES = ("AssetToken", "Marketplace", "PriceOracle")


def test_every_contract_is_built() -> None:
    assert set(NAMES) <= set(CONTRACTS)
    assert {path.stem for path in BUILD.glob("*.json")} == set(CONTRACTS)


@pytest.mark.parametrize("name", NAMES)
def test_the_committed_artifact_is_up_to_date(name: str) -> None:
    committed = (BUILD / f"{name}.json").read_text()

    assert render(compile_contract(name)) == committed, (
        f"infra/contracts/build/{name}.json is out of date: run `make contracts`"
    )


def test_the_tested_contracts_are_the_built_ones(
    token: VyperContract, market: VyperContract, oracle: VyperContract
) -> None:
    """What these tests load with boa has the ABI and runtime code of the committed artifacts (the code
    at an address is the runtime code, then the values of the immutables)."""
    for name, contract in (("AssetToken", token), ("Marketplace", market), ("PriceOracle", oracle)):
        artifact = json.loads((BUILD / f"{name}.json").read_text())
        runtime = bytes.fromhex(artifact["deployedBytecode"].removeprefix("0x"))

        assert contract.abi == artifact["abi"], name
        assert boa.env.get_code(contract.address).startswith(runtime), name
