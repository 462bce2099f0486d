"""Name resolution for outbound requests, in a pool of its own.

`getaddrinfo` blocks a thread until the name server answers, and a timeout only stops waiting for it:
on the event loop's default executor (shared with every `asyncio.to_thread`), a caller naming hosts
whose server never answers would hold all its threads. Here lookups run in RESOLVER_THREADS threads of
their own, at most RESOLVER_THREADS at a time; one that waits longer than `timeout_s` for its turn or
its answer fails as unresolved.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from concurrent.futures import ThreadPoolExecutor

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

RESOLVER_THREADS = 4
_pool = ThreadPoolExecutor(RESOLVER_THREADS, thread_name_prefix="resolver")
_turns: asyncio.Semaphore | None = None


def _semaphore() -> asyncio.Semaphore:
    global _turns
    if _turns is None:
        _turns = asyncio.Semaphore(RESOLVER_THREADS)
    return _turns


async def resolve(host: str, port: int, timeout_s: float = 5.0) -> list[IPAddress]:
    """Every address `host` resolves to (itself, when it is an IP literal); OSError when it does not
    resolve in time."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout_s), _semaphore():
            infos = await loop.run_in_executor(
                _pool, lambda: socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            )
    except TimeoutError as exc:
        raise OSError(f"resolving {host} took longer than {timeout_s} s") from exc
    found: list[IPAddress] = []
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])  # drop an IPv6 scope id
        if ip not in found:
            found.append(ip)
    return found
