"""Structured logs: JSON lines through structlog, stdlib loggers (uvicorn, arq, litestar) included, every
URL in them cut to its host."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from structlog.typing import EventDict, WrappedLogger

from app.lib.chain import without_url_secrets

_SHARED = [
    structlog.contextvars.merge_contextvars,  # request_id and job_id, bound per request or job
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.StackInfoRenderer(),
]


def _without_urls(value: Any) -> Any:
    if isinstance(value, str):
        return without_url_secrets(value) if "://" in value else value
    if isinstance(value, BaseException):  # rendered by its repr otherwise, which names its request's URL
        return without_url_secrets(f"{type(value).__name__}: {value}")
    if isinstance(value, dict):
        return {_without_urls(key): _without_urls(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_without_urls(item) for item in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    try:
        text = str(value)  # what the renderer would write of it (a URL object, say)
    except Exception:  # the renderer's repr is then all there is
        return value
    return without_url_secrets(text) if "://" in text else value


def redact_urls(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Cut every URL in a log line to its scheme and host, the exception's text and traceback included.

    The chain's RPC URL carries the provider's key in its path or query (or credentials before the
    host), and the HTTP client's errors repeat the whole URL in their text, which tracebacks and
    `error=str(exc)` fields then carry into the logs.
    """
    return {key: _without_urls(value) for key, value in event_dict.items()}


def configure_logging(level: str = "INFO", json: bool = True) -> None:
    """Route structlog and the standard library through one JSON (or console) renderer."""
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[*_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_SHARED,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact_urls,  # last before rendering: it sees the traceback format_exc_info wrote
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "arq", "litestar"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # The request middleware writes one access line per request, with the request id in it.
    logging.getLogger("uvicorn.access").disabled = True
    for noisy in ("botocore", "aiobotocore", "boto3", "urllib3", "web3", "pymongo"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
