"""Health, readiness and job status."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Response, get, post
from litestar.params import FromPath
from litestar.status_codes import HTTP_202_ACCEPTED, HTTP_503_SERVICE_UNAVAILABLE

from app.lib.deps import ClientsDep
from app.lib.errors import NotFound
from app.system import service


class SystemController(Controller):
    path = "/api/system"
    tags = ["system"]

    @get("/health", cache=False)
    async def health(self) -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @get("/ready", cache=False)
    async def ready(self, clients: ClientsDep) -> Response[dict[str, Any]]:
        """Readiness: MongoDB, Redis, S3 and the chain each answer; 503 names what does not."""
        ok, checks = await service.readiness(clients)
        body = {"status": "ready" if ok else "unavailable", "checks": checks}
        return Response(body, status_code=200 if ok else HTTP_503_SERVICE_UNAVAILABLE)

    @post("/worker-ping", status_code=HTTP_202_ACCEPTED)
    async def worker_ping(self, clients: ClientsDep) -> dict[str, str]:
        """Queue a trivial job that a worker answers; poll its status URL."""
        job_id = await service.enqueue_ping(clients)
        return {"jobId": job_id, "statusUrl": f"/api/jobs/{job_id}"}


class JobController(Controller):
    path = "/api/jobs"
    tags = ["system"]

    # Open (worker-ping hands out its status URL to anonymous callers): results must hold no private data.
    @get("/{jobId:str}", cache=False, opt={"anonymous": True})
    async def job_status(self, clients: ClientsDep, jobId: FromPath[str]) -> dict[str, Any]:
        """The status of a background job, and its result once finished."""
        state = await service.job_state(clients, jobId)
        if state is None:
            raise NotFound(f"no job {jobId!r}", code="job_not_found")
        return state
