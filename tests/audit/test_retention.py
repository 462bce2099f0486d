"""The audit archive: entries past AUDIT_RETENTION_DAYS go to S3 as gzip JSON Lines, then leave MongoDB."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from arq import Retry
from botocore.exceptions import ClientError
from bson import Decimal128, ObjectId, json_util

from app.audit import jobs, repository, retention
from app.audit import service as audit_service
from app.audit.documents import AuditLog
from app.lib import bucket as keys
from app.lib.db import init_db
from app.main import DOCUMENTS

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)  # with the default 365 days: days before 2025-06-15 go
OLD_DAY, OLDER_DAY = datetime(2025, 6, 12, tzinfo=UTC), datetime(2025, 6, 10, tzinfo=UTC)


async def entry(at: datetime, action: str = "asset.metadata.update", **fields) -> AuditLog:
    """An audit entry stamped `at`, written as the audit service writes one."""
    return await AuditLog(action=action, actor="0xabc", entityType="asset", timestamp=at, **fields).insert()


async def raw_entries(query: dict) -> list[dict]:
    """The entries as MongoDB holds them, in the archive's order."""
    return await AuditLog.get_pymongo_collection().find(query, sort=repository.ARCHIVE_ORDER).to_list()


async def archived(clients) -> dict[str, list[dict]]:
    """Every archive object in the bucket, by key: its lines read back as extended JSON."""
    objects = {}
    async for obj in clients.storage.list(keys.AUDIT_ARCHIVE_PREFIX):
        lines = gzip.decompress(await clients.storage.read(obj.key)).decode().splitlines()
        objects[obj.key] = [json_util.loads(line, json_options=retention.JSON_OPTIONS) for line in lines]
    return objects


def key_of(day: datetime, entries: list[dict]) -> str:
    return keys.audit_archive_key(day.date(), str(entries[0]["_id"]), str(entries[-1]["_id"]), len(entries))


async def test_old_entries_are_archived_as_gzip_json_lines_then_deleted_and_recent_ones_stay(
    client, clients, settings
):
    for hour in (9, 3, 17):  # out of order: the archive goes by time
        await entry(
            OLDER_DAY + timedelta(hours=hour),
            oldValue={"price": {"valueWei": Decimal("123456789012345678901234567")}},
            newValue={"assetId": ObjectId(), "at": NOW, "tags": ["a", "é"], "ratio": 0.1, "n": 2**40},
        )
    for minute in (1, 2):
        await entry(OLD_DAY + timedelta(minutes=minute), success=False, reason="refused")
    await entry(datetime(2025, 6, 15, 0, 0, 1, tzinfo=UTC))  # its day is not over 365 days ago yet
    await entry(NOW - timedelta(days=1))
    older = await raw_entries({"timestamp": {"$lt": OLDER_DAY + timedelta(days=1)}})
    old = await raw_entries({"timestamp": {"$gte": OLD_DAY, "$lt": OLD_DAY + timedelta(days=1)}})
    assert isinstance(older[0]["oldValue"]["price"]["valueWei"], Decimal128)

    counts = await jobs.archive({"clients": clients, "settings": settings}, now=NOW)

    assert counts == {"objects": 2, "archived": 5, "deleted": 5}
    objects = await archived(clients)
    assert objects == {key_of(OLDER_DAY, older): older, key_of(OLD_DAY, old): old}
    assert key_of(OLDER_DAY, older).startswith("archive/auditLogs/2025/06/10/")
    assert [e["timestamp"].hour for e in older] == [3, 9, 17]
    kept = await raw_entries({})
    assert [e["timestamp"] for e in kept] == [
        datetime(2025, 6, 15, 0, 0, 1, tzinfo=UTC),
        NOW - timedelta(days=1),
    ]
    stored = await clients.storage.head(key_of(OLD_DAY, old))
    assert stored.content_type == "application/gzip" and stored.metadata["entries"] == "2"
    # Nothing is left to archive: a second run writes and deletes nothing.
    assert await jobs.archive({"clients": clients, "settings": settings}, now=NOW) == {
        "objects": 0,
        "archived": 0,
        "deleted": 0,
    }


