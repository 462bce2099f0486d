"""Response bodies of the system routes (camelCase on the wire)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec


class Camel(msgspec.Struct, rename="camel", kw_only=True, omit_defaults=True):
    pass


class CheckOut(Camel):
    status: Literal["up", "down", "disabled"]
    latency_ms: float | None = None  # operators only
    error: str | None = None  # operators only: a code (timeout, connection_failed, check_failed)


class ReadinessOut(Camel):
    status: Literal["ready", "unavailable"]
    checks: dict[str, CheckOut]
    checked_at: datetime | None = None  # operators only: when this process last ran the checks


class PingQueued(Camel):
    job_id: str
    status_url: str


class JobStateOut(Camel):
    job_id: str
    status: str
    success: bool | None = None
    result: Any = None
    error: str | None = None  # a code, never the exception's text
    finished_at: datetime | None = None
