"""Media: what the controllers, the jobs and other domains call.

It composes the capabilities of the domain: `uploads` (presigned, multipart and direct uploads, the upload
caps), `processing` (promotion, renditions within a pixel budget, thumbnails, the sweep) and `avatars`
(staged avatars, their job slots, promotion). The media records are stored in each asset; the assets
service queries and writes them for this domain.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from arq.jobs import Job, JobStatus

from app.assets import service as assets_service
from app.config import Settings
from app.events import service as events_service
from app.lib.clients import Clients
from app.lib.errors import BadRequest, NotFound
from app.lib.events import asset_topic
from app.lib.queues import IMAGE_QUEUE
from app.lib.security import Principal
from app.lib.storage import Storage
from app.media import avatars, processing, schemas, uploads
from app.media.avatars import AVATAR_JOBS_IN_FLIGHT as AVATAR_JOBS_IN_FLIGHT
from app.media.avatars import AVATAR_JOBS_PER_WALLET as AVATAR_JOBS_PER_WALLET
from app.media.avatars import promote_avatar as promote_avatar
from app.media.budget import PixelBudget as PixelBudget
from app.media.processing import process_asset_media as process_asset_media
from app.media.processing import render_image as render_image
from app.media.processing import tokens_with_guessable_highres as tokens_with_guessable_highres
from app.media.uploads import DIRECT_UPLOAD_MAX_BYTES as DIRECT_UPLOAD_MAX_BYTES
from app.media.uploads import DIRECT_UPLOAD_MAX_FILES as DIRECT_UPLOAD_MAX_FILES
from app.media.uploads import MAX_STAGED_UPLOADS as MAX_STAGED_UPLOADS
from app.media.uploads import MAX_UPLOADS as MAX_UPLOADS
from app.media.uploads import IncomingFile as IncomingFile
from app.media.uploads import close_json_checks as close_json_checks
from app.media.uploads import complete_multipart as complete_multipart
from app.media.uploads import start_multipart as start_multipart

# The `as` imports above are this module's public names: the controllers, the jobs, the worker settings
# and the tests reach the capabilities through them.

PROCESS_JOB = "media.process"
# Outlives any result arq keeps (keep_result, an hour): a counter that expired and restarted at 0
# must not land on an id whose result is still kept.
PROCESS_RUN_TTL_S = 24 * 3600
# Atomically move a (token, pending inputs) pair on to its next run, unless another caller already
# did: both then get the same new job id, which arq de-duplicates.
_NEXT_RUN = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current == tonumber(ARGV[1]) then
  current = current + 1
  redis.call('SET', KEYS[1], current, 'EX', ARGV[2])
end
return current
"""


async def presign_upload(
    storage: Storage, principal: Principal, request: schemas.UploadRequest, *, now: datetime | None = None
) -> schemas.PresignedPost:
    """A presigned POST for one file, staged under the caller's temp/ until a job checks and promotes it."""
    return await uploads.presign_upload(storage, principal, request, now=now)


async def upload_images(
    clients: Clients, principal: Principal, token_id: int, files: list[IncomingFile]
) -> schemas.DirectUploadResult:
    """Store images sent through the API as the asset's originals, and queue their processing."""
    stored = await uploads.store_direct(clients.storage, principal, token_id, "image", files)
    job_id, _ = await enqueue_processing(clients, token_id)
    return schemas.DirectUploadResult(
        files=[schemas.stored_file(f) for f in stored],
        job_id=job_id,
        status_url=schemas.job_status_url(job_id),
    )


async def upload_documents(
    storage: Storage,
    principal: Principal,
    token_id: int,
    files: list[IncomingFile],
    *,
    category: str | None,
    verification: bool,
) -> schemas.DirectUploadResult:
    """Store documents sent through the API (PDF, or JSON for metadata) in a category (certificates)."""
    category = category or "certificates"
    if category not in schemas.DOCUMENT_CATEGORIES:
        raise BadRequest("category is certificates, legal or metadata", code="invalid_category")
    stored = await uploads.store_direct(
        storage, principal, token_id, "document", files, category=category, verification=verification
    )
    return schemas.DirectUploadResult(files=[schemas.stored_file(f) for f in stored])


def _run_counter(token_id: int, digest: str) -> str:
    return f"media:process:run:{token_id}:{digest}"


