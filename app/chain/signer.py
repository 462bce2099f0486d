"""The platform signer: the one account that deploys the contracts, mints and publishes prices.

Its key is an eth-account encrypted keystore (CHAIN_KEYSTORE_PATH) opened with CHAIN_KEYSTORE_PASSWORD.
Outside production, without a keystore, it is the well-known development key (anvil's account 0). The
key never leaves this process and is never logged: errors name the keystore's path, not its content.
"""

from __future__ import annotations

import json

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from app.config import DEV_SIGNER_KEY, Settings


class SignerUnavailable(RuntimeError):
    """No usable key: the chain features that sign cannot run."""


# The chains the development key may sign on: anvil's and hardhat's. Its key is public: a contract it
# deployed anywhere else would belong to whoever reads this.
DEV_CHAIN_IDS = (31337, 1337)


def load_signer(settings: Settings) -> LocalAccount:
    chain = settings.chain
    if chain.keystore_path is not None:
        if chain.keystore_password is None:
            raise SignerUnavailable("CHAIN_KEYSTORE_PASSWORD is not set")
        try:
            keystore = json.loads(chain.keystore_path.read_text())
            key = Account.decrypt(keystore, chain.keystore_password.get_secret_value())
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # ValueError is also a wrong password ("MAC mismatch"): say which file, never what it holds.
            raise SignerUnavailable(
                f"cannot open the keystore {chain.keystore_path}: {type(exc).__name__}"
            ) from None
        return Account.from_key(key)
    if settings.is_production:
        raise SignerUnavailable("CHAIN_KEYSTORE_PATH is not set")
    if chain.chain_id not in DEV_CHAIN_IDS:
        raise SignerUnavailable(
            f"CHAIN_KEYSTORE_PATH is not set, and the development key signs on chains {DEV_CHAIN_IDS} only"
        )
    return Account.from_key(DEV_SIGNER_KEY)


def signer_address(settings: Settings) -> str:
    """The signer's address without opening its key: a keystore states it in the clear. It is what the
    api needs (the sender of the transactions it asks for), so only the workers decrypt the key."""
    chain = settings.chain
    if chain.keystore_path is None:
        return load_signer(settings).address
    try:
        stated = json.loads(chain.keystore_path.read_text())["address"]
        return Web3.to_checksum_address("0x" + str(stated).removeprefix("0x"))
    except (OSError, ValueError, KeyError, TypeError):
        raise SignerUnavailable(f"cannot read the keystore {chain.keystore_path}") from None


def new_keystore(password: str) -> tuple[str, dict]:
    """A new random key as an encrypted keystore: (its address, the keystore JSON)."""
    account = Account.create()
    return account.address, Account.encrypt(account.key, password)
