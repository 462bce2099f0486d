"""MongoDB: one AsyncMongoClient per process, Beanie initialised once over every document."""

from __future__ import annotations

from beanie import init_beanie
from pymongo import AsyncMongoClient

from app.assets.documents import Asset, PriceHistory
from app.auth.documents import Session, User
from app.config import Settings
from app.market.documents import Transaction
from app.oracle.documents import AIOracleData, DataSource
from app.system.documents import AuditLog

DOCUMENTS = [User, Session, Asset, PriceHistory, Transaction, AIOracleData, DataSource, AuditLog]


def make_client(settings: Settings) -> AsyncMongoClient:
    return AsyncMongoClient(
        settings.mongodb.url,
        tz_aware=True,
        serverSelectionTimeoutMS=settings.mongodb.server_selection_timeout_ms,
        appname="dynamicvault",
    )


async def init_db(client: AsyncMongoClient, settings: Settings) -> None:
    """Bind the documents to the database and create their indexes."""
    await init_beanie(database=client[settings.mongodb.database], document_models=DOCUMENTS)
