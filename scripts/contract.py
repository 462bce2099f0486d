"""Run Schemathesis' own command against a running platform, as every kind of caller.

    ADMIN_WALLETS=<address of CONTRACT_ADMIN_KEY> make run      # in one terminal, then `make seed`
    CONTRACT_ADMIN_KEY=<hex private key> make contract         # in another

It signs in as an admin (a wallet in the server's ADMIN_WALLETS) and as a fresh user, has the admin make
the user an API key with every permission, and runs `st run <api>/schema/openapi.json --checks all`
anonymously and as each of them, with the suite's rules for what clients send (tests/contract/hooks.py).
Without CONTRACT_ADMIN_KEY it runs as the anonymous caller and the user only. Extra arguments go to
`st run` (e.g. `make contract ARGS="--max-examples 50"`); the exit code is non-zero if any run failed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount

from app.auth import siwe
from app.lib.security import KNOWN_PERMISSIONS

API = os.environ.get("CONTRACT_API_URL", "http://127.0.0.1:8000")


def sign_in(http: httpx.Client, account: LocalAccount) -> str:
    """An access token for `account`, through the wallet flow a browser runs (nonce, sign, verify)."""
    grant = http.get("/api/auth/nonce", params={"walletAddress": account.address}).raise_for_status().json()
    now = datetime.now(UTC)
    text = siwe.build_message(
        domain=grant["domain"],
        address=account.address,
        uri=grant["uri"],
        chain_id=grant["chainId"],
        nonce=grant["nonce"],
        issued_at=now,
        expiration_time=now + timedelta(minutes=5),
        statement="Sign in to DynamicVault.",
    )
    signature = "0x" + bytes(account.sign_message(encode_defunct(text=text)).signature).hex()
    body = {"walletAddress": account.address, "signature": signature, "message": text}
    return http.post("/api/auth/verify", json=body).raise_for_status().json()["accessToken"]


def identities() -> dict[str, list[str]]:
    """The `-H` arguments of each caller."""
    with httpx.Client(base_url=API, timeout=30) as http:
        user = Account.create()
        callers = {"anonymous": [], "user": ["-H", f"Authorization: Bearer {sign_in(http, user)}"]}
        admin_key = os.environ.get("CONTRACT_ADMIN_KEY")
        if admin_key:
            token = sign_in(http, Account.from_key(admin_key))
            callers["admin"] = ["-H", f"Authorization: Bearer {token}"]
            key = http.post(
                "/api/auth/api-keys",
                headers={"Authorization": f"Bearer {token}"},
                json={
                    "name": "contract run",
                    "permissions": sorted(KNOWN_PERMISSIONS),
                    "walletAddress": user.address,
                },
            ).raise_for_status()
            callers["api_key"] = ["-H", f"X-API-Key: {key.json()['key']}"]
    return callers


def main(args: list[str]) -> int:
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.contract.hooks", "PYTHONPATH": str(root)}
    st = Path(sys.executable).parent / "st"
    failed = []
    for name, headers in identities().items():
        print(f"\n=== schemathesis as {name} ===", flush=True)
        command = [str(st), "run", f"{API}/schema/openapi.json", "--checks", "all", *headers, *args]
        if subprocess.run(command, env=env, cwd=root, check=False).returncode != 0:  # noqa: S603
            failed.append(name)
    print(f"\nfailed as: {', '.join(failed)}" if failed else "\nevery caller kept the contract")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
