"""The pixels a worker process holds decoded at once, over all its jobs: what bounds its memory."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import TypeVar

from app.media import imaging
from app.media.imaging import MediaRejected


class PixelBudget:
    """Pixels one worker process holds decoded at once, over all its jobs; first come, first served.

    A decode peaks at about 8 bytes a pixel (an RGBA image and its flattened copy), so the budget
    bounds the worker's memory however many jobs it runs at a time.
    """

    def __init__(self, pixels: int) -> None:
        self.pixels = pixels
        self._held = 0
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    async def acquire(self, pixels: int) -> None:
        """Wait until `pixels` fit beside what is held and every earlier request has been served."""
        if pixels > self.pixels:
            raise MediaRejected(
                "image_too_large",
                f"{pixels} pixels is more than the {self.pixels} this worker decodes at once",
            )
        if not self._waiting and self._held + pixels <= self.pixels:
            self._held += pixels
            return
        granted = asyncio.get_running_loop().create_future()
        self._waiting.append((pixels, granted))
        try:
            await granted
        except asyncio.CancelledError:
            if not granted.cancelled():
                self.release(pixels)  # granted just as the job was cancelled
            elif (pixels, granted) in self._waiting:
                self._waiting.remove((pixels, granted))
                self._grant()  # the requests behind it may fit now
            raise

    def release(self, pixels: int) -> None:
        self._held -= pixels
        self._grant()

    def _grant(self) -> None:
        while self._waiting and self._held + self._waiting[0][0] <= self.pixels:
            pixels, granted = self._waiting.popleft()
            if not granted.done():  # done: its job was cancelled while it waited
                self._held += pixels
                granted.set_result(None)


_T = TypeVar("_T")


async def decode_in_budget(
    budget: PixelBudget | None, data: bytes, max_pixels: int, decode: Callable[[bytes], _T]
) -> _T:
    """Run `decode(data)` in a thread while the image's pixels, read from its header, are held.

    They are given back when the thread ends, not when the job does: a cancelled job's thread decodes on.
    """
    pixels = imaging.header_pixels(data)
    if budget is None or pixels > max_pixels:  # over the cap: refused from its header, nothing decoded
        return await asyncio.to_thread(decode, data)
    await budget.acquire(pixels)
    work = asyncio.ensure_future(asyncio.to_thread(decode, data))

    def give_back(done: asyncio.Future[_T]) -> None:
        budget.release(pixels)
        if not done.cancelled():
            done.exception()  # retrieved, so a job cancelled meanwhile leaves no "never retrieved" log

    work.add_done_callback(give_back)
    return await asyncio.shield(work)
