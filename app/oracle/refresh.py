"""A source's refresh: fetch its bytes (SSRF-safe, or from the bucket), turn its rows into comparable
sales or index points, upsert them in bulk, and record how it went on the source.

A refresh is all or nothing for failures of the fetch (a page that does not come, a body over the cap):
nothing is written and the source records the error. Bad rows are the opposite: each is counted with
its reason and skipped. Upserts are keyed by (source, external id) or (source, timestamp), so running
the same refresh again changes nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, localcontext
from typing import Any

import httpx
import structlog
from botocore.exceptions import BotoCoreError, ClientError
from bson import Decimal128

from app.config import Settings
from app.lib import outbound
from app.lib.crypto import secret_box
from app.lib.errors import AppError
from app.lib.money import wei_to_eth
from app.lib.timeutil import utcnow
from app.oracle import repository, rows
from app.oracle.documents import FetchRecord, LastFetch, RejectedRow

log = structlog.get_logger(__name__)

USD_RATE_SERIES = "ETH/USD"  # USD per ETH: what USD sales are converted with
MAX_SAMPLES = 10
RETRY_BASE_S = 60  # a failed source is tried again after 1, 2, 4... minutes, never later than its interval


class RefreshFailed(AppError):
    """The fetch failed; the source records why, and the job's result shows the code."""

    status_code, code = 422, "refresh_failed"


@dataclass
class Collected:
    parsed: rows.Parsed = field(default_factory=rows.Parsed)
    text: bool = False  # CSV: cells are text, and read as numbers where they are numbers
    pages: int = 0
    bytes: int = 0


# ---------------------------------------------------------------- fetching


def _credentials(config: dict[str, Any], settings: Settings) -> dict[str, str]:
    box = secret_box(settings)
    sent = {name: box.open(value) for name, value in (config.get("headers") or {}).items()}
    auth = config.get("authentication")
    if auth:
        sent[auth["header"]] = box.open(auth["value"])
    return sent


def _parse_file(body: bytes, fmt: str, collected: Collected) -> None:
    collected.pages, collected.bytes = 1, len(body)
    collected.text = fmt == "csv"
    collected.parsed = rows.parse_csv(body) if fmt == "csv" else rows.parse_jsonl(body)


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


async def collect(clients, settings: Settings, doc: dict[str, Any]) -> Collected:
    """Every row of the source, parsed (and the bad ones with their reasons)."""
    url, config, collected = doc["url"] or "", doc.get("configuration") or {}, Collected()
    policy = outbound.Policy.from_settings(settings)
    if url.startswith("s3://"):
        body = await _read_object(clients.storage, url.removeprefix("s3://"), policy.max_body_bytes)
        _parse_file(body, doc["format"], collected)
        return collected
    credentials = _credentials(config, settings)
    async with outbound.Client(policy) as client:
        if doc["type"] == "file":
            response = (await client.get(url, credentials=credentials)).ensure_success()
            _parse_file(response.body, doc["format"], collected)
        else:
            await _follow_pages(client, url, config, credentials, policy.max_body_bytes, collected)
    return collected


async def _follow_pages(
    client: outbound.Client,
    url: str,
    config: dict[str, Any],
    credentials: dict[str, str],
    cap: int,
    collected: Collected,
) -> None:
    """JSON pages from `url` on: by the next URL each page names, or by page number, up to maxPages.
    Credentials go to the source's own origin only, wherever a page points next."""
    next_path, page_param = config.get("nextUrlPath"), config.get("pageParam")
    page, seen = 1, set()
    current = str(httpx.URL(url).copy_set_param(page_param, "1")) if page_param and not next_path else url
    while current and collected.pages < int(config.get("maxPages") or 100) and current not in seen:
        seen.add(current)
        response = (
            await client.get(current, credentials=credentials, credentials_origin=url)
        ).ensure_success()
        collected.pages += 1
        collected.bytes += len(response.body)
        if collected.bytes > cap:
            raise outbound.OutboundError(f"the pages are larger than {cap} bytes", code="body_too_large")
        first = len(collected.parsed.rows) + len(collected.parsed.rejected) + 1
        parsed, document = rows.parse_json_page(response.body, config.get("rowsPath"), first)
        collected.parsed.rows += parsed.rows
        collected.parsed.rejected += parsed.rejected
        if next_path:
            following = rows.at_path(document, next_path)
            current = str(httpx.URL(response.url).join(following)) if isinstance(following, str) else ""
        elif page_param and (parsed.rows or parsed.rejected):
            page += 1
            current = str(httpx.URL(current).copy_set_param(page_param, str(page)))
        else:
            current = ""


