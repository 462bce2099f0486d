"""The chain API: where the platform's contracts are."""

from __future__ import annotations

from litestar import Controller, get

from app.chain import schemas, service
from app.lib.deps import ClientsDep, SettingsDep
from app.lib.openapi import raises
from app.lib.params import PUBLIC


class ChainController(Controller):
    path = "/api/chain"
    tags = ["chain"]

    @get("/deployments", opt=PUBLIC)
    async def list_deployments(self, settings: SettingsDep) -> schemas.DeploymentList:
        """The platform's contracts on its chain: name, address, chain id and ABI of each deployed one."""
        return await service.deployment_list(settings)

    @get("/status", cache=False, opt={**PUBLIC, **raises({503: ["chain_unavailable"]})})
    async def chain_status(self, clients: ClientsDep, settings: SettingsDep) -> schemas.ChainStatus:
        """Head and indexed blocks, the indexer's lag, the last reorg, the outbox's open transactions,
        the signer's balance and the last drift report (also on /metrics)."""
        return await service.chain_status(clients, settings)
