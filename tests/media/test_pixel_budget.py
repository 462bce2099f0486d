"""The image worker's pixel budget: decodes wait for their pixels, first come first served, and an
image larger than the whole budget is refused."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from app.assets.documents import Asset
from app.media import imaging, service
from tests import factories
from tests.media import support


async def _asset_with_image(client, login, token_id: int, size: tuple[int, int]) -> None:
    await factories.asset(token_id, login.wallet)
    uploaded = await client.post(
        f"/api/assets/{token_id}/images",
        files=[("files", ("poster.jpg", support.photo(size, gps=False), "image/jpeg"))],
        headers=login.headers,
    )
    assert uploaded.status_code == 201, uploaded.text


async def _image_states(token_id: int) -> list[tuple[str, str | None]]:
    asset = await Asset.find_one(Asset.tokenId == token_id)
    return [(f.status, f.error) for f in asset.media.files if f.kind == "image"]


async def test_jobs_sharing_a_budget_never_decode_more_pixels_at_once_than_it_holds(
    client, clients, settings, monkeypatch
):
    login = await factories.login(settings)
    for token_id in (1, 2, 3):
        await _asset_with_image(client, login, token_id, (1000, 800))
    decoding, peak, lock = [0], [0], threading.Lock()
    real = imaging.render_with_highres

    def counting(data: bytes):
        with lock:
            decoding[0] += imaging.header_pixels(data)
            peak[0] = max(peak[0], decoding[0])
        try:
            time.sleep(0.3)  # long enough for the other jobs to ask for their pixels meanwhile
            return real(data)
        finally:
            with lock:
                decoding[0] -= imaging.header_pixels(data)

    monkeypatch.setattr(imaging, "render_with_highres", counting)
    budget = service.PixelBudget(1_500_000)  # room for one 0.8 Mpx image, not two
    results = await asyncio.gather(
        *(service.process_asset_media(clients.storage, t, budget=budget) for t in (1, 2, 3))
    )

    assert [r["processed"] for r in results] == [1, 1, 1]
    assert peak[0] == 800_000
    assert [await _image_states(t) for t in (1, 2, 3)] == [[("processed", None)]] * 3


async def test_an_image_larger_than_the_whole_budget_is_refused_and_the_next_still_renders(
    client, clients, settings
):
    login = await factories.login(settings)
    await _asset_with_image(client, login, 1, (2000, 1000))
    await _asset_with_image(client, login, 2, (800, 600))
    budget = service.PixelBudget(1_000_000)

    refused = await service.process_asset_media(clients.storage, 1, budget=budget)
    done = await service.process_asset_media(clients.storage, 2, budget=budget)

    assert refused["rejected"] == 1 and done["processed"] == 1
    assert await _image_states(1) == [("rejected", "image_too_large")]
    assert await _image_states(2) == [("processed", None)]


async def test_the_budget_serves_requests_in_order_and_a_cancelled_wait_gives_its_place_up():
    budget = service.PixelBudget(100)
    await budget.acquire(60)
    order: list[str] = []

    async def take(name: str, pixels: int) -> None:
        await budget.acquire(pixels)
        order.append(name)

    large = asyncio.create_task(take("large", 90))
    await asyncio.sleep(0)
    small = asyncio.create_task(take("small", 10))  # would fit now, but waits behind the large one
    await asyncio.sleep(0.01)
    assert order == []
    large.cancel()
    with pytest.raises(asyncio.CancelledError):
        await large
    await small
    assert order == ["small"]
    budget.release(60)
    budget.release(10)
    await budget.acquire(100)  # everything was given back
    budget.release(100)

    await budget.acquire(60)
    cancelled = asyncio.create_task(take("cancelled", 90))
    await asyncio.sleep(0)
    cancelled.cancel()
    budget.release(60)  # before the cancelled request has left the queue
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    await asyncio.wait_for(budget.acquire(100), 1)
    assert order == ["small"]
    with pytest.raises(imaging.MediaRejected) as excinfo:
        await budget.acquire(101)
    assert excinfo.value.code == "image_too_large"
