"""arq workers: the job functions, cron schedules and the clients they share.

Two workers, each on its own queue: the main one runs every job but image decoding, and the image
worker runs media.process and media.avatar a few at a time, within a budget of pixels decoded at
once, which bounds the memory they take.
"""

from __future__ import annotations

import ctypes
from typing import Any

import structlog
from arq import cron, func

from app.assets import jobs as assets_jobs
from app.audit import jobs as audit_jobs
from app.chain import jobs as chain_jobs
from app.config import check_settings, get_settings
from app.events import jobs as events_jobs
from app.lib.clients import open_clients, redis_settings
from app.lib.logging import configure_logging
from app.lib.queues import DEFAULT_QUEUE, IMAGE_QUEUE, WEBHOOK_QUEUE
from app.main import DOCUMENTS
from app.market import jobs as market_jobs
from app.media import jobs as media_jobs
from app.media import service as media_service
from app.oracle import jobs as oracle_jobs
from app.system import jobs as system_jobs
from app.webhooks import jobs as webhooks_jobs

settings = get_settings()
log = structlog.get_logger("worker")


async def on_startup(ctx: dict[str, Any]) -> None:
    check_settings(settings)
    configure_logging(settings.log_level, settings.log_json)
    ctx["settings"] = settings
    ctx["clients_cm"] = open_clients(settings, documents=DOCUMENTS)
    ctx["clients"] = await ctx["clients_cm"].__aenter__()
    log.info("worker.started")


async def on_image_worker_startup(ctx: dict[str, Any]) -> None:
    await on_startup(ctx)
    _give_freed_images_back()
    # One per process: arq hands each job a copy of ctx, and every image job draws on the same pixels.
    ctx["pixel_budget"] = media_service.PixelBudget(settings.worker.image_pixel_budget)


