"""Delivering events to subscriptions: the bodies, the signed attempts, the retries and the sweeper.

Each attempt is one job (`webhooks.deliver`, id `webhooks.deliver:<delivery>:<attempt>`). It claims its
delivery with a compare-and-set and a lease, so two workers never send the same attempt at once and an
attempt lost with its worker is retried by the sweeper (`webhooks.sweep`, every minute) once its lease
ends. An attempt POSTs the stored body (the same bytes every time) through app/lib/outbound.py, which
checks the URL's addresses again at every attempt, signed per Standard Webhooks (`webhook-id` is the
event's id). 2xx delivers; 410 Gone disables the subscription at once; anything else (another status,
a timeout, a refused or unreachable address) is a failed attempt, tried again after
`backoff_base_s * 4**(n-1)` (at most `backoff_max_s`, ±10%) until `max_attempts`. A subscription's
consecutive failed attempts, over all its deliveries, disable it at `disable_after_failures`.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import structlog
from arq.jobs import Job, JobStatus
from bson import ObjectId
from standardwebhooks.webhooks import Webhook

from app.config import Settings
from app.lib import outbound
from app.lib.crypto import SecretUnreadable, secret_box
from app.lib.errors import AppError
from app.lib.events import message
from app.lib.queues import WEBHOOK_QUEUE
from app.lib.timeutil import utcnow
from app.webhooks import repository
from app.webhooks.schemas import URL_MAX_CHARS, URL_PATTERN

log = structlog.get_logger(__name__)

DELIVER_JOB = "webhooks.deliver"
USER_AGENT = "DynamicVault-Webhooks/0.1"
RESPONSE_MAX_BYTES = 64 * 1024  # a receiver answers at once, with little; more is a failed attempt
ERROR_CHARS = 300
LEASE_MARGIN_S = 60  # past the attempt's timeout: the lease outlives any attempt still running
DUE_SLACK_S = 5.0  # a worker whose clock is a little behind the one that scheduled the attempt
SWEEP_GRACE_S = 60  # a pending delivery this late has lost its job
SWEEP_BATCH = 1000
ENQUEUE_AT_ONCE = 50
JITTER = 0.1
DELETED, DISABLED = "the subscription was deleted", "the subscription is disabled"
_URL = re.compile(URL_PATTERN)
_random = secrets.SystemRandom()


class InvalidUrl(AppError):
    status_code, code = 400, "invalid_url"


class UrlNotAllowed(AppError):
    """A well-formed URL whose host the platform does not deliver to (or that does not resolve)."""

    status_code, code = 409, "url_not_allowed"


def policy(settings: Settings) -> outbound.Policy:
    """The outbound rules (OUTBOUND_*) with the webhooks' own deadline and a small answer cap. Never
    OUTBOUND_ALLOWED_NETWORKS: it opens networks to the admins' data sources, and any signed-in user
    may add a webhook."""
    base = outbound.Policy.from_settings(settings)
    timeout = settings.webhook.timeout_s
    return replace(
        base,
        allowed_networks=(),
        timeout_s=timeout,
        connect_timeout_s=min(base.connect_timeout_s, timeout),
        max_body_bytes=RESPONSE_MAX_BYTES,
        max_redirects=0,
    )


async def check_url(settings: Settings, url: str) -> None:
    """400 `invalid_url` for a URL outside the documented pattern; 409 `url_not_allowed` for a host that
    does not resolve or resolves to an address the outbound rules refuse (one answer for both)."""
    if len(url) > URL_MAX_CHARS or not _URL.fullmatch(url):
        raise InvalidUrl("url must be an http(s) URL with a host, without credentials or fragment")
    try:
        parsed = outbound.parse_url(url)
    except outbound.OutboundError as exc:
        raise InvalidUrl(exc.message) from None
    rules = policy(settings)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        async with asyncio.timeout(rules.connect_timeout_s):
            addresses = await outbound.resolve(parsed.raw_host.decode("ascii"), port)
    except (OSError, UnicodeError, TimeoutError):
        addresses = []
    refused = [str(ip) for ip in addresses if outbound.refusal(ip, rules) is not None]
    if not addresses or refused:
        log.info("webhooks.url_refused", host=parsed.host, refused=refused, resolved=bool(addresses))
        raise UrlNotAllowed("the URL's host is not one the platform delivers to")


def body_of(event: dict[str, Any], topic: str) -> bytes:
    """The JSON an event's delivery sends through `topic`: the stream's message, exactly."""
    sent = message(event["id"], event["event"], topic, event["payload"], event["sentAt"])
    return json.dumps(sent, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def new_delivery(webhook_id: ObjectId, event: dict[str, Any], topic: str, now: datetime) -> dict[str, Any]:
    return {
        "webhookId": webhook_id,
        "eventId": event["id"],
        "eventKey": event["key"],
        "event": event["event"],
        "topic": topic,
        "body": body_of(event, topic),
        "status": "pending",
        "attempts": 0,
        "nextAttemptAt": now,
        "leaseUntil": None,
        "claim": None,
        "lastStatusCode": None,
        "lastError": None,
        "lastAttemptAt": None,
        "deliveredAt": None,
        "createdAt": now,
    }


def job_id(delivery_id: ObjectId | str, attempt: int) -> str:
    return f"{DELIVER_JOB}:{delivery_id}:{attempt}"


async def enqueue(redis, delivery_id: ObjectId | str, attempt: int, *, defer_s: float | None = None) -> bool:
    """Queue the job of one attempt; False when that attempt's job is already queued (or has run)."""
    queued = await redis.enqueue_job(
        DELIVER_JOB,
        str(delivery_id),
        _job_id=job_id(delivery_id, attempt),
        _defer_by=defer_s,
        _queue_name=WEBHOOK_QUEUE,
    )
    return queued is not None


