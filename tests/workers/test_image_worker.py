"""The image worker under hostile images: its resident memory stays bounded however many are queued."""

from __future__ import annotations

import asyncio
import time

import psutil
from arq.jobs import Job, JobStatus

from app.assets.documents import Asset
from app.lib.queues import IMAGE_QUEUE
from app.media import imaging
from tests import factories
from tests.workers import support

MEMORY_BOUND_MB = 512
WALLETS = 10
TIMEOUT_S = 240
# One asset image at the cap peaks near 400 MB over the worker's ~120 MB; two at once pass 850 MB.
ASSET_IMAGES_BOUND_MB = 700
ASSETS = 4


async def _watch_memory(
    process: psutil.Process, seen: list[float], bound_mb: float = MEMORY_BOUND_MB
) -> None:
    """Sample resident memory; past the bound, kill the worker rather than let it take the machine."""
    while process.is_running():
        try:
            seen.append(process.memory_info().rss / 2**20)
        except psutil.NoSuchProcess:
            return
        if seen[-1] >= bound_mb:
            process.kill()
            return
        await asyncio.sleep(0.02)


async def _run_worker_until_done(settings, jobs: list[Job], bound_mb: float, **env: str) -> float:
    """Start `python -m workers images`, wait for every job, and give its peak resident memory in MiB."""
    worker = support.start_worker(settings, "images", **env)
    rss: list[float] = []
    watcher = asyncio.create_task(_watch_memory(psutil.Process(worker.pid), rss, bound_mb))
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while [await job.status() for job in jobs] != [JobStatus.complete] * len(jobs):
            assert worker.poll() is None, f"worker stopped; resident memory reached {max(rss):.0f} MB"
            assert time.monotonic() < deadline, "jobs did not finish in time"
            await asyncio.sleep(0.2)
        return support.peak_rss_mb(worker.pid)
    finally:
        worker.terminate()
        worker.wait(60)
        await watcher


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

    peak = await _run_worker_until_done(settings, jobs, MEMORY_BOUND_MB)

    print(f"image worker peak RSS: {peak:.0f} MB for {len(jobs)} avatar jobs")
    assert peak < MEMORY_BOUND_MB
    results = [await job.result(timeout=1) for job in jobs]
    assert [r["reason"] for r in results[:WALLETS]] == ["decompression_bomb"] * WALLETS
    assert all(r["status"] == "done" and r["width"] == imaging.AVATAR_EDGE for r in results[WALLETS:])


async def test_the_image_worker_stays_under_700_mb_with_max_size_asset_images_on_every_job(
    client, clients, settings
):
    # Just under the 50 Mpx cap for asset images, a few hundred KB each; two jobs run at a time.
    hostile = support.rgba_png(7000, 7100)
    assert imaging.MAX_PIXELS >= 7000 * 7100 and len(hostile) < 512 * 1024
    owner = await factories.login(settings)
    jobs = []
    for token_id in range(1, ASSETS + 1):
        await factories.asset(token_id, owner.wallet)
        uploaded = await client.post(
            f"/api/assets/{token_id}/images",
            files=[("files", ("poster.png", hostile, "image/png"))],
            headers=owner.headers,
        )
        assert uploaded.status_code == 201, uploaded.text
        jobs.append(Job(uploaded.json()["jobId"], clients.redis, _queue_name=IMAGE_QUEUE))

    peak = await _run_worker_until_done(settings, jobs, ASSET_IMAGES_BOUND_MB, WORKER_IMAGE_MAX_JOBS="2")

    print(f"image worker peak RSS: {peak:.0f} MB for {len(jobs)} max-size asset images")
    assert peak < ASSET_IMAGES_BOUND_MB
    assert [(await job.result(timeout=1))["processed"] for job in jobs] == [1] * ASSETS
    for token_id in range(1, ASSETS + 1):
        asset = await Asset.find_one(Asset.tokenId == token_id)
        (highres,) = [f for f in asset.media.files if f.kind == "highres"]
        assert (highres.width, highres.height) == (7000, 7100)
