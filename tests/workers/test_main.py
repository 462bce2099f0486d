"""`python -m workers`: one command serves both queues, and stops both workers with itself."""

from __future__ import annotations

import asyncio
import signal
import time

import psutil
from arq.jobs import Job, JobStatus

from app.lib.queues import DEFAULT_QUEUE, IMAGE_QUEUE
from tests import factories
from tests.workers import support

TIMEOUT_S = 60


async def _wait_complete(jobs: list[Job], proc) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while [await job.status() for job in jobs] != [JobStatus.complete] * len(jobs):
        assert proc.poll() is None, f"python -m workers exited with {proc.returncode}"
        assert time.monotonic() < deadline, "jobs did not finish in time"
        await asyncio.sleep(0.2)


def _workers(proc) -> list[psutil.Process]:
    deadline = time.monotonic() + TIMEOUT_S
    while len(children := psutil.Process(proc.pid).children()) < 3:
        assert time.monotonic() < deadline, "the workers did not start"
        time.sleep(0.1)
    return children


async def test_python_m_workers_serves_every_queue_and_stops_every_worker_on_sigterm(
    client, clients, settings
):
    login = await factories.login(settings)
    avatar = Job(
        await support.queue_avatar(client, login, support.rgba_png(300, 200)),
        clients.redis,
        _queue_name=IMAGE_QUEUE,
    )
    ping = (await client.post("/api/system/worker-ping")).json()["jobId"]

    proc = support.start_worker(settings)
    try:
        workers = _workers(proc)
        assert sorted(worker.cmdline()[-1] for worker in workers) == ["images", "main", "webhooks"]
        await _wait_complete([avatar, Job(ping, clients.redis, _queue_name=DEFAULT_QUEUE)], proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(TIMEOUT_S) == 0
        assert not any(worker.is_running() for worker in workers)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (await avatar.result(timeout=1))["status"] == "done"
    assert (await client.get(f"/api/jobs/{ping}")).json()["result"]["pong"] is True


async def test_when_one_worker_dies_the_others_are_stopped_and_the_command_fails(client, settings):
    proc = support.start_worker(settings)
    try:
        workers = {worker.cmdline()[-1]: worker for worker in _workers(proc)}
        workers["images"].kill()
        assert proc.wait(TIMEOUT_S) != 0
        assert not workers["main"].is_running() and not workers["webhooks"].is_running()
    finally:
        if proc.poll() is None:
            proc.kill()
