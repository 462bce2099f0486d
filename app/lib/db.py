"""MongoDB: one AsyncMongoClient per process, and Beanie initialised once over the documents it is given.

The entry points (app/main.py for the api, workers/settings.py for the worker) name the documents.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

from beanie import Document, init_beanie
from pymongo import AsyncMongoClient

from app.config import Settings

T = TypeVar("T")

# The values one `$in` filter names. A server may test a document against each value of a `$in` in turn
# (SecantusDB does), so a `$in` of n tokens that matches n documents costs n² there: 10,000 assets read
# by one such query took 70 s, and 0.3 s a slice at a time. A slice keeps each query linear and each
# round trip well filled.
IN_SLICE = 200


def make_client(settings: Settings) -> AsyncMongoClient:
    return AsyncMongoClient(
        settings.mongodb.url,
        tz_aware=True,
        serverSelectionTimeoutMS=settings.mongodb.server_selection_timeout_ms,
        appname="dynamicvault",
    )


async def init_db(client: AsyncMongoClient, settings: Settings, documents: Sequence[type[Document]]) -> None:
    """Bind the documents to the database and create their indexes; drop the indexes a document names
    as retired (`Settings.retired_indexes`: one an older version made, which would now refuse writes)."""
    database = client[settings.mongodb.database]
    for document in documents:
        retired = getattr(document.Settings, "retired_indexes", ())
        if not retired:
            continue
        collection = database[document.Settings.name]
        present = await collection.index_information()
        for name in retired:
            if name in present:
                await collection.drop_index(name)
    await init_beanie(database=database, document_models=list(documents))


def in_slices(values: Sequence[T], size: int = IN_SLICE) -> Iterator[list[T]]:
    """`values`, `size` at a time, for the `$in` of one query each (see IN_SLICE)."""
    for start in range(0, len(values), size):
        yield list(values[start : start + size])