async def test_a_day_goes_in_bounded_batches_each_named_by_its_first_and_last_entry(client, clients):
    for second in range(5):
        await entry(OLD_DAY + timedelta(seconds=second))
    entries = await raw_entries({})

    counts = await audit_service.archive_expired(clients.storage, 365, now=NOW, batch_size=2)

    assert counts == {"objects": 3, "archived": 5, "deleted": 5}
    batches = [entries[0:2], entries[2:4], entries[4:5]]
    assert await archived(clients) == {key_of(OLD_DAY, batch): batch for batch in batches}
    assert await AuditLog.count() == 0


async def test_a_crash_between_upload_and_delete_archives_the_same_batch_again_then_deletes_it_once(
    client, clients, monkeypatch
):
    for second in range(3):
        await entry(OLD_DAY + timedelta(seconds=second))
    entries = await raw_entries({})

    async def crash(ids):
        raise ConnectionError("the worker lost MongoDB between the upload and the delete")

    with monkeypatch.context() as patched:
        patched.setattr(repository, "delete_by_ids", crash)
        with pytest.raises(ConnectionError):
            await audit_service.archive_expired(clients.storage, 365, now=NOW)
    first_try = await archived(clients)
    assert first_try == {key_of(OLD_DAY, entries): entries}
    assert await AuditLog.count() == 3  # archived, not deleted

    later = NOW + timedelta(days=1)  # the next day's run: the cutoff has moved, the batch has not
    assert await audit_service.archive_expired(clients.storage, 365, now=later) == {
        "objects": 1,
        "archived": 3,
        "deleted": 3,
    }
    assert await archived(clients) == first_try  # the same key, written over with the same lines
    assert await AuditLog.count() == 0


async def test_an_archive_that_does_not_read_back_as_written_deletes_nothing(client, clients, monkeypatch):
    await entry(OLD_DAY)

    async def corrupted(key, **_):
        return "0" * 64

    monkeypatch.setattr(clients.storage, "sha256", corrupted)
    with pytest.raises(retention.ArchiveNotVerified, match="stay in MongoDB"):
        await audit_service.archive_expired(clients.storage, 365, now=NOW)
    assert await AuditLog.count() == 1


async def test_the_cutoff_is_the_start_of_the_day_the_retention_reaches(client):
    assert retention.archive_cutoff(NOW, 365) == datetime(2025, 6, 15, tzinfo=UTC)
    assert retention.archive_cutoff(datetime(2026, 1, 1, 0, 30, tzinfo=UTC), 1) == datetime(
        2025, 12, 31, tzinfo=UTC
    )


async def test_the_ttl_index_that_deleted_entries_unarchived_is_dropped_at_start_up(
    client, settings, clients
):
    collection = clients.mongo[settings.mongodb.database]["auditLogs"]
    await collection.create_index([("timestamp", -1)], name="timestamp", expireAfterSeconds=365 * 86400)

    await init_db(clients.mongo, settings, DOCUMENTS)

    info = await collection.index_information()
    assert "timestamp" not in info
    assert info["timestamp_id"]["key"] == [("timestamp", 1), ("_id", 1)]
    assert not any("expireAfterSeconds" in spec for spec in info.values())


async def test_a_store_that_stumbles_makes_the_job_retry_later_with_nothing_deleted(
    client, clients, settings, monkeypatch
):
    await entry(OLD_DAY)

    async def throttled(*args, **kwargs):
        raise ClientError({"Error": {"Code": "SlowDown"}}, "PutObject")

    monkeypatch.setattr(clients.storage, "put_bytes", throttled)
    with pytest.raises(Retry):
        await jobs.archive({"clients": clients, "settings": settings, "job_try": 1}, now=NOW)
    assert await AuditLog.count() == 1
