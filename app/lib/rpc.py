"""A chain node that did not answer, whichever layer noticed: web3, the HTTP transport, or the clock."""

from __future__ import annotations

import asyncio

import aiohttp
from web3.exceptions import Web3Exception

# web3's HTTP provider lets its transport's errors through unwrapped: an HTTP error status (401 for a
# revoked key, 413, 429 past the provider's rate, 5xx) is aiohttp's ClientResponseError, a refused
# connection an OSError, a slow answer a TimeoutError. None of them is a Web3Exception.
NODE_UNAVAILABLE = (Web3Exception, aiohttp.ClientError, asyncio.TimeoutError, OSError)


def describe(exc: BaseException) -> str:
    """The error's kind and the HTTP status the node answered, if any: never the error's text, which
    names the node's URL (and with it the provider's key)."""
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"{type(exc).__name__} (HTTP {exc.status})"
    return type(exc).__name__
