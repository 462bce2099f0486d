"""The audit archive: entries past AUDIT_RETENTION_DAYS go to S3 as gzip JSON Lines, then leave MongoDB.

A UTC day is archived once all of it is older than the retention, in batches of at most ARCHIVE_BATCH
entries in (timestamp, id) order, one object each:
`archive/auditLogs/{YYYY}/{MM}/{DD}/{firstId}-{lastId}.jsonl.gz`, a line per entry in MongoDB's extended
JSON (relaxed: ObjectIds, dates and Decimal128 read back as they were, other values as plain JSON).

An entry is deleted only after the object holding it was read back with the sha256 it was written with,
and by its id, so nothing unarchived is ever deleted. A day past the cutoff gets no new entries, so a run
that stopped between the upload and the delete makes the same batch, the same bytes (gzip without a
timestamp) and the same key the next time: the object is written again, the entries then deleted. A run
stopped halfway through a delete leaves the rest of its batch to the next object: an entry may then be
in two objects (the same `_id`), never in none.
"""

from __future__ import annotations

import gzip
import hashlib
import io
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

import structlog
from bson import ObjectId, json_util

from app.audit import repository
from app.lib import bucket as keys
from app.lib.storage import Storage
from app.lib.timeutil import as_utc, utcnow

log = structlog.get_logger(__name__)

ARCHIVE_BATCH = 5000  # entries per object: what one batch holds in memory is their ids and its gzip
JSON_OPTIONS = json_util.RELAXED_JSON_OPTIONS.with_options(tz_aware=True, tzinfo=UTC)
CONTENT_TYPE = "application/gzip"
GZIP_LEVEL = 6  # fixed, like the zero timestamp: the same batch gives the same bytes


class ArchiveNotVerified(RuntimeError):
    """The archive object read back differs from what was written: its entries are not deleted."""


@dataclass(frozen=True)
class Batch:
    key: str
    body: bytes
    sha256: str
    ids: list[ObjectId]


def archive_cutoff(now: datetime, retention_days: int) -> datetime:
    """Midnight (UTC) of the day `retention_days` before `now`: the days before it are archived whole."""
    day = as_utc(now - timedelta(days=retention_days)).date()
    return datetime.combine(day, time.min, tzinfo=UTC)


async def archive_expired(
    storage: Storage, retention_days: int, *, now: datetime | None = None, batch_size: int = ARCHIVE_BATCH
) -> dict[str, int]:
    """Archive every entry of the days older than `retention_days` to S3, then delete it: the counts."""
    cutoff = archive_cutoff(now or utcnow(), retention_days)
    counts = {"objects": 0, "archived": 0, "deleted": 0}
    while (oldest := await repository.oldest_timestamp_before(cutoff)) is not None:
        batch = await _read_batch(as_utc(oldest), batch_size)
        if batch is None:  # deleted since it was found
            continue
        await _upload_verified(storage, batch)
        deleted = await repository.delete_by_ids(batch.ids)
        counts["objects"] += 1
        counts["archived"] += len(batch.ids)
        counts["deleted"] += deleted
        log.info("audit.archived", key=batch.key, entries=len(batch.ids), deleted=deleted)
        if deleted < len(batch.ids):  # another run deleted them after archiving them itself
            log.warning("audit.archive.already_deleted", key=batch.key, missing=len(batch.ids) - deleted)
        if deleted == 0:
            break  # that other run is going through the same days: leave them to it
    return counts


async def _read_batch(oldest: datetime, batch_size: int) -> Batch | None:
    """The first `batch_size` entries of the day of `oldest`, gzipped as JSON Lines as they stream in."""
    start = datetime.combine(oldest.date(), time.min, tzinfo=UTC)
    buffer = io.BytesIO()
    ids: list[ObjectId] = []
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=GZIP_LEVEL, mtime=0) as out:
        async for entry in repository.first_entries_between(start, start + timedelta(days=1), batch_size):
            out.write(json_util.dumps(entry, json_options=JSON_OPTIONS).encode() + b"\n")
            ids.append(entry["_id"])
    if not ids:
        return None
    body = buffer.getvalue()
    key = keys.audit_archive_key(start.date(), str(ids[0]), str(ids[-1]), len(ids))
    return Batch(key=key, body=body, sha256=hashlib.sha256(body).hexdigest(), ids=ids)


async def _upload_verified(storage: Storage, batch: Batch) -> None:
    """Put the batch's object, then read it back: its sha256 must be the one written."""
    metadata = {"entries": str(len(batch.ids)), "sha256": batch.sha256}
    await storage.put_bytes(batch.key, batch.body, CONTENT_TYPE, metadata=metadata)
    stored = await storage.sha256(batch.key)
    if stored != batch.sha256:
        raise ArchiveNotVerified(
            f"the audit archive {batch.key} reads back with sha256 {stored}, not the {batch.sha256} "
            f"written: its {len(batch.ids)} entries stay in MongoDB"
        )
