"""Time helpers: everything is timezone-aware UTC."""

from __future__ import annotations

from datetime import UTC, datetime

from app.lib.errors import BadRequest, Conflict

# Timestamps a client may send: wide enough for any real date, narrow enough that date arithmetic
# (a default window before `to`, a bucket count) can never overflow datetime's range.
# The year is read as written (before any offset), so the rule is the documented pattern exactly.
EARLIEST_YEAR, LATEST_YEAR = 1900, 8999
CLIENT_TIME_PATTERN = r"^(19[0-9]{2}|[2-8][0-9]{3})-"


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Naive datetimes read back from MongoDB are UTC; make them aware."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def client_time(value: datetime, field: str = "timestamp") -> datetime:
    """A timestamp from a request, in UTC; 400 when its year (as written) is not 1900 to 8999."""
    if not EARLIEST_YEAR <= value.year <= LATEST_YEAR:
        raise BadRequest(f"{field} must lie between 1900 and 8999", code="timestamp_out_of_range")
    return as_utc(value)


def past_client_time(value: datetime | None, now: datetime, field: str) -> datetime | None:
    """A client's time as client_time reads it, and not after `now`: 409 `as_of_in_future` (well-formed,
    and refused only by the time of the request)."""
    if value is None:
        return None
    when = client_time(value, field)
    if when > now:
        raise Conflict(f"{field} must not be in the future", code="as_of_in_future")
    return when
