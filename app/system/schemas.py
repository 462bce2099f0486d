"""Response bodies of the system routes (camelCase on the wire; unset optional fields are left out)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from app.lib.schemas import Schema


class HealthOut(Schema, omit_defaults=True):
    status: Literal["ok"]


class CheckOut(Schema, omit_defaults=True):
    status: Literal["up", "down", "disabled"]
    latency_ms: float | None = None  # operators only
    error: str | None = None  # operators only: a code (timeout, connection_failed, check_failed)


class ReadinessOut(Schema, omit_defaults=True):
    status: Literal["ready", "unavailable"]
    checks: dict[str, CheckOut]
    checked_at: datetime | None = None  # operators only: when this process last ran the checks


class PingQueued(Schema, omit_defaults=True):
    job_id: str
    status_url: str


class JobStateOut(Schema, omit_defaults=True):
    job_id: str
    status: Literal["deferred", "queued", "in_progress", "complete"]  # arq's JobStatus
    success: bool | None = None
    result: Any = None  # what the job returned, once it succeeded (public: it holds no private data)
    error: str | None = None  # a code, never the exception's text
    finished_at: datetime | None = None
