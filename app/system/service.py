"""Liveness, readiness, the worker round trip, and backups."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from arq.jobs import Job, JobStatus, SerializationError
from botocore.exceptions import ConnectionError as BotoConnectionError
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ConnectionFailure
from redis.exceptions import ConnectionError as RedisConnectionError

from app.config import BackupSettings
from app.lib.chain import without_url_secrets
from app.lib.clients import Clients
from app.lib.errors import NotFound
from app.lib.queues import QUEUES
from app.lib.storage import Storage
from app.lib.timeutil import utcnow
from app.system import backups
from app.system.archive import Manifest
from app.system.schemas import CheckOut, JobStateOut, ReadinessOut

log = structlog.get_logger(__name__)
CHECK_TIMEOUT_S = 2.0
READY_CACHE_S = 5.0
PING_JOB = "system.ping"
PING_WINDOW_S = 10
_ERROR_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")


@dataclass(frozen=True, slots=True)
class Check:
    status: str  # up, down or disabled
    latency_ms: float | None = None
    error: str | None = None  # a code; the exception's text goes to the log only


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    checks: dict[str, Check]
    checked_at: datetime


def _check_error(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, OSError | ConnectionFailure | RedisConnectionError | BotoConnectionError):
        return "connection_failed"
    return "check_failed"


async def _timed(name: str, check: Callable[[], Awaitable[Any]]) -> Check:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(check(), timeout=CHECK_TIMEOUT_S)
    except Exception as exc:  # any failure means the dependency is down, whatever it raised
        code = _check_error(exc)
        detail = without_url_secrets(f"{type(exc).__name__}: {exc}")[:300]
        log.warning("system.ready.down", check=name, error=code, detail=detail)
        return Check(status="down", error=code)
    return Check(status="up", latency_ms=round((time.perf_counter() - started) * 1000, 2))


async def check_readiness(clients: Clients) -> Readiness:
    """Ping every dependency at once; ready only when all configured ones answer."""
    checks: dict[str, Callable[[], Awaitable[Any]]] = {
        "mongodb": lambda: clients.mongo.admin.command("ping"),
        "redis": clients.redis.ping,
        "s3": clients.storage.ping,
    }
    if clients.web3 is not None:
        checks["chain"] = lambda: clients.web3.eth.chain_id
    results = await asyncio.gather(*(_timed(name, check) for name, check in checks.items()))
    by_name = dict(zip(checks, results, strict=True))
    if clients.web3 is None:
        by_name["chain"] = Check(status="disabled")
    ready = all(check.status != "down" for check in by_name.values())
    return Readiness(ready=ready, checks=by_name, checked_at=utcnow())


class ReadinessCache:
    """This process's last readiness answer for `ttl_s`, refreshed by one request at a time.

    However many probes arrive, the dependencies (and the chain RPC provider's quota) see one round of
    checks per process per `ttl_s`. An answer is kept for the clients it checked, and only for them.
    """

    def __init__(self, ttl_s: float = READY_CACHE_S) -> None:
        self.ttl_s = ttl_s
        self._last: tuple[Clients, float, Readiness] | None = None
        self._refresh: tuple[Clients, asyncio.Task[Readiness]] | None = None

    async def get(self, clients: Clients) -> Readiness:
        last = self._last
        if last is not None and last[0] is clients and time.monotonic() < last[1]:
            return last[2]
        refresh = self._refresh
        if refresh is None or refresh[0] is not clients or refresh[1].done():
            refresh = self._refresh = (clients, asyncio.ensure_future(self._run(clients)))
        # Shielded: a prober that hangs up does not cancel the refresh the others are waiting for.
        return await asyncio.shield(refresh[1])

    async def _run(self, clients: Clients) -> Readiness:
        result = await check_readiness(clients)
        self._last = (clients, time.monotonic() + self.ttl_s, result)
        return result


_readiness = ReadinessCache()


async def readiness(clients: Clients) -> Readiness:
    """The readiness of this process's dependencies, at most READY_CACHE_S old."""
    return await _readiness.get(clients)


async def readiness_report(clients: Clients, *, detailed: bool) -> ReadinessOut:
    """Readiness as answered: up or down per check, with latencies, errors and time for operators only."""
    report = await readiness(clients)
    checks = {
        name: CheckOut(status=check.status, latency_ms=check.latency_ms, error=check.error)
        if detailed
        else CheckOut(status=check.status)
        for name, check in report.checks.items()
    }
    return ReadinessOut(
        status="ready" if report.ready else "unavailable",
        checks=checks,
        checked_at=report.checked_at if detailed else None,
    )


def pong(job_try: int | None) -> dict[str, Any]:
    """The ping job's answer; public, so it names no host or process."""
    return {"pong": True, "at": utcnow().isoformat(), "try": job_try}


async def enqueue_ping(clients: Clients) -> str:
    """Queue one ping job per time window; arq de-duplicates by job id, so this cannot flood the queue."""
    job_id = f"{PING_JOB}:{int(time.time()) // PING_WINDOW_S}"
    await clients.redis.enqueue_job(PING_JOB, _job_id=job_id)
    return job_id


def job_error_code(error: object) -> str:
    """What a failed job's result says about its failure: a code, never the exception's text."""
    code = getattr(error, "code", None)  # AppError and the domains' own errors carry one
    if isinstance(code, str) and _ERROR_CODE.fullmatch(code):
        return code
    if isinstance(error, TimeoutError):
        return "job_timeout"
    if isinstance(error, asyncio.CancelledError):
        return "job_aborted"
    return "job_failed"


async def job_state(clients: Clients, job_id: str) -> JobStateOut:
    """A queued job's status and, when finished, its result or error code; 404 when arq knows no such job."""
    for queue in QUEUES:  # a job waiting in a queue is found there only
        job = Job(job_id, clients.redis, _queue_name=queue)
        status = await job.status()
        if status != JobStatus.not_found:
            break
    else:
        raise NotFound(f"no job {job_id!r}", code="job_not_found")
    if status != JobStatus.complete:
        return JobStateOut(job_id=job_id, status=status.value)
    try:
        info = await job.result_info()
    except SerializationError:  # a result this release cannot read back
        log.warning("system.job_state.unreadable_result", job_id=job_id)
        return JobStateOut(job_id=job_id, status=status.value, success=False, error="job_result_unreadable")
    if info is None:
        return JobStateOut(job_id=job_id, status=status.value)
    if info.success:
        return JobStateOut(
            job_id=job_id, status=status.value, success=True, result=info.result, finished_at=info.finish_time
        )
    return JobStateOut(
        job_id=job_id,
        status=status.value,
        success=False,
        error=job_error_code(info.result),
        finished_at=info.finish_time,
    )


# ---- backups ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BackupDone:
    manifest: Manifest
    pruned: list[str]  # the backups deleted after it


async def back_up(
    database: AsyncDatabase, storage: Storage, settings: BackupSettings, *, now: datetime | None = None
) -> BackupDone:
    """Back up every collection to S3; once it is complete, delete the backups past the newest
    BACKUP_KEEP, and those a failed run left without a manifest."""
    async with asyncio.timeout(settings.timeout_s):  # what the worker enforces on the job, for scripts too
        manifest = await backups.create_backup(database, storage, now=now)
    pruned = await backups.prune_backups(
        storage, keep=settings.keep, abandoned_after=timedelta(seconds=settings.timeout_s), now=now
    )
    return BackupDone(manifest=manifest, pruned=pruned)


async def list_backups(storage: Storage) -> list[backups.BackupEntry]:
    """Every backup in the bucket, oldest first, complete or not."""
    return await backups.list_backups(storage)


async def restore(
    database: AsyncDatabase, storage: Storage, wanted: str, *, force: bool = False
) -> backups.Restored:
    """Restore the backup `wanted` names (its timestamp, a prefix of it, or `latest`) into `database`."""
    entry = await backups.find_backup(storage, wanted)
    return await backups.restore_backup(database, storage, entry.name, force=force)
