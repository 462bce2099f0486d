"""Outbound requests cannot be turned against the platform's own network (app/lib/outbound.py)."""

import gc
import gzip
import ipaddress
import tracemalloc
import zlib

import pytest

from app.lib import outbound
from tests.oracle.conftest import Reply

CLOSED = outbound.Policy()  # OUTBOUND_ALLOW_PRIVATE off, as in production
LOCAL_ONLY = outbound.Policy(allowed_networks=(ipaddress.ip_network("127.0.0.1/32"),))
OPEN_PRIVATE = outbound.Policy(allow_private=True)


async def get(policy: outbound.Policy, url: str, **kwargs) -> outbound.Response:
    async with outbound.Client(policy, **kwargs) as client:
        return await client.get(url)


async def refused(policy: outbound.Policy, url: str, code: str = "address_refused", **kwargs) -> dict:
    with pytest.raises(outbound.OutboundError) as caught:
        await get(policy, url, **kwargs)
    assert caught.value.code == code, caught.value.message
    return caught.value.details or {}


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "10.0.0.1",
        "10.255.255.254",
        "172.16.0.1",
        "192.168.1.1",
        "100.64.0.1",
        "169.254.169.254",
        "169.254.1.1",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fd00:ec2::254",
        "fec0::1",  # site-local (deprecated, still routed inside some networks)
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "::ffff:10.0.0.1",
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    ],
)
def test_non_public_addresses_are_refused(address):
    assert outbound.refusal(ipaddress.ip_address(address), CLOSED) is not None


@pytest.mark.parametrize("address", ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_are_reached(address):
    assert outbound.refusal(ipaddress.ip_address(address), CLOSED) is None


@pytest.mark.parametrize(
    "address",
    [
        "169.254.169.254",
        "fe80::1",
        "0.0.0.0",
        "224.0.0.1",
        "100.100.100.200",
        "168.63.129.16",  # Azure WireServer: a public address that answers VMs only
        "::ffff:168.63.129.16",
    ],
)
def test_allowing_private_addresses_never_allows_metadata_or_link_local_ones(address):
    assert outbound.refusal(ipaddress.ip_address(address), OPEN_PRIVATE) is not None
    assert outbound.refusal(ipaddress.ip_address("10.1.2.3"), OPEN_PRIVATE) is None


async def test_loopback_private_and_metadata_urls_are_refused_before_any_connection(source_server):
    source_server.routes["/data.csv"] = Reply(body=b"a\n1\n")
    for url in (
        source_server.url("/data.csv"),
        f"http://localhost:{source_server.port}/data.csv",  # a name that resolves to loopback
        f"http://[::ffff:127.0.0.1]:{source_server.port}/data.csv",
        f"http://2130706433:{source_server.port}/data.csv",  # 127.0.0.1 as one number
        "http://10.0.0.1/data.csv",
        "http://169.254.169.254/latest/meta-data/",
    ):
        details = await refused(CLOSED, url)
        assert details["reason"] in {"loopback", "private", "metadata"}
    assert source_server.seen == []


async def test_only_http_and_https_are_fetched():
    for url in (
        "file:///etc/passwd",
        "ftp://example.org/x",
        "gopher://example.org/",
        "http://user:pw@example.org/",
    ):
        await refused(OPEN_PRIVATE, url, code="url_refused")


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.2:{port}/x",
        "http://10.0.0.1/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:{port}/x",
        "http://internal.test:{port}/x",  # a name that resolves to a private address
    ],
)
async def test_a_redirect_to_a_refused_address_is_refused(source_server, target):
    # The first hop is allowed by name (OUTBOUND_ALLOWED_NETWORKS=127.0.0.1/32), the redirect is not.
    async def resolver(host: str, port: int):
        return (
            [ipaddress.ip_address("10.9.8.7")]
            if host == "internal.test"
            else await outbound.resolve(host, port)
        )

    source_server.routes["/jump"] = Reply(302, headers={"Location": target.format(port=source_server.port)})
    await refused(LOCAL_ONLY, source_server.url("/jump"), resolver=resolver)
    assert [seen.path for seen in source_server.seen] == ["/jump"]


async def test_a_redirect_to_metadata_is_refused_even_with_private_addresses_allowed(source_server):
    source_server.routes["/jump"] = Reply(301, headers={"Location": "http://169.254.169.254/latest/"})
    assert (await refused(OPEN_PRIVATE, source_server.url("/jump")))["reason"] == "metadata"


async def test_redirects_are_followed_up_to_the_cap(source_server):
    source_server.routes["/a"] = Reply(302, headers={"Location": "/b"})
    source_server.routes["/b"] = Reply(307, headers={"Location": "/c"})
    source_server.routes["/c"] = Reply(200, body=b"done")
    response = await get(OPEN_PRIVATE, source_server.url("/a"))
    assert (response.status, response.body, response.redirects) == (200, b"done", 2)
    source_server.routes["/loop"] = Reply(302, headers={"Location": "/loop"})
    await refused(OPEN_PRIVATE, source_server.url("/loop"), code="too_many_redirects")
    source_server.routes["/scheme"] = Reply(302, headers={"Location": "file:///etc/passwd"})
    await refused(OPEN_PRIVATE, source_server.url("/scheme"), code="url_refused")


