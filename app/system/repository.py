"""The database as a whole, for backups: its collections, their options and indexes, raw documents in and
out. Documents stay raw BSON (RawBSONDocument) both ways: never decoded, so never altered."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo.asynchronous.database import AsyncDatabase

_RAW = CodecOptions(document_class=RawBSONDocument)
_ID_INDEX = "_id_"


@dataclass(frozen=True)
class CollectionSpec:
    name: str
    options: dict[str, Any]  # what `create` needs to make it again (capped, validator, collation, ...)
    indexes: list[dict[str, Any]]  # listIndexes specs but the `_id` one, without `ns`


async def collection_names(database: AsyncDatabase) -> list[str]:
    """The database's collections (no views, none of MongoDB's own `system.*`), by name."""
    names = await database.list_collection_names(filter={"type": "collection"})
    return sorted(name for name in names if not name.startswith("system."))


async def collection_spec(database: AsyncDatabase, name: str) -> CollectionSpec:
    """A collection's options and index specifications, as the server states them."""
    options: dict[str, Any] = {}
    async for info in await database.list_collections(filter={"name": name}):
        options = dict(info.get("options") or {})
    indexes = []
    async for index in await database[name].list_indexes():
        if index["name"] != _ID_INDEX:
            indexes.append({key: value for key, value in index.items() if key != "ns"})
    return CollectionSpec(name=name, options=options, indexes=indexes)


async def raw_batches(database: AsyncDatabase, name: str, batch_size: int) -> AsyncIterator[list[bytes]]:
    """Every document of a collection, as BSON bytes, `batch_size` at a time (one round trip each)."""
    cursor = database[name].with_options(codec_options=_RAW).find({}, batch_size=batch_size)
    try:
        while batch := await cursor.to_list(batch_size):
            yield [document.raw for document in batch]
    finally:
        await cursor.close()


async def non_empty(database: AsyncDatabase) -> dict[str, int]:
    """The collections that hold documents, with about how many."""
    found = {}
    for name in await collection_names(database):
        # The estimate (collection metadata) first: a `find_one` scans the whole collection on some servers
        # (SecantusDB: 1 s per 30,000 documents), and is needed only to confirm a zero.
        estimate = await database[name].estimated_document_count()
        if estimate or await database[name].find_one({}, projection={"_id": 1}) is not None:
            found[name] = max(estimate, 1)
    return found


async def recreate(database: AsyncDatabase, name: str, options: dict[str, Any]) -> None:
    """Drop a collection (its documents and indexes) and create it empty with `options`."""
    await database.drop_collection(name)
    await database.command("create", name, **options)


async def insert_raw(database: AsyncDatabase, name: str, documents: list[RawBSONDocument]) -> int:
    """Insert documents as they are, unordered (one bad document stops none of the others); a refusal
    raises BulkWriteError. Returns how many were inserted (PyMongo lists no ids for raw documents)."""
    await database[name].insert_many(documents, ordered=False)
    return len(documents)


async def create_indexes(database: AsyncDatabase, name: str, specs: list[dict[str, Any]]) -> None:
    """Create indexes from their listIndexes specifications as they are (name, key, every option)."""
    if specs:
        await database.command("createIndexes", name, indexes=specs)


async def count(database: AsyncDatabase, name: str) -> int:
    return await database[name].count_documents({})
