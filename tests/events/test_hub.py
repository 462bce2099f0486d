"""The event log in Redis: one id per event key, the same id in every topic, resumption, and gaps."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from app.lib import eventlog
from app.lib.events import event_id_key
from tests.events.support import publish

T = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


async def _publish(redis, key: str, topics: list[str], *, history: int = 100, **payload) -> str:
    return await publish(redis, key, topics, history=history, sent_at=T, **{"tokenId": 1, **payload})


async def test_an_event_is_published_once_and_read_as_one_message_per_topic(client, clients):
    first = await _publish(clients.redis, "k1", ["sales", "asset:1"])
    again = await _publish(clients.redis, "k1", ["sales", "asset:1"])  # a dispatcher that crashed
    second = await _publish(clients.redis, "k2", ["sales"])

    assert again == first
    assert event_id_key(second) > event_id_key(first)
    assert await clients.redis.xlen(eventlog.LOG_KEY) == 2
    [(raw_id, fields)] = await clients.redis.xrange(eventlog.LOG_KEY, count=1)
    found = eventlog.entry_messages(raw_id.decode(), fields[b"data"], {"asset:1", "sales", "listings"})
    assert [topic for topic, _ in found] == ["sales", "asset:1"]
    for topic, body in found:
        assert json.loads(body) == {
            "id": first,
            "event": "item_sold",
            "topic": topic,
            "payload": {"tokenId": 1},
            "sentAt": "2026-12-05T12:00:00Z",
        }
    assert eventlog.entry_messages(first, fields[b"data"], {"listings"}) == []


async def test_replay_gives_the_subscribed_topics_after_the_resume_point_a_page_at_a_time(client, clients):
    ids = [await _publish(clients.redis, f"k{i}", ["sales" if i % 2 else "listings"], n=i) for i in range(6)]

    first = await eventlog.replay_page(clients.redis, ids[1], ["sales"], count=3)
    rest = await eventlog.replay_page(clients.redis, first.through, ["sales"], count=3)

    assert [m["id"] for m in first.messages] == [ids[3]]
    assert first.through == ids[4] and first.more is True  # listings too are read past
    assert [(m["id"], m["payload"]["n"], m["topic"]) for m in rest.messages] == [(ids[5], 5, "sales")]
    assert rest.through == ids[5] and rest.more is False
    assert await eventlog.gap(clients.redis, ids[1]) is None


async def test_a_resume_point_older_than_the_kept_history_is_a_gap_and_one_within_it_is_not(client, clients):
    ids = [await _publish(clients.redis, f"k{i}", ["sales"], history=5, n=i) for i in range(8)]
    # kept: the last five (ids[3:]); trimmed: ids[0..2]

    assert await eventlog.gap(clients.redis, ids[1]) == ids[3]  # ids[2] was lost: told, with the oldest kept
    assert await eventlog.gap(clients.redis, ids[2]) is None  # ids[2] was received: nothing after it was lost
    page = await eventlog.replay_page(clients.redis, ids[1], ["sales"])
    assert [m["id"] for m in page.messages] == ids[3:]


async def test_an_event_payload_json_has_no_type_for_is_sent_as_text(client, clients):
    from bson import Decimal128

    event_id = await _publish(clients.redis, "odd", ["sales"], wei=Decimal128("12"), at=T)

    page = await eventlog.replay_page(clients.redis, "0-0", ["sales"])
    assert page.messages[0]["id"] == event_id
    assert page.messages[0]["payload"] == {"tokenId": 1, "wei": "12", "at": "2026-12-05 12:00:00+00:00"}
