"""The real-time stream: `GET /api/stream` as a WebSocket, and the same messages as Server-Sent Events at
`GET /api/stream/sse`. Public: every event is about public resources.

Subscribe with `?topics=sales,asset:42`; resume with `since` (either transport) or `Last-Event-ID`
(SSE, which browsers send by themselves on reconnecting). Every message is
`{"id", "event", "topic", "payload", "sentAt"}` (app/lib/events.py); on SSE its `id` is the SSE id and
its `event` the SSE event name. Notices (`subscribed`, `stream_gap`, `events_dropped`, `error`) have
no id, so they never move a client's resume point.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from litestar import Controller, Request, WebSocket, get, websocket
from litestar.channels import ChannelsPlugin
from litestar.di import NamedDependency
from litestar.params import HeaderParameter, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from app.lib import stream
from app.lib.deps import ClientsDep, SettingsDep
from app.lib.errors import AppError
from app.lib.events import EVENT_ID_PATTERN, TOPICS_PATTERN, parse_topics
from app.lib.openapi import raises
from app.lib.params import PUBLIC

# WebSocket close codes: the request was refused (1008, policy), or the server is full for now (1013).
POLICY, TRY_LATER = 1008, 1013
# How long a close may wait to be sent: a client that stopped reading may never take it.
CLOSE_TIMEOUT_S = 2.0
RETRY_MS = 3000  # how soon an SSE client reconnects after a drop
STREAM_RATE_LIMIT = "stream"  # connections opened per address and minute (AUTH_RATE_LIMITS)
ChannelsDep = NamedDependency[ChannelsPlugin]  # the plugin provides it as `channels`

TopicsParam = Annotated[
    str,
    QueryParameter(
        description="comma-separated: sales, listings, transfers, prices, oracle, media, asset:{tokenId}",
        schema_extra={"pattern": TOPICS_PATTERN, "maxLength": 2000},
    ),
]
SinceParam = Annotated[
    str | None,
    QueryParameter(
        description="resume after this event id (the `id` of the last message received)",
        schema_extra={"pattern": EVENT_ID_PATTERN},
    ),
]
LastEventIdHeader = Annotated[
    str | None,
    HeaderParameter(
        name="Last-Event-ID",
        required=False,
        description="resume after this event id (SSE clients send it when they reconnect)",
        schema_extra={"pattern": EVENT_ID_PATTERN},
    ),
]


async def _until_closed(socket: WebSocket) -> None:
    """Wait for the client to leave; one that sends anything is closed (the stream takes no messages)."""
    message = await socket.receive()
    if message["type"] != "websocket.disconnect":
        await _close(socket, POLICY, "no_messages_accepted")


async def _close(socket: WebSocket, code: int, reason: str) -> None:
    # The client may be gone already, or read nothing, so that even the close frame cannot be sent.
    with contextlib.suppress(Exception), anyio.move_on_after(CLOSE_TIMEOUT_S):
        await socket.close(code=code, reason=reason)


def _client_address(connection) -> str:
    return connection.client.host if connection.client else "unknown"


class StreamController(Controller):
    path = "/api/stream"
    tags = ["stream"]

    @websocket("/", opt={**PUBLIC, "rate_limit": STREAM_RATE_LIMIT})
    async def websocket_stream(self, socket: WebSocket, channels: ChannelsDep, settings: SettingsDep) -> None:
        """The stream as a WebSocket: JSON text messages; query `topics`, and `since` to resume."""
        redis = socket.app.state.clients.redis
        await socket.accept()
        slot = stream.Slot(redis, _client_address(socket), settings)
        try:
            topics = parse_topics(socket.query_params.get("topics"), settings.stream.max_topics)
            since = stream.resume_point(socket.query_params.get("since"))
            await stream.check_not_ahead(redis, since)
            await slot.take()
        except AppError as exc:
            error = stream.notice("error", {"code": exc.code, "message": exc.message})
            await socket.send_text(error.text)
            code = TRY_LATER if isinstance(exc, stream.TooManyConnections) else POLICY
            await socket.close(code=code, reason=exc.code)
            return

        async def pump() -> None:
            async for message in stream.messages(channels, redis, settings, topics, since, slot):
                if message is not stream.HEARTBEAT:  # WebSocket keeps itself alive with pings
                    await socket.send_text(message.text)

        # The stream cancels the pump of a client that stopped reading (a send blocked past
        # STREAM_SEND_DEADLINE_S, app/lib/stream.py); the client is then told why.
        pumping = asyncio.create_task(pump())
        tasks = [pumping, asyncio.create_task(_until_closed(socket))]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if pumping.cancelled():
                await slot.release()  # first: the close itself may wait on the client
                await _close(socket, POLICY, "too_slow")
        finally:
            for task in tasks:
                task.cancel()
            with anyio.CancelScope(shield=True):
                await asyncio.gather(*tasks, return_exceptions=True)
                await slot.release()

    @get(
        "/sse",
        opt={
            **PUBLIC,
            "rate_limit": STREAM_RATE_LIMIT,
            **raises({400: ["invalid_topics", "invalid_event_id"], 429: ["too_many_connections"]}),
        },
        media_type="text/event-stream",
        response_description="SSE: each `data` is a message {id, event, topic, payload, sentAt}",
    )
    async def stream_sse(
        self,
        request: Request,
        channels: ChannelsDep,
        clients: ClientsDep,
        settings: SettingsDep,
        topics: TopicsParam,
        since: SinceParam = None,
        last_event_id: LastEventIdHeader = None,
    ) -> ServerSentEvent:
        """The stream as Server-Sent Events: `event` is the event's name, `id` its id, `data` the whole
        message; a comment every STREAM_HEARTBEAT_S keeps idle connections open. 429
        `too_many_connections` past STREAM_MAX_CONNECTIONS_PER_IP open streams from one address."""
        chosen = parse_topics(topics, settings.stream.max_topics)
        # A reconnecting browser sends the URL it first opened (with its `since`) and the id it got
        # last: the later one wins.
        resume = stream.resume_point(last_event_id, since)
        await stream.check_not_ahead(clients.redis, resume)
        slot = stream.Slot(clients.redis, _client_address(request), settings)
        await slot.take()
        messages = stream.messages(channels, clients.redis, settings, chosen, resume, slot)
        return ServerSentEvent(
            _as_sse(messages, slot),
            retry_duration=RETRY_MS,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )


async def _as_sse(
    messages: AsyncIterator[stream.Outgoing], slot: stream.Slot
) -> AsyncIterator[ServerSentEventMessage]:
    try:
        async for message in messages:
            if message is stream.HEARTBEAT:
                yield ServerSentEventMessage(comment="keep-alive")
            else:
                yield ServerSentEventMessage(data=message.text, event=message.event, id=message.id)
    finally:
        # A client that left cancels this (an anyio cancel scope): the clean-up must not be cancelled
        # with it, or the slot stays taken until it lapses.
        with anyio.CancelScope(shield=True):
            await messages.aclose()
            await slot.release()
