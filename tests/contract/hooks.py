"""What a client sends, and what an error may say: the rules the contract runs hold to, shared by the
test suite (test_schemathesis.py) and a run of Schemathesis' own command against a running platform:

    SCHEMATHESIS_HOOKS=tests.contract.hooks st run http://127.0.0.1:8000/schema/openapi.json --checks all

(scripts/contract runs it as every kind of caller). `as_clients_send` runs before every call, whatever
phase made the case; `error_codes_are_documented` joins Schemathesis' checks.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import schemathesis
from eth_utils import to_checksum_address
from schemathesis.core.parameters import ParameterLocation

from app.assets.history import MAX_BUCKETS
from app.lib.bodies import _integral_floats_as_ints
from app.lib.bucket import MULTIPART_THRESHOLD
from app.lib.errors import AppError
from app.media.imaging import UPLOAD_RULES, UploadPurpose, normalize_content_type
from app.oracle import submissions
from app.oracle.round_schemas import PredictionSubmit
from tests.contract.world import OWNED_TOKEN
from tests.media.support import photo

ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
BUCKET_STEPS = {"1h": timedelta(hours=1), "1d": timedelta(days=1), "1w": timedelta(weeks=1)}
SAMPLE_IMAGE = photo((64, 48), gps=False)
SAMPLE_DOCUMENT = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


def as_clients_send(case: schemathesis.Case) -> None:
    """A valid request as a client can send it, for the rules no JSON Schema can state (each documented on
    its parameter): a cursor is a `nextCursor` the API signed, never made up; a mixed-case address
    carries its EIP-55 checksum; a range runs forwards (`from` before `to`, `minPrice` at most
    `maxPrice`); a key's `expiresAt` is in the future; an upload declares a content type and a size its
    purpose takes, and the token it is for; a data source's URL carries no credentials in its query.
    Negative parts are left as generated. It runs on every case,
    whatever phase made it (examples, coverage, fuzzing, stateful)."""
    meta = case.meta
    if meta is None:
        return
    if isinstance(case.query, dict) and not meta.is_negative_at(ParameterLocation.QUERY):
        query = dict(case.query)
        query.pop("cursor", None)
        for low, high in (("from", "to"), ("minPrice", "maxPrice")):
            if (
                query.get(low) is not None
                and query.get(high) is not None
                and not _forward(query[low], query[high])
            ):
                query.pop(high)
        case.query = {name: _checksummed(value) for name, value in query.items()}
    if isinstance(case.path_parameters, dict) and not meta.is_negative_at(ParameterLocation.PATH):
        case.path_parameters = {name: _checksummed(v) for name, v in case.path_parameters.items()}
    if isinstance(case.body, dict) and not meta.is_negative_at(ParameterLocation.BODY):
        body = {name: _checksummed(value) for name, value in case.body.items()}
        if "expiresAt" in body:
            body.pop("expiresAt")
        if "purpose" in body and "contentLength" in body:
            body = as_upload_declared(case.operation.path, body)
        if case.operation.path == "/api/oracle/price-prediction":
            body = as_prediction_sent(body)
        if case.operation.path.startswith("/api/oracle/data-sources") and isinstance(body.get("url"), str):
            body["url"] = body["url"].split("?", 1)[0]  # credentials go in `authentication`, not a query
        if isinstance(body.get("files"), list):  # a direct upload sends files of the kind its route takes
            sample = SAMPLE_DOCUMENT if case.operation.path.endswith("/documents") else SAMPLE_IMAGE
            body["files"] = [sample for _ in body["files"]]
        case.body = body
    negative_query = meta.is_negative_at(ParameterLocation.QUERY)
    if isinstance(case.query, dict) and case.operation.path.endswith("/price-history") and not negative_query:
        case.query = within_bucket_limit(case.query)


def _forward(low: Any, high: Any) -> bool:
    """Whether a range runs forwards: times as the instants they name (`+15:34` is an offset, not a
    later time of day), numbers as numbers."""
    try:
        return datetime.fromisoformat(str(low).upper()) < datetime.fromisoformat(str(high).upper())
    except (TypeError, ValueError):
        try:
            return low < high
        except TypeError:
            return True


def within_bucket_limit(query: dict[str, Any]) -> dict[str, Any]:
    """Buckets over a range of at most history.MAX_BUCKETS (a range without `to` ends now)."""
    interval = query.get("interval")
    step = BUCKET_STEPS.get(interval) if isinstance(interval, str) else None
    if step is None or query.get("from") is None:
        return query
    try:
        start = datetime.fromisoformat(str(query["from"]).upper())
        end = datetime.fromisoformat(str(query["to"]).upper()) if query.get("to") else datetime.now(UTC)
        too_long = (end - start) / step > MAX_BUCKETS
    except (ValueError, TypeError, OverflowError):
        return query  # not a date-time: the negative checks' business
    return {name: value for name, value in query.items() if name != "from"} if too_long else query


def as_prediction_sent(body: dict[str, Any]) -> dict[str, Any]:
    """A submission as an operator's client sends it (app/oracle/submissions.py's rules): its price in one
    unit and within what the oracle holds, a band that holds it (or none), inputs with plain keys and
    values MongoDB stores."""
    body = dict(body)
    if body.get("predictedPrice") is not None and body.get("predictedPriceWei") is not None:
        body.pop("predictedPriceWei")
    try:
        data = msgspec.convert(_integral_floats_as_ints(body), PredictionSubmit)
    except msgspec.ValidationError:
        return body  # not valid for the schema either: the negative checks' business
    for attempt in (
        lambda b: b,
        lambda b: {**b, "interval": None},
        lambda b: {**b, "interval": None, "predictedPrice": 1.0, "predictedPriceWei": None},
    ):
        candidate = attempt(body)
        try:
            submissions.amounts(msgspec.convert(_integral_floats_as_ints(candidate), PredictionSubmit))
        except AppError:
            continue
        body = candidate
        break
    if data.inputs is not None:
        try:
            submissions.check_inputs(msgspec.to_builtins(data.inputs))
        except AppError:
            body["inputs"] = None
    return body


def as_upload_declared(path: str, body: dict[str, Any]) -> dict[str, Any]:
    """An upload request as a browser makes it for a file it holds (app/media/uploads.py's rules)."""
    multipart = path.startswith("/api/storage/multipart-uploads")
    purpose = "image" if multipart and body["purpose"] == "avatar" else body["purpose"]
    rule = UPLOAD_RULES[UploadPurpose(purpose)]
    body = {**body, "purpose": purpose}
    if not isinstance(body.get("contentType"), str) or (
        normalize_content_type(body["contentType"]) not in rule.content_types
    ):
        body["contentType"] = sorted(rule.content_types)[0]
    most = rule.max_bytes if multipart else min(rule.max_bytes, MULTIPART_THRESHOLD)
    if isinstance(body["contentLength"], int | float) and body["contentLength"] > most:
        body["contentLength"] = most
    if purpose != "avatar" and body.get("tokenId") is None:
        body["tokenId"] = OWNED_TOKEN
    if purpose != "document":
        body.pop("category", None)
    return body


def _checksummed(value: Any) -> Any:
    if isinstance(value, str) and ADDRESS.fullmatch(value):
        return to_checksum_address(value)
    return value


def documented_codes(operation: dict[str, Any], status: int) -> set[str]:
    """The codes an operation lists for `status`: its error examples are keyed by code."""
    response = operation.get("responses", {}).get(str(status), {})
    return set(response.get("content", {}).get("application/json", {}).get("examples", {}))


@schemathesis.check
def error_codes_are_documented(ctx: Any, response: Any, case: schemathesis.Case) -> bool | None:
    """An error's `code` is one its operation documents for that status (as an example keyed by code)."""
    if response.status_code < 400 or case.method.upper() != case.operation.method.upper():
        return None  # a probe with another method (405) is the unsupported-method check's business
    try:
        code = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None  # the schema checks say whether this body may have another shape
    documented = documented_codes(case.operation.definition.raw, response.status_code)
    if code not in documented:
        raise AssertionError(
            f"{case.method} {case.operation.path} answered {response.status_code} {code!r}, "
            f"which its document does not list (it lists {sorted(documented)})"
        )
    return True


@schemathesis.hook
def before_call(context: schemathesis.HookContext, case: schemathesis.Case, **kwargs: Any) -> None:
    as_clients_send(case)