async def test_credentials_go_to_the_sources_origin_only(source_server):
    source_server.routes["/start"] = Reply(302, headers={"Location": source_server.url("/end", other=True)})
    source_server.routes["/end"] = Reply(200, body=b"ok")
    async with outbound.Client(OPEN_PRIVATE) as client:
        await client.get(source_server.url("/start"), credentials={"Authorization": "Bearer s3cret"})
    first, second = source_server.seen
    assert first.headers["authorization"] == "Bearer s3cret"
    assert "authorization" not in second.headers


async def test_a_body_over_the_cap_is_refused(source_server):
    small = outbound.Policy(allow_private=True, max_body_bytes=1024)
    source_server.routes["/big"] = Reply(body=b"x" * 2048)
    assert (await refused(small, source_server.url("/big"), code="body_too_large"))["maxBytes"] == 1024
    # No Content-Length (the body ends with the connection): counted while it streams.
    source_server.routes["/stream"] = Reply(body=b"y" * 4096, headers={"Content-Length": None})
    await refused(small, source_server.url("/stream"), code="body_too_large")


async def test_a_server_that_does_not_answer_in_time_is_cut_off(source_server):
    source_server.routes["/slow"] = Reply(body=b"late", delay_s=1.0)
    quick = outbound.Policy(allow_private=True, timeout_s=0.3)
    await refused(quick, source_server.url("/slow"), code="fetch_timeout")


async def test_the_connection_goes_to_the_address_that_was_checked(source_server):
    """DNS rebinding: the name is resolved once per hop, and the checked answer is the one connected to."""
    answers = [[ipaddress.ip_address("127.0.0.1")], [ipaddress.ip_address("10.0.0.1")]]
    calls = []

    async def rebinding(host: str, port: int):
        calls.append(host)
        return answers[min(len(calls) - 1, 1)]

    source_server.routes["/data"] = Reply(body=b"pinned")
    response = await get(LOCAL_ONLY, f"http://data.test:{source_server.port}/data", resolver=rebinding)
    assert response.body == b"pinned"
    assert calls == ["data.test"]
    assert source_server.seen[0].headers["host"] == f"data.test:{source_server.port}"


def _gzip_bomb(inflated: int) -> bytes:
    """`inflated` zero bytes, gzipped (about a thousandth of that on the wire)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1024 * 1024)
    return b"".join([*(packer.compress(block) for _ in range(inflated // len(block))), packer.flush()])


async def test_a_gzip_bomb_is_cut_off_at_the_cap_without_being_inflated(source_server):
    bomb = _gzip_bomb(256 * 1024 * 1024)
    source_server.routes["/bomb"] = Reply(body=bomb, headers={"Content-Encoding": "gzip"})
    small = outbound.Policy(allow_private=True, max_body_bytes=1024 * 1024)
    gc.collect()
    tracemalloc.start()
    try:
        await refused(small, source_server.url("/bomb"), code="body_too_large")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, peak  # the cap and a chunk, never the inflated body


async def test_compressed_bodies_are_decoded_within_the_cap_and_unknown_encodings_refused(source_server):
    source_server.routes["/gz"] = Reply(
        body=gzip.compress(b"a,b\n1,2\n"), headers={"Content-Encoding": "gzip"}
    )
    assert (await get(OPEN_PRIVATE, source_server.url("/gz"))).body == b"a,b\n1,2\n"
    source_server.routes["/br"] = Reply(body=b"\x1b\x00", headers={"Content-Encoding": "br"})
    await refused(OPEN_PRIVATE, source_server.url("/br"), code="unsupported_encoding")
    source_server.routes["/bad"] = Reply(body=b"not gzip", headers={"Content-Encoding": "gzip"})
    await refused(OPEN_PRIVATE, source_server.url("/bad"), code="fetch_failed")


async def test_a_name_that_does_not_resolve_and_one_that_is_refused_look_alike():
    """Telling the two apart would map the platform's internal names from outside."""

    async def resolver(host: str, port: int):
        if host == "internal.test":
            return [ipaddress.ip_address("10.0.0.7")]
        raise OSError("no such name")

    with pytest.raises(outbound.OutboundError) as internal:
        await get(CLOSED, "http://internal.test/x", resolver=resolver)
    with pytest.raises(outbound.OutboundError) as unknown:
        await get(CLOSED, "http://unknown.test/x", resolver=resolver)
    assert (internal.value.code, internal.value.message) == (unknown.value.code, unknown.value.message)
    assert "internal.test" not in internal.value.message


async def test_urls_with_impossible_ports_are_refused(source_server):
    await refused(OPEN_PRIVATE, "http://127.0.0.1:99999/x", code="url_refused")
    source_server.routes["/jump"] = Reply(302, headers={"Location": "http://127.0.0.1:70000/x"})
    await refused(OPEN_PRIVATE, source_server.url("/jump"), code="url_refused")
