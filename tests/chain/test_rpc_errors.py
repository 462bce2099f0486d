"""A chain node that answers HTTP errors (a bad key, a rate limit, a failing gateway): the API says the
chain is unavailable, /metrics still answers, the workers' passes end cleanly, and no log line or
response shows the node's URL, whose path and query carry the provider's key."""

from __future__ import annotations

import dataclasses
import io
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import aiohttp
import httpx
import pytest
import structlog
from aiohttp import web
from litestar import Litestar, get

from app.chain import service
from app.lib.clients import make_web3
from app.lib.errors import EXCEPTION_HANDLERS
from tests.chain.conftest import rpc

PATH_KEY = "pathkey0c0ffee5ecret"
QUERY_KEY = "querykeyd00d5ecret"
SECRETS = (PATH_KEY, QUERY_KEY)
Answer = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def node() -> AsyncIterator[Callable[[Answer], Awaitable[str]]]:
    """Start a JSON-RPC endpoint answering with `answer`: its URL, with a key in its path and query."""
    runners: list[web.AppRunner] = []

    async def start(answer: Answer) -> str:
        app = web.Application()
        app.router.add_post(f"/v3/{PATH_KEY}", answer)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}/v3/{PATH_KEY}?key={QUERY_KEY}"

    yield start
    for runner in runners:
        await runner.cleanup()


def answering(status: int) -> Answer:
    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"error": "refused"}, status=status)

    return answer


def web3_at(settings, url: str):
    """The chain client the app would make for CHAIN_RPC_URL=`url`."""
    return make_web3(
        settings.model_copy(update={"chain": settings.chain.model_copy(update={"rpc_url": url})})
    )


@pytest.fixture
async def chain_at(app, client, clients, settings) -> AsyncIterator[Callable[[str], Awaitable]]:
    """Point the app's chain client at another node for the test: the clients that use it."""
    made = []

    async def at(url: str):
        web3 = web3_at(settings, url)
        made.append(web3)
        app.state.clients = dataclasses.replace(clients, web3=web3)
        return app.state.clients

    yield at
    app.state.clients = clients
    for web3 in made:
        await web3.provider.disconnect()


@pytest.fixture
def logged(app) -> Iterator[io.StringIO]:
    """Every log line written during the test, rendered by the formatter the app configured."""
    root = logging.getLogger()
    formatter = next(
        h.formatter for h in root.handlers if isinstance(h.formatter, structlog.stdlib.ProcessorFormatter)
    )
    written = io.StringIO()
    handler = logging.StreamHandler(written)
    handler.setFormatter(formatter)
    root.addHandler(handler)
    yield written
    root.removeHandler(handler)


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, text


@pytest.mark.parametrize("status", [401, 429, 503])
async def test_a_node_answering_an_http_error_makes_the_status_chain_unavailable(
    client, node, chain_at, logged, status
):
    await chain_at(await node(answering(status)))
    answer = await client.get("/api/chain/status")
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "chain_unavailable"
    assert f"HTTP {status}" in answer.json()["error"]["message"]
    assert "127.0.0.1" not in answer.text
    assert_no_secret(answer.text, logged.getvalue())


async def test_metrics_answer_with_the_node_marked_down(client, node, chain_at, logged):
    await chain_at(await node(answering(429)))
    scraped = await client.get("/metrics")
    assert scraped.status_code == 200, scraped.text
    assert "dynamicvault_chain_node_up 0.0" in scraped.text
    assert_no_secret(scraped.text, logged.getvalue())


async def test_metrics_mark_the_node_up_again_once_it_answers(web3, client):
    assert "dynamicvault_chain_node_up 1.0" in (await client.get("/metrics")).text


async def test_an_outbox_pass_ends_cleanly_while_the_node_refuses(client, settings, node, chain_at, logged):
    away = await chain_at(await node(answering(429)))
    key = await service.request_mint(away, settings, "0x" + "11" * 20, 7, "0x" + "22" * 20)
    counts = await service.process_outbox(away, settings)
    assert not any(counts.values())
    assert (await service.outbox_entry(key))["status"] == "intent"  # asked again on the next pass
    lines = logged.getvalue()
    assert "chain.outbox.estimate_failed" in lines and "HTTP 429" in lines
    assert_no_secret(lines)


async def test_an_error_carrying_the_node_url_is_logged_without_its_key(
    client, settings, node, chain_at, logged
):
    away = await chain_at(await node(answering(401)))
    with pytest.raises(aiohttp.ClientResponseError) as raised:
        await away.web3.eth.chain_id
    assert PATH_KEY in str(raised.value)  # what the provider's error carries
    try:
        raise raised.value
    except aiohttp.ClientResponseError as exc:
        structlog.get_logger("tests").exception("tests.failed", error=str(exc), cause=exc)
        logging.getLogger("arq.worker").exception("job failed: %s", exc)
    lines = logged.getvalue()
    assert lines.count("ClientResponseError") >= 4  # the texts and both tracebacks are there
    assert "http://127.0.0.1:" in lines  # the host stays, for whoever reads the log
    assert_no_secret(lines)


async def test_a_node_error_no_handler_caught_answers_503(settings, node, logged):
    """Any route that reads the chain and lets the node's HTTP error through: unavailable, not a 500."""
    web3 = web3_at(settings, await node(answering(502)))

    @get("/head")
    async def head() -> int:
        return await web3.eth.block_number

    edge = Litestar(
        [head], exception_handlers=EXCEPTION_HANDLERS, logging_config=None
    )  # leaves logging as the app set it
    transport = httpx.ASGITransport(app=edge)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as caller:
        answer = await caller.get("/head")
    await web3.provider.disconnect()
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "service_unavailable"
    assert "127.0.0.1" not in answer.text
    assert_no_secret(logged.getvalue())


async def test_a_range_the_node_refuses_as_too_large_is_read_in_halves(
    web3, client, settings, chain, node, chain_at, logged
):
    """A provider that answers an eth_getLogs range over 16 blocks with 413 (the response too large)."""
    await rpc(web3, "anvil_mine", hex(60))
    refused = []

    async def proxy(request: web.Request) -> web.Response:
        call = await request.json()
        if call["method"] == "eth_getLogs":
            span = int(call["params"][0]["toBlock"], 16) - int(call["params"][0]["fromBlock"], 16) + 1
            if span > 16:
                refused.append(span)
                return web.json_response({"error": "response too large"}, status=413)
        async with upstream.post(settings.chain.rpc_url, json=call) as answer:
            return web.Response(body=await answer.read(), content_type="application/json")

    proxied = await chain_at(await node(proxy))
    async with aiohttp.ClientSession() as upstream:
        done = await service.index_once(proxied, settings)
    assert refused and done.end - done.start + 1 <= 16 and done.end < done.head
    assert await service.indexed_block(settings) == done.end
    assert_no_secret(logged.getvalue())


def test_a_url_in_any_field_of_a_log_line_loses_its_secrets(app, logged):
    """Found by review: a URL object or a set in a field reached the renderer whole."""
    import yarl

    url = f"https://rpc.example/v3/{PATH_KEY}"
    structlog.get_logger("tests").warning(
        "tests.url", endpoint=yarl.URL(url), seen={url}, by={url: 1}, port=8545
    )
    line = logged.getvalue()
    assert line.count("https://rpc.example/") == 3 and '"port": 8545' in line  # the host stays
    assert_no_secret(line)