async def enqueue_first(redis, delivery_ids: list[ObjectId]) -> None:
    """Queue the first attempt of new deliveries, a few round trips at a time."""
    for start in range(0, len(delivery_ids), ENQUEUE_AT_ONCE):
        await asyncio.gather(*(enqueue(redis, d, 1) for d in delivery_ids[start : start + ENQUEUE_AT_ONCE]))


def backoff_s(settings: Settings, failed_attempts: int) -> float:
    """The wait after the n-th failed attempt: base * 4**(n-1), at most the cap, with ±10% jitter."""
    hooks = settings.webhook
    delay = min(hooks.backoff_base_s * 4.0 ** min(failed_attempts - 1, 64), hooks.backoff_max_s)
    return delay * _random.uniform(1 - JITTER, 1 + JITTER)


def signed_headers(secret: str, event_id: str, body: bytes, now: datetime) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "webhook-id": event_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(event_id, now, body),
    }


async def _send(settings: Settings, hook: dict[str, Any], claimed: dict[str, Any]) -> tuple[int | None, str]:
    """One POST of the stored body: (the status, or None when there was no answer; what went wrong)."""
    body = bytes(claimed["body"])
    try:
        secret = secret_box(settings).open(hook["secret"])
    except SecretUnreadable as exc:
        return None, f"{exc.code}: {exc.message}"
    headers = signed_headers(secret, claimed["eventId"], body, utcnow())
    try:
        async with outbound.Client(policy(settings), user_agent=USER_AGENT) as http:
            response = await http.post(hook["url"], body, headers=headers)
    except outbound.OutboundError as exc:
        return None, f"{exc.code}: {exc.message}"[:ERROR_CHARS]
    if 200 <= response.status < 300:
        return response.status, ""
    if response.status in outbound.REDIRECTS:
        return response.status, f"HTTP {response.status}: redirects are not followed"
    # The status alone: echoing the receiver's answer would make the platform a reader of any URL.
    return response.status, f"HTTP {response.status}"


async def attempt(clients, settings: Settings, delivery_id: str) -> dict[str, Any]:
    """Make the delivery's next attempt, if it is due and no other holds it; what came of it."""
    if not ObjectId.is_valid(delivery_id):
        return {"outcome": "missing"}
    oid, now = ObjectId(delivery_id), utcnow()
    current = await repository.find_delivery(oid)
    if current is None:
        return {"outcome": "missing"}
    if current["status"] not in ("pending", "sending"):
        return {"outcome": "not_claimed"}
    hook = await repository.find_webhook(current["webhookId"])
    if hook is None or hook["status"] != "active":
        why = DELETED if hook is None else DISABLED
        skipped = await repository.settle_unclaimed(
            oid, now, now + timedelta(days=365), {"status": "skipped", "lastError": why}
        )
        return {"outcome": "skipped" if skipped else "not_claimed"}
    hooks, token = settings.webhook, secrets.token_hex(8)
    claimed = await repository.claim_delivery(
        oid,
        token,
        now,
        due_by=now + timedelta(seconds=DUE_SLACK_S),
        lease_until=now + timedelta(seconds=hooks.timeout_s + LEASE_MARGIN_S),
        max_attempts=hooks.max_attempts,
    )
    if claimed is None:
        return {"outcome": "not_claimed"}
    status, error = await _send(settings, hook, claimed)
    return await _settle(clients, settings, hook["_id"], claimed, token, status, error)


