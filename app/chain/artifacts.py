"""The compiled contracts (`infra/contracts/build/<Name>.json`, built by scripts/build_contracts.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

BUILD = Path(__file__).resolve().parents[2] / "infra" / "contracts" / "build"
# In deployment order: the marketplace trades the token, the oracle prices it.
CONTRACTS = ("AssetToken", "Marketplace", "PriceOracle")


@dataclass(frozen=True)
class Artifact:
    name: str
    abi: list[dict[str, Any]]
    bytecode: str
    deployed_bytecode: str
    artifact_hash: str

    def runs_at(self, code: bytes) -> bool:
        """Whether `code`, read at an address, is this contract's: its runtime code, then the values of
        its immutables, which Vyper appends at deployment."""
        runtime = bytes.fromhex(self.deployed_bytecode.removeprefix("0x"))
        return len(runtime) > 0 and bytes(code).startswith(runtime)


@cache
def artifact(name: str) -> Artifact:
    data = json.loads((BUILD / f"{name}.json").read_text())
    return Artifact(
        name=data["contractName"],
        abi=data["abi"],
        bytecode=data["bytecode"],
        deployed_bytecode=data["deployedBytecode"],
        artifact_hash=data["artifactHash"],
    )
