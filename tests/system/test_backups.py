"""Backups: every collection to S3 and back byte for byte, indexes too; checksums refuse a damaged archive;
the newest BACKUP_KEEP are kept, and a backup without its manifest is never restored."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
from datetime import timedelta
from decimal import Decimal

import bson
import pytest
from bson import Decimal128
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument

from app.config import BackupSettings
from app.lib import bucket as keys
from app.lib.errors import AppError
from app.lib.timeutil import utcnow
from app.main import DOCUMENTS
from app.market import service as market_service
from app.oracle.documents import AIOracleData, PriceInterval
from app.system import jobs, repository, service
from app.system.archive import FORMAT, MANIFEST_FILE, ArchiveError, archive_file, decode_manifest
from scripts.backup import run_reporting_errors
from scripts.restore import restore as restore_script
from tests import factories
from tests.conftest import drain_jobs

T0 = factories.T0
RAW = CodecOptions(document_class=RawBSONDocument, tz_aware=True)
SEEDED = ("users", "sessions", "assets", "priceHistory", "transactions", "aiOracleData")


@pytest.fixture
def database(client, clients, settings):
    return clients.mongo[settings.mongodb.database]


async def seed(settings, clients) -> None:
    """Users with sessions, assets, prices, transactions and predictions: Decimal128, dates, nesting."""
    for _ in range(3):
        await factories.login(settings)
    for token_id in range(1, 6):
        await factories.asset(token_id, price=1.25 * token_id, listed_at=2 * token_id)
        await factories.price_point(token_id, T0 + timedelta(days=token_id), 1.1 * token_id)
        transaction = factories.transaction(token_id, token_id=token_id, price=0.75 * token_id)
        await market_service.record_transaction(clients.redis, transaction)
        wei = factories.wei(1.3 * token_id)
        await AIOracleData(
            tokenId=token_id,
            timestamp=T0 + timedelta(hours=token_id, microseconds=123000),
            predictedPrice=1.3 * token_id,
            predictedPriceWei=wei,
            interval=PriceInterval(low=1.0, high=2.0, lowWei=wei - 10**17, highWei=wei + 10**17),
            confidenceScore=80.5,
            modelVersion="dv-hgb-1.3.1",
            operator=factories.ALICE,
            idempotencyKey=f"key-{token_id}",
        ).insert()


async def fingerprints(database) -> dict[str, list[str]]:
    """Per collection, the sha256 of each document's BSON bytes, in _id order."""
    found = {}
    for name in await repository.collection_names(database):
        cursor = database[name].with_options(codec_options=RAW).find({}).sort("_id", 1)
        found[name] = [hashlib.sha256(document.raw).hexdigest() async for document in cursor]
    return found


async def indexes(database) -> dict[str, dict]:
    return {
        name: await database[name].index_information() for name in await repository.collection_names(database)
    }


async def empty_every_collection(database) -> None:
    for name in await repository.collection_names(database):
        await database[name].delete_many({})


async def refusal(awaitable) -> AppError:
    with pytest.raises(AppError) as caught:
        await awaitable
    return caught.value


async def test_a_backup_restores_every_collection_document_for_document_with_its_indexes(
    database, clients, settings
):
    await seed(settings, clients)
    before, before_indexes = await fingerprints(database), await indexes(database)
    assert all(before[name] for name in SEEDED), {name: len(before[name]) for name in SEEDED}

    done = await service.back_up(database, clients.storage, settings.backup)

    manifest = done.manifest
    assert {c.name: c.count for c in manifest.collections} == {n: len(docs) for n, docs in before.items()}
    assert {document.get_pymongo_collection().name for document in DOCUMENTS} <= set(before)
    stored = {item.key async for item in clients.storage.list(f"{keys.BACKUPS_PREFIX}{manifest.name}/")}
    assert stored == {
        keys.backup_key(manifest.name, f) for f in [MANIFEST_FILE, *(c.file for c in manifest.collections)]
    }
    oracle = next(c for c in manifest.collections if c.name == "aiOracleData")
    assert {i["name"] for i in oracle.indexes} == set(before_indexes["aiOracleData"]) - {"_id_"}
    archive = await clients.storage.read(keys.backup_key(manifest.name, oracle.file))
    assert hashlib.sha256(archive).hexdigest() == oracle.sha256
    # The archive is plain gzip'd BSON, as bson.decode_file_iter reads it.
    documents = list(bson.decode_file_iter(gzip.GzipFile(fileobj=io.BytesIO(archive))))
    assert len(documents) == 5 and isinstance(documents[0]["predictedPriceWei"], Decimal128)

    await empty_every_collection(database)
    restored = await service.restore(database, clients.storage, manifest.name)

    assert restored.dropped == []
    assert await fingerprints(database) == before
    assert await indexes(database) == before_indexes
    prediction = await AIOracleData.find_one(AIOracleData.tokenId == 3)
    assert prediction.predictedPriceWei == factories.wei(1.3 * 3) and isinstance(
        prediction.predictedPriceWei, Decimal
    )
    assert prediction.timestamp == T0 + timedelta(hours=3, microseconds=123000)