# ---------------------------------------------------------------- writing


@dataclass
class Written:
    accepted: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    duplicates: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)


def _exact(value: Decimal) -> Decimal128:
    with localcontext() as context:
        context.prec = 34  # Decimal128's digits: an index value past them is rounded, once, here
        return Decimal128(context.create_decimal(value))


async def write_sales(doc: dict[str, Any], collected: Collected, now: datetime) -> Written:
    config = doc.get("configuration") or {}
    mapping, defaults = config.get("mapping") or {}, config.get("defaults") or {}
    written = Written(rejected=list(collected.parsed.rejected))
    latest: dict[str, tuple[int, rows.Sale]] = {}
    for row in collected.parsed.rows:
        sale = rows.sale_of(row, mapping, defaults, text=collected.text)
        if isinstance(sale, str):
            written.rejected.append((row.number, sale))
            continue
        written.duplicates += sale.external_id in latest
        latest[sale.external_id] = (row.number, sale)
    if not latest:
        return written
    times = [sale.sold_at for _, sale in latest.values()]
    rates = rows.Rates(await repository.rates(USD_RATE_SERIES, min(times), max(times)))
    operations = []
    for number, sale in latest.values():
        price = rows.priced(sale, rates)
        if isinstance(price, str):
            written.rejected.append((number, price))
            continue
        fields = {
            "sourceName": doc["name"],
            "assetType": sale.asset_type,
            "soldAt": sale.sold_at,
            "price": wei_to_eth(price.wei),
            "priceWei": Decimal128(str(price.wei)),
            "priceUsd": float(price.usd) if price.usd is not None else None,
            "currency": sale.currency,
            "originalPrice": format(sale.price, "f"),
            "usdPerEth": format(price.rate, "f") if price.rate is not None else None,
            "attributes": sale.attributes,
        }
        operations.append(repository.sale_upsert(doc["_id"], sale.external_id, fields, now))
    written.accepted = len(operations)
    written.inserted, written.updated, written.unchanged = await repository.write_sales(operations)
    return written


async def write_points(doc: dict[str, Any], collected: Collected, now: datetime) -> Written:
    config = doc.get("configuration") or {}
    series = config.get("series") or doc["name"]
    written = Written(rejected=list(collected.parsed.rejected))
    latest: dict[datetime, rows.Point] = {}
    for row in collected.parsed.rows:
        point = rows.point_of(row, config.get("mapping") or {})
        if isinstance(point, str):
            written.rejected.append((row.number, point))
            continue
        written.duplicates += point.timestamp in latest
        latest[point.timestamp] = point
    operations = [
        repository.point_upsert(
            doc["_id"],
            point.timestamp,
            {"series": series, "value": float(point.value), "valueExact": _exact(point.value)},
            now,
        )
        for point in latest.values()
    ]
    written.accepted = len(operations)
    written.inserted, written.updated, written.unchanged = await repository.write_points(operations)
    return written


# ---------------------------------------------------------------- recording


