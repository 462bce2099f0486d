"""Writes that land whether or not their client waits.

A database finishes a write once it is sent, so a job that fails or is cancelled while it holds a lease
could see a write of its own land after it let go, under the next holder, and undo that one's work. A
write (or a step of several) made through `landed` is waited for instead, at most `settle_s`, before the
failure or the cancel goes on; a database that slow is reported, not waited for without end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

import structlog

log = structlog.get_logger("lib.landing")
T = TypeVar("T")
SETTLE_S = 20.0  # how long a failed or cancelled holder waits, by default, for the write it had sent


async def landed(write: Awaitable[T], *, event: str, settle_s: float = SETTLE_S) -> T:
    """Await `write`; on a failure or a cancel, wait for it to end first (see `settled`)."""
    task = asyncio.ensure_future(write)
    try:
        return await asyncio.shield(task)
    except BaseException as raised:
        if await settled(task, settle_s=settle_s, event=event, raised=raised):
            raise asyncio.CancelledError from None
        raise


async def settled(
    write: asyncio.Future, *, event: str, settle_s: float = SETTLE_S, raised: BaseException | None = None
) -> bool:
    """Let a write already sent end, at most `settle_s` (past that, log `event` and give up on it).
    Whether a cancel came meanwhile: held back until the write ended, it is the caller's to raise. The
    write's own error, unless it is the one the caller is failing with (`raised`), is logged."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settle_s
    cancelled = False
    while not write.done() and loop.time() < deadline:
        try:
            await asyncio.wait([write], timeout=deadline - loop.time())
        except asyncio.CancelledError:
            cancelled = True
    if not write.done():
        log.error(event, seconds=settle_s)
        write.cancel()
    elif not write.cancelled() and (error := write.exception()) not in (None, raised):
        log.warning("lib.landing.write_failed", during=event, error=repr(error))
    return cancelled
