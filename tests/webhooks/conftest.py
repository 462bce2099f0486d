"""Webhook tests: a real HTTP receiver on 127.0.0.1 that records what it is sent and answers as told, the
settings that let the platform reach it, and factories for subscriptions and events."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from app.config import Settings
from tests import factories

ROUTES = "/api/webhooks"


@dataclass
class Answer:
    status: int = 200
    body: bytes = b"ok"
    delay_s: float = 0.0


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """An HTTP server that takes POSTs: it answers from `answers` in turn (then `Answer()`), records each."""

    answers: list[Answer] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver.received.append(Received(self.path, headers, body, time.monotonic()))
                answer = receiver.answers.pop(0) if receiver.answers else Answer()
                if answer.delay_s:
                    time.sleep(answer.delay_s)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # a sender that gave up
                    self.send_response(answer.status)
                    self.send_header("Content-Length", str(len(answer.body)))
                    self.end_headers()
                    self.wfile.write(answer.body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def url(self, path: str = "/hooks") -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def reset(self) -> None:
        self.answers.clear()
        self.received.clear()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="session")
def _receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.close()


@pytest.fixture
def receiver(_receiver: Receiver) -> Receiver:
    _receiver.reset()
    return _receiver


@pytest.fixture
def local(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The session's settings (the app's own, so the API sees them too) with OUTBOUND_ALLOW_PRIVATE on and
    quick, small webhook numbers; put back after the test."""
    monkeypatch.setattr(settings.outbound, "allow_private", True)
    for name, value in {
        "timeout_s": 2.0,
        "backoff_base_s": 0.05,
        "backoff_max_s": 1.0,
        "max_attempts": 4,
        "disable_after_failures": 20,
    }.items():
        monkeypatch.setattr(settings.webhook, name, value)
    return settings


@pytest.fixture
async def owner(client, settings) -> factories.Login:
    return await factories.login(settings)


async def subscribe(client, login: factories.Login, url: str, topics: list[str], **body: Any) -> dict:
    """A subscription made over the API (201 expected): its answer, secret included."""
    response = await client.post(ROUTES, json={"url": url, "topics": topics, **body}, headers=login.headers)
    assert response.status_code == 201, response.text
    return response.json()


def event(n: int, topics: list[str], name: str = "item_sold", **payload: Any) -> dict[str, Any]:
    """A published event as the dispatcher hands it over."""
    return {
        "id": f"1733380000000-{n}",
        "key": f"test:{n}",
        "event": name,
        "topics": topics,
        "payload": payload or {"tokenId": 42, "price": "1.5"},
        "sentAt": datetime(2024, 12, 5, 6, 26, 40, tzinfo=UTC),
    }