async def test_restore_refuses_a_database_holding_documents_unless_forced(database, clients, settings):
    await seed(settings, clients)
    backed_up = await fingerprints(database)
    name = (await service.back_up(database, clients.storage, settings.backup)).manifest.name
    await factories.user()  # written after the backup

    error = await refusal(service.restore(database, clients.storage, name))
    assert error.code == "database_not_empty" and error.details["collections"]["users"] == 4
    assert len((await fingerprints(database))["users"]) == 4  # untouched

    restored = await service.restore(database, clients.storage, name, force=True)
    assert set(SEEDED) <= set(restored.dropped)
    assert await fingerprints(database) == backed_up


async def test_a_damaged_archive_is_refused_by_its_checksum_before_anything_is_written(
    database, clients, settings
):
    await seed(settings, clients)
    before_indexes = await indexes(database)
    name = (await service.back_up(database, clients.storage, settings.backup)).manifest.name
    key = keys.backup_key(name, archive_file("assets"))
    damaged = bytearray(await clients.storage.read(key))
    damaged[len(damaged) // 2] ^= 0x01
    await clients.storage.put_bytes(key, bytes(damaged), "application/gzip")
    await empty_every_collection(database)

    error = await refusal(service.restore(database, clients.storage, name))

    assert error.code == "backup_corrupt" and error.details["collection"] == "assets"
    assert error.details["expected"] != error.details["actual"]
    assert all(not documents for documents in (await fingerprints(database)).values())
    assert await indexes(database) == before_indexes  # no collection was dropped either


async def test_the_restore_script_says_a_refusal_as_json_on_stderr(database, clients, settings, capsys):
    await seed(settings, clients)
    name = (await service.back_up(database, clients.storage, settings.backup)).manifest.name

    result = await run_reporting_errors(
        lambda: restore_script(settings, name[:8], force=False, database=None)
    )

    assert result is None
    error = json.loads(capsys.readouterr().err)["error"]
    assert error["code"] == "database_not_empty" and "users" in error["details"]["collections"]


async def test_the_newest_backups_are_kept_and_abandoned_ones_deleted(database, clients, settings):
    await factories.user()
    keep_two = BackupSettings(keep=2, timeout_s=3600)
    # A crashed run long ago, and one that may still be running: neither has a manifest.
    for stamp in (T0 + timedelta(hours=1), T0 + timedelta(days=2, minutes=-10)):
        await clients.storage.put_bytes(
            keys.backup_key(keys.timestamp_token(stamp), "users.bson.gz"), b"x", "x"
        )

    names, pruned = [], []
    for day in range(3):
        done = await service.back_up(database, clients.storage, keep_two, now=T0 + timedelta(days=day))
        names.append(done.manifest.name)
        pruned.append(done.pruned)

    assert pruned == [[], [keys.timestamp_token(T0 + timedelta(hours=1))], [names[0]]]
    listed = {entry.name: entry.complete for entry in await service.list_backups(clients.storage)}
    assert listed == {
        names[1]: True,
        keys.timestamp_token(T0 + timedelta(days=2, minutes=-10)): False,
        names[2]: True,
    }


async def test_a_backup_without_its_manifest_cannot_be_restored(database, clients, settings):
    await factories.user()
    names = []
    for minute in range(3):
        done = await service.back_up(
            database, clients.storage, settings.backup, now=T0 + timedelta(minutes=minute)
        )
        names.append(done.manifest.name)
    await clients.storage.delete([keys.backup_key(names[2], MANIFEST_FILE)])  # the newest never finished
    await empty_every_collection(database)

    incomplete = await refusal(service.restore(database, clients.storage, names[2]))
    assert incomplete.code == "backup_incomplete"
    ambiguous = await refusal(service.restore(database, clients.storage, names[0][:10]))  # all three
    assert ambiguous.code == "backup_ambiguous" and ambiguous.details["backups"] == names[:2]

    latest = await service.restore(database, clients.storage, "latest")

    assert latest.manifest.name == names[1]  # the newest complete one
    assert len((await fingerprints(database))["users"]) == 1


async def test_a_failed_backup_deletes_what_it_uploaded(database, clients, settings, monkeypatch):
    await seed(settings, clients)
    upload = clients.storage.upload_file
    uploaded = []

    async def upload_then_fail(path, key, *args, **kwargs):
        if len(uploaded) == 3:
            raise ConnectionResetError("the store went away")
        uploaded.append(key)
        return await upload(path, key, *args, **kwargs)

    monkeypatch.setattr(clients.storage, "upload_file", upload_then_fail)

    with pytest.raises(ConnectionResetError):
        await service.back_up(database, clients.storage, settings.backup)

    assert len(uploaded) == 3
    assert [item.key async for item in clients.storage.list(keys.BACKUPS_PREFIX)] == []


async def test_the_backup_job_backs_up_and_answers_no_private_data(database, clients, settings):
    await factories.user()
    await clients.redis.enqueue_job("system.backup", _job_id="backup-now")

    assert (await drain_jobs(clients, settings)).jobs_complete == 1

    entries = await service.list_backups(clients.storage)
    assert len(entries) == 1 and entries[0].complete
    # Run again (arq runs a job at least once): a second backup, the first untouched.
    result = await jobs.backup({"clients": clients, "settings": settings, "job_try": 1})
    assert set(result) == {"backup", "collections", "pruned"} and result["pruned"] == []
    assert len(await service.list_backups(clients.storage)) == 2


async def test_a_large_archive_is_uploaded_in_parts(client, clients, tmp_path):
    path = tmp_path / "large.bin"
    data = os.urandom(11 * 1024 * 1024)
    path.write_bytes(data)
    key = keys.backup_key(keys.timestamp_token(utcnow()), "large.bson.gz")

    await clients.storage.upload_file(path, key, "application/gzip", part_size=5 * 1024 * 1024)

    stored = await clients.storage.head(key)
    assert stored.size == len(data) and stored.etag.strip('"').endswith("-3")  # three parts
    assert await clients.storage.download_file(key, tmp_path / "back.bin") == hashlib.sha256(data).hexdigest()


def test_a_manifest_of_another_format_is_refused():
    with pytest.raises(ArchiveError):
        decode_manifest(b'{"format": "other/1", "collections": []}')
    with pytest.raises(ArchiveError):
        decode_manifest(b"not json")


@pytest.mark.parametrize(
    ("entry", "said"),
    [
        ({"options": {"capped": True, "size": 4096}}, "options restore does not apply"),
        ({"indexes": [{"key": {"createdAt": 1}, "name": "t", "expireAfterSeconds": 0}]}, "under an hour"),
        (
            {"indexes": [{"key": {"a": 1}, "name": "a", "storageEngine": {}}]},
            "options restore does not apply",
        ),
        ({"name": "system.users"}, "a collection restore does not write"),
    ],
    ids=["capped", "ttl-zero", "engine", "system"],
)
def test_a_manifest_asking_for_more_than_this_platforms_collections_is_refused(entry, said):
    """The bucket is not trusted with the database's shape: a forged manifest cannot make a collection
    capped, a TTL that empties it, or write a system collection."""
    collection = {
        "name": "users",
        "file": "users.bson.gz",
        "count": 0,
        "bytes": 0,
        "sha256": "0" * 64,
        **entry,
    }
    body = {
        "format": FORMAT,
        "name": "x",
        "database": "d",
        "started_at": "",
        "finished_at": "",
        "collections": [collection],
    }
    with pytest.raises(ArchiveError, match=said):
        decode_manifest(json.dumps(body).encode())
