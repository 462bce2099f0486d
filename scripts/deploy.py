"""Deploy the platform's contracts to CHAIN_RPC_URL (or to the chain of a running `make run`).

Each contract is deployed only when no earlier deployment on that chain can be reused (same artifact,
its code still at its address), and every try is recorded in `deploymentLogs`. A deployment is reused
even when settings it was deployed with (fee, metadata URI, signer) have changed since: it keeps its
own, and a warning says which. `--redeploy NAME` replaces a contract anyway (a new AssetToken brings a
new Marketplace); the old one's tokens or listings are then no longer followed. `make run` runs this
on every start; run it by hand for any other chain.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from app.chain import deployments
from app.chain import service as chain_service
from app.chain.artifacts import CONTRACTS
from app.chain.signer import SignerUnavailable
from app.lib.chain import without_url_secrets
from app.lib.clients import open_clients
from app.lib.embedded import settings_with_running_services
from app.main import DOCUMENTS


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--redeploy",
        nargs="+",
        default=[],
        choices=CONTRACTS,
        metavar="NAME",
        help=f"deploy these afresh even when reusable ({', '.join(CONTRACTS)})",
    )
    return parser.parse_args(argv)


async def _run(redeploy: list[str]) -> int:
    settings = settings_with_running_services()
    if not settings.chain.rpc_url:
        print("CHAIN_RPC_URL is not set, and no `make run` is running: nowhere to deploy", file=sys.stderr)
        return 2
    async with open_clients(settings, documents=DOCUMENTS) as clients:
        try:
            if clients.web3 is None:
                raise chain_service.DeploymentFailed("CHAIN_RPC_URL is not set")
            deployed = await deployments.ensure_deployed(
                clients.web3, settings, chain_service.signer(settings), redeploy=redeploy
            )
        except (chain_service.DeploymentFailed, SignerUnavailable) as exc:
            print(f"deployment failed: {exc}", file=sys.stderr)
            return 1
    print(f"contracts on chain {settings.chain.chain_id} ({without_url_secrets(settings.chain.rpc_url)}):")
    for found in deployed.values():
        how = "reused" if found.reused else f"deployed by {found.tx_hash} in block {found.block}"
        if found.kept_arguments:
            how += f", with the {', '.join(found.kept_arguments)} it was deployed with (settings changed)"
        print(f"  {found.contract:<12} {found.address}  {how}")
    return 0


def main() -> int:
    return asyncio.run(_run(parse_args().redeploy))


if __name__ == "__main__":
    sys.exit(main())
