"""Avatars: a staged upload in the caller's own folder, a capped slot on the image queue, and the job that
checks, re-encodes and makes it the user's avatar (the user's record is the auth domain's to write).
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import structlog
from arq.constants import job_key_prefix, result_key_prefix
from arq.jobs import Job, JobStatus

from app.audit import service as audit_service
from app.auth import service as auth_service
from app.lib import bucket as keys
from app.lib.clients import Clients
from app.lib.errors import AppError, BadRequest, Forbidden, NotFound
from app.lib.queues import IMAGE_QUEUE
from app.lib.security import Principal
from app.lib.storage import Storage
from app.media import imaging
from app.media.budget import PixelBudget, decode_in_budget
from app.media.imaging import SNIFF_BYTES, UPLOAD_RULES, MediaRejected, UploadPurpose

log = structlog.get_logger(__name__)

AVATAR_JOB = "media.avatar"
AVATAR_CACHE = "public, max-age=300"  # one key per user, replaced by each new avatar
# Avatar jobs queued or running per wallet: any signed-in user may ask for them, and each decodes an
# image on the image worker; beyond this the API answers 429 until one has finished.
AVATAR_JOBS_PER_WALLET = 3
# Avatar jobs queued or running in all: wallets cost nothing to make, and media.process shares the
# image queue, so an asset's processing waits behind at most this many avatars.
AVATAR_JOBS_IN_FLIGHT = 20
AVATAR_RETRY_AFTER_S = 10


def avatar_job_id(wallet: str, key: str) -> str:
    """One job per wallet and staged upload: asking twice gives the same job."""
    return f"{AVATAR_JOB}:{wallet}:{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def check_staged_avatar(principal: Principal, key: str) -> None:
    """The key must be a staged avatar in the caller's own temp folder (admins included)."""
    owner = keys.temp_owner(key)
    if owner is None:
        raise BadRequest("key is not a staged upload", code="invalid_upload_key")
    if owner != principal.wallet_address:
        raise Forbidden("the upload is not in your folder", code="not_owner")
    if not keys.is_avatar_temp_key(key):
        raise BadRequest("key is not a staged avatar upload", code="not_an_avatar_upload")


# Reserve a slot for job ARGV[1] in every sorted set of KEYS (scored by when it was reserved), all or
# none: 0 once it holds them, else the index of the first set that holds its cap ARGV[6 + k] of live
# slots already. A slot is live while arq keeps its job key (queued, deferred, running or waiting to
# retry); before its job is queued, for ARGV[3] ms after it was reserved unless the job has a result
# already. It reads keys it cannot declare in KEYS: arq needs a single Redis anyway.
_RESERVE_SLOTS = """
local job_id, now, grace = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
for k = 1, #KEYS do
  local slots = redis.call('ZRANGE', KEYS[k], 0, -1, 'WITHSCORES')
  for i = 1, #slots, 2 do
    local job, reserved = slots[i], tonumber(slots[i + 1])
    if redis.call('EXISTS', ARGV[5] .. job) == 0
        and (reserved < now - grace or redis.call('EXISTS', ARGV[6] .. job) == 1) then
      redis.call('ZREM', KEYS[k], job)
    end
  end
end
for k = 1, #KEYS do
  if not redis.call('ZSCORE', KEYS[k], job_id)
      and redis.call('ZCARD', KEYS[k]) >= tonumber(ARGV[6 + k]) then
    return k
  end
end
for k = 1, #KEYS do
  redis.call('ZADD', KEYS[k], 'NX', now, job_id)
  redis.call('EXPIRE', KEYS[k], ARGV[4])
end
return 0
"""
_SLOT_GRACE_MS = 60_000
_SLOTS_TTL_S = 24 * 3600  # as long as arq keeps a queued job's key


async def _reserve_avatar_slot(clients: Clients, wallet: str, job_id: str) -> None:
    """Count the job against the wallet's avatar jobs in flight and everyone's; 429 past either cap."""
    full = await clients.redis.eval(
        _RESERVE_SLOTS,
        2,
        f"media:avatar:jobs:{wallet}",
        "media:avatar:jobs",
        job_id,
        int(time.time() * 1000),
        _SLOT_GRACE_MS,
        _SLOTS_TTL_S,
        job_key_prefix,
        result_key_prefix,
        AVATAR_JOBS_PER_WALLET,
        AVATAR_JOBS_IN_FLIGHT,
    )
    if full == 1:
        raise _avatar_jobs_busy(
            f"{AVATAR_JOBS_PER_WALLET} of your avatar jobs are queued or running; retry once one is done",
            "too_many_avatar_jobs",
            AVATAR_JOBS_PER_WALLET,
        )
    if full == 2:
        raise _avatar_jobs_busy(
            f"{AVATAR_JOBS_IN_FLIGHT} avatar jobs are queued or running for all users; retry shortly",
            "avatar_queue_full",
            AVATAR_JOBS_IN_FLIGHT,
        )


