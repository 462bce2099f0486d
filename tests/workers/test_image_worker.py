"""The image worker under hostile avatars: its resident memory stays bounded however many are queued."""

from __future__ import annotations

import asyncio
import time

import psutil
from arq.jobs import Job, JobStatus

from app.lib.queues import IMAGE_QUEUE
from app.media import imaging
from tests import factories
from tests.workers import support

MEMORY_BOUND_MB = 512
WALLETS = 10
TIMEOUT_S = 240


async def _watch_memory(process: psutil.Process, seen: list[float]) -> None:
    """Sample resident memory; past the bound, kill the worker rather than let it take the machine."""
    while process.is_running():
        try:
            seen.append(process.memory_info().rss / 2**20)
        except psutil.NoSuchProcess:
            return
        if seen[-1] >= MEMORY_BOUND_MB:
            process.kill()
            return
        await asyncio.sleep(0.02)


async def test_the_image_worker_stays_under_512_mb_with_hostile_avatars_in_flight(client, clients, settings):
    # 49 Mpx passes the cap for asset images and decodes to hundreds of MB; 16 Mpx is the largest avatar.
    bomb = support.rgba_png(7000, 7000)
    largest = support.rgba_png(4000, 4000)
    assert imaging.MAX_PIXELS > 7000 * 7000 and imaging.AVATAR_MAX_PIXELS >= 4000 * 4000
    assert max(len(bomb), len(largest)) < imaging.UPLOAD_RULES["avatar"].max_bytes
    bombs, largest_jobs = [], []
    for _ in range(WALLETS):
        login = await factories.login(settings)
        bombs.append(await support.queue_avatar(client, login, bomb))
        largest_jobs.append(await support.queue_avatar(client, login, largest))
    jobs = [Job(job_id, clients.redis, _queue_name=IMAGE_QUEUE) for job_id in bombs + largest_jobs]

    worker = support.start_worker(settings, "images")
    rss: list[float] = []
    watcher = asyncio.create_task(_watch_memory(psutil.Process(worker.pid), rss))
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while [await job.status() for job in jobs] != [JobStatus.complete] * len(jobs):
            assert worker.poll() is None, f"worker stopped; resident memory reached {max(rss):.0f} MB"
            assert time.monotonic() < deadline, "jobs did not finish in time"
            await asyncio.sleep(0.2)
        peak = support.peak_rss_mb(worker.pid)
    finally:
        worker.terminate()
        worker.wait(60)
        await watcher

    print(f"image worker peak RSS: {peak:.0f} MB for {len(jobs)} avatar jobs")
    assert peak < MEMORY_BOUND_MB
    results = [await job.result(timeout=1) for job in jobs]
    assert [r["reason"] for r in results[:WALLETS]] == ["decompression_bomb"] * WALLETS
    assert all(r["status"] == "done" and r["width"] == imaging.AVATAR_EDGE for r in results[WALLETS:])
