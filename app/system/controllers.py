"""Health, readiness and job status."""

from __future__ import annotations

from litestar import Controller, Request, Response, get, post
from litestar.openapi import ResponseSpec
from litestar.params import FromPath
from litestar.status_codes import HTTP_202_ACCEPTED, HTTP_503_SERVICE_UNAVAILABLE

from app.lib.deps import ClientsDep, SettingsDep
from app.lib.observability import is_operator
from app.lib.openapi import raises
from app.lib.security import OPERATOR_SCHEME
from app.system import schemas, service

SYSTEM_LIMITS = {"rate_limit": "system"}
HEALTHY = schemas.HealthOut(status="ok")


class SystemController(Controller):
    path = "/api/system"
    tags = ["system"]
    opt = SYSTEM_LIMITS

    # Not counted: liveness does no I/O, and must not fail because Redis (where counters live) is down.
    @get("/health", cache=False, opt={"rate_limit": None, "no_io": True})
    async def health(self) -> schemas.HealthOut:
        """Liveness: the process answers."""
        return HEALTHY

    @get(
        "/ready",
        cache=False,
        opt={**SYSTEM_LIMITS, "security": [{}, {OPERATOR_SCHEME: []}]},
        responses={
            HTTP_503_SERVICE_UNAVAILABLE: ResponseSpec(
                schemas.ReadinessOut, description="A dependency is down: the report says which"
            )
        },
    )
    async def ready(
        self, request: Request, clients: ClientsDep, settings: SettingsDep
    ) -> Response[schemas.ReadinessOut]:
        """Readiness: MongoDB, Redis, S3 and the chain, each up or down; 503 when any is down.

        With the operator token (METRICS_TOKEN) each check also gives its latency or an error code.
        """
        detailed = is_operator(settings, request.headers.get("authorization"))
        body = await service.readiness_report(clients, detailed=detailed)
        return Response(body, status_code=200 if body.status == "ready" else HTTP_503_SERVICE_UNAVAILABLE)

    @post("/worker-ping", status_code=HTTP_202_ACCEPTED)
    async def worker_ping(self, clients: ClientsDep) -> schemas.PingQueued:
        """Queue a trivial job that a worker answers; poll its status URL."""
        job_id = await service.enqueue_ping(clients)
        return schemas.PingQueued(job_id=job_id, status_url=f"/api/jobs/{job_id}")


class JobController(Controller):
    path = "/api/jobs"
    tags = ["system"]

    # Open (worker-ping hands out its status URL to anonymous callers): results must hold no private data,
    # and a failure shows its error code only.
    @get(
        "/{jobId:str}",
        cache=False,
        opt={"anonymous": True, **SYSTEM_LIMITS, **raises({404: ["job_not_found"]})},
    )
    async def job_status(self, clients: ClientsDep, jobId: FromPath[str]) -> schemas.JobStateOut:
        """The status of a background job, and its result (or error code) once finished."""
        return await service.job_state(clients, jobId)
