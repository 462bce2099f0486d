"""Deploy the platform's contracts to CHAIN_RPC_URL (or to the chain of a running `make run`).

Each contract is deployed only when no earlier deployment on that chain can be reused (same artifact,
same constructor arguments, its code still at its address), and every try is recorded in
`deploymentLogs`. `make run` runs this on every start; run it by hand for any other chain.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from app.chain import service as chain_service
from app.chain.signer import SignerUnavailable
from app.lib.chain import without_url_secrets
from app.lib.clients import open_clients
from app.lib.embedded import settings_with_running_services
from app.main import DOCUMENTS


async def _run() -> int:
    settings = settings_with_running_services()
    if not settings.chain.rpc_url:
        print("CHAIN_RPC_URL is not set, and no `make run` is running: nowhere to deploy", file=sys.stderr)
        return 2
    async with open_clients(settings, documents=DOCUMENTS) as clients:
        try:
            deployed = await chain_service.ensure_deployed(clients, settings)
        except (chain_service.DeploymentFailed, SignerUnavailable) as exc:
            print(f"deployment failed: {exc}", file=sys.stderr)
            return 1
    print(f"contracts on chain {settings.chain.chain_id} ({without_url_secrets(settings.chain.rpc_url)}):")
    for found in deployed.values():
        how = "reused" if found.reused else f"deployed by {found.tx_hash} in block {found.block}"
        print(f"  {found.contract:<12} {found.address}  {how}")
    return 0


def main() -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    return asyncio.run(_run())


if __name__ == "__main__":
    sys.exit(main())