async def enqueue_processing(clients: Clients, token_id: int) -> tuple[str, int]:
    """Queue `media.process` for the asset: one job at a time per set of pending inputs.

    While a job for these inputs is queued or running, asking again returns that job. Once it has
    finished (whatever its result), arq keeps its result under its id and would refuse that id for an
    hour, so the next call moves on to a fresh run id: an upload that arrived after a run found it
    "waiting", or a run that failed all its tries, is never stuck behind the kept result.
    """
    media = await assets_service.media_records_of(token_id)
    if media is None:
        raise NotFound(f"no asset with tokenId {token_id}", code="asset_not_found")
    pending = processing.pending_keys(media)
    digest = hashlib.sha256("\n".join(pending).encode()).hexdigest()[:16]
    counter = _run_counter(token_id, digest)
    run = int(await clients.redis.get(counter) or 0)
    while True:
        job_id = f"{PROCESS_JOB}:{token_id}:{digest}:{run}"
        if (
            await clients.redis.enqueue_job(PROCESS_JOB, token_id, _job_id=job_id, _queue_name=IMAGE_QUEUE)
            is not None
        ):
            break
        if await Job(job_id, clients.redis, _queue_name=IMAGE_QUEUE).status() != JobStatus.complete:
            break  # queued, deferred or in progress: that run will see these inputs
        run = int(await clients.redis.eval(_NEXT_RUN, 1, counter, run, PROCESS_RUN_TTL_S))
    await clients.redis.expire(counter, PROCESS_RUN_TTL_S)
    return job_id, len(pending)


async def request_processing(clients: Clients, token_id: int) -> schemas.ProcessingJob:
    """Queue the processing of the asset's uploads: the job to poll, and how many inputs it has."""
    job_id, pending = await enqueue_processing(clients, token_id)
    return schemas.ProcessingJob(job_id=job_id, status_url=schemas.job_status_url(job_id), pending=pending)


async def request_avatar(clients: Clients, principal: Principal, key: str) -> schemas.AvatarJob:
    """Queue the job that makes the caller's staged upload their avatar: the job to poll."""
    job_id = await avatars.enqueue_avatar(clients, principal, key)
    return schemas.AvatarJob(job_id=job_id, status_url=schemas.job_status_url(job_id))


async def sweep(clients: Clients, *, now: datetime | None = None) -> dict[str, int]:
    """Delete expired temp uploads and cache; queue processing for assets with guessable high-res keys."""
    swept = await processing.sweep_expired(clients.storage, now=now)
    for token_id in await processing.tokens_with_guessable_highres():
        await enqueue_processing(clients, token_id)
    return swept


# What a processing run did, beside the token: files promoted, rendered, rejected, thumbnails made.
RUN_OUTCOMES = ("promoted", "processed", "rejected", "thumbnails", "rekeyed")


async def announce_processed(clients: Clients, settings: Settings, result: dict) -> bool:
    """`media_processed` when the asset's media are not in the state last announced:
    a run that changed nothing announces nothing, and a job that failed after its run (or while
    announcing) and runs again announces the state it left, once. Whether it announced."""
    media = await assets_service.media_records_of(result["tokenId"])
    if media is None:
        return False
    state = sorted(f"{f.key}:{f.status}:{f.source or ''}:{f.sha256 or ''}" for f in media.files)
    digest = hashlib.sha256("\n".join(state).encode()).hexdigest()[:32]
    if digest == media.announced or (not media.files and media.announced is None):
        return False
    token_id = result["tokenId"]
    outcomes = {k: v for k, v in result.items() if k in RUN_OUTCOMES and v}
    # What anyone may see (the stream is public): counts, and the public thumbnail; never a file's key,
    # which REST shows by access class (originals, high resolution and documents are not public).
    live = [f for f in media.files if f.status in ("stored", "processed")]
    counts = {kind: sum(1 for f in live if f.kind == kind) for kind in sorted({f.kind for f in live})}
    thumbnail = media.thumbnailUrl
    if thumbnail and not thumbnail.startswith(("http://", "https://")):
        thumbnail = clients.storage.public_url(thumbnail)  # as REST gives it
    payload = {"tokenId": token_id, "outcomes": outcomes, "files": counts, "thumbnailUrl": thumbnail}
    topics = ["media", asset_topic(token_id)]
    # Keyed by how many states were announced before: the same state reached again is news again, and
    # a run repeated after a crash before the count was recorded announces nothing twice.
    key = f"media:{token_id}:{media.announcements}"
    await events_service.announce([events_service.event(key, "media_processed", topics, payload)])
    await assets_service.media_announced(token_id, digest, media.announcements)
    await events_service.dispatch_soon(clients, settings, [key])
    return True
