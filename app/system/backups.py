"""Backups of the whole database to S3, and restores from them.

A backup is `backups/{timestamp}/` in the bucket: one archive per collection (app/system/archive.py)
and a manifest, written last. A backup without its manifest is incomplete: it is never restored and
never counted among those kept, and once older than BACKUP_TIMEOUT_S (no run lasts longer) it is
deleted with the backups past the BACKUP_KEEP newest. Running a backup twice makes two backups.

Documents are streamed: a collection is read in batches into a temporary gzip file, which is then
uploaded in parts, so memory holds a batch and a part whatever the collection's size. A backup is no
point-in-time snapshot: each collection is read as it is when its turn comes.

A restore verifies every archive's sha256 before it writes anything, and refuses a database holding
documents unless forced (it then drops the collections it restores, and only those).
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog
from botocore.exceptions import ClientError
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, OperationFailure

from app.lib import bucket as keys
from app.lib.errors import AppError, BadRequest, Conflict, NotFound, Unprocessable
from app.lib.storage import Storage
from app.lib.timeutil import utcnow
from app.system import repository
from app.system.archive import (
    ARCHIVE_CONTENT_TYPE,
    MANIFEST_CONTENT_TYPE,
    MANIFEST_FILE,
    ArchiveError,
    ArchiveReader,
    ArchiveWriter,
    CollectionArchive,
    Manifest,
    archive_file,
    decode_manifest,
    encode_manifest,
)

log = structlog.get_logger(__name__)
READ_BATCH = 1000  # documents per round trip when reading a collection
INSERT_BATCH = 1000  # documents per insert_many, or
INSERT_BATCH_BYTES = 8 * 1024 * 1024  # about this many bytes of them, whichever comes first
_STAMP_FORMAT = "%Y%m%dT%H%M%S%fZ"


@dataclass(frozen=True)
class BackupEntry:
    """A backup in the bucket: complete once its manifest is there."""

    name: str
    complete: bool
    keys: list[str]

    @property
    def started_at(self) -> datetime:
        return datetime.strptime(self.name, _STAMP_FORMAT).replace(tzinfo=UTC)


@dataclass(frozen=True)
class Restored:
    manifest: Manifest
    database: str
    dropped: list[str]  # collections that held documents and were dropped (--force)


# ---- listing --------------------------------------------------------------------------------------------


async def list_backups(storage: Storage) -> list[BackupEntry]:
    """Every backup in the bucket, complete or not, oldest first."""
    found: dict[str, list[str]] = {}
    async for item in storage.list(keys.BACKUPS_PREFIX):
        name = keys.backup_name_of(item.key)
        if name is not None:
            found.setdefault(name, []).append(item.key)
    return [
        BackupEntry(name=name, complete=keys.backup_key(name, MANIFEST_FILE) in found[name], keys=found[name])
        for name in sorted(found)
    ]


async def find_backup(storage: Storage, wanted: str) -> BackupEntry:
    """The complete backup `wanted` names: its timestamp, a prefix of it (one complete backup only), or
    `latest`; incomplete backups are never restored."""
    wanted = wanted.strip().removeprefix(keys.BACKUPS_PREFIX).strip("/")
    entries = await list_backups(storage)
    complete = [entry for entry in entries if entry.complete]
    if wanted == "latest":
        if not complete:
            raise NotFound("the bucket holds no complete backup", code="backup_not_found")
        return complete[-1]
    matches = [entry for entry in entries if entry.name.startswith(wanted)] if wanted else []
    matches = [entry for entry in matches if entry.name == wanted] or matches
    if not matches:
        raise NotFound(f"no backup named {wanted!r}", code="backup_not_found")
    restorable = [entry for entry in matches if entry.complete]
    if len(restorable) > 1:
        raise BadRequest(
            f"{wanted!r} names {len(restorable)} backups: give more of the timestamp",
            code="backup_ambiguous",
            details={"backups": [entry.name for entry in restorable]},
        )
    if not restorable:
        raise Conflict(
            f"{', '.join(e.name for e in matches)}: no manifest, so unfinished, and never restored",
            code="backup_incomplete",
            details={"backups": [entry.name for entry in matches]},
        )
    return restorable[0]


async def read_manifest(storage: Storage, name: str) -> Manifest:
    try:
        manifest = decode_manifest(await storage.read(keys.backup_key(name, MANIFEST_FILE)))
    except ArchiveError as exc:
        raise Unprocessable(f"backup {name}: {exc}", code="backup_corrupt") from exc
    if manifest.name != name:
        raise Unprocessable(f"backup {name}: its manifest names {manifest.name}", code="backup_corrupt")
    return manifest


# ---- backup ---------------------------------------------------------------------------------------------


async def _dump_collection(
    database: AsyncDatabase, storage: Storage, name: str, backup: str, directory: Path
) -> CollectionArchive:
    spec = await repository.collection_spec(database, name)
    file = archive_file(name)
    writer = ArchiveWriter(directory / file)
    try:
        written: asyncio.Future[None] | None = None
        async for batch in repository.raw_batches(database, name, READ_BATCH):
            if written is not None:
                await written
            # Compressed in a thread while the next batch is read.
            written = asyncio.ensure_future(asyncio.to_thread(writer.write, batch))
        if written is not None:
            await written
        size, sha256 = await asyncio.to_thread(writer.close)
    except BaseException:
        await asyncio.to_thread(writer.abandon)
        raise
    await storage.upload_file(
        writer.path, keys.backup_key(backup, file), ARCHIVE_CONTENT_TYPE, part_size=keys.BACKUP_PART_SIZE
    )
    await asyncio.to_thread(writer.path.unlink)
    log.info("system.backup.collection", backup=backup, collection=name, count=writer.count, bytes=size)
    return CollectionArchive(
        name=name,
        file=file,
        count=writer.count,
        bytes=size,
        sha256=sha256,
        options=spec.options,
        indexes=spec.indexes,
    )


async def create_backup(
    database: AsyncDatabase, storage: Storage, *, now: datetime | None = None, tmp_dir: Path | None = None
) -> Manifest:
    """Back up every collection of `database` under `backups/{timestamp}/`, the manifest last; a backup
    that fails deletes what it uploaded."""
    started = now or utcnow()
    name = keys.timestamp_token(started)
    collections: list[CollectionArchive] = []
    try:
        with tempfile.TemporaryDirectory(prefix="dv-backup-", dir=tmp_dir) as directory:
            for collection in await repository.collection_names(database):
                collections.append(
                    await _dump_collection(database, storage, collection, name, Path(directory))
                )
        manifest = Manifest(
            name=name,
            database=database.name,
            started_at=started.isoformat(),
            finished_at=utcnow().isoformat(),
            collections=collections,
        )
        await storage.put_bytes(
            keys.backup_key(name, MANIFEST_FILE), encode_manifest(manifest), MANIFEST_CONTENT_TYPE
        )
    except BaseException:
        with contextlib.suppress(Exception):  # best effort: a later backup deletes what is left
            await storage.delete([item.key async for item in storage.list(f"{keys.BACKUPS_PREFIX}{name}/")])
        raise
    log.info(
        "system.backup.done",
        backup=name,
        collections=len(collections),
        documents=manifest.documents,
        bytes=manifest.bytes,
    )
    return manifest


async def prune_backups(
    storage: Storage, *, keep: int, abandoned_after: timedelta, now: datetime | None = None
) -> list[str]:
    """Delete the complete backups past the `keep` newest, and incomplete ones older than
    `abandoned_after` (a younger one may still be running); returns the names deleted."""
    now = now or utcnow()
    entries = await list_backups(storage)
    complete = [entry for entry in entries if entry.complete]
    doomed = complete[: max(0, len(complete) - keep)]
    doomed += [e for e in entries if not e.complete and now - e.started_at > abandoned_after]
    doomed.sort(key=lambda entry: entry.name)
    for entry in doomed:
        manifest = keys.backup_key(entry.name, MANIFEST_FILE)
        # The manifest first: a backup half deleted must read as incomplete, never as restorable.
        await storage.delete([key for key in entry.keys if key == manifest])
        await storage.delete([key for key in entry.keys if key != manifest])
        log.info("system.backup.pruned", backup=entry.name, complete=entry.complete)
    return [entry.name for entry in doomed]


# ---- restore --------------------------------------------------------------------------------------------


async def _download_verified(storage: Storage, manifest: Manifest, directory: Path) -> None:
    """Every archive to `directory`, each checked against the manifest's sha256; refused on the first
    that differs or is missing."""
    for collection in manifest.collections:
        key = keys.backup_key(manifest.name, collection.file)
        try:
            sha256 = await storage.download_file(key, directory / collection.file)
        except ClientError as exc:
            if keys.error_code(exc) not in ("404", "NoSuchKey", "NotFound"):
                raise
            raise Unprocessable(
                f"backup {manifest.name}: the archive of {collection.name} is missing",
                code="backup_corrupt",
                details={"collection": collection.name, "file": collection.file},
            ) from exc
        if sha256 != collection.sha256:
            raise Unprocessable(
                f"backup {manifest.name}: the archive of {collection.name} does not match its checksum",
                code="backup_corrupt",
                details={
                    "collection": collection.name,
                    "file": collection.file,
                    "expected": collection.sha256,
                    "actual": sha256,
                },
            )


def _restore_failed(
    manifest: Manifest, collection: str, reason: str, details: dict | None = None
) -> AppError:
    return AppError(
        f"restoring {collection} from backup {manifest.name} failed: {reason}",
        code="restore_failed",
        status_code=500,
        details={"collection": collection, **(details or {})},
    )


async def _load_collection(
    database: AsyncDatabase, manifest: Manifest, collection: CollectionArchive, path: Path
) -> None:
    name = collection.name
    await repository.recreate(database, name, collection.options)
    reader = ArchiveReader(path)
    inserted = 0
    try:
        batch = await asyncio.to_thread(reader.read_batch, INSERT_BATCH, INSERT_BATCH_BYTES)
        while batch:
            # The next batch is decompressed while this one is inserted.
            following = asyncio.ensure_future(
                asyncio.to_thread(reader.read_batch, INSERT_BATCH, INSERT_BATCH_BYTES)
            )
            try:
                inserted += await repository.insert_raw(database, name, batch)
            finally:
                batch = await following
    except ArchiveError as exc:
        raise _restore_failed(manifest, name, str(exc)) from exc
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        raise _restore_failed(
            manifest,
            name,
            f"{len(errors)} documents refused",
            {"errors": [{"code": e.get("code"), "message": e.get("errmsg", "")[:200]} for e in errors[:5]]},
        ) from exc
    finally:
        await asyncio.to_thread(reader.close)
    if inserted != collection.count:
        raise _restore_failed(
            manifest, name, f"{inserted} documents read, the manifest says {collection.count}"
        )
    # Indexes after the documents: one build per index is faster than maintaining them per insert.
    try:
        await repository.create_indexes(database, name, collection.indexes)
    except OperationFailure as exc:
        raise _restore_failed(manifest, name, f"its indexes: {exc.details}") from exc
    log.info("system.restore.collection", backup=manifest.name, collection=name, count=inserted)


async def restore_backup(
    database: AsyncDatabase, storage: Storage, name: str, *, force: bool = False, tmp_dir: Path | None = None
) -> Restored:
    """Restore the complete backup `name` into `database`: refused when the database holds documents
    (unless `force`: the collections the backup holds are then dropped), or when any archive differs
    from its manifest, in both cases before anything is written."""
    manifest = await read_manifest(storage, name)
    occupied = await repository.non_empty(database)
    if occupied and not force:
        raise Conflict(
            f"database {database.name} is not empty: restore into an empty one, or force it to drop the "
            "collections the backup holds",
            code="database_not_empty",
            details={"collections": occupied},
        )
    with tempfile.TemporaryDirectory(prefix="dv-restore-", dir=tmp_dir) as directory:
        await _download_verified(storage, manifest, Path(directory))
        for collection in manifest.collections:
            await _load_collection(database, manifest, collection, Path(directory) / collection.file)
            await asyncio.to_thread((Path(directory) / collection.file).unlink)
    restored = {collection.name for collection in manifest.collections}
    log.info("system.restore.done", backup=name, database=database.name, documents=manifest.documents)
    return Restored(manifest=manifest, database=database.name, dropped=sorted(set(occupied) & restored))
