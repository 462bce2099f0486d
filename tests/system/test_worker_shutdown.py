"""The worker's shutdown contract: a job in flight finishes, or stays queued and runs again later."""

import asyncio
import contextlib
import signal

from arq import func
from arq.jobs import Job, JobStatus
from arq.worker import Worker

from workers.settings import WorkerSettings


def make_worker(clients, work, completion_wait: float) -> Worker:
    return Worker(
        functions=[func(work, name="test.slow")],
        redis_pool=clients.redis,
        handle_signals=False,
        job_completion_wait=completion_wait,
        max_tries=WorkerSettings.max_tries,
        keep_result=WorkerSettings.keep_result,
        poll_delay=0.05,
    )


async def run_until_signalled(worker: Worker, started: asyncio.Event) -> None:
    task = asyncio.create_task(worker.main())
    worker.main_task = task
    await asyncio.wait_for(started.wait(), 10)
    worker.handle_sig_wait_for_completion(signal.SIGTERM)
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    await asyncio.gather(*worker.tasks.values(), return_exceptions=True)  # let cancelled jobs clean up


async def test_a_job_in_flight_finishes_within_the_completion_wait(client, clients):
    started, applied = asyncio.Event(), []

    async def work(ctx):
        started.set()
        await asyncio.sleep(0.3)
        applied.append(ctx["job_try"])
        return "done"

    job = await clients.redis.enqueue_job("test.slow", _job_id="slow-1")
    await run_until_signalled(make_worker(clients, work, completion_wait=5), started)

    assert applied == [1]
    assert await job.status() == JobStatus.complete
    assert await job.result(timeout=1) == "done"


async def test_a_job_cut_off_at_shutdown_stays_queued_and_runs_again_once(client, clients):
    started, applied = asyncio.Event(), []

    async def work(ctx):
        started.set()
        await asyncio.sleep(0.05 if ctx["job_try"] > 1 else 30)
        applied.append(ctx["job_try"])
        return "done"

    await clients.redis.enqueue_job("test.slow", _job_id="slow-2")
    await run_until_signalled(make_worker(clients, work, completion_wait=0.2), started)
    assert applied == []  # nothing half-applied
    # still in the queue, free for the next worker to take
    assert await clients.redis.zscore("arq:queue", "slow-2") is not None
    assert await Job("slow-2", clients.redis).status() in (JobStatus.queued, JobStatus.deferred)
    second = make_worker(clients, work, completion_wait=5)
    second.burst = True
    await second.main()
    assert applied == [2]
    assert await Job("slow-2", clients.redis).status() == JobStatus.complete
