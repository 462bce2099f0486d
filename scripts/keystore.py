"""Make the platform signer's key: a new random key in an eth-account encrypted keystore.

The password is read from CHAIN_KEYSTORE_PASSWORD, or asked for. The keystore goes to `--out`
(mode 0600), and its address is printed: fund it on the chain, then set CHAIN_KEYSTORE_PATH and
CHAIN_KEYSTORE_PASSWORD for the api, the workers and `scripts/deploy`.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path

from app.chain.signer import new_keystore


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where to write the keystore (JSON)")
    args = parser.parse_args()
    if args.out.exists():
        print(f"{args.out} exists: not overwritten", file=sys.stderr)
        return 1
    password = os.environ.get("CHAIN_KEYSTORE_PASSWORD") or getpass.getpass("keystore password: ")
    if len(password) < 12:
        print("the password must be at least 12 characters", file=sys.stderr)
        return 2
    address, keystore = new_keystore(password)
    args.out.touch(mode=0o600)
    args.out.write_text(json.dumps(keystore))
    print(f"signer {address}: keystore written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
