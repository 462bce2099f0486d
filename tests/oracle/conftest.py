"""Data-source tests: real HTTP servers on 127.0.0.1 that serve CSV, JSON Lines and JSON pages, and the
settings that let the platform reach them (OUTBOUND_ALLOW_PRIVATE, as development sets it)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from app.config import Settings
from tests import factories


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str | None] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass
class Seen:
    path: str
    headers: dict[str, str]


Route = Reply | Callable[[str], Reply]  # a fixed reply, or one made from the request's path and query


class SourceServer:
    """Two HTTP servers (two origins) on 127.0.0.1 sharing one table of routes, recording every request."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.seen: list[Seen] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.seen.append(Seen(self.path, {k.lower(): v for k, v in self.headers.items()}))
                route = server.routes.get(urlsplit(self.path).path)
                reply = (route(self.path) if callable(route) else route) if route else Reply(404, b"no route")
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                self.send_response(reply.status)
                headers = {"Content-Length": str(len(reply.body)), **reply.headers}
                for name, value in headers.items():
                    if value is not None:  # None: leave the header out (a body that ends with the connection)
                        self.send_header(name, value)
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # a client that gave up
                    self.wfile.write(reply.body)

            def log_message(self, *args: object) -> None:
                pass

        self._servers = [ThreadingHTTPServer(("127.0.0.1", 0), Handler) for _ in range(2)]
        for httpd in self._servers:
            httpd.daemon_threads = True
            threading.Thread(target=httpd.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return self._servers[0].server_address[1]

    @property
    def other_port(self) -> int:
        return self._servers[1].server_address[1]

    def url(self, path: str, *, other: bool = False) -> str:
        return f"http://127.0.0.1:{self.other_port if other else self.port}{path}"

    def reset(self) -> None:
        self.routes.clear()
        self.seen.clear()

    def close(self) -> None:
        for httpd in self._servers:
            httpd.shutdown()
            httpd.server_close()


@pytest.fixture(scope="session")
def _source_server() -> Iterator[SourceServer]:
    server = SourceServer()
    yield server
    server.close()


@pytest.fixture
def source_server(_source_server: SourceServer) -> SourceServer:
    _source_server.reset()
    return _source_server


@pytest.fixture(scope="session")
def local_settings(settings: Settings) -> Settings:
    """The session's settings with OUTBOUND_ALLOW_PRIVATE=true: the worker may reach 127.0.0.1."""
    return settings.model_copy(
        update={"outbound": settings.outbound.model_copy(update={"allow_private": True})}
    )


@pytest.fixture
async def admin(client, settings) -> factories.Login:
    return await factories.login(settings, roles=("user", "admin"))