def _avatar_jobs_busy(message: str, code: str, limit: int) -> AppError:
    return AppError(
        message,
        status_code=429,
        code=code,
        details={"limit": limit, "retryAfter": AVATAR_RETRY_AFTER_S},
        headers={"Retry-After": str(AVATAR_RETRY_AFTER_S)},
    )


async def enqueue_avatar(clients: Clients, principal: Principal, key: str) -> str:
    """Queue `media.avatar` for the caller's staged avatar; 404 if nothing was uploaded, 429 past the cap."""
    check_staged_avatar(principal, key)
    wallet = principal.wallet_address
    job_id = avatar_job_id(wallet, key)
    # Asked before: hand that job back, whether queued, running or done (a done job deleted the upload).
    if await Job(job_id, clients.redis, _queue_name=IMAGE_QUEUE).status() != JobStatus.not_found:
        return job_id
    if await clients.storage.head(key) is None:
        raise NotFound("nothing was uploaded under that key", code="upload_not_found")
    await _reserve_avatar_slot(clients, wallet, job_id)
    await clients.redis.enqueue_job(
        AVATAR_JOB, wallet, key, principal.kind, principal.api_key_id, _job_id=job_id, _queue_name=IMAGE_QUEUE
    )
    return job_id


def _avatar_principal(user: Any, kind: str, api_key_id: str | None) -> Principal:
    return Principal(
        user_id=str(user.id),
        wallet_address=user.walletAddress,
        roles=frozenset(user.roles),
        kind="api_key" if kind == "api_key" else "user",
        api_key_id=api_key_id,
    )


async def promote_avatar(
    storage: Storage,
    wallet: str,
    key: str,
    *,
    kind: str = "user",
    api_key_id: str | None = None,
    budget: PixelBudget | None = None,
) -> dict[str, Any]:
    """Check a staged avatar's real size and bytes, re-encode it without metadata, and make it the avatar.

    The result is public (job status is readable anonymously): it names no private key.
    """
    if keys.temp_owner(key) != wallet or not keys.is_avatar_temp_key(key):
        return {"status": "rejected", "reason": "invalid_upload_key"}
    stored = await storage.head(key)
    if stored is None:  # never uploaded, or a run before this one finished with it
        return {"status": "missing", "reason": "upload_not_found"}
    user = await auth_service.find_user_by_wallet(wallet)
    if user is None:
        await storage.delete([key])
        return {"status": "rejected", "reason": "user_not_found"}
    principal = _avatar_principal(user, kind, api_key_id)
    old = {"avatarUrl": user.profileInfo.avatarUrl}
    rule = UPLOAD_RULES[UploadPurpose.AVATAR]
    try:
        head = await storage.read(key, first=SNIFF_BYTES)
        imaging.check_upload(UploadPurpose.AVATAR, stored.content_type or "", head, stored.size)
        data = await storage.read(key)
        if len(data) > rule.max_bytes:  # replaced between the HEAD and the GET
            raise MediaRejected("too_large", f"{len(data)} bytes exceeds the {rule.max_bytes} allowed")
        # Under the avatar's own pixel cap, checked from the header before any pixel is decoded.
        avatar = await decode_in_budget(budget, data, imaging.AVATAR_MAX_PIXELS, imaging.render_avatar)
    except MediaRejected as exc:
        await storage.delete([key])
        log.warning("media.avatar.rejected", wallet=wallet, code=exc.code, detail=exc.message)
        await audit_service.record(
            "user.avatar.update",
            principal=principal,
            entity_type="user",
            entity_id=str(user.id),
            old=old,
            new=None,
            success=False,
            reason=exc.code,
        )
        return {"status": "rejected", "reason": exc.code, "message": exc.message}

    target = keys.avatar_key(wallet)
    url = storage.public_url(target)
    current = await storage.head(target)
    unchanged = (
        current is not None and current.metadata.get("sha256") == avatar.sha256 and old["avatarUrl"] == url
    )
    if not unchanged:  # a re-run (or the same picture again) writes and audits nothing new
        await storage.put_bytes(
            target, avatar.data, "image/jpeg", cache_control=AVATAR_CACHE, metadata={"sha256": avatar.sha256}
        )
        try:
            replaced = await auth_service.set_avatar_url(user.id, url)
        except NotFound:  # the user was removed meanwhile
            await storage.delete([key])
            return {"status": "rejected", "reason": "user_not_found"}
        await audit_service.record(
            "user.avatar.update",
            principal=principal,
            entity_type="user",
            entity_id=str(user.id),
            old={"avatarUrl": replaced},
            new={"avatarUrl": url, "sha256": avatar.sha256, "width": avatar.width, "height": avatar.height},
        )
    await storage.delete([key])
    log.info("media.avatar.updated", wallet=wallet, unchanged=unchanged)
    return {
        "status": "done",
        "avatarUrl": url,
        "width": avatar.width,
        "height": avatar.height,
        "sha256": avatar.sha256,
    }
