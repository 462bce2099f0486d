"""The oracle's data sources (seed plan 3.1.5): their management, and their refreshes on demand and by cron.

It composes `sources` (what a source stores and shows, secrets sealed) and `refresh` (fetching, rows,
bulk upserts, status and metrics); every query is in `repository`. A refresh runs in the worker
(`oracle.refresh_source`), one at a time per source: a Redis marker names the job queued or running
for a source, so the API and the cron share it rather than queue another, and a Redis lock guards the
run itself.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

import structlog
from bson import ObjectId
from msgspec import UNSET

from app.audit import service as audit_service
from app.config import Settings
from app.lib.context import SYSTEM, RequestContext
from app.lib.crypto import secret_box
from app.lib.errors import Conflict, NotFound, require_one_of
from app.lib.params import parse_limit, signed_page
from app.lib.security import Principal
from app.lib.timeutil import past_client_time, utcnow
from app.oracle import (
    appraisal,
    ledger,
    model_repository,
    model_schemas,
    model_views,
    operators,
    queueing,
    refresh,
    repository,
    schemas,
    sources,
    training,
)

log = structlog.get_logger(__name__)

REFRESH_JOB = "oracle.refresh_source"
LOCK_PREFIX = "oracle:refresh:lock:"
QUEUED_PREFIX = "oracle:refresh:queued:"
SOURCE_ID_PATTERN = r"^[0-9a-fA-F]{24}$"
MANAGE_PERMISSION = sources.MANAGE_PERMISSION


def _missing(source_id: str) -> NotFound:
    return NotFound(f"no data source {source_id}", code="source_not_found")


def _object_id(source_id: str) -> ObjectId:
    """The id a route names; 404 for anything that cannot be one (no source has such an id)."""
    if not isinstance(source_id, str) or not ObjectId.is_valid(source_id) or len(source_id) != 24:
        raise _missing(source_id)
    return ObjectId(source_id)


async def _found(source_id: str) -> dict[str, Any]:
    doc = await repository.find_source(_object_id(source_id))
    if doc is None:
        raise _missing(source_id)
    return doc


def _now() -> datetime:
    """Now, to MongoDB's millisecond, so what a write answers is what a read of it answers."""
    now = utcnow()
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _name_taken(name: str) -> Conflict:
    return Conflict(f"a data source named {name!r} exists", code="duplicate_name")


# ---------------------------------------------------------------- management


async def create_source(
    settings: Settings,
    data: schemas.DataSourceCreate,
    principal: Principal,
    context: RequestContext = SYSTEM,
) -> schemas.DataSourceOut:
    """Add a source; its first fetch is due at once (the cron queues it, or `refresh` does now)."""
    sources.may_name_tokens(data.configuration.mapping, principal)
    document = sources.new_document(data, secret_box(settings), principal.wallet_address, _now())
    try:
        document["_id"] = await repository.insert_source(document)
    except repository.NameTaken:
        raise _name_taken(data.name) from None
    await _audit_source("oracle.datasource.create", document, principal, context, old=None, new=document)
    return sources.view(document)


