"""The stream as clients meet it: two api processes share one Redis, so an event published through one
reaches WebSocket and SSE subscribers of both; resumption, gaps, refusals and the per-address limit."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets

from tests import factories
from tests.events.support import api_process, next_sse, publish, sse_events, ws_connect, ws_messages

LIMIT = 2  # stream connections per address on process A


@pytest.fixture(scope="module")
def processes(settings):
    limited = {"STREAM_MAX_CONNECTIONS_PER_IP": str(LIMIT), "STREAM_HEARTBEAT_S": "1"}
    with api_process(settings, **limited) as a, api_process(settings) as b:
        yield a, b


async def _patch(base: str, headers: dict, version: int, description: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        body = {"version": version, "metadata": {"condition": description}}
        return await http.patch("/api/assets/42/metadata", json=body, headers=headers)


async def test_an_event_published_through_one_process_reaches_subscribers_of_both(
    client, settings, processes
):
    a, b = processes
    owner = await factories.owner_with_asset(settings, token_id=42)
    async with ws_connect(b, "topics=sales,asset:42") as socket, httpx.AsyncClient(timeout=30) as http:
        assert (await ws_messages(socket, 1))[0]["event"] == "subscribed"
        async with http.stream("GET", f"{a}/api/stream/sse", params={"topics": "asset:42"}) as sse:
            assert sse.status_code == 200
            assert sse.headers["content-type"].startswith("text/event-stream")
            events = sse_events(sse.aiter_lines())
            assert (await next_sse(events))["data"]["event"] == "subscribed"

            response = await _patch(a, owner.headers, 0, "restored in 2026")
            assert response.status_code == 200, response.text

            [over_ws] = await ws_messages(socket, 1)
            over_sse = await next_sse(events)

    assert over_ws["event"] == "item_metadata_updated"
    assert over_ws["topic"] == "asset:42"
    assert over_ws["payload"] == {"tokenId": 42, "version": 1, "changed": ["condition"]}
    assert set(over_ws) == {"id", "event", "topic", "payload", "sentAt"}
    assert over_sse["id"] == over_ws["id"] and over_sse["event"] == "item_metadata_updated"
    assert over_sse["data"] == over_ws


async def test_a_client_resumes_after_the_last_event_it_received(client, settings, processes):
    a, b = processes
    owner = await factories.owner_with_asset(settings, token_id=42)
    async with ws_connect(b, "topics=asset:42") as socket:
        await ws_messages(socket, 1)
        assert (await _patch(a, owner.headers, 0, "first")).status_code == 200
        [first] = await ws_messages(socket, 1)
    # offline while two more changes happen
    assert (await _patch(a, owner.headers, 1, "second")).status_code == 200
    assert (await _patch(a, owner.headers, 2, "third")).status_code == 200

    async with httpx.AsyncClient(timeout=30) as http:
        headers = {"Last-Event-ID": first["id"]}
        async with http.stream("GET", f"{b}/api/stream/sse?topics=asset:42", headers=headers) as sse:
            events = sse_events(sse.aiter_lines())
            subscribed = await next_sse(events)
            missed = [await next_sse(events), await next_sse(events)]
    async with ws_connect(a, f"topics=asset:42&since={first['id']}") as socket:
        _, *over_ws = await ws_messages(socket, 3)

    assert subscribed["data"]["payload"]["since"] == first["id"]
    assert [m["data"]["payload"]["version"] for m in missed] == [2, 3]
    assert [m["payload"]["version"] for m in over_ws] == [2, 3]
    assert [m["id"] for m in over_ws] == [m["id"] for m in missed]


async def test_a_resume_point_older_than_the_history_is_told_as_a_gap(client, clients, processes):
    a, _ = processes
    history = 100
    ids = [
        await publish(clients.redis, f"old{i}", ["sales"], history=history, n=i) for i in range(history + 2)
    ]
    async with ws_connect(a, f"topics=sales&since={ids[0]}") as socket:
        subscribed, gap, first = await ws_messages(socket, 3)

    assert subscribed["event"] == "subscribed"
    assert gap["event"] == "stream_gap" and gap["id"] is None
    assert gap["payload"] == {"since": ids[0], "oldestKept": ids[2]}
    assert first["id"] == ids[2]  # then everything that was kept


async def test_refusals_are_clear_and_the_address_limit_holds_over_both_transports(client, processes):
    a, _ = processes
    async with httpx.AsyncClient(base_url=a, timeout=30) as http:
        bad = await http.get("/api/stream/sse", params={"topics": "sales,gossip"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_topics"
        bad = await http.get("/api/stream/sse", params={"topics": "sales"}, headers={"Last-Event-ID": "x"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_event_id"
        async with ws_connect(a, "topics=gossip") as socket:
            [error] = await ws_messages(socket, 1)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await socket.recv()
        assert error["event"] == "error" and error["payload"]["code"] == "invalid_topics"
        assert closed.value.rcvd.code == 1008

        async with (
            http.stream("GET", "/api/stream/sse?topics=sales") as one,
            ws_connect(a, "topics=sales") as two,
        ):
            assert one.status_code == 200
            await ws_messages(two, 1)
            over = await http.get("/api/stream/sse", params={"topics": "sales"})
            assert over.status_code == 429 and over.json()["error"]["code"] == "too_many_connections"
            async with ws_connect(a, "topics=sales") as third:
                [error] = await ws_messages(third, 1)
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await third.recv()
            assert error["payload"]["code"] == "too_many_connections"
            assert closed.value.rcvd.code == 1013
        # closed connections give their slots back
        async with http.stream("GET", "/api/stream/sse?topics=sales") as again:
            assert again.status_code == 200


async def test_closed_sse_streams_give_their_slots_back_at_once(client, processes):
    a, _ = processes
    async with httpx.AsyncClient(base_url=a, timeout=30) as http:
        for _ in range(LIMIT + 1):  # more than the limit, one after another, each closed by the client
            async with http.stream("GET", "/api/stream/sse?topics=sales") as sse:
                assert sse.status_code == 200
                await next_sse(sse_events(sse.aiter_lines()))
        async with (
            http.stream("GET", "/api/stream/sse?topics=sales") as one,
            http.stream("GET", "/api/stream/sse?topics=listings") as two,
        ):
            assert (one.status_code, two.status_code) == (200, 200)


async def test_a_reconnecting_sse_client_resumes_from_its_last_event_id_not_its_first_url(
    client, settings, processes
):
    a, _ = processes
    owner = await factories.owner_with_asset(settings, token_id=42)
    ids = []
    for version, condition in enumerate(["one", "two", "three"]):
        assert (await _patch(a, owner.headers, version, condition)).status_code == 200
    async with ws_connect(a, "topics=asset:42&since=0-0") as socket:
        ids = [m["id"] for m in (await ws_messages(socket, 4))[1:]]
    async with httpx.AsyncClient(base_url=a, timeout=30) as http:
        url = f"/api/stream/sse?topics=asset:42&since={ids[0]}"  # the URL it first opened
        async with http.stream("GET", url, headers={"Last-Event-ID": ids[1]}) as sse:
            events = sse_events(sse.aiter_lines())
            await next_sse(events)
            resumed = await next_sse(events)

    assert resumed["id"] == ids[2]


@pytest.mark.parametrize(
    "since",
    ["18446744073709551616-0", "0-18446744073709551615", "99999999999999999999-0", "9999999999999-0"],
)
async def test_resume_points_redis_cannot_hold_or_not_yet_issued_are_refused(
    client, clients, processes, since
):
    a, _ = processes
    await publish(clients.redis, "k", ["sales"], history=100)
    async with httpx.AsyncClient(base_url=a, timeout=30) as http:
        refused = await http.get("/api/stream/sse", params={"topics": "sales", "since": since})
    async with ws_connect(a, f"topics=sales&since={since}") as socket:
        [error] = await ws_messages(socket, 1)

    assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_event_id"
    assert error["event"] == "error" and error["payload"]["code"] == "invalid_event_id"


async def test_a_websocket_client_that_sends_is_closed(client, processes):
    a, _ = processes
    async with ws_connect(a, "topics=sales") as socket:
        await ws_messages(socket, 1)
        await socket.send("x" * 100_000)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            async with asyncio.timeout(10):
                while True:
                    await socket.recv()
    assert closed.value.rcvd.code == 1008


async def test_a_refused_handshake_answers_its_own_status_and_error_not_a_bare_403(client, settings):
    strict = {"AUTH_RATE_LIMITS": '{"stream": {"per_ip": 1, "per_principal": 1, "window_s": 60}}'}
    with api_process(settings, **strict) as base:
        with pytest.raises(websockets.InvalidStatus) as garbage:
            async with ws_connect(base, "topics=sales", headers={"Authorization": "Bearer not-a-token"}):
                pass
        answer = garbage.value.response
        assert answer.status_code == 401
        assert json.loads(answer.body)["error"]["code"] == "invalid_token"
        assert len(answer.headers["X-Request-ID"]) == 32  # a refusal can be traced like any answer

        refused, accepted = None, 0
        for _ in range(3):  # the window may already hold this address's earlier connections
            try:
                async with ws_connect(base, "topics=sales") as socket:
                    await ws_messages(socket, 1)
                    accepted += 1
            except websockets.InvalidStatus as exc:
                refused = exc.response
                break
        assert refused is not None and refused.status_code == 429
        assert int(refused.headers["Retry-After"]) >= 1
        assert json.loads(refused.body)["error"]["code"] == "rate_limited"
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            metrics = (await http.get("/metrics")).text
    counted = {
        status: sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("dynamicvault_requests_total")
            and 'path="/api/stream"' in line
            and f'status_code="{status}"' in line
        )
        for status in (200, 401, 429)
    }
    assert counted == {200: accepted, 401: 1, 429: 1}, counted


async def test_a_websocket_client_that_stops_reading_gives_its_slot_back_and_is_told_too_slow(
    client, clients, settings
):
    quick = {"STREAM_HEARTBEAT_S": "0.5", "STREAM_SEND_DEADLINE_S": "1"}
    with api_process(settings, **quick) as base:
        url = base.replace("http", "ws", 1) + "/api/stream?topics=sales"
        # The client reads nothing more once one message waits (and takes no compression, which
        # would shrink the padding to nothing): the server's sends soon block.
        connect = websockets.connect(url, open_timeout=10, close_timeout=1, max_queue=1, compression=None)
        async with connect as socket, httpx.AsyncClient(base_url=base, timeout=10) as http:
            assert await _open_streams(http) == 1
            for n in range(300):  # ~18 MB: more than the socket buffers between them hold
                await publish(clients.redis, f"too-slow-{n}", ["sales"], n=n, pad="x" * 60_000)
            # Still not reading: the connection ends on the server and gives its slot back, though
            # its close frame cannot be sent yet.
            async with asyncio.timeout(20):
                while await _open_streams(http) != 0:
                    await asyncio.sleep(0.25)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                async with asyncio.timeout(30):
                    while True:
                        await socket.recv()
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "too_slow")


async def _open_streams(http: httpx.AsyncClient) -> float:
    response = await http.get("/metrics")
    assert response.status_code == 200, response.text
    [line] = [
        line for line in response.text.splitlines() if line.startswith("dynamicvault_stream_connections ")
    ]
    return float(line.split()[1])
