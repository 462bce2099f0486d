"""Liveness, readiness and the worker round trip."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from arq.jobs import Job, JobStatus

from app.lib.clients import Clients
from app.lib.queues import QUEUES

CHECK_TIMEOUT_S = 2.0
PING_JOB = "system.ping"
PING_WINDOW_S = 10


async def _timed(check: Callable[[], Awaitable[Any]]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(check(), timeout=CHECK_TIMEOUT_S)
    except Exception as exc:  # any failure means the dependency is down, whatever it raised
        return {"status": "down", "error": f"{type(exc).__name__}: {exc}"[:300]}
    return {"status": "up", "latencyMs": round((time.perf_counter() - started) * 1000, 2)}


async def readiness(clients: Clients) -> tuple[bool, dict[str, dict[str, Any]]]:
    """Ping every dependency at once; ready only when all configured ones answer."""
    checks: dict[str, Callable[[], Awaitable[Any]]] = {
        "mongodb": lambda: clients.mongo.admin.command("ping"),
        "redis": clients.redis.ping,
        "s3": clients.storage.ping,
    }
    if clients.web3 is not None:
        checks["chain"] = lambda: clients.web3.eth.chain_id
    results = dict(zip(checks, await asyncio.gather(*(_timed(c) for c in checks.values())), strict=True))
    if clients.web3 is None:
        results["chain"] = {"status": "disabled"}
    ready = all(r["status"] != "down" for r in results.values())
    return ready, results


async def enqueue_ping(clients: Clients) -> str:
    """Queue one ping job per time window; arq de-duplicates by job id, so this cannot flood the queue."""
    job_id = f"{PING_JOB}:{int(time.time()) // PING_WINDOW_S}"
    await clients.redis.enqueue_job(PING_JOB, _job_id=job_id)
    return job_id


async def job_state(clients: Clients, job_id: str) -> dict[str, Any] | None:
    """A queued job's status and, when finished, its result; None when arq knows no such job."""
    for queue in QUEUES:  # a job waiting in a queue is found there only
        job = Job(job_id, clients.redis, _queue_name=queue)
        status = await job.status()
        if status != JobStatus.not_found:
            break
    else:
        return None
    state: dict[str, Any] = {"jobId": job_id, "status": status.value}
    if status == JobStatus.complete:
        info = await job.result_info()
        if info is not None:
            state["success"] = info.success
            state["result"] = info.result if info.success else None
            state["error"] = None if info.success else str(info.result)
            state["finishedAt"] = info.finish_time.isoformat()
    return state
