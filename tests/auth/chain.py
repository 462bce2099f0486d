"""An in-process py-evm chain (web3's async eth-tester provider) and the test ERC-1271 wallet on it."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import vyper
from eth_tester import EthereumTester, PyEVMBackend
from eth_utils import to_canonical_address, to_checksum_address
from web3 import AsyncWeb3
from web3.providers.eth_tester import AsyncEthereumTesterProvider

WALLET_SOURCE = Path(__file__).resolve().parents[2] / "infra" / "contracts" / "ERC1271Wallet.vy"
WALLET_OWNER_SLOT = 0  # `owner` is the contract's only storage variable (vyper's storage layout)


@functools.cache
def wallet_artifacts() -> dict[str, Any]:
    """ABI, creation and runtime bytecode of ERC1271Wallet, compiled by the pip vyper package."""
    return vyper.compile_code(
        WALLET_SOURCE.read_text(),
        contract_path=str(WALLET_SOURCE),
        output_formats=["abi", "bytecode", "bytecode_runtime"],
    )


def new_chain(extra_genesis_accounts: dict[str, dict[str, Any]] | None = None) -> AsyncWeb3:
    """A fresh chain with eth-tester's funded accounts, plus any accounts put in its genesis state."""
    provider = AsyncEthereumTesterProvider()
    if extra_genesis_accounts:
        state = PyEVMBackend.generate_genesis_state(num_accounts=1)
        for address, account in extra_genesis_accounts.items():
            state[to_canonical_address(address)] = {"balance": 0, "nonce": 1, "storage": {}, **account}
        provider.ethereum_tester = EthereumTester(backend=PyEVMBackend(genesis_state=state))
    return AsyncWeb3(provider)


async def deploy_wallet(w3: AsyncWeb3, owner: str) -> str:
    """Deploy an ERC1271Wallet owned by `owner`; returns its address."""
    artifacts = wallet_artifacts()
    factory = w3.eth.contract(abi=artifacts["abi"], bytecode=artifacts["bytecode"])
    deployer = (await w3.eth.accounts)[0]
    tx_hash = await factory.constructor(owner).transact({"from": deployer})
    receipt = await w3.eth.wait_for_transaction_receipt(tx_hash)
    return to_checksum_address(receipt["contractAddress"])


def chain_with_wallet_at(address: str, owner: str) -> AsyncWeb3:
    """A chain whose genesis already has an ERC1271Wallet owned by `owner` at a chosen `address`."""
    runtime = bytes.fromhex(wallet_artifacts()["bytecode_runtime"].removeprefix("0x"))
    return new_chain({address: {"code": runtime, "storage": {WALLET_OWNER_SLOT: int(owner, 16)}}})
