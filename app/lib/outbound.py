"""Outbound HTTP to URLs that users configure (data sources, webhooks), safe from server-side request forgery.

A URL given to the platform must not become a way into the platform's own network, so every request:
- takes http or https only, and no credentials in the URL;
- resolves the host once and refuses it when any address it resolves to is private, loopback,
  site-local, link-local, multicast, reserved, unspecified or a cloud metadata address, IPv4 or IPv6,
  looking inside IPv4-mapped, 6to4 and NAT64 IPv6 addresses at the IPv4 they carry; a name that does
  not resolve is refused in the same words, so answers cannot tell an internal name from an unknown one;
- connects to the very address it checked: the URL is rewritten to that IP, with the `Host` header
  and TLS SNI (and so certificate verification) set to the hostname, so no second DNS answer (DNS
  rebinding) can move the connection elsewhere; proxies from the environment are ignored for the
  same reason;
- follows redirects itself, up to a cap, checking each hop as the first, and sends the caller's
  credentials only to the origin they were meant for;
- stops at a connect timeout and an overall deadline, and reads the body as a stream up to a size cap,
  counted on the bytes as they arrive and, for a gzip or deflate body, on the bytes it inflates to
  (inflated a chunk at a time, never past the cap), so a small compressed body cannot expand in memory.

`OUTBOUND_ALLOW_PRIVATE` (development and tests, which serve sources on 127.0.0.1) lifts the refusal of
private and loopback addresses, and `OUTBOUND_ALLOWED_NETWORKS` lifts it for named networks only;
neither ever allows link-local, metadata, multicast, reserved or unspecified addresses.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from app.lib.addresses import IPAddress, Policy, refusal
from app.lib.errors import AppError
from app.lib.resolver import resolve as resolve  # the callers' resolver, in a pool of its own

Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]

REDIRECTS = frozenset({301, 302, 303, 307, 308})
# The one answer for a host the platform does not reach, whether it does not resolve or resolves to a
# refused address: telling them apart would let a caller map internal names. Logs keep the detail.
UNREACHABLE = "the source's host is not one the platform reaches"
MAX_PORT = 65535
# The platform sets these itself: connection framing and the pinned Host are not the caller's to choose.
_RESERVED_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "te", "upgrade", "keep-alive", "trailer"}
)


class OutboundError(AppError):
    """An outbound request that was refused or failed; `code` says which (for a job's result, an audit)."""

    status_code, code = 422, "outbound_failed"


@dataclass(frozen=True)
class Response:
    url: str  # after redirects
    status: int
    headers: Mapping[str, str]
    body: bytes
    elapsed_ms: float
    redirects: int

    def ensure_success(self) -> Response:
        """This response, or `upstream_status` when the server answered anything but 2xx."""
        if not 200 <= self.status < 300:
            raise OutboundError(
                f"the server answered HTTP {self.status}",
                code="upstream_status",
                details={"status": self.status},
            )
        return self


def origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


# ---------------------------------------------------------------- the client


@dataclass
class Client:
    """Makes outbound requests under one policy; one per batch of related requests (a source's pages),
    closed when the batch ends (`async with Client(policy) as client`)."""

    policy: Policy
    resolver: Resolver = resolve
    user_agent: str = "DynamicVault/0.1 (+data-sources)"
    _pools: dict[tuple[str, str, int, str], httpx.AsyncClient] = field(default_factory=dict)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            await pool.aclose()

    async def get(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        credentials: Mapping[str, str] | None = None,
        credentials_origin: str | None = None,
    ) -> Response:
        """GET `url`, following redirects; `credentials` (headers) go only to `credentials_origin`'s
        scheme, host and port (by default `url`'s), never to another origin a redirect leads to."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.policy.timeout_s):
                return await self._follow(url, headers or {}, credentials or {}, credentials_origin, started)
        except TimeoutError as exc:
            raise _deadline(self.policy.timeout_s) from exc

    async def post(self, url: str, content: bytes, *, headers: Mapping[str, str] | None = None) -> Response:
        """POST `content` to `url` once (a webhook's delivery) under the checks, deadline and body cap of
        `get`; a redirect is answered, not followed: the receiver is the URL it was given."""
        started = time.perf_counter()
        sent = {k: v for k, v in (headers or {}).items() if k.lower() not in _RESERVED_HEADERS}
        try:
            async with asyncio.timeout(self.policy.timeout_s):
                status, answered, body = await self._exchange(parse_url(url), sent, "POST", content)
        except TimeoutError as exc:
            raise _deadline(self.policy.timeout_s) from exc
        return Response(url, status, answered, body, round((time.perf_counter() - started) * 1000, 2), 0)

    async def _follow(
        self,
        url: str,
        headers: Mapping[str, str],
        credentials: Mapping[str, str],
        credentials_origin: str | None,
        started: float,
    ) -> Response:
        current = parse_url(url)
        trusted = origin(parse_url(credentials_origin)) if credentials_origin else origin(current)
        for hop in range(self.policy.max_redirects + 1):
            sent = {k: v for k, v in headers.items() if k.lower() not in _RESERVED_HEADERS}
            if origin(current) == trusted:
                sent.update({k: v for k, v in credentials.items() if k.lower() not in _RESERVED_HEADERS})
            status, response_headers, body = await self._exchange(current, sent)
            location = response_headers.get("location")
            if status in REDIRECTS and location:
                current = parse_url(join(current, location))
                continue
            return Response(
                url=str(current),
                status=status,
                headers=response_headers,
                body=body,
                elapsed_ms=round((time.perf_counter() - started) * 1000, 2),
                redirects=hop,
            )
        raise OutboundError(f"more than {self.policy.max_redirects} redirects", code="too_many_redirects")

    async def _exchange(
        self, url: httpx.URL, headers: dict[str, str], method: str = "GET", content: bytes | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """One request to `url`'s host, at an address checked for it (the next one when a connection to
        it fails): its status, headers and capped body."""
        host = url.raw_host.decode("ascii")
        port = url.port or (443 if url.scheme == "https" else 80)
        addresses = await self._checked_addresses(host, port)
        for attempt, ip in enumerate(addresses, start=1):
            try:
                return await self._exchange_with(url, ip, headers, method, content)
            except httpx.ConnectError as exc:
                if attempt == len(addresses):
                    raise OutboundError(f"could not connect to {host}", code="connect_failed") from exc
        raise AssertionError("unreachable: a host resolves to at least one address")

    async def _exchange_with(
        self, url: httpx.URL, ip: IPAddress, headers: dict[str, str], method: str, content: bytes | None
    ) -> tuple[int, dict[str, str], bytes]:
        host, port = url.raw_host.decode("ascii"), url.port or (443 if url.scheme == "https" else 80)
        pinned = url.copy_with(host=str(ip))
        request_headers = {
            "User-Agent": self.user_agent,
            "Accept-Encoding": "identity",
            **headers,
            "Host": url.netloc.decode("ascii"),  # the hostname (IPv6 in brackets) and any explicit port
        }
        extensions: dict[str, Any] = {"sni_hostname": host} if url.scheme == "https" else {}
        pool = self._pool(url.scheme, str(ip), port, host)
        try:
            sent = pool.stream(
                method, pinned, headers=request_headers, content=content, extensions=extensions
            )
            async with sent as response:
                status = response.status_code
                response_headers = {k.lower(): v for k, v in response.headers.items()}
                if status in REDIRECTS and "location" in response_headers:
                    return status, response_headers, b""
                body = await self._read_capped(response)
        except httpx.TimeoutException as exc:
            raise OutboundError(f"{host} did not answer in time", code="fetch_timeout") from exc
        except httpx.ConnectError:
            raise
        except httpx.HTTPError as exc:
            raise OutboundError(f"the exchange with {host} failed", code="fetch_failed") from exc
        return status, response_headers, body

    async def _read_capped(self, response: httpx.Response) -> bytes:
        """The body, as sent (raw) or inflated by hand: httpx would inflate a whole chunk before the
        cap could be checked, and a 64 KiB gzip chunk of zeros inflates to 64 MiB."""
        cap = self.policy.max_body_bytes
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            raise _too_large(cap)
        inflater = _inflater(response.headers.get("content-encoding", ""))
        body, received = bytearray(), 0
        async for chunk in response.aiter_raw():
            received += len(chunk)
            if received > cap:
                raise _too_large(cap)
            body += chunk if inflater is None else _inflate(inflater, chunk, cap - len(body))
            if len(body) > cap:
                raise _too_large(cap)
        if inflater is not None and received and not inflater.eof:
            raise OutboundError("the compressed body is cut short", code="fetch_failed")
        return bytes(body)

    async def _checked_addresses(self, host: str, port: int) -> list[IPAddress]:
        unresolved = {"host": host, "reason": "unresolved"}
        try:
            addresses = await self.resolver(host, port)
        except (OSError, UnicodeError) as exc:
            raise OutboundError(UNREACHABLE, code="address_refused", details=unresolved) from exc
        if not addresses:
            raise OutboundError(UNREACHABLE, code="address_refused", details=unresolved)
        for ip in addresses:  # every answer must pass: the next resolver call could return any of them
            reason = refusal(ip, self.policy)
            if reason is not None:
                raise OutboundError(
                    UNREACHABLE,
                    code="address_refused",
                    details={"host": host, "address": str(ip), "reason": reason},
                )
        return addresses

    def _pool(self, scheme: str, ip: str, port: int, host: str) -> httpx.AsyncClient:
        # One connection pool per (address, hostname): a TLS connection made for one hostname is never
        # reused for another that happens to share its address.
        key = (scheme, ip, port, host)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = httpx.AsyncClient(
                follow_redirects=False,
                trust_env=False,
                timeout=httpx.Timeout(self.policy.timeout_s, connect=self.policy.connect_timeout_s),
            )
        return pool


def _deadline(timeout_s: float) -> OutboundError:
    return OutboundError(f"no complete answer within {timeout_s:g} s", code="fetch_timeout")


def _too_large(cap: int) -> OutboundError:
    return OutboundError(
        f"the body is larger than {cap} bytes", code="body_too_large", details={"maxBytes": cap}
    )


def _inflater(encoding: str) -> Any:
    """A decompressor for the body's Content-Encoding (None: the bytes are the body), or
    `unsupported_encoding`: the platform asks for identity, and inflates only what it can bound."""
    name = encoding.strip().lower()
    if name in ("", "identity"):
        return None
    if name in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if name == "deflate":
        return zlib.decompressobj(32 + zlib.MAX_WBITS)  # zlib-wrapped, as RFC 9110 names it (or gzip)
    raise OutboundError(
        "the body's content encoding is not one the platform reads", code="unsupported_encoding"
    )


def _inflate(inflater: Any, chunk: bytes, room: int) -> bytes:
    """At most `room + 1` inflated bytes of `chunk`: one past the room says the body is over the cap (and
    what was not inflated then is never inflated)."""
    try:
        return inflater.decompress(chunk, room + 1)
    except zlib.error as exc:
        raise OutboundError("the compressed body is corrupt", code="fetch_failed") from exc


def join(base: httpx.URL | str, reference: str) -> str:
    """`reference` (a redirect's Location, a page's next URL) resolved against `base`, or `url_refused`."""
    try:
        return str(httpx.URL(base).join(reference))
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise OutboundError("a server named an invalid URL", code="url_refused") from exc


def origin_of(url: str) -> str:
    """`url`'s origin as one string (`https://host:443`, the default port written out): what a source's
    credentials are sealed to. Lexical, so it never fails: a URL that cannot be fetched has an origin too."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return f"invalid:{url}"
    scheme = parts.scheme.lower()
    return f"{scheme}://{(parts.hostname or '').lower()}:{port or (443 if scheme == 'https' else 80)}"


def parse_url(url: str) -> httpx.URL:
    """`url` as an http(s) URL with a host, a port that exists and no userinfo, or `url_refused`."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise OutboundError("the URL is not a valid URL", code="url_refused") from exc
    if parsed.port is not None and not 0 < parsed.port <= MAX_PORT:
        raise OutboundError("the URL names a port that does not exist", code="url_refused")
    if parsed.scheme not in ("http", "https"):
        raise OutboundError("only http and https URLs are fetched", code="url_refused")
    if not parsed.host:
        raise OutboundError("the URL names no host", code="url_refused")
    if parsed.userinfo:
        raise OutboundError("credentials in a URL are not sent; use headers", code="url_refused")
    return parsed