def _recent(
    doc: dict[str, Any], entry: FetchRecord, keep: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The last `keep` fetches with this one, and the reliability and latency figures over them."""
    recent = [*((doc.get("metrics") or {}).get("recent") or []), entry.model_dump()][-keep:]
    succeeded = [r["latencyMs"] for r in recent if r["ok"]]
    figures = {
        "metrics.reliability": round(100 * len(succeeded) / len(recent), 2),
        "metrics.latency": round(sum(succeeded) / len(succeeded), 2) if succeeded else None,
        "metrics.recent": recent,
    }
    return recent, figures


async def record_success(
    settings: Settings,
    doc: dict[str, Any],
    collected: Collected,
    written: Written,
    latency_ms: float,
    now: datetime,
) -> LastFetch:
    reasons = Counter(reason for _, reason in written.rejected)
    samples = sorted(written.rejected)[:MAX_SAMPLES]
    last = LastFetch(
        at=now,
        ok=True,
        latencyMs=latency_ms,
        bytes=collected.bytes,
        pages=collected.pages,
        rowsAccepted=written.accepted,
        rowsRejected=len(written.rejected),
        inserted=written.inserted,
        updated=written.updated,
        unchanged=written.unchanged,
        duplicates=written.duplicates,
        rejectedByReason=dict(sorted(reasons.items())),
        rejectedSamples=[RejectedRow(row=n, reason=r) for n, r in samples],
    )
    entry = FetchRecord(
        at=now, ok=True, latencyMs=latency_ms, rowsAccepted=last.rowsAccepted, rowsRejected=last.rowsRejected
    )
    _, figures = _recent(doc, entry, settings.oracle.fetch_history)
    interval = (doc.get("configuration") or {}).get("refreshInterval") or 3600
    changes = {
        **figures,
        "status.lastFetchAt": now,
        "status.lastAttemptAt": now,
        "status.nextFetchAt": now + timedelta(seconds=interval),
        "status.errorCount": 0,
        "status.lastError": None,
        "status.lastErrorMessage": None,
        "lastFetch": last.model_dump(),
    }
    increments = {
        "metrics.fetches": 1,
        "metrics.rowsAccepted": last.rowsAccepted,
        "metrics.rowsRejected": last.rowsRejected,
    }
    await repository.record_fetch(doc["_id"], changes, increments)
    return last


async def record_failure(
    settings: Settings, doc: dict[str, Any], error: AppError, latency_ms: float, now: datetime
) -> None:
    failures = int((doc.get("status") or {}).get("errorCount") or 0) + 1
    interval = (doc.get("configuration") or {}).get("refreshInterval") or 3600
    retry_s = min(interval, RETRY_BASE_S * 2 ** min(failures - 1, 16))
    entry = FetchRecord(at=now, ok=False, latencyMs=latency_ms, error=error.code)
    _, figures = _recent(doc, entry, settings.oracle.fetch_history)
    changes = {
        **figures,
        "status.lastAttemptAt": now,
        "status.nextFetchAt": now + timedelta(seconds=retry_s),
        "status.lastError": error.code,
        "status.lastErrorMessage": error.message[:500],
        "lastFetch": LastFetch(at=now, ok=False, latencyMs=latency_ms, error=error.code).model_dump(),
    }
    await repository.record_fetch(doc["_id"], changes, {"status.errorCount": 1, "metrics.fetches": 1})


async def run(clients, settings: Settings, doc: dict[str, Any]) -> dict[str, Any]:
    """Refresh one source now: its rows written and its status recorded; RefreshFailed with the error's
    code when the fetch failed (also recorded on the source)."""
    started, now = time.perf_counter(), utcnow()
    deadline = max(5.0, settings.worker.job_timeout_s - 15)  # fail on the record, not by a killed job
    try:
        async with asyncio.timeout(deadline):
            collected = await collect(clients, settings, doc)
    except (outbound.OutboundError, rows.SourceError, AppError, TimeoutError) as exc:
        error = (
            exc
            if isinstance(exc, AppError)
            else RefreshFailed("the fetch ran out of time", code="fetch_timeout")
        )
        latency = round((time.perf_counter() - started) * 1000, 2)
        await record_failure(settings, doc, error, latency, now)
        log.warning(
            "oracle.refresh.failed", source_id=str(doc["_id"]), error=error.code, detail=error.message
        )
        raise RefreshFailed(error.message, code=error.code) from exc
    latency = round((time.perf_counter() - started) * 1000, 2)
    write = write_sales if doc.get("kind", "sales") == "sales" else write_points
    written = await write(doc, collected, now)
    last = await record_success(settings, doc, collected, written, latency, now)
    log.info(
        "oracle.refresh.done",
        source_id=str(doc["_id"]),
        accepted=last.rowsAccepted,
        rejected=last.rowsRejected,
        inserted=last.inserted,
        updated=last.updated,
    )
    return {
        "sourceId": str(doc["_id"]),
        "ok": True,
        "rowsAccepted": last.rowsAccepted,
        "rowsRejected": last.rowsRejected,
        "inserted": last.inserted,
        "updated": last.updated,
        "unchanged": last.unchanged,
        "duplicates": last.duplicates,
        "latencyMs": latency,
    }
