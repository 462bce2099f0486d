"""Name resolution for outbound requests, in a pool of its own.

`getaddrinfo` blocks a thread until the name server answers (the system resolver may try for half a
minute), and a timeout only stops waiting for it: on the event loop's default executor (shared with
every `asyncio.to_thread`), a caller naming hosts whose server never answers would hold all its
threads. Here lookups run in RESOLVER_THREADS threads of their own, and a thread's slot is given back
only when its lookup really ends, so at most RESOLVER_THREADS lookups hang at once; a lookup that gets
no slot or no answer within `timeout_s` fails as unresolved.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

RESOLVER_THREADS = 4
SLOT_POLL_S = 0.05
_pool = ThreadPoolExecutor(RESOLVER_THREADS, thread_name_prefix="resolver")
_slots = threading.BoundedSemaphore(RESOLVER_THREADS)  # no event loop of its own: any loop may use it


def _lookup(host: str, port: int) -> list:
    try:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    finally:
        _slots.release()  # when the lookup ends, not when its caller stopped waiting


async def resolve(host: str, port: int, timeout_s: float = 5.0) -> list[IPAddress]:
    """Every address `host` resolves to (itself, when it is an IP literal); OSError when it does not
    resolve in time."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not _slots.acquire(blocking=False):
        if loop.time() >= deadline:
            raise OSError(f"no resolver free for {host} within {timeout_s} s")
        await asyncio.sleep(SLOT_POLL_S)
    lookup = loop.run_in_executor(_pool, _lookup, host, port)
    try:
        async with asyncio.timeout(max(deadline - loop.time(), 0.01)):
            infos = await asyncio.shield(lookup)
    except TimeoutError as exc:
        raise OSError(f"resolving {host} took longer than {timeout_s} s") from exc
    found: list[IPAddress] = []
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])  # drop an IPv6 scope id
        if ip not in found:
            found.append(ip)
    return found
