"""One error shape for every failure: {"error": {"code", "message", "details"}}."""

from __future__ import annotations

from typing import Any

import aiohttp
import structlog
from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError
from litestar import MediaType, Request, Response
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException, NotFoundException, SerializationException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from pymongo.errors import AutoReconnect, ConnectionFailure
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = structlog.get_logger(__name__)

_DEFAULT_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "rate_limited",
    503: "service_unavailable",
}


class AppError(Exception):
    """A domain refusal with a machine-readable code: services raise it, `handle_app_error` renders it.

    It is no HTTP exception, so services, jobs and scripts share it; the status it carries is the one
    the HTTP edge answers with.
    """

    status_code = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status_code: int | None = None,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code or self.status_code
        self.code = code or self.code
        self.details = details
        self.headers = headers


class BadRequest(AppError):
    status_code, code = 400, "bad_request"


class Unauthorized(AppError):
    status_code, code = 401, "unauthorized"


class Forbidden(AppError):
    status_code, code = 403, "forbidden"


class NotFound(AppError):
    status_code, code = 404, "not_found"


class Conflict(AppError):
    status_code, code = 409, "conflict"


class PayloadTooLarge(AppError):
    status_code, code = 413, "payload_too_large"


class UnsupportedMediaType(AppError):
    status_code, code = 415, "unsupported_media_type"


class Unprocessable(AppError):
    status_code, code = 422, "unprocessable"


class ServiceUnavailable(AppError):
    status_code, code = 503, "service_unavailable"


def require_one_of(value: str, allowed, *, field: str, code: str) -> str:
    """`value` when it is one of `allowed`; else 400 with the allowed values in the details."""
    if value not in allowed:
        raise BadRequest(
            f"{field} must be one of {', '.join(allowed)}", code=code, details={"allowed": list(allowed)}
        )
    return value


def error_response(status: int, code: str, message: str, details: Any = None, headers=None) -> Response:
    return Response(
        content={"error": {"code": code, "message": message, "details": details}},
        status_code=status,
        media_type=MediaType.JSON,
        headers=headers,
    )


def _validation_details(exc: ValidationException) -> list[dict[str, Any]] | None:
    extra = exc.extra
    if not isinstance(extra, list):
        return None
    details = []
    for item in extra:
        if isinstance(item, dict):
            details.append(
                {"field": item.get("key"), "message": item.get("message"), "source": item.get("source")}
            )
    return details or None


def handle_app_error(request: Request, exc: AppError) -> Response:
    return error_response(exc.status_code, exc.code, exc.message, exc.details, dict(exc.headers or {}))


def handle_http_exception(request: Request, exc: HTTPException) -> Response:
    status = exc.status_code
    headers = dict(exc.headers or {})
    if isinstance(exc, ValidationException):
        message = exc.detail or "invalid request"
        code = (
            "malformed_json"
            if "json" in message.lower() and "malformed" in message.lower()
            else "validation_error"
        )
        return error_response(400, code, message, _validation_details(exc), headers)
    if isinstance(exc, NotFoundException):
        return error_response(404, "not_found", exc.detail or "not found", None, headers)
    code = _DEFAULT_CODES.get(status, "error")
    if isinstance(exc.__cause__, SerializationException):  # Litestar re-raises body decode errors as 400
        code = "malformed_json"
    if status >= 500:
        log.error("http.server_error", status=status, detail=exc.detail, path=request.url.path)
    return error_response(status, code, exc.detail or code.replace("_", " "), exc.extra or None, headers)


# A dependency that cannot be reached (down, or not answering in time): the request may be retried.
UNAVAILABLE = (
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionFailure,
    AutoReconnect,
    EndpointConnectionError,  # S3 (and anything else reached through botocore)
    ConnectTimeoutError,
    ReadTimeoutError,
    aiohttp.ClientError,  # the chain's node, reached through web3's HTTP provider (an HTTP 429, a 5xx)
)


def handle_unexpected(request: Request, exc: Exception) -> Response:
    if isinstance(exc, UNAVAILABLE):
        log.error("http.dependency_unavailable", path=request.url.path, error_type=type(exc).__name__)
        return error_response(503, "service_unavailable", "a dependency is unavailable; retry shortly")
    log.exception("http.unhandled_exception", path=request.url.path, error_type=type(exc).__name__)
    return error_response(HTTP_500_INTERNAL_SERVER_ERROR, "internal_error", "internal server error")


EXCEPTION_HANDLERS = {
    AppError: handle_app_error,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}


def render_exception(request: Request, exc: Exception) -> Response:
    """The error response for any exception, by the same mapping the app's handlers use."""
    if isinstance(exc, AppError):
        return handle_app_error(request, exc)
    if isinstance(exc, HTTPException):
        return handle_http_exception(request, exc)
    return handle_unexpected(request, exc)


def errors_as_responses(app: ASGIApp) -> ASGIApp:
    """Render errors raised by the middleware below it (authentication, rate limits) right here.

    Litestar renders them in its outermost exception layer, past the request-id, access-log and
    metrics middleware above this one, which would then see no response at all.
    """

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] in _ANSWERED
            await send(message)

        try:
            await app(scope, receive, tracking_send)
        except Exception as exc:
            if started:
                raise
            if scope["type"] == ScopeType.HTTP:
                request: Request = Request(scope, receive)
                response = render_exception(request, exc)
                await response.to_asgi_response(app=None, request=request)(scope, receive, send)
            elif scope["type"] == ScopeType.WEBSOCKET and _DENIAL in (scope.get("extensions") or {}):
                await _deny_handshake(scope, receive, send, exc)
            else:
                raise  # a server without the denial extension answers a refused handshake with 403

    return middleware


# What a handler has sent once it has answered: after it, an error can no longer be rendered.
_ANSWERED = frozenset(
    {"http.response.start", "websocket.accept", "websocket.close", "websocket.http.response.start"}
)
_DENIAL = "websocket.http.response"


async def _deny_handshake(scope: Scope, receive: Receive, send: Send, exc: Exception) -> None:
    """Refuse a WebSocket handshake with the error's own HTTP answer (status, Retry-After, the error body),
    through the ASGI denial-response extension, rather than the bare 403 a close before accepting gives."""

    async def as_denial(message: Message) -> None:
        kind = message["type"].removeprefix("http.")
        await send({**message, "type": f"websocket.http.{kind}"})

    request: Request = Request({**scope, "type": ScopeType.HTTP, "method": "GET"}, receive)
    response = render_exception(request, exc)
    await response.to_asgi_response(app=None, request=request)(request.scope, receive, as_denial)
