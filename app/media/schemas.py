"""Request and response bodies of the media endpoints (camelCase on the wire, as the seed's clients use)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from msgspec import Meta

from app.lib.bucket import AVATAR_TEMP_KEY_PATTERN
from app.lib.params import MAX_INT64
from app.lib.schemas import RequestBody, Schema

Purpose = Literal["image", "document", "model", "video", "avatar"]
DocumentCategory = Literal["certificates", "legal", "metadata"]
DOCUMENT_CATEGORIES = ("certificates", "legal", "metadata")
Label = Annotated[str, Meta(min_length=1, max_length=64)]


class UploadRequest(RequestBody):
    """What the browser is about to upload; the policy it gets back holds it to exactly this."""

    purpose: Purpose
    file_name: Annotated[str, Meta(min_length=1, max_length=255)]
    content_type: Annotated[str, Meta(min_length=1, max_length=127)]
    content_length: Annotated[int, Meta(ge=1)]
    token_id: Annotated[int, Meta(ge=0, le=MAX_INT64)] | None = None
    category: DocumentCategory | None = None  # documents only; certificates by default
    verification: bool = False  # a verification document: admin-only
    label: Label | None = None  # primary, angle1, authenticity... (from fileName when absent)


class PresignedPost(Schema):
    url: str
    fields: dict[str, str]
    key: str
    expires_at: datetime


class MultipartPart(Schema):
    part_number: int
    url: str


class MultipartUpload(Schema):
    key: str
    upload_id: str
    part_size: int
    parts: list[MultipartPart]
    expires_at: datetime


class MultipartComplete(RequestBody):
    key: Annotated[str, Meta(min_length=1, max_length=1024)]
    upload_id: Annotated[str, Meta(min_length=1, max_length=1024)]


class CompletedUpload(Schema):
    key: str
    size: int


class StoredFile(Schema):
    label: str | None
    kind: str | None
    category: str | None
    content_type: str | None
    size: int | None
    status: str


class DirectUploadResult(Schema):
    files: list[StoredFile]
    job_id: str | None = None
    status_url: str | None = None


class ProcessingJob(Schema):
    job_id: str
    status_url: str
    pending: int


class AvatarPromotion(RequestBody):
    """The staged key the presigned-url call returned for an avatar upload."""

    key: Annotated[
        str,
        Meta(
            min_length=1,
            max_length=1024,
            extra_json_schema={"pattern": AVATAR_TEMP_KEY_PATTERN},
            description="the key of a presigned avatar upload, in the caller's own temp folder",
        ),
    ]


class AvatarJob(Schema):
    job_id: str
    status_url: str


def job_status_url(job_id: str) -> str:
    return f"/api/jobs/{job_id}"


def stored_file(entry: Any) -> StoredFile:
    return StoredFile(
        label=entry.label,
        kind=entry.kind,
        category=entry.category,
        content_type=entry.contentType,
        size=entry.size,
        status=entry.status,
    )
