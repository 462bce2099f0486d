"""The app on an event loop of its own, in a thread of its own, callable from any other thread or loop.

The app's MongoDB (PyMongo async) and Redis clients belong to the loop that ran its lifespan. Schemathesis
calls an ASGI app from its own loop (an anyio portal thread shared by the whole process), and its tests
are sync functions that pytest-asyncio leaves alone, so neither the tests' loop nor the portal's can
host the app. `AppThread` runs the lifespan, every request and any setup coroutine (`run`) on one loop
that lives as long as the app; `BRIDGE` is the ASGI entry point that carries each call over to it (one
for the process, as Schemathesis keeps the ASGI apps it has seen for the process's life).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

from litestar import Litestar

T = TypeVar("T")
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

START_TIMEOUT_S = 60


class AppThread:
    """A Litestar app, its lifespan entered once, on a dedicated event loop in a background thread."""

    def __init__(self, app: Litestar, *, name: str = "contract-app") -> None:
        self.app: Litestar | None = app
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._stop: asyncio.Event | None = None
        self._served: Future[None] | None = None

    def start(self) -> AppThread:
        """Start the loop and the app's lifespan; raise the start-up error, if any, here."""
        self._thread.start()
        started: Future[None] = Future()

        def failed_to_start(served: Future[None]) -> None:
            if not started.done():
                started.set_exception(
                    served.exception() or RuntimeError("the app's lifespan ended at start-up")
                )

        self._served = asyncio.run_coroutine_threadsafe(self._serve(started), self.loop)
        # Whichever comes first: the lifespan is up, or it ended on the way (and `_served` holds why).
        self._served.add_done_callback(failed_to_start)
        try:
            started.result(timeout=START_TIMEOUT_S)
        except BaseException:
            self._close_loop()
            raise
        return self

    async def _serve(self, started: Future[None]) -> None:
        # Entered and left in one task, as anyio's cancel scopes require.
        assert self.app is not None
        self._stop = asyncio.Event()
        async with self.app.lifespan():
            started.set_result(None)
            await self._stop.wait()

    def run(self, coroutine: Coroutine[Any, Any, T], *, timeout: float | None = 120) -> T:
        """Run `coroutine` on the app's loop (where its clients and Beanie's bindings work) and wait."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        """Leave the lifespan (closing the clients), then end the loop and the thread."""
        if self._served is not None and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
            self._served.result(timeout=START_TIMEOUT_S)
        self._close_loop()
        self.app = None

    def _close_loop(self) -> None:
        async def cancel_leftovers() -> None:
            # Background tasks the app started (e.g. lastUsed writes) must not outlive their clients.
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.loop.shutdown_asyncgens()

        if self._thread.is_alive():
            self.run(cancel_leftovers(), timeout=START_TIMEOUT_S)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=START_TIMEOUT_S)
        self.loop.close()


class ASGIBridge:
    """An ASGI app that forwards each HTTP request to the loop of the AppThread attached to it.

    The request runs there as a task; `receive` and `send` are the caller's, so each message is carried
    back to the caller's loop and awaited there. The lifespan is declined (returning before the first
    message is how an ASGI app says it has none): the real one runs on the app's own loop.
    """

    def __init__(self) -> None:
        self._target: AppThread | None = None

    def attach(self, target: AppThread) -> None:
        self._target = target

    def detach(self) -> None:
        self._target = None

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return
        target = self._target
        if target is None or target.app is None:
            raise RuntimeError("no app is running behind the bridge (the contract_app fixture starts one)")
        caller = asyncio.get_running_loop()

        def on_caller(function: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
            async def call(*args: Any) -> Any:
                return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(function(*args), caller))

            return call

        request = asyncio.run_coroutine_threadsafe(
            target.app(scope, on_caller(receive), on_caller(send)), target.loop
        )
        # A cancelled caller (a read timeout) cancels the request on the app's loop too.
        await asyncio.wrap_future(request)


BRIDGE = ASGIBridge()
