"""Runs queued once: a Redis marker names the job queued or running for a key (a source's refresh, the
training), so the API and the crons share it rather than queue another; the job clears it when it ends."""

from __future__ import annotations

import secrets
from typing import Any

import structlog
from redis.exceptions import LockError

from app.config import Settings

log = structlog.get_logger(__name__)


async def enqueue_once(
    clients,
    settings: Settings,
    marker: str,
    job: str,
    *args: Any,
    prefix: str | None = None,
    timeout_s: int | None = None,
) -> tuple[str, bool]:
    """Queue `job` unless the one `marker` names is queued or running: (its job id, whether this call
    queued it).

    The marker in Redis names the pending job until that job ends, so repeated requests (and the cron)
    share it, while a request after it ended gets a run of its own.
    """
    # Waiting in the queue, then running (for as long as the job may: `timeout_s`, else the workers').
    ttl = 2 * (timeout_s or settings.worker.job_timeout_s) + 60
    while True:
        job_id = f"{prefix or job}:{secrets.token_hex(6)}"
        if await clients.redis.set(marker, job_id, nx=True, ex=ttl):
            await clients.redis.enqueue_job(job, *args, _job_id=job_id)
            return job_id, True
        pending = await clients.redis.get(marker)
        if pending is not None:  # else it ended in between: try again
            return pending.decode() if isinstance(pending, bytes) else str(pending), False


async def release(redis, lock, marker: str, job_id: str | None, name: str) -> None:
    """After a run: clear the marker if it still names this job, and release the run's lock."""
    pending = await redis.get(marker)
    if (
        job_id is not None
        and pending is not None
        and (pending.decode() if isinstance(pending, bytes) else pending) == job_id
    ):
        await redis.delete(marker)  # this job ended: the next request queues a new one
    try:
        await lock.release()
    except LockError:  # it expired first: the next run may already hold a new one
        log.warning("oracle.lock_expired", run=name)
