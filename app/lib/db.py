"""MongoDB: one AsyncMongoClient per process, and Beanie initialised once over the documents it is given.

The entry points (app/main.py for the api, workers/settings.py for the worker) name the documents.
"""

from __future__ import annotations

from collections.abc import Sequence

from beanie import Document, init_beanie
from pymongo import AsyncMongoClient

from app.config import Settings


def make_client(settings: Settings) -> AsyncMongoClient:
    return AsyncMongoClient(
        settings.mongodb.url,
        tz_aware=True,
        serverSelectionTimeoutMS=settings.mongodb.server_selection_timeout_ms,
        appname="dynamicvault",
    )


async def init_db(client: AsyncMongoClient, settings: Settings, documents: Sequence[type[Document]]) -> None:
    """Bind the documents to the database and create their indexes."""
    await init_beanie(database=client[settings.mongodb.database], document_models=list(documents))
