"""Time helpers: everything is timezone-aware UTC."""

from __future__ import annotations

from datetime import UTC, datetime

from app.lib.errors import BadRequest

# Timestamps a client may send: wide enough for any real date, narrow enough that date arithmetic
# (a default window before `to`, a bucket count) can never overflow datetime's range.
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Naive datetimes read back from MongoDB are UTC; make them aware."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def client_time(value: datetime, field: str = "timestamp") -> datetime:
    """A timestamp from a request, in UTC; 400 when it lies outside the years 1900 to 8999."""
    try:
        utc = as_utc(value)
    except OverflowError:
        utc = None
    if utc is None or not EARLIEST <= utc < LATEST:
        raise BadRequest(f"{field} must lie between 1900 and 8999", code="timestamp_out_of_range")
    return utc
