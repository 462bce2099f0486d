"""Real api processes (uvicorn) on the session's services, and clients of their stream."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import websockets

from app.config import Settings
from app.lib.embedded import ROOT, free_port
from tests.workers.support import worker_env


@contextmanager
def api_process(settings: Settings, **extra_env: str) -> Iterator[str]:
    """An api process (`uvicorn app.main:create_app`) on a free port; its base URL once it answers."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory", "--port", str(port)]
    env = worker_env(settings, AUTH_COOKIE_SECURE="false", **extra_env)
    process = subprocess.Popen(command, cwd=ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/api/system/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the api process on {port} did not start")
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def ws_messages(socket, count: int, timeout: float = 15) -> list[dict[str, Any]]:
    """The next `count` messages of a WebSocket, as JSON."""
    return [json.loads(await asyncio.wait_for(socket.recv(), timeout)) for _ in range(count)]


def ws_connect(base: str, query: str):
    return websockets.connect(base.replace("http", "ws", 1) + "/api/stream?" + query, open_timeout=10)


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
