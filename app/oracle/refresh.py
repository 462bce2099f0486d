"""A source's refresh: its rows fetched (`fetching`) and upserted a batch at a time (`ingest`), and how it
went recorded on the source.

Every end of a refresh is recorded: a success with its counts, or a failure with its code and a retry
after 1, 2, 4... minutes: the fetch (unreachable, refused, a non-2xx answer, a body over the cap), a page
that leads nowhere, `too_many_rows`, the deadline, and anything unforeseen as `internal_error`. So no
source is fetched again every minute without a trace. Only the platform's own database being out of
reach is left to the worker, which retries the job. Bad rows are the opposite of failures: each is
counted with its reason and skipped. Upserts are keyed by (source, external id) or (source, timestamp),
so running the same refresh again changes nothing, and rows a failed fetch wrote before it stopped are
written again harmlessly by the next.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from typing import Any

import structlog
from pymongo.errors import ConnectionFailure, ExecutionTimeout

from app.config import Settings
from app.lib.errors import AppError
from app.lib.timeutil import utcnow
from app.oracle import fetching, ingest, repository
from app.oracle.documents import FetchRecord, LastFetch, RejectedRow

log = structlog.get_logger(__name__)

RETRY_BASE_S = 60  # a failed source is tried again after 1, 2, 4... minutes, never later than its interval
STORE_UNAVAILABLE = (ConnectionFailure, ExecutionTimeout)  # the worker retries these: not the source's fault
INTERNAL = "the refresh failed unexpectedly; the platform's logs have the detail"


class RefreshFailed(AppError):
    """The refresh failed; the source records why, and the job's result shows the code."""

    status_code, code = 422, "refresh_failed"


def _last_fetch(
    now: datetime, latency_ms: float, fetched: fetching.Fetched, tally: ingest.Tally, error: str | None
) -> LastFetch:
    return LastFetch(
        at=now,
        ok=error is None,
        latencyMs=latency_ms,
        bytes=fetched.bytes,
        pages=fetched.pages,
        rowsAccepted=tally.accepted,
        rowsRejected=tally.rejected,
        inserted=tally.inserted,
        updated=tally.updated,
        unchanged=tally.unchanged,
        duplicates=tally.duplicates,
        rejectedByReason=dict(sorted(tally.reasons.items())),
        rejectedSamples=[RejectedRow(row=n, reason=r) for n, r in tally.samples],
        error=error,
    )


def _recent(doc: dict[str, Any], last: LastFetch, keep: int) -> dict[str, Any]:
    """The last `keep` fetches with this one, and the reliability and latency figures over them."""
    entry = FetchRecord(
        at=last.at,
        ok=last.ok,
        latencyMs=last.latencyMs,
        rowsAccepted=last.rowsAccepted,
        rowsRejected=last.rowsRejected,
        error=last.error,
    )
    recent = [*((doc.get("metrics") or {}).get("recent") or []), entry.model_dump()][-keep:]
    succeeded = [r["latencyMs"] for r in recent if r["ok"]]
    return {
        "metrics.reliability": round(100 * len(succeeded) / len(recent), 2),
        "metrics.latency": round(sum(succeeded) / len(succeeded), 2) if succeeded else None,
        "metrics.recent": recent,
    }


def _increments(last: LastFetch) -> dict[str, int]:
    return {
        "metrics.fetches": 1,
        "metrics.rowsAccepted": last.rowsAccepted,
        "metrics.rowsRejected": last.rowsRejected,
    }


async def record_success(settings: Settings, doc: dict[str, Any], last: LastFetch) -> None:
    interval = (doc.get("configuration") or {}).get("refreshInterval") or 3600
    changes = {
        **_recent(doc, last, settings.oracle.fetch_history),
        "status.lastFetchAt": last.at,
        "status.lastAttemptAt": last.at,
        "status.nextFetchAt": last.at + timedelta(seconds=interval),
        "status.errorCount": 0,
        "status.lastError": None,
        "status.lastErrorMessage": None,
        "lastFetch": last.model_dump(),
    }
    await repository.record_fetch(doc["_id"], changes, _increments(last))


async def record_failure(settings: Settings, doc: dict[str, Any], last: LastFetch, error: AppError) -> None:
    """The failure, its code and the platform's own words for it, and the next try 1, 2, 4... minutes on;
    `last` keeps what the fetch wrote before it stopped."""
    failures = int((doc.get("status") or {}).get("errorCount") or 0) + 1
    interval = (doc.get("configuration") or {}).get("refreshInterval") or 3600
    retry_s = min(interval, RETRY_BASE_S * 2 ** min(failures - 1, 16))
    changes = {
        **_recent(doc, last, settings.oracle.fetch_history),
        "status.lastAttemptAt": last.at,
        "status.nextFetchAt": last.at + timedelta(seconds=retry_s),
        "status.lastError": error.code,
        "status.lastErrorMessage": error.message[:500],
        "lastFetch": last.model_dump(),
    }
    await repository.record_fetch(doc["_id"], changes, {**_increments(last), "status.errorCount": 1})


async def _fetch_and_write(
    clients, settings: Settings, doc: dict[str, Any], sink: ingest.Sink, fetched: fetching.Fetched
) -> AppError | None:
    """Fetch and write every row within the deadline: None, or the error the source records."""
    deadline = max(5.0, settings.worker.job_timeout_s - 15)  # fail on the record, not by a killed job
    try:
        async with asyncio.timeout(deadline):
            await fetching.collect(clients, settings, doc, sink, fetched)
            await sink.flush()
    except STORE_UNAVAILABLE:
        raise
    except TimeoutError:
        code = "write_timeout" if sink.writing else "fetch_timeout"
        return RefreshFailed(f"the refresh did not end within {deadline:g} s", code=code)
    except AppError as exc:
        return exc
    except Exception:
        log.exception("oracle.refresh.internal_error", source_id=str(doc["_id"]))
        return RefreshFailed(INTERNAL, code="internal_error")
    return None


async def run(clients, settings: Settings, doc: dict[str, Any]) -> dict[str, Any]:
    """Refresh one source now: its rows written and its status recorded; RefreshFailed with the error's
    code when it failed (also recorded on the source)."""
    started, now = time.perf_counter(), utcnow()
    sink = ingest.Sink(
        doc, text=doc.get("format") == "csv", max_rows=settings.oracle.max_rows_per_fetch, now=now
    )
    fetched = fetching.Fetched()
    error = await _fetch_and_write(clients, settings, doc, sink, fetched)
    latency = round((time.perf_counter() - started) * 1000, 2)
    last = _last_fetch(now, latency, fetched, sink.tally, error.code if error else None)
    if error is not None:
        await record_failure(settings, doc, last, error)
        log.warning(
            "oracle.refresh.failed",
            source_id=str(doc["_id"]),
            error=error.code,
            detail=error.message,
            context=error.details,
            accepted=last.rowsAccepted,
        )
        raise RefreshFailed(error.message, code=error.code) from error
    await record_success(settings, doc, last)
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
