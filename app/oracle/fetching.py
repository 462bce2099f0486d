"""Where a source's rows come from: an object in the platform's bucket, a file at an http(s) URL, or an
API's JSON pages, each handed to a `Sink` as it is read (SSRF-safe: `app/lib/outbound.py`).

The source's headers and credential are opened for the origin of the URL about to be fetched: sealed
for another origin (the URL was moved, by whatever path), they are not sent and the fetch fails as
`credentials_origin_mismatch`. A failure of the fetch (a page that does not come, a body over the cap, a
next-page URL that is no URL) raises with its code; the rows of earlier pages may already be written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from botocore.exceptions import BotoCoreError, ClientError

from app.config import Settings
from app.lib import outbound
from app.lib.crypto import secret_box
from app.oracle import parsing, rows, sources
from app.oracle.ingest import Sink


@dataclass
class Fetched:
    pages: int = 0
    bytes: int = 0


def credentials(config: dict[str, Any], settings: Settings, url: str) -> dict[str, str]:
    """The headers to send to `url`'s origin; SecretMisbound when they were sealed for another."""
    box, origin = secret_box(settings), sources.credential_origin(url)
    sent = {name: box.open_for(value, origin) for name, value in (config.get("headers") or {}).items()}
    auth = config.get("authentication")
    if auth:
        sent[auth["header"]] = box.open_for(auth["value"], origin)
    return sent


async def _read_object(storage, key: str, cap: int) -> bytes:
    try:
        head = await storage.head(key)
        if head is None:
            raise rows.SourceError(f"no object {key} in the bucket", code="object_not_found")
        if head.size > cap:
            raise rows.SourceError(f"the object is larger than {cap} bytes", code="body_too_large")
        return await storage.read(key)
    except (ClientError, BotoCoreError) as exc:
        raise rows.SourceError("the object could not be read", code="object_unreadable") from exc


async def collect(clients, settings: Settings, doc: dict[str, Any], sink: Sink, fetched: Fetched) -> None:
    """Every row of the source into `sink`, counting in `fetched` the pages and bytes (so far, on failure)."""
    url, config = doc["url"] or "", doc.get("configuration") or {}
    policy = outbound.Policy.from_settings(settings)
    if url.startswith("s3://"):
        body = await _read_object(clients.storage, url.removeprefix("s3://"), policy.max_body_bytes)
    else:
        sent = credentials(config, settings, url)
        async with outbound.Client(policy) as client:
            if doc["type"] != "file":
                await _follow_pages(client, url, config, sent, policy.max_body_bytes, fetched, sink)
                return
            body = (await client.get(url, credentials=sent)).ensure_success().body
    fetched.pages, fetched.bytes = 1, len(body)
    await sink.take(parsing.file_rows(body, doc["format"]))


async def _follow_pages(
    client: outbound.Client,
    url: str,
    config: dict[str, Any],
    credentials: dict[str, str],
    cap: int,
    fetched: Fetched,
    sink: Sink,
) -> None:
    """JSON pages from `url` on: by the next URL each page names, or by page number, up to maxPages.
    Credentials go to the source's own origin only, wherever a page points next."""
    next_path, page_param = config.get("nextUrlPath"), config.get("pageParam")
    page, seen, number = 1, set(), 1
    current = str(httpx.URL(url).copy_set_param(page_param, "1")) if page_param and not next_path else url
    while current and fetched.pages < int(config.get("maxPages") or 100) and current not in seen:
        seen.add(current)
        response = (
            await client.get(current, credentials=credentials, credentials_origin=url)
        ).ensure_success()
        fetched.pages += 1
        fetched.bytes += len(response.body)
        if fetched.bytes > cap:
            raise outbound.OutboundError(f"the pages are larger than {cap} bytes", code="body_too_large")
        items, document = parsing.json_page(response.body, config.get("rowsPath"))
        following = parsing.at_path(document, next_path) if next_path else None
        base = response.url  # after redirects: a relative next URL is relative to where the page was
        del document, response
        await sink.take(parsing.page_rows(items, number))
        number += len(items)
        if next_path:
            current = outbound.join(base, following) if isinstance(following, str) else ""
        elif page_param and items:
            page += 1
            current = str(httpx.URL(current).copy_set_param(page_param, str(page)))
        else:
            current = ""
