"""Real api processes (uvicorn) on the session's services, and clients of their stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import websockets

from app.lib import eventlog
from app.oracle import rounds
from scripts.benchkit import api_process  # noqa: F401 - the tests import it from here
from tests.media import support as media
from workers.burst import drain_jobs


async def publish(
    redis, key: str, topics: list[str], *, history: int = 1000, sent_at: datetime | None = None, **payload
) -> str:
    """An `item_sold` event put in the stream's log as the dispatcher puts it (once per key): its id."""
    published = await eventlog.publish(
        redis,
        key=key,
        event="item_sold",
        topics=topics,
        payload=payload,
        sent_at=sent_at or datetime.now(UTC),
        history=history,
    )
    return published.id


async def processed_photo(client, clients, settings, login, token_id: int = 7) -> None:
    """A photo uploaded to the owner's asset, and the media job that processes it run."""
    response = await client.post(
        f"/api/assets/{token_id}/images",
        files=[("files", ("primary.jpg", media.photo(), "image/jpeg"))],
        headers=login.headers,
    )
    assert response.status_code == 201, response.text
    await drain_jobs(clients, settings)


async def ws_messages(socket, count: int, timeout: float = 15) -> list[dict[str, Any]]:
    """The next `count` messages of a WebSocket, as JSON."""
    return [json.loads(await asyncio.wait_for(socket.recv(), timeout)) for _ in range(count)]


def ws_connect(base: str, query: str, headers: dict[str, str] | None = None):
    url = base.replace("http", "ws", 1) + "/api/stream?" + query
    return websockets.connect(url, open_timeout=10, additional_headers=headers)


async def sse_events(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, Any]]:
    """Server-sent events as {"id", "event", "data", "comment"} dicts, from a response's lines."""
    current: dict[str, Any] = {}
    async for line in lines:
        if line == "":
            if current:
                yield current
            current = {}
        elif line.startswith(":"):
            current.setdefault("comment", line[1:].strip())
        else:
            field, _, value = line.partition(":")
            current[field] = value.removeprefix(" ")


async def next_sse(events: AsyncIterator[dict[str, Any]], timeout: float = 15) -> dict[str, Any]:
    """The next event with data (comments and retry lines skipped), its data parsed."""
    while True:
        event = await asyncio.wait_for(anext(events), timeout)
        if "data" in event:
            return {**event, "data": json.loads(event["data"])}


async def open_round_past_its_window(settings, now: datetime, **fields) -> None:
    """Token 9's round "9-1", still open though its window ended a minute before `now`: the next
    `close_due` closes it (with no quorum: nobody took part)."""
    opened = now - timedelta(seconds=settings.oracle.round_window_s + 60)
    await rounds.round_repository.OracleRound.get_pymongo_collection().insert_one(
        {
            "key": "9-1",
            "tokenId": 9,
            **fields,
            "openedAt": opened,
            "closesAt": opened + timedelta(seconds=settings.oracle.round_window_s),
            "status": "open",
            "members": [],
            "participants": [],
            "gates": [],
            "submissions": 0,
            "createdAt": opened,
        }
    )
