"""Run every queued job in this process, on every queue, until none is left: what the workers would do,
for tests and benchmarks that drive the platform end to end without worker processes."""

from __future__ import annotations

from dataclasses import dataclass

from arq.worker import Worker

from app.config import Settings
from app.lib.clients import Clients
from app.lib.queues import QUEUES
from workers.settings import WORKERS


@dataclass
class Drained:
    """The jobs drain_jobs ran, over every worker."""

    jobs_complete: int = 0
    jobs_failed: int = 0
    jobs_retried: int = 0


async def drain_jobs(clients: Clients, settings: Settings) -> Drained:
    """Run every queued job, on every queue, to completion in this process, as the real workers would."""

    async def startup(ctx: dict) -> None:
        ctx["settings"] = settings
        ctx["clients"] = clients

    drained = Drained()
    while True:
        for worker_settings in WORKERS.values():
            worker = Worker(
                functions=worker_settings.functions,
                queue_name=worker_settings.queue_name,
                redis_pool=clients.redis,
                burst=True,
                handle_signals=False,
                on_startup=startup,
                on_job_start=worker_settings.on_job_start,
                on_job_end=worker_settings.on_job_end,
                max_jobs=worker_settings.max_jobs,
                job_timeout=worker_settings.job_timeout,
                max_tries=worker_settings.max_tries,
                keep_result=worker_settings.keep_result,
                poll_delay=0.05,
            )
            await worker.main()
            drained.jobs_complete += worker.jobs_complete
            drained.jobs_failed += worker.jobs_failed
            drained.jobs_retried += worker.jobs_retried
        if not any([await clients.redis.zcard(queue) for queue in QUEUES]):
            return drained