_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def _give_freed_images_back() -> None:
    """Have glibc map every allocation of 4 MiB or more on its own, so a decoded image freed is memory freed.

    Otherwise its mmap threshold rises past Pillow's 16 MiB image blocks after the first free, and each
    decode thread's arena keeps the next images' memory after their jobs: measured, three 50 Mpx decodes
    in turn left 560 MB resident and peaked 140 MB higher than the first.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return  # not glibc: its allocator has no such threshold to pin
    libc.mallopt(_M_MMAP_THRESHOLD, 4 * 2**20)


async def on_shutdown(ctx: dict[str, Any]) -> None:
    cm = ctx.pop("clients_cm", None)
    if cm is not None:
        await cm.__aexit__(None, None, None)
    log.info("worker.stopped")


async def on_job_start(ctx: dict[str, Any]) -> None:
    structlog.contextvars.bind_contextvars(job_id=ctx.get("job_id"), job_try=ctx.get("job_try"))


async def on_job_end(ctx: dict[str, Any]) -> None:
    structlog.contextvars.unbind_contextvars("job_id", "job_try")


class WorkerSettings:
    functions = [
        func(system_jobs.ping, name="system.ping", max_tries=1),
        func(system_jobs.backup, name="system.backup", max_tries=3, timeout=settings.backup.timeout_s),
        func(media_jobs.sweep, name="media.sweep", max_tries=3),
        func(assets_jobs.flush_views, name="assets.flush_views", max_tries=5),
        func(market_jobs.backfill_search_fields, name="assets.backfill_search_fields", max_tries=3),
        func(oracle_jobs.refresh_source, name="oracle.refresh_source", max_tries=3),
        func(oracle_jobs.refresh_due, name="oracle.refresh_due", max_tries=1),
        func(oracle_jobs.train, name="oracle.train", max_tries=3, timeout=settings.oracle.job_timeout_s),
        func(oracle_jobs.train_daily, name="oracle.train_daily", max_tries=1),
        func(
            oracle_jobs.appraise, name="oracle.appraise", max_tries=3, timeout=settings.oracle.job_timeout_s
        ),
        func(oracle_jobs.score_ledger, name="oracle.score_ledger", max_tries=1),
        func(chain_jobs.process_outbox, name="chain.process_outbox", max_tries=1),
        func(assets_jobs.request_mints, name="assets.request_mints", max_tries=1),
        func(market_jobs.index_chain, name="market.index_chain", max_tries=1),
        func(market_jobs.announce_chain, name=market_jobs.ANNOUNCE, max_tries=1),
        func(market_jobs.reconcile_chain, name="market.reconcile_chain", max_tries=1),
        func(oracle_jobs.publish, name="oracle.publish", max_tries=3),
        func(oracle_jobs.reconcile_prices, name="oracle.reconcile_prices", max_tries=1),
        func(events_jobs.dispatch, name="events.dispatch", max_tries=1),
        func(assets_jobs.announce_pending, name="assets.announce_pending", max_tries=1),
        func(audit_jobs.archive, name="audit.archive", max_tries=3, timeout=audit_jobs.ARCHIVE_TIMEOUT_S),
        func(webhooks_jobs.sweep, name="webhooks.sweep", max_tries=1),
    ]
    queue_name = DEFAULT_QUEUE
    cron_jobs: list = [
        # Daily at BACKUP_HOUR:30 UTC: every collection to S3, the newest BACKUP_KEEP backups kept.
        cron(
            system_jobs.backup,
            name="system.backup.cron",
            hour=settings.backup.hour,
            minute=30,
            second=0,
            unique=True,
            # a cron takes its own limits, not its function's: without them, WORKER_JOB_TIMEOUT_S and one try
            timeout=settings.backup.timeout_s,
            max_tries=3,
        ),
        cron(media_jobs.sweep, name="media.sweep.cron", minute={7, 37}, unique=True),
        cron(assets_jobs.flush_views, name="assets.flush_views.cron", second={0, 15, 30, 45}, unique=True),
        cron(oracle_jobs.refresh_due, name="oracle.refresh_due.cron", second=20, unique=True),
        cron(
            oracle_jobs.train_daily,
            name="oracle.train_daily.cron",
            hour=settings.oracle.train_hour,
            minute=0,
            second=0,
            unique=True,
        ),
        cron(
            oracle_jobs.score_ledger,
            name="oracle.score_ledger.cron",
            minute=set(range(0, 60, 5)),
            second=40,
            unique=True,
        ),
        # The chain: what the platform sends, and what the contracts say, every few seconds.
        cron(
            chain_jobs.process_outbox,
            name="chain.process_outbox.cron",
            second=set(range(0, 60, 3)),
            unique=True,
        ),
        cron(
            market_jobs.index_chain,
            name="market.index_chain.cron",
            second=set(range(1, 60, 3)),
            unique=True,
        ),
        cron(
            market_jobs.announce_chain,
            name="market.announce_chain.cron",
            second=set(range(2, 60, 3)),
            unique=True,
        ),
        cron(events_jobs.dispatch, name="events.dispatch.cron", second=set(range(2, 60, 5)), unique=True),
        cron(assets_jobs.announce_pending, name="assets.announce_pending.cron", second=45, unique=True),
        cron(webhooks_jobs.sweep, name="webhooks.sweep.cron", second=35, unique=True),  # every minute
        cron(assets_jobs.request_mints, name="assets.request_mints.cron", second=50, unique=True),
        cron(oracle_jobs.publish, name="oracle.publish.cron", second=30, unique=True),
        cron(
            oracle_jobs.reconcile_prices,
            name="oracle.reconcile_prices.cron",
            minute={26, 56},
            second=5,
            unique=True,
        ),
        cron(
            market_jobs.reconcile_chain,
            name="market.reconcile_chain.cron",
            minute={11, 41},
            second=5,
            unique=True,
        ),
        # Daily, after the oracle's training hour: audit entries past their retention go to S3.
        cron(
            audit_jobs.archive,
            name="audit.archive.cron",
            hour=4,
            minute=17,
            second=0,
            unique=True,
            timeout=audit_jobs.ARCHIVE_TIMEOUT_S,
            max_tries=3,
        ),
    ]
    on_startup = on_startup
    on_shutdown = on_shutdown
    on_job_start = on_job_start
    on_job_end = on_job_end
    redis_settings = redis_settings(settings) if settings.redis.url else None
    max_jobs = settings.worker.max_jobs
    job_timeout = settings.worker.job_timeout_s
    max_tries = settings.worker.max_tries
    # On SIGTERM, let jobs in flight finish for this long; what is still running is cancelled and stays
    # queued, so it runs again (every job is idempotent).
    job_completion_wait = settings.worker.job_completion_wait_s
    keep_result = 3600
    allow_abort_jobs = True
    health_check_interval = 30


# What every worker shares with the main one. arq reads a settings class's own attributes only (not
# inherited ones), so each worker's class is built with them.
SHARED = (
    "on_shutdown",
    "on_job_start",
    "on_job_end",
    "redis_settings",
    "job_timeout",
    "max_tries",
    "job_completion_wait",
    "keep_result",
    "allow_abort_jobs",
    "health_check_interval",
)


def _worker(name: str, doc: str, **own: Any) -> type:
    return type(name, (), {"__doc__": doc, **{a: WorkerSettings.__dict__[a] for a in SHARED}, **own})


ImageWorkerSettings = _worker(
    "ImageWorkerSettings",
    "Image decoding, on a queue of its own, a few jobs at a time within a pixel budget.",
    functions=[
        func(media_jobs.process_media, name="media.process", max_tries=8),
        func(media_jobs.promote_avatar, name="media.avatar", max_tries=5),
    ],
    queue_name=IMAGE_QUEUE,
    max_jobs=settings.worker.image_max_jobs,
    on_startup=on_image_worker_startup,
)
WebhookWorkerSettings = _worker(
    "WebhookWorkerSettings",
    "Webhook deliveries, on a queue of their own: each waits on a receiver (up to WEBHOOK_TIMEOUT_S), so "
    "many run at once, and slow receivers hold up none of the platform's other jobs.",
    functions=[
        # One attempt per job: the next is a job of its own, deferred (app/webhooks/delivery.py).
        func(
            webhooks_jobs.deliver,
            name="webhooks.deliver",
            max_tries=1,
            timeout=settings.webhook.timeout_s + webhooks_jobs.JOB_MARGIN_S,
        ),
    ],
    queue_name=WEBHOOK_QUEUE,
    max_jobs=settings.worker.webhook_max_jobs,
    on_startup=on_startup,
)


WORKERS = {"main": WorkerSettings, "images": ImageWorkerSettings, "webhooks": WebhookWorkerSettings}