async def _settle(
    clients,
    settings: Settings,
    webhook_id: ObjectId,
    claimed: dict[str, Any],
    token: str,
    status: int | None,
    error: str,
) -> dict[str, Any]:
    """Record an attempt's outcome on the delivery and its subscription, and queue the next if any."""
    hooks, now, attempts = settings.webhook, utcnow(), claimed["attempts"]
    outcome: dict[str, Any] = {"attempt": attempts, "statusCode": status}
    if status is not None and 200 <= status < 300:
        changes = {"status": "delivered", "deliveredAt": now, "lastStatusCode": status, "lastError": None}
        if await repository.finish_attempt(claimed["_id"], token, {**changes, "nextAttemptAt": None}):
            await repository.record_success(webhook_id, now, status)
        return {**outcome, "outcome": "delivered"}
    gone = status == 410
    retry_in = None if gone or attempts >= hooks.max_attempts else backoff_s(settings, attempts)
    changes = {
        "status": "failed" if retry_in is None else "pending",
        "nextAttemptAt": None if retry_in is None else now + timedelta(seconds=retry_in),
        "lastStatusCode": status,
        "lastError": error,
    }
    if not await repository.finish_attempt(claimed["_id"], token, changes):
        return {**outcome, "outcome": "claim_lost"}  # the lease ran out: another attempt took over
    if retry_in is not None:
        await enqueue(clients.redis, claimed["_id"], attempts + 1, defer_s=retry_in)
    after = await repository.record_failure(webhook_id, now, status, error)
    reason = "gone" if gone else None
    if reason is None and after is not None and after["consecutiveFailures"] >= hooks.disable_after_failures:
        reason = "consecutive_failures"
    if reason is not None and await repository.disable(webhook_id, reason, now):
        await repository.skip_pending(webhook_id, DISABLED)
        log.warning("webhooks.disabled", webhook=str(webhook_id), reason=reason)
    return {**outcome, "outcome": changes["status"], "retryInS": retry_in, "error": error}


async def sweep(clients, settings: Settings) -> dict[str, int]:
    """Queue again the attempts whose job was lost (pending well past due, or sending past the lease):
    each is made due now and queued; those out of attempts end as failed."""
    now, requeued, failed = utcnow(), 0, 0
    overdue_before = now - timedelta(seconds=SWEEP_GRACE_S)
    for doc in await repository.stranded(now, overdue_before, SWEEP_BATCH):
        if doc["attempts"] >= settings.webhook.max_attempts:
            why = {"status": "failed", "lastError": "the last attempt was interrupted"}
            failed += await repository.settle_unclaimed(doc["_id"], now, overdue_before, why)
        elif await repository.make_due(doc["_id"], now, overdue_before):
            await _requeue(clients.redis, doc["_id"], doc["attempts"] + 1, now)
            requeued += 1
    if requeued or failed:
        log.info("webhooks.swept", requeued=requeued, failed=failed)
    return {"requeued": requeued, "failed": failed}


async def _requeue(redis, delivery_id: ObjectId, attempt_no: int, now: datetime) -> None:
    """The attempt's own job, unless it is still waiting to run; else one of the sweeper's (the claim
    keeps any two from sending the same attempt)."""
    if await enqueue(redis, delivery_id, attempt_no):
        return
    status = await Job(job_id(delivery_id, attempt_no), redis, _queue_name=WEBHOOK_QUEUE).status()
    if status not in (JobStatus.queued, JobStatus.deferred, JobStatus.in_progress):
        swept = f"{job_id(delivery_id, attempt_no)}:swept:{int(now.timestamp() * 1000)}"
        await redis.enqueue_job(DELIVER_JOB, str(delivery_id), _job_id=swept, _queue_name=WEBHOOK_QUEUE)