async def list_sources(
    settings: Settings,
    *,
    kind: str | None = None,
    source_type: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> schemas.DataSourcePage:
    """A page of sources, newest first, with an opaque cursor to the next."""
    if kind is not None:
        require_one_of(kind, schemas.KINDS, field="kind", code="invalid_kind")
    if source_type is not None:
        require_one_of(source_type, schemas.TYPES, field="type", code="invalid_type")
    size = parse_limit(limit)
    query = repository.source_query(kind, source_type)

    async def fetch(after):
        return await repository.source_page(
            query, limit=size, after=after, max_time_ms=settings.mongodb.max_time_ms
        )

    secret = settings.auth.jwt_secret.get_secret_value()
    docs, next_cursor = await signed_page(secret, "dataSources", cursor, fetch)
    return schemas.DataSourcePage(items=[sources.view(d) for d in docs], nextCursor=next_cursor, limit=size)


async def get_source(source_id: str) -> schemas.DataSourceOut:
    """One source, its status and metrics (never its secrets)."""
    return sources.view(await _found(source_id))


async def update_source(
    settings: Settings,
    source_id: str,
    patch: schemas.DataSourcePatch,
    principal: Principal,
    context: RequestContext = SYSTEM,
) -> schemas.DataSourceOut:
    """Change a source: 409 for a name taken, or a URL, format or field its type does not take."""
    configuration = patch.configuration
    if configuration is not UNSET and configuration.mapping is not UNSET:
        sources.may_name_tokens(configuration.mapping, principal)
    current = await _found(source_id)
    now = _now()
    changes = sources.changes(current, patch, secret_box(settings), now)
    if not changes:
        return sources.view(current)
    try:
        updated = await repository.update_source(current["_id"], {**changes, "updatedAt": now})
    except repository.NameTaken:
        raise _name_taken(str(patch.name)) from None
    if updated is None:
        raise _missing(source_id)
    await _audit_source("oracle.datasource.update", updated, principal, context, old=current, new=updated)
    return sources.view(updated)


async def delete_source(source_id: str, principal: Principal, context: RequestContext = SYSTEM) -> None:
    """Delete a source with the sales and points it brought."""
    deleted = await repository.delete_source(_object_id(source_id))
    if deleted is None:
        raise _missing(source_id)
    await _audit_source("oracle.datasource.delete", deleted, principal, context, old=deleted, new=None)


async def _audit_source(
    action: str,
    doc: dict[str, Any],
    principal: Principal,
    context: RequestContext,
    *,
    old: dict[str, Any] | None,
    new: dict[str, Any] | None,
) -> None:
    await audit_service.record_change(
        action, "dataSource", doc, sources.audited, principal=principal, context=context, old=old, new=new
    )


# ---------------------------------------------------------------- refreshes


async def _enqueue_refresh(clients, settings: Settings, object_id: ObjectId) -> tuple[str, bool]:
    marker, prefix = f"{QUEUED_PREFIX}{object_id}", f"{REFRESH_JOB}:{object_id}"
    return await queueing.enqueue_once(clients, settings, marker, REFRESH_JOB, str(object_id), prefix=prefix)


async def request_refresh(clients, settings: Settings, source_id: str) -> schemas.RefreshQueued:
    """Queue a refresh of the source now, or answer the one already queued or running."""
    doc = await _found(source_id)
    job_id, _ = await _enqueue_refresh(clients, settings, doc["_id"])
    return schemas.RefreshQueued(jobId=job_id, statusUrl=f"/api/jobs/{job_id}")


async def refresh_source(
    clients, settings: Settings, source_id: str, job_id: str | None = None
) -> dict[str, Any]:
    """Refresh one source (the oracle.refresh_source job `job_id`); skipped while another refresh of it
    runs (a job queued before the marker existed, or retried)."""
    object_id = _object_id(source_id)
    lock = clients.redis.lock(
        f"{LOCK_PREFIX}{object_id}", timeout=settings.worker.job_timeout_s + 60, blocking=False
    )
    if not await lock.acquire():
        return {"sourceId": source_id, "ok": True, "skipped": "refresh_in_progress"}
    try:
        doc = await repository.find_source(object_id)
        if doc is None:
            raise _missing(source_id)
        return await refresh.run(clients, settings, doc)
    finally:
        await queueing.release(clients.redis, lock, f"{QUEUED_PREFIX}{object_id}", job_id, source_id)


async def enqueue_due(clients, settings: Settings) -> dict[str, int]:
    """Queue a refresh of every enabled source that is due (the oracle.refresh_due cron)."""
    due = await repository.due_sources(utcnow(), settings.oracle.refresh_batch)
    queued = 0
    for doc in due:
        queued += (await _enqueue_refresh(clients, settings, doc["_id"]))[1]
    return {"due": len(due), "queued": queued}


# ---------------------------------------------------------------- models, appraisals, performance

TRAIN_JOB = "oracle.train"
APPRAISE_JOB = "oracle.appraise"
TRAIN_QUEUED = "oracle:train:queued"
TRAIN_LOCK = "oracle:train:lock"


def _queued(job_id: str) -> model_schemas.JobQueued:
    return model_schemas.JobQueued(jobId=job_id, statusUrl=f"/api/jobs/{job_id}")


def _training_tag(until: datetime | None) -> str:
    return f"{int(until.timestamp() * 1000)}" if until else "latest"


async def request_training(
    clients,
    settings: Settings,
    data_until: datetime | None,
    principal: Principal,
    context: RequestContext = SYSTEM,
) -> model_schemas.JobQueued:
    """Queue training of a new version (on the sales before `data_until` when given), or answer the run
    of the same data already queued or running; 409 `training_in_progress` while another one is."""
    until = past_client_time(data_until, _now(), "asOf")
    prefix = f"{TRAIN_JOB}:{_training_tag(until)}"
    arguments = until.isoformat() if until else None
    requested_by = principal.wallet_address
    job_id, queued = await queueing.enqueue_once(
        clients,
        settings,
        TRAIN_QUEUED,
        TRAIN_JOB,
        arguments,
        requested_by,
        prefix=prefix,
        timeout_s=settings.oracle.job_timeout_s,
    )
    if job_id.rsplit(":", 1)[0] != prefix:
        raise Conflict("another training is queued or running", code="training_in_progress")
    if queued:
        await audit_service.record(
            "oracle.model.train",
            principal=principal,
            context=context,
            entity_type="oracleModel",
            entity_id=job_id,
            new={"asOf": arguments},
        )
    return _queued(job_id)


async def train(
    clients, settings: Settings, data_until: str | None, requested_by: str | None, job_id: str
) -> dict[str, Any]:
    """Train a version (the oracle.train job), one training at a time."""
    until = datetime.fromisoformat(data_until) if data_until else None
    lock = clients.redis.lock(TRAIN_LOCK, timeout=settings.oracle.job_timeout_s + 60)
    await lock.acquire()
    try:
        return await training.train(
            clients, settings, job_id=job_id, requested_by=requested_by, data_until=until
        )
    finally:
        await queueing.release(clients.redis, lock, TRAIN_QUEUED, job_id, "training")


async def _current_version() -> str | None:
    current = await model_repository.current_model()
    return current["version"] if current else None


async def list_models(
    settings: Settings, *, limit: int | None, cursor: str | None
) -> model_schemas.ModelPage:
    """The versions, newest first, keyset pages."""
    size = parse_limit(limit)

    async def fetch(after):
        return await model_repository.model_page(
            {}, limit=size, after=after, max_time_ms=settings.mongodb.max_time_ms
        )

    secret = settings.auth.jwt_secret.get_secret_value()
    docs, next_cursor = await signed_page(secret, "oracleModels", cursor, fetch)
    current = await _current_version()
    return model_schemas.ModelPage(
        items=[model_views.model_out(d, current) for d in docs], nextCursor=next_cursor, limit=size
    )


async def _model(version: str | None) -> dict[str, Any]:
    record = await model_repository.find_model(version) if version else await model_repository.current_model()
    if record is None:
        raise NotFound(f"no model version {version or '(none is ready)'}", code="model_not_found")
    return record


async def get_model(version: str) -> model_schemas.ModelOut:
    return model_views.model_out(await _model(version), await _current_version())


async def request_appraisal(
    clients, data: model_schemas.AppraisalRequest, principal: Principal, context: RequestContext = SYSTEM
) -> model_schemas.JobQueued:
    """Queue an appraisal as of now (the time of this request, whenever the job runs) or `asOf`; 409
    `no_model` when there is no version it could use."""
    now = _now()
    as_of = past_client_time(data.asOf, now, "asOf")
    await appraisal.model_for(as_of, data.modelVersion)
    job_id = f"{APPRAISE_JOB}:{secrets.token_hex(8)}"
    as_of_text = as_of.isoformat() if as_of else None
    await clients.redis.enqueue_job(
        APPRAISE_JOB, data.tokenIds, as_of_text, data.modelVersion, now.isoformat(), _job_id=job_id
    )
    await audit_service.record(
        "oracle.appraisal.request",
        principal=principal,
        context=context,
        entity_type="appraisal",
        entity_id=job_id,
        new={
            "tokenIds": len(data.tokenIds) if data.tokenIds else "all",
            "asOf": as_of_text,
            "modelVersion": data.modelVersion,
        },
    )
    return _queued(job_id)


async def appraise(
    clients,
    settings: Settings,
    token_ids: list[int] | None,
    as_of: str | None,
    version: str | None,
    job_id: str,
    requested_at: str | None = None,
) -> dict[str, Any]:
    """Run an appraisal (the oracle.appraise job) as of the time it was requested, or `as_of`: every
    try of the job appraises as of the same time, so writes the same predictions."""
    when = datetime.fromisoformat(as_of) if as_of else None
    now = datetime.fromisoformat(requested_at) if requested_at else _now()
    return await appraisal.run(
        clients, settings, job_id=job_id, token_ids=token_ids, as_of=when, now=now, version=version
    )


async def performance(redis, settings: Settings, version: str | None) -> model_schemas.PerformanceOut:
    """A version's backtest and live ledger (the current version by default), beside the operators'."""
    record = await _model(version)
    live = await ledger.figures(redis, record["version"])
    found = await operators.figures(redis, settings)
    return model_views.performance_out(record, await _current_version(), live, found)


async def score_ledger(redis) -> dict[str, int]:
    """Score the appraisals of the assets sold since the last run (the oracle.score_ledger cron)."""
    return await ledger.score_recent(redis, _now())


async def train_daily(clients, settings: Settings) -> dict[str, Any]:
    """Queue the daily training of a new version (the oracle.train_daily cron)."""
    prefix = f"{TRAIN_JOB}:{_training_tag(None)}"
    job_id, queued = await queueing.enqueue_once(
        clients,
        settings,
        TRAIN_QUEUED,
        TRAIN_JOB,
        None,
        None,
        prefix=prefix,
        timeout_s=settings.oracle.job_timeout_s,
    )
    return {"jobId": job_id, "queued": queued}
